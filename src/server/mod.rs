//! The HTTP server: axum routes for the page, the JSON API, the WebSocket event stream and the
//! saved images; optional basic authentication; a body limit; the worker behind it all. Every
//! URL the page uses is relative, so the app works unchanged under a path prefix.
//!
//! * one folder per API dialect, each typed in its `wire`: [`fooocus`], the page's own JSON API
//!   and WebSocket; [`a1111`], AUTOMATIC1111's `/sdapi/v1`; [`openai`], OpenAI's images API. The
//!   last two wait for their jobs in the request ([`waiting`]);
//! * [`files`]: the page and saved images; [`thumbs`]: their thumbnails; [`error`]: API errors;
//! * [`auth`]: basic authentication, failed logins slowed by [`throttle`]; [`security`]: requests
//!   other web sites make are refused; [`hosts`]: requests naming a foreign host (DNS rebinding)
//!   are refused; [`headers`]: security headers on every answer;
//! * [`listen`]: the accept loop (idle connections time out); [`limits`]: every bound on clients.
//!
//! Knows nothing of tensors or sampling: it validates requests into plans (off the async
//! runtime, since planning reads model folders and checkpoint headers) and hands them to `jobs`.

pub mod a1111;
pub mod auth;
pub mod error;
pub mod files;
pub mod fooocus;
pub mod headers;
pub mod hosts;
pub mod limits;
pub mod listen;
pub mod openai;
pub mod security;
pub mod throttle;
pub mod thumbs;
pub mod waiting;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use candle_core::Device;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower_http::timeout::TimeoutLayer;

use crate::config::{Config, Preset};
use crate::hub::background::{self, statuses, Downloads};
use crate::hub::{builtin_catalog, missing, HubClient};
use crate::jobs::sqlite::{SqliteStore, DATABASE_FILE};
use crate::jobs::store::StoreFault;
use crate::jobs::{StartFault, Worker, WorkerSetup};
use crate::pipeline::plan::plan;
use crate::pipeline::request::GenerateRequest;
use crate::pipeline::styles::StyleLibrary;
use crate::runtime::Placement;
use crate::store::OutputStore;
use crate::weights::catalog::ArchitectureCache;
pub use auth::{Accounts, Credentials};
pub use hosts::AllowedHosts;
pub use limits::Limits;
pub use throttle::LoginPolicy;

/// Default port, as the original.
pub const DEFAULT_PORT: u16 = 7865;
/// Largest accepted request body.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// Largest accepted `/api/generate` body, which may carry an input image (a 4096² PNG in
/// base64 is up to about 64 MiB).
pub const DEFAULT_IMAGE_BODY_LIMIT: usize = 64 * 1024 * 1024;
/// Jobs that may wait in the queue by default.
pub const DEFAULT_QUEUE: usize = 64;

/// Everything a server is started with.
pub struct ServerOptions {
    pub config: Config,
    pub preset_name: String,
    pub preset: Preset,
    pub styles: StyleLibrary,
    pub listen: SocketAddr,
    /// Who may log in; `None`: no authentication.
    pub auth: Option<Accounts>,
    /// Where the models run and what stays resident: one worker thread per entry, each with its
    /// own models (`--devices`, or `--workers N` copies); the first is the one reported.
    pub placements: Vec<Placement>,
    pub queue_capacity: usize,
    /// Largest request body, and largest `/api/generate` body (input images).
    pub body_limit: usize,
    pub image_body_limit: usize,
    /// Where to download what the preset lacks; `None` downloads nothing.
    pub hub: Option<HubClient>,
    /// Host names besides IP addresses, localhost and this machine's name that requests may
    /// name in `Host` (`--allowed-host`; see [`hosts`]).
    pub allowed_hosts: Vec<String>,
    /// Failed logins, slow WebSocket readers, idle connections, slow requests.
    pub limits: Limits,
    /// A Redis URL: jobs are run by `fooocus worker` hosts through it instead of here.
    pub broker: Option<String>,
}

/// What the router checks before a handler runs.
pub struct Guards {
    /// Who may log in; `None`: no authentication.
    pub auth: Option<Accounts>,
    pub body_limit: usize,
    pub image_body_limit: usize,
    /// Listening beyond loopback (see [`security`]).
    pub lan: bool,
    /// The names requests may reach the server by (see [`hosts`]).
    pub hosts: AllowedHosts,
    /// Logins and request time.
    pub limits: Limits,
}

