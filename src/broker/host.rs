//! The worker's side (`fooocus worker`): takes jobs from the jobs stream as one consumer of the
//! workers' group (a job another worker left pending longer than the visibility timeout
//! first), runs each on a local job thread with its own models, and sends the reports back:
//! progress, previews, every finished image's file, the end. A job is acknowledged only after
//! its end is sent, so a worker that dies leaves it to another. While a job runs its claim is
//! renewed, so a long job is not taken over from a live worker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamClaimOptions, StreamId, StreamReadOptions,
    StreamReadReply,
};
use redis::AsyncCommands;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;
use tokio::sync::watch;

use super::wire::{
    attempt_key, connect, ensure_group, next_image_key, stop_key, Action, BrokerError, Control,
    Envelope, JobMessage, Report, CONTROL, JOBS, REPORTS, SERVER_GROUP, WORKERS_GROUP,
};
use crate::config::{Config, Preset};
use crate::hub::HubClient;
#[cfg(doc)]
use crate::jobs::local_pipeline;
use crate::jobs::{Event, JobId, JobImage, JobState, RunFn, Worker, WorkerSetup};
use crate::pipeline::plan::plan;
use crate::pipeline::styles::StyleLibrary;
use crate::runtime::Placement;
use crate::store::{OutputFormat, OutputStore};

/// The local job thread's newest preview.
type PreviewReceiver = watch::Receiver<Option<Arc<crate::jobs::PreviewFrame>>>;

/// The longest wait between two tries while the broker is away.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a worker host needs.
pub struct HostOptions {
    pub broker: String,
    /// This worker's consumer name (unique among the workers).
    pub name: String,
    pub config: Config,
    pub preset: Preset,
    pub styles: StyleLibrary,
    pub placement: Placement,
    pub hub: Option<HubClient>,
    /// How long a job may go without its worker renewing its claim before another takes it.
    pub visibility: Duration,
    /// What runs a job here: [`local_pipeline`] (the queue's benchmark passes one that makes
    /// nothing).
    pub pipeline: RunFn,
}

/// The job running here: its broker id and attempt, and its id on the local job thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Current {
    job_id: JobId,
    attempt: u64,
    local: JobId,
}

struct Host {
    url: String,
    name: String,
    conn: ConnectionManager,
    reader: ConnectionManager,
    local: Arc<Worker>,
    store: Arc<OutputStore>,
    config: Arc<Config>,
    preset: Preset,
    styles: Arc<StyleLibrary>,
    visibility: Duration,
    current: Arc<Mutex<Option<Current>>>,
}

