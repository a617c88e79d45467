//! `fooocus` with no subcommand: serve the browser UI. Flags (`--listen [IP]`, `--port`,
//! `--preset`, `--models-dir`, `--output-dir`, `--no-browser`, `--auth`, `--auth-file`, …), startup
//! messages,
//! opening the page, Ctrl+C.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::cli::ComputeArgs;
use crate::config::{Config, DEFAULT_PRESET};
use crate::hub::{builtin_catalog, missing, HubClient};
use crate::pipeline::styles::StyleLibrary;
use crate::runtime::{describe, DeviceChoice, DeviceError, Placement};
use crate::server::Limits;
use crate::server::{
    start, Accounts, Credentials, ServerOptions, DEFAULT_BODY_LIMIT, DEFAULT_IMAGE_BODY_LIMIT,
    DEFAULT_PORT, DEFAULT_QUEUE,
};

/// Flags of the server (the default command).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Listen on a network address instead of 127.0.0.1; bare `--listen` means 0.0.0.0 (all).
    #[arg(long, num_args = 0..=1, default_missing_value = "0.0.0.0", value_name = "IP")]
    pub listen: Option<IpAddr>,
    /// The port.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// A host name the server may be reached by, besides its IP addresses, localhost and this
    /// machine's name (a proxy or tunnel that keeps its own name in `Host`); repeatable.
    /// Requests naming any other host are refused (DNS rebinding).
    #[arg(long, value_name = "NAME")]
    pub allowed_host: Vec<String>,
    /// The preset (from config.toml) giving the defaults.
    #[arg(long, default_value = DEFAULT_PRESET)]
    pub preset: String,
    /// A models folder with `checkpoints/` and `loras/` inside (replaces the config's folders).
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    /// Where images are saved (replaces the config's `outputs`).
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Do not open the page in a browser.
    #[arg(long)]
    pub no_browser: bool,
    /// Require HTTP basic authentication, `USER:PASSWORD`, on pages, API and WebSocket.
    #[arg(long, value_name = "USER:PASSWORD")]
    pub auth: Option<Credentials>,
    /// Require HTTP basic authentication for the users in FILE: a JSON list of
    /// `{"user": …, "pass": …}` or `{"user": …, "hash": <sha256 hex>}` (the original's auth.json).
    #[arg(long, value_name = "FILE")]
    pub auth_file: Option<PathBuf>,
    /// How many jobs may wait in the queue.
    #[arg(long, default_value_t = DEFAULT_QUEUE)]
    pub queue_size: usize,
    /// Worker threads taking jobs from the queue, each with its own copy of the models on the
    /// device (so N times the memory): for a CPU with memory to spare, or tests.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub workers: u16,
    /// One worker thread per device, each with its own models there, all taking jobs from the
    /// one queue: `--devices cuda:0,cuda:1` (replaces `--device` and `--workers`).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "DEVICES",
        conflicts_with = "workers"
    )]
    pub devices: Vec<DeviceChoice>,
    /// Put jobs on a Redis broker (`redis://HOST:6379/0`) for `fooocus worker` processes on
    /// other hosts to run, instead of running them here; `--workers N` is then how many jobs
    /// are handed out at once (at least the number of worker processes).
    #[arg(long, value_name = "URL")]
    pub broker: Option<String>,
    /// A hub mirror for model downloads (else `HF_ENDPOINT`, else huggingface.co).
    #[arg(long, value_name = "URL")]
    pub hf_mirror: Option<String>,
    /// Do not download missing models at start.
    #[arg(long)]
    pub no_download: bool,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// The accounts of `--auth` and `--auth-file`; `None` when neither is given.
fn accounts(args: &ServeArgs) -> Result<Option<Accounts>, String> {
    let mut accounts = match &args.auth_file {
        Some(path) => Accounts::load(path).map_err(|e| e.to_string())?,
        None => Accounts::default(),
    };
    if let Some(credentials) = &args.auth {
        accounts.add(credentials);
    }
    if args.auth_file.is_some() && accounts.is_empty() {
        return Err("the auth file lists nobody: add a user or drop --auth-file".into());
    }
    Ok((!accounts.is_empty()).then_some(accounts))
}