/// What handlers share.
pub struct AppState {
    pub config: Arc<Config>,
    pub preset_name: String,
    pub preset: Preset,
    pub styles: Arc<StyleLibrary>,
    pub store: Arc<OutputStore>,
    pub worker: Arc<Worker>,
    pub device: Device,
    /// Background downloads of what the preset lacked at start.
    pub downloads: Downloads,
    /// Which files under the checkpoint folders are SDXL checkpoints (headers read once).
    pub architectures: ArchitectureCache,
    /// The hub missing models are downloaded from (shown to people who fetch them by hand).
    pub hub_endpoint: String,
    /// A WebSocket client that has not taken a message within this is dropped.
    pub ws_send_timeout: Duration,
    /// The checkpoint A1111's `POST options` selected for API requests that name none (`None`:
    /// the preset's base model).
    pub api_checkpoint: RwLock<Option<String>>,
    /// The jobs of API requests a client may retry (see [`waiting::InFlight`]).
    pub in_flight: waiting::InFlight,
}

impl AppState {
    /// The SDXL checkpoints (base and refiner) under the checkpoint folders; other files there
    /// are left out. Reads headers: call off the async runtime.
    pub fn sdxl_checkpoints(&self) -> Vec<crate::config::ModelEntry> {
        self.config
            .list_models(crate::config::ModelKind::Checkpoint)
            .into_iter()
            .filter(|m| self.architectures.is_sdxl_checkpoint(&m.path))
            .collect()
    }
}

pub type SharedState = Arc<AppState>;

/// The routes over `state`, behind the `guards`.
pub fn router(state: SharedState, guards: Guards) -> Router {
    let Guards {
        auth,
        body_limit,
        image_body_limit,
        lan,
        hosts,
        limits,
    } = guards;
    let quick = Router::new()
        .route("/", get(files::index))
        .route("/app.js", get(files::app_js))
        .route("/app.css", get(files::app_css))
        .route("/favicon.svg", get(files::favicon))
        .route("/favicon.ico", get(files::favicon))
        .route(
            "/api/generate",
            post(fooocus::api::generate).layer(DefaultBodyLimit::max(image_body_limit)),
        )
        .route("/api/jobs/{id}", get(fooocus::api::job))
        .route("/api/jobs/{id}/stop", post(fooocus::api::stop))
        .route("/api/jobs/{id}/skip", post(fooocus::api::skip))
        .route("/api/queue", get(fooocus::api::queue))
        .route("/api/options", get(fooocus::api::options))
        .route("/api/history", get(fooocus::api::history))
        .route("/api/health", get(fooocus::api::health))
        .route("/api/presets", get(fooocus::presets::presets))
        .route("/thumbs/{*path}", get(thumbs::thumb))
        .route("/outputs/{*path}", get(files::output))
        .route("/ws", get(fooocus::ws::handler))
        .merge(a1111_routes())
        .route(
            "/sdapi/v1/png-info",
            post(a1111::handlers::png_info).layer(DefaultBodyLimit::max(image_body_limit)),
        )
        .route("/v1/models", get(openai::handlers::models))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request,
        ));
    // Requests that wait for their job: only their body is bounded in time (A1111 and OpenAI
    // clients wait as long as the job takes, the queue included).
    let waiting = Router::new()
        .route("/sdapi/v1/txt2img", post(a1111::handlers::txt2img))
        .route("/sdapi/v1/img2img", post(a1111::handlers::img2img))
        .route(
            "/sdapi/v1/extra-single-image",
            post(a1111::handlers::extra_single_image),
        )
        .route(
            "/v1/images/generations",
            post(openai::handlers::generations),
        )
        .layer(axum::middleware::from_fn_with_state(
            (limits.request, image_body_limit),
            limits::read_body_within,
        ))
        .layer(DefaultBodyLimit::max(image_body_limit));
    let router = quick
        .merge(waiting)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            lan,
            security::refuse_cross_site,
        ))
        .with_state(state);
    let router = match auth {
        Some(accounts) => router.layer(axum::middleware::from_fn_with_state(
            auth::Gate::new(accounts, limits.login.clone()),
            auth::require_auth,
        )),
        None => router,
    };
    let router = router
        .layer(axum::middleware::from_fn(headers::answer_options))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(hosts),
            hosts::refuse_foreign_host,
        ))
        .layer(axum::middleware::from_fn_with_state(
            error::BodyLimits {
                body: body_limit,
                generate: image_body_limit,
            },
            error::json_errors,
        ));
    headers::with_security_headers(router)
}