/// Serves jobs from the broker until `stop` resolves. Call inside a tokio runtime.
pub async fn run_host(
    options: HostOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), BrokerError> {
    let url = options.broker.clone();
    let mut conn = connect(&url).await?;
    ensure_group(&mut conn, &url, JOBS, WORKERS_GROUP).await?;
    ensure_group(&mut conn, &url, REPORTS, SERVER_GROUP).await?;
    let reader = connect(&url).await?;
    // Finished images are written here, sent, then deleted: the server keeps them.
    let scratch = std::env::temp_dir().join(format!("fooocus-worker-{}", std::process::id()));
    let mut config = options.config;
    config.paths.outputs = scratch.clone();
    let config = Arc::new(config);
    let styles = Arc::new(options.styles);
    let store = Arc::new(OutputStore::new(scratch.clone()).with_log(false));
    let setup = WorkerSetup {
        config: config.clone(),
        styles: styles.clone(),
        store: store.clone(),
        placements: vec![options.placement],
        capacity: 1,
        hub: options.hub,
        pipeline: options.pipeline,
    };
    let local = Arc::new(Worker::start(setup).map_err(|e| BrokerError::Command {
        url: url.clone(),
        why: e.to_string(),
    })?);
    let host = Host {
        url: url.clone(),
        name: options.name,
        conn,
        reader,
        local: local.clone(),
        store,
        config,
        preset: options.preset,
        styles,
        visibility: options.visibility,
        current: Arc::default(),
    };
    let controls = tokio::spawn(follow_controls(
        url.clone(),
        host.current.clone(),
        local.clone(),
    ));
    tracing::info!("worker {} takes jobs from {url}", host.name);
    tokio::select! {
        () = host.serve() => {}
        () = stop => {}
    }
    controls.abort();
    // The job running now stays pending in the broker: another worker takes it over.
    let _ = tokio::task::spawn_blocking(move || local.shutdown()).await;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

impl Host {
    async fn serve(&self) -> ! {
        let mut wait = Duration::from_millis(100);
        loop {
            match self.take().await {
                Ok(Some(entry)) => {
                    wait = Duration::from_millis(100);
                    self.handle(entry).await;
                }
                Ok(None) => wait = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!("broker {}: cannot take a job ({e}); trying again", self.url);
                    let mut conn = self.conn.clone();
                    let _ = ensure_group(&mut conn, &self.url, JOBS, WORKERS_GROUP).await;
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// The next job: one left pending by a silent worker first, else a new one.
    async fn take(&self) -> redis::RedisResult<Option<StreamId>> {
        let idle = self.visibility.as_millis() as u64;
        let options = StreamAutoClaimOptions::default().count(1);
        let claimed: StreamAutoClaimReply = self
            .conn
            .clone()
            .xautoclaim_options(JOBS, WORKERS_GROUP, &self.name, idle, "0-0", options)
            .await?;
        if let Some(entry) = claimed.claimed.into_iter().find(|e| !e.map.is_empty()) {
            tracing::info!(
                "worker {}: took over a job left by another worker",
                self.name
            );
            return Ok(Some(entry));
        }
        let options = StreamReadOptions::default()
            .group(WORKERS_GROUP, &self.name)
            .count(1)
            .block(2000);
        let reply: StreamReadReply = self
            .reader
            .clone()
            .xread_options(&[JOBS], &[">"], &options)
            .await?;
        Ok(reply.keys.into_iter().flat_map(|k| k.ids).next())
    }

    /// Runs one job entry to its end and acknowledges it.
    async fn handle(&self, entry: StreamId) {
        let Some((message, input)) = JobMessage::from_entry(&entry) else {
            tracing::warn!(
                "broker {}: a job this version cannot read, dropped",
                self.url
            );
            self.ack(&entry.id).await;
            return;
        };
        let (job_id, attempt) = (message.job_id, message.attempt);
        let current: Option<u64> = self
            .command(|mut c| async move { c.get(attempt_key(job_id)).await })
            .await;
        if current.is_some_and(|a| a != attempt) {
            // The server handed the job out again since: this attempt is void.
            self.ack(&entry.id).await;
            return;
        }
        if self.stop_asked(job_id, attempt).await {
            self.send(job_id, attempt, Report::Stopped, Vec::new())
                .await;
            self.ack(&entry.id).await;
            return;
        }
        let next: Option<usize> = self
            .command(|mut c| async move { c.get(next_image_key(job_id, attempt)).await })
            .await;
        let first_image = message.first_image.max(next.unwrap_or(0));
        // Listening before the job is queued: none of its events can pass unseen.
        let listening = (self.local.subscribe(), self.local.previews());
        match self.start_locally(&message, input, first_image).await {
            Ok(local) => {
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(Current {
                    job_id,
                    attempt,
                    local,
                });
                self.send(
                    job_id,
                    attempt,
                    Report::Started {
                        worker: self.name.clone(),
                    },
                    Vec::new(),
                )
                .await;
                self.follow(listening, &entry.id, job_id, attempt, local)
                    .await;
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
            Err(message) => {
                tracing::warn!("worker {}: job {job_id}: {message}", self.name);
                self.send(job_id, attempt, Report::Failed { message }, Vec::new())
                    .await;
            }
        }
        self.ack(&entry.id).await;
    }

    /// Plans the job with this host's models and queues it on the local thread.
    async fn start_locally(
        &self,
        message: &JobMessage,
        input: Option<Vec<u8>>,
        first_image: usize,
    ) -> Result<JobId, String> {
        let cannot = |why: String| format!("worker {} cannot run it: {why}", self.name);
        if let (Some(file), Some(bytes)) = (&message.input, input) {
            self.store
                .keep_input(&file.sha256, &bytes, &file.extension)
                .map_err(|e| cannot(e.to_string()))?;
        }
        let (request, preset, config, styles, local) = (
            message.request.clone(),
            self.preset.clone(),
            self.config.clone(),
            self.styles.clone(),
            self.local.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let planned = plan(&request, &preset, &config, &styles).map_err(|e| e.to_string())?;
            local
                .submit_from(planned, first_image)
                .map(|(id, _)| id)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| cannot(e.to_string()))?
        .map_err(cannot)
    }

    /// Sends the local job's events and previews as reports until it ends, renewing the claim.
    async fn follow(
        &self,
        (mut events, mut previews): (Receiver<Event>, PreviewReceiver),
        entry_id: &str,
        job_id: JobId,
        attempt: u64,
        local: JobId,
    ) {
        let mut renew = tokio::time::interval(self.visibility / 3);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(event) if event.job_id() == local => {
                        if self.forward(job_id, attempt, event).await {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!("worker {}: {missed} events of job {job_id} were missed", self.name);
                        if self.ended_unseen(job_id, attempt, local).await {
                            return;
                        }
                    }
                    Err(RecvError::Closed) => return,
                },
                changed = previews.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    let frame = previews.borrow_and_update().clone();
                    if let Some(frame) = frame.filter(|f| f.job_id == local) {
                        let report = Report::Preview { image: frame.image, step: frame.step };
                        self.send(job_id, attempt, report, frame.jpeg.clone()).await;
                    }
                },
                _ = renew.tick() => {
                    self.renew(entry_id).await;
                    if self.stop_asked(job_id, attempt).await {
                        self.local.stop(local);
                    }
                    if self.ended_unseen(job_id, attempt, local).await {
                        return;
                    }
                }
            }
        }
    }

    /// One local event as a report; whether it ended the job.
    async fn forward(&self, job_id: JobId, attempt: u64, event: Event) -> bool {
        let report = match &event {
            Event::Stage { text, .. } => Report::Stage { text: text.clone() },
            Event::Progress { progress, .. } => Report::Step {
                image: progress.image.saturating_sub(1),
                images: progress.images,
                step: progress.step.saturating_sub(1),
                steps: progress.steps,
            },
            Event::Image { image, .. } => {
                self.send_image(job_id, attempt, image).await;
                return false;
            }
            Event::Skipped { index, .. } => Report::Skipped { index: *index },
            Event::Done { images, .. } | Event::Stopped { images, .. } => {
                // An image event this listener missed (it fell behind) is sent now: its file is
                // still here, as only sent files are deleted.
                for image in images {
                    self.send_image(job_id, attempt, image).await;
                }
                if matches!(event, Event::Done { .. }) {
                    Report::Done
                } else {
                    Report::Stopped
                }
            }
            Event::Failed { message, .. } => Report::Failed {
                message: message.clone(),
            },
            Event::Queued { .. } | Event::Started { .. } => return false,
        };
        let ends = matches!(
            report,
            Report::Done | Report::Stopped | Report::Failed { .. }
        );
        self.send(job_id, attempt, report, Vec::new()).await;
        ends
    }

    /// Sends a finished image's file, then deletes it; nothing when it was sent before.
    async fn send_image(&self, job_id: JobId, attempt: u64, image: &JobImage) {
        let Ok(path) = self.store.resolve(&image.path) else {
            return;
        };
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!("worker {}: cannot read {}: {e}", self.name, path.display());
                return;
            }
        };
        let format = path
            .extension()
            .and_then(|e| e.to_str())
            .and_then(OutputFormat::from_extension)
            .unwrap_or_default();
        let report = Report::Image {
            index: image.index,
            seed: image.seed,
            format,
        };
        self.send(job_id, attempt, report, bytes).await;
        let _ = tokio::fs::remove_file(&path).await;
    }

    /// Sends a report, trying again until the broker takes it.
    async fn send(&self, job_id: JobId, attempt: u64, report: Report, bytes: Vec<u8>) {
        let envelope = Envelope {
            job_id,
            attempt,
            report,
            bytes,
        };
        let fields = envelope.fields();
        let _: String = self
            .command(|mut c| {
                let fields = fields.clone();
                async move { c.xadd(REPORTS, "*", &fields).await }
            })
            .await;
    }

    /// Claims the job's entry again, which resets its idle time.
    async fn renew(&self, entry_id: &str) {
        let options = StreamClaimOptions::default().with_justid();
        let renewed: redis::RedisResult<redis::Value> = self
            .conn
            .clone()
            .xclaim_options(JOBS, WORKERS_GROUP, &self.name, 0, &[entry_id], options)
            .await;
        if let Err(e) = renewed {
            tracing::warn!("broker {}: cannot renew the job's claim ({e})", self.url);
        }
    }

    /// Acknowledges the job's entry and deletes it (it carries the request and input image).
    async fn ack(&self, entry_id: &str) {
        let id = entry_id.to_owned();
        let _: i64 = self
            .command(|mut c| {
                let id = id.clone();
                async move { c.xack(JOBS, WORKERS_GROUP, &[id]).await }
            })
            .await;
        let _: i64 = self
            .command(|mut c| {
                let id = id.clone();
                async move { c.xdel(JOBS, &[id]).await }
            })
            .await;
    }

    /// Whether the server recorded Stop for this attempt of the job.
    async fn stop_asked(&self, job_id: JobId, attempt: u64) -> bool {
        let stopped: Option<u64> = self
            .command(|mut c| async move { c.get(stop_key(job_id)).await })
            .await;
        stopped == Some(attempt)
    }

    /// When the local job has ended though its end event was missed (this listener fell
    /// behind): sends its unsent images and its end, and says so.
    async fn ended_unseen(&self, job_id: JobId, attempt: u64, local: JobId) -> bool {
        let Some(status) = self.local.status(local).filter(|s| s.state.finished()) else {
            return false;
        };
        for image in &status.images {
            self.send_image(job_id, attempt, image).await;
        }
        let end = match status.state {
            JobState::Done => Report::Done,
            JobState::Stopped => Report::Stopped,
            _ => Report::Failed {
                message: status.error.unwrap_or_else(|| "the job failed".into()),
            },
        };
        self.send(job_id, attempt, end, Vec::new()).await;
        true
    }

    /// Runs `cmd` until the broker answers, waiting longer after each failure.
    async fn command<T, F>(&self, mut cmd: impl FnMut(ConnectionManager) -> F) -> T
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let mut wait = Duration::from_millis(100);
        loop {
            match cmd(self.conn.clone()).await {
                Ok(value) => return value,
                Err(e) => {
                    tracing::warn!("broker {}: {e}; trying again", self.url);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// Applies Stop and Skip from the server to the job running here, for as long as the host runs.
async fn follow_controls(url: String, current: Arc<Mutex<Option<Current>>>, local: Arc<Worker>) {
    let mut wait = Duration::from_millis(100);
    loop {
        let subscribed = async {
            let client = redis::Client::open(url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(CONTROL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        }
        .await;
        match subscribed {
            Ok(mut pubsub) => {
                wait = Duration::from_millis(100);
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    let Ok(text) = message.get_payload::<String>() else {
                        continue;
                    };
                    let Ok(control) = serde_json::from_str::<Control>(&text) else {
                        continue;
                    };
                    let here = *current.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(job) =
                        here.filter(|c| (c.job_id, c.attempt) == (control.job_id, control.attempt))
                    {
                        match control.action {
                            Action::Stop => local.stop(job.local),
                            Action::Skip => local.skip(job.local),
                        };
                    }
                }
            }
            Err(e) => {
                tracing::warn!("broker {url}: cannot follow Stop and Skip ({e}); trying again")
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_BACKOFF);
    }
}