/// One placement per worker thread: one per `--devices` entry, else `--workers` copies of
/// `--device`'s.
fn placements(args: &ServeArgs) -> Result<Vec<Placement>, DeviceError> {
    if args.devices.is_empty() {
        let placement = args.compute.placement()?;
        return Ok(vec![placement; usize::from(args.workers)]);
    }
    args.devices
        .iter()
        .map(|device| args.compute.placement_on(*device))
        .collect()
}

/// Opens `url` in the desktop's browser, when there is a desktop.
fn open_browser(url: &str) {
    let command = if cfg!(target_os = "macos") {
        Some(("open", vec![url]))
    } else if cfg!(target_os = "windows") {
        Some(("cmd", vec!["/C", "start", "", url]))
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        Some(("xdg-open", vec![url]))
    } else {
        None
    };
    if let Some((program, args)) = command {
        if let Err(e) = std::process::Command::new(program).args(args).spawn() {
            tracing::info!("could not open a browser ({program}: {e}); open {url} yourself");
        }
    }
}

/// Runs the server until Ctrl+C.
pub fn serve(args: ServeArgs, mut config: Config) -> ExitCode {
    if let Some(dir) = &args.models_dir {
        config.paths.checkpoints = vec![dir.join("checkpoints")];
        config.paths.loras = vec![dir.join("loras")];
    }
    if let Some(dir) = &args.output_dir {
        config.paths.outputs = dir.clone();
    }
    let preset = match config.preset(&args.preset) {
        Ok(p) => p.clone(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let auth = match accounts(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let placements = match placements(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (index, placement) in placements.iter().enumerate() {
        println!(
            "worker {index} computes on {} in {} (VAE in f32), --vram {}",
            describe(&placement.device),
            placement.precision.dtype_on(&placement.device).as_str(),
            placement.vram
        );
    }
    let styles = match StyleLibrary::load(&config.paths.styles) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match crate::cli::async_runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for item in missing(&config, &preset, &builtin_catalog()) {
        let how = if item.entry.is_some() && !args.no_download {
            "downloading it in the background"
        } else {
            "put it there"
        };
        println!(
            "warning: {} is missing from {}: {how}",
            item.name,
            item.dest.display()
        );
    }
    let ip = args.listen.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let options = ServerOptions {
        config,
        preset_name: args.preset.clone(),
        preset,
        styles,
        listen: SocketAddr::new(ip, args.port),
        auth: auth.clone(),
        placements,
        queue_capacity: args.queue_size,
        body_limit: DEFAULT_BODY_LIMIT,
        image_body_limit: DEFAULT_IMAGE_BODY_LIMIT,
        hub: (!args.no_download).then(|| HubClient::from_env(args.hf_mirror.as_deref())),
        allowed_hosts: args.allowed_host.clone(),
        limits: Limits::default(),
        broker: args.broker.clone(),
    };
    runtime.block_on(async move {
        let server = match start(options).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let shown_ip = if ip.is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            ip
        };
        let url = format!("http://{}/", SocketAddr::new(shown_ip, server.addr.port()));
        println!("Fooocus is running at {url} (Ctrl+C stops it)");
        if !ip.is_loopback() {
            println!("listening on {} for the network", server.addr);
            if auth.is_none() {
                println!(
                    "warning: anyone on the network can use it; add --auth USER:PASSWORD or \
                     --auth-file FILE"
                );
            }
        }
        if !args.no_browser {
            open_browser(&url);
        }
        if let Err(e) = tokio::signal::ctrl_c().await {
            eprintln!("error: cannot wait for Ctrl+C: {e}");
        }
        println!("stopping…");
        match server.shutdown().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