/// Hashes the SDXL checkpoints on a thread of their own, so that the API's model titles
/// (`name [sha256[:10]]`) are ready before a client asks (a 7 GB file takes seconds to read).
fn hash_checkpoints(state: SharedState) {
    let spawned = std::thread::Builder::new()
        .name("model-hashes".into())
        .spawn(move || {
            for model in state.sdxl_checkpoints() {
                if let Err(e) = crate::store::file_sha256(&model.path) {
                    tracing::warn!("cannot hash {}: {e}", model.name);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("model hashes will be read on first use: {e}");
    }
}

/// A1111's quick routes (listings, progress, control, options).
fn a1111_routes() -> Router<SharedState> {
    use a1111::handlers as h;
    Router::new()
        .route("/sdapi/v1/progress", get(h::progress))
        .route("/sdapi/v1/interrupt", post(h::interrupt))
        .route("/sdapi/v1/skip", post(h::skip))
        .route(
            "/sdapi/v1/options",
            get(h::get_options).post(h::set_options),
        )
        .route("/sdapi/v1/sd-models", get(h::sd_models_list))
        .route("/sdapi/v1/samplers", get(h::samplers))
        .route("/sdapi/v1/schedulers", get(h::schedulers))
        .route("/sdapi/v1/upscalers", get(h::upscalers))
        .route("/sdapi/v1/latent-upscale-modes", get(h::empty_list))
        .route("/sdapi/v1/sd-vae", get(h::empty_list))
        .route("/sdapi/v1/scripts", get(h::scripts))
        .route("/sdapi/v1/loras", get(h::loras))
        .route("/sdapi/v1/prompt-styles", get(h::prompt_styles))
        .route("/sdapi/v1/refresh-checkpoints", post(h::refresh))
}

/// A started server.
pub struct RunningServer {
    /// Where it listens (the real port when 0 was asked for).
    pub addr: SocketAddr,
    pub worker: Arc<Worker>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, stops the jobs and waits for the worker thread.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let worker = self.worker.clone();
        let _ = tokio::task::spawn_blocking(move || worker.shutdown()).await;
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Why a server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot listen on {addr}: {source} (is another fooocus running? choose another --port)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Worker(#[from] StartFault),
    #[error("{0}")]
    Broker(#[from] crate::broker::BrokerError),
}

/// Starts the workers over the job database in the output folder, restoring the jobs it kept
/// (planned again with `preset` under today's configuration).
fn start_durable_worker(setup: WorkerSetup, preset: &Preset) -> Result<Worker, StartFault> {
    let outputs = &setup.config.paths.outputs;
    std::fs::create_dir_all(outputs).map_err(|e| {
        StoreFault(format!(
            "cannot create the output folder {}: {e}",
            outputs.display()
        ))
    })?;
    let journal = SqliteStore::open(&outputs.join(DATABASE_FILE))?;
    let (config, styles) = (setup.config.clone(), setup.styles.clone());
    let replan = |request: &GenerateRequest| {
        plan(request, preset, &config, &styles).map_err(|e| e.to_string())
    };
    Worker::start_with(setup, Box::new(journal), &replan)
}

/// Binds, starts the worker and serves in the background. Call inside a tokio runtime.
pub async fn start(options: ServerOptions) -> Result<RunningServer, StartError> {
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: options.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: options.listen,
        source,
    })?;
    let config = Arc::new(options.config);
    let styles = Arc::new(options.styles);
    let needed = missing(&config, &options.preset, &builtin_catalog());
    let downloads = statuses(&needed);
    let hub_endpoint = match &options.hub {
        Some(client) => client.endpoint().to_string(),
        None => HubClient::from_env(None).endpoint().to_string(),
    };
    if let Some(client) = &options.hub {
        if !needed.is_empty() {
            background::spawn(needed, client.clone(), downloads.clone());
        }
    }
    let store = Arc::new(OutputStore::new(config.paths.outputs.clone()));
    let setup = WorkerSetup {
        config: config.clone(),
        styles: styles.clone(),
        store: store.clone(),
        placements: options.placements.clone(),
        capacity: options.queue_capacity,
        hub: options.hub,
        pipeline: match &options.broker {
            Some(url) => crate::broker::Dispatch::start(url).await?.pipeline(),
            None => crate::jobs::local_pipeline(),
        },
    };
    let worker = Arc::new(start_durable_worker(setup, &options.preset)?);
    let state = Arc::new(AppState {
        config,
        preset_name: options.preset_name,
        preset: options.preset,
        styles,
        store,
        worker: worker.clone(),
        device: options
            .placements
            .first()
            .map_or(Device::Cpu, |p| p.device.clone()),
        downloads,
        architectures: ArchitectureCache::default(),
        hub_endpoint,
        ws_send_timeout: options.limits.ws_send,
        api_checkpoint: RwLock::new(None),
        in_flight: waiting::InFlight::default(),
    });
    hash_checkpoints(state.clone());
    let guards = Guards {
        auth: options.auth,
        body_limit: options.body_limit,
        image_body_limit: options.image_body_limit,
        lan: !addr.ip().is_loopback(),
        hosts: AllowedHosts::new(&options.allowed_hosts),
        limits: options.limits.clone(),
    };
    let app = router(state, guards);
    let (tx, rx) = oneshot::channel::<()>();
    let idle = options.limits.idle;
    let task = tokio::spawn(listen::serve(listener, app, idle, async {
        let _ = rx.await;
    }));
    Ok(RunningServer {
        addr,
        worker,
        shutdown: Some(tx),
        task,
    })
}
