//! The server's side: a job's run hands the job to the workers' stream and waits for their
//! reports, which one reader task takes from the reports stream and routes to the waiting run
//! (by job). Finished images are saved here, byte for byte, once per index; Stop and Skip go to
//! the worker by pub/sub. A broker that goes away is waited for, with backoff: nothing is lost,
//! since the reports stay in the stream until they are acknowledged.

use std::collections::{BTreeSet, HashMap};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;

use super::wire::{
    attempt_key, connect, ensure_group, next_image_key, stop_key, Action, BrokerError, Control,
    Envelope, InputFile, JobMessage, Report, CONTROL, JOBS, REPORTS, SERVER_GROUP, WORKERS_GROUP,
};
use crate::imaging::{decode_image, DecodeLimits};
use crate::jobs::{JobId, RunFn};
use crate::pipeline::meta::request_of_plan;
use crate::pipeline::plan::{Plan, MAX_RESIZE_SIDE};
use crate::pipeline::run::{
    Evaluations, ImageResult, RunContext, RunControl, RunEvent, RunOutcome,
};
use crate::pipeline::PipelineError;

/// How often a waiting run looks at Stop and Skip.
const LOOK_EVERY: Duration = Duration::from_millis(200);
/// The longest wait between two tries while the broker is away.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Bounds on a finished image from a worker.
const RESULT_LIMITS: DecodeLimits = DecodeLimits {
    max_side: MAX_RESIZE_SIDE,
    max_bytes: 512 << 20,
};

type Routes = Arc<Mutex<HashMap<JobId, mpsc::Sender<Envelope>>>>;

/// A command on its way to the broker.
type Pending<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = redis::RedisResult<T>> + Send>>;

/// The server's connection to the broker.
pub struct Dispatch {
    url: String,
    runtime: tokio::runtime::Handle,
    conn: ConnectionManager,
    routes: Routes,
}

impl Dispatch {
    /// Connects to `url`, makes the streams and groups, and starts reading the reports. Call
    /// inside a tokio runtime.
    pub async fn start(url: &str) -> Result<Arc<Dispatch>, BrokerError> {
        let mut conn = connect(url).await?;
        ensure_group(&mut conn, url, JOBS, WORKERS_GROUP).await?;
        ensure_group(&mut conn, url, REPORTS, SERVER_GROUP).await?;
        // Blocking reads get a connection of their own: they would hold up every other command.
        let reader = connect(url).await?;
        let routes = Routes::default();
        tokio::spawn(read_reports(url.to_owned(), reader, routes.clone()));
        Ok(Arc::new(Dispatch {
            url: url.to_owned(),
            runtime: tokio::runtime::Handle::current(),
            conn,
            routes,
        }))
    }

    /// The jobs' pipeline: each job run by a worker host.
    pub fn pipeline(self: &Arc<Self>) -> RunFn {
        let dispatch = self.clone();
        Arc::new(move |id, plan, _models, ctx, on_event| dispatch.run(id, plan, ctx, on_event))
    }

    /// Runs `cmd` until the broker answers, waiting longer after each failure; `None` once
    /// `control` says Stop (a stopped job does not wait for a broker that is away).
    fn retry<T>(
        &self,
        what: &str,
        control: &RunControl,
        mut cmd: impl FnMut(ConnectionManager) -> Pending<T>,
    ) -> Option<T> {
        let mut wait = Duration::from_millis(100);
        loop {
            match self.runtime.block_on(cmd(self.conn.clone())) {
                Ok(value) => return Some(value),
                Err(e) => {
                    tracing::warn!("broker {}: cannot {what} ({e}); trying again", self.url);
                    if control.stopped() {
                        return None;
                    }
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Runs `cmd` once; a failure is logged (for what may be lost: a Skip, a cleanup).
    fn once<T>(&self, what: &str, cmd: Pending<T>) -> Option<T> {
        self.runtime
            .block_on(cmd)
            .map_err(|e| tracing::warn!("broker {}: cannot {what} ({e})", self.url))
            .ok()
    }

    /// Hands job `id` to the workers and follows it to its end.
    fn run(
        &self,
        id: JobId,
        plan: &Plan,
        ctx: &RunContext<'_>,
        on_event: &mut dyn FnMut(RunEvent<'_>),
    ) -> Result<RunOutcome, PipelineError> {
        let (sender, reports) = mpsc::channel();
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, sender);
        let result = match self.hand_out(id, plan, ctx) {
            // Stopped while the broker was away: nothing was handed out.
            None => Ok(RunOutcome {
                stopped: true,
                ..RunOutcome::default()
            }),
            Some(attempt) => {
                on_event(RunEvent::Stage("Waiting for a worker".into()));
                let mut follow = Following {
                    dispatch: self,
                    id,
                    attempt,
                    ctx,
                    images: plan.seeds.len(),
                    saved: (0..ctx.first_image).collect(),
                    outcome: RunOutcome::default(),
                    started: false,
                    stop_asked: None,
                };
                let result = follow.until_end(&reports, on_event);
                let keys = [next_image_key(id, attempt), stop_key(id)];
                let _: Option<i64> = self.once(
                    "forget the job's keys",
                    Box::pin({
                        let mut c = self.conn.clone();
                        async move { c.del(&keys).await }
                    }),
                );
                result
            }
        };
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        result
    }

    /// Puts job `id` on the jobs stream under a new attempt; the attempt (`None`: Stop came
    /// while the broker was away).
    fn hand_out(&self, id: JobId, plan: &Plan, ctx: &RunContext<'_>) -> Option<u64> {
        let attempt: u64 = self.retry("count the job's attempts", ctx.control, |mut c| {
            Box::pin(async move { c.incr(attempt_key(id), 1u64).await })
        })?;
        let input = plan.task.input();
        let message = JobMessage {
            job_id: id,
            attempt,
            request: request_of_plan(plan),
            first_image: ctx.first_image,
            input: input.map(|i| InputFile {
                sha256: i.sha256.clone(),
                extension: i.extension().to_owned(),
            }),
        };
        let fields = message.fields(input.map(|i| i.bytes.as_slice()));
        let _: String = self.retry("queue the job", ctx.control, |mut c| {
            let fields = fields.clone();
            Box::pin(async move { c.xadd(JOBS, "*", &fields).await })
        })?;
        Some(attempt)
    }

    /// Tells the workers, once, by pub/sub.
    fn publish(&self, control: Control) {
        let Ok(text) = serde_json::to_string(&control) else {
            return;
        };
        let mut c = self.conn.clone();
        let _: Option<()> = self.once(
            "send Stop or Skip",
            Box::pin(async move { c.publish(CONTROL, text).await }),
        );
    }

    /// Makes every attempt of job `id` handed out so far void (a worker drops such an entry).
    fn void(&self, id: JobId) {
        let mut c = self.conn.clone();
        let _: Option<u64> = self.once(
            "void the job's attempt",
            Box::pin(async move { c.incr(attempt_key(id), 1u64).await }),
        );
    }

    /// Stops attempt `attempt` of job `id`: recorded in its stop key (a worker that takes the
    /// job, or missed the message, reads it) and published to the worker running it.
    fn stop(&self, id: JobId, attempt: u64) {
        let mut c = self.conn.clone();
        let _: Option<()> = self.once(
            "record Stop",
            Box::pin(async move { c.set(stop_key(id), attempt).await }),
        );
        self.publish(Control {
            job_id: id,
            attempt,
            action: Action::Stop,
        });
    }
}

/// How long a stopped job waits for its worker to confirm before it is ended here anyway.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// One job's run, as its reports arrive.
struct Following<'a, 'c> {
    dispatch: &'a Dispatch,
    id: JobId,
    attempt: u64,
    ctx: &'a RunContext<'c>,
    /// How many images the job makes.
    images: usize,
    /// Indices finished (saved here, or before `first_image`).
    saved: BTreeSet<usize>,
    outcome: RunOutcome,
    /// Whether a worker has taken the job.
    started: bool,
    /// When Stop was passed on.
    stop_asked: Option<Instant>,
}

impl Following<'_, '_> {
    fn until_end(
        &mut self,
        reports: &mpsc::Receiver<Envelope>,
        on_event: &mut dyn FnMut(RunEvent<'_>),
    ) -> Result<RunOutcome, PipelineError> {
        loop {
            if let Some(end) = self.pass_on_controls() {
                return end;
            }
            let envelope = match reports.recv_timeout(LOOK_EVERY) {
                Ok(envelope) => envelope,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(PipelineError::Other("the broker connection ended".into()))
                }
            };
            if envelope.attempt != self.attempt {
                continue;
            }
            if let Some(end) = self.on_report(envelope, on_event) {
                return end;
            }
        }
    }

    /// Passes Stop and Skip on; the run's end when Stop needs no worker's answer (no worker
    /// took the job yet) or its worker did not answer in time.
    fn pass_on_controls(&mut self) -> Option<Result<RunOutcome, PipelineError>> {
        let mut stopped = || {
            Some(Ok(RunOutcome {
                stopped: true,
                ..std::mem::take(&mut self.outcome)
            }))
        };
        match self.stop_asked {
            Some(asked) if asked.elapsed() > STOP_GRACE => return stopped(),
            Some(_) => return None,
            None => {}
        }
        if self.ctx.control.stopped() {
            self.stop_asked = Some(Instant::now());
            self.dispatch.stop(self.id, self.attempt);
            if !self.started {
                // Its entry may still wait in the stream: a worker taking it finds it void.
                self.dispatch.void(self.id);
                return stopped();
            }
        } else if self.ctx.control.take_skip() {
            self.dispatch.publish(Control {
                job_id: self.id,
                attempt: self.attempt,
                action: Action::Skip,
            });
        }
        None
    }

    /// One report → run events; the run's end when it ends it.
    fn on_report(
        &mut self,
        envelope: Envelope,
        on_event: &mut dyn FnMut(RunEvent<'_>),
    ) -> Option<Result<RunOutcome, PipelineError>> {
        match envelope.report {
            Report::Started { worker } => {
                self.started = true;
                on_event(RunEvent::Worker(worker));
            }
            Report::Stage { text } => on_event(RunEvent::Stage(text)),
            Report::ImageStarted { index, images } => {
                on_event(RunEvent::ImageStarted { index, images })
            }
            Report::Step {
                image,
                images,
                step,
                steps,
            } => on_event(RunEvent::Step {
                image,
                images,
                step,
                steps,
                denoised: None,
            }),
            Report::Preview { image, step } => on_event(RunEvent::Preview {
                image,
                step,
                jpeg: &envelope.bytes,
            }),
            Report::Image {
                index,
                seed,
                format,
            } => {
                if index >= self.images {
                    tracing::warn!(
                        "job {}: a worker sent image {index} of {}",
                        self.id,
                        self.images
                    );
                } else if let Err(e) = self.save(index, seed, format, &envelope.bytes, on_event) {
                    self.dispatch.stop(self.id, self.attempt);
                    return Some(Err(e));
                }
            }
            Report::Skipped { index } if index < self.images => {
                self.outcome.skipped.push(index);
                on_event(RunEvent::Skipped { index });
            }
            Report::Skipped { .. } => {}
            Report::Done => return Some(Ok(std::mem::take(&mut self.outcome))),
            Report::Stopped => {
                self.outcome.stopped = true;
                return Some(Ok(std::mem::take(&mut self.outcome)));
            }
            Report::Failed { message } => return Some(Err(PipelineError::Other(message))),
        }
        None
    }

    /// Saves image `index` from its file's bytes, unless it was saved before; records it as
    /// the job's progress for a worker that takes the job over.
    fn save(
        &mut self,
        index: usize,
        seed: u64,
        format: crate::store::OutputFormat,
        bytes: &[u8],
        on_event: &mut dyn FnMut(RunEvent<'_>),
    ) -> Result<(), PipelineError> {
        if self.saved.contains(&index) {
            return Ok(());
        }
        let pixels = decode_image(bytes, RESULT_LIMITS)
            .map_err(|e| PipelineError::Other(format!("a worker sent an unreadable image: {e}")))?;
        let mut announce = |relative: &str| on_event(RunEvent::Saving { index, relative });
        let saved = self
            .ctx
            .store
            .save_encoded(bytes, &pixels, format, &mut announce)?;
        self.saved.insert(index);
        on_event(RunEvent::Saved {
            index,
            seed,
            image: &saved,
        });
        let next = self.saved.iter().max().map_or(0, |i| i + 1);
        let key = next_image_key(self.id, self.attempt);
        let _: Option<()> =
            self.dispatch
                .retry("record the job's progress", self.ctx.control, |mut c| {
                    let key = key.clone();
                    Box::pin(async move { c.set(key, next).await })
                });
        self.outcome.images.push(ImageResult {
            index,
            seed,
            saved,
            evaluations: Evaluations::default(),
        });
        Ok(())
    }
}

/// Reads the reports stream for as long as the server runs, routing each report to its job's
/// run and acknowledging (and deleting) it once routed.
async fn read_reports(url: String, mut conn: ConnectionManager, routes: Routes) {
    let options = StreamReadOptions::default()
        .group(SERVER_GROUP, "server")
        .count(64)
        .block(1000);
    let mut wait = Duration::from_millis(100);
    loop {
        let reply: redis::RedisResult<StreamReadReply> =
            conn.xread_options(&[REPORTS], &[">"], &options).await;
        let reply = match reply {
            Ok(reply) => {
                wait = Duration::from_millis(100);
                reply
            }
            Err(e) => {
                tracing::warn!(
                    "broker {url}: cannot read the workers' reports ({e}); trying again"
                );
                // A restarted broker may have lost the group: make it again.
                let _ = ensure_group(&mut conn, &url, REPORTS, SERVER_GROUP).await;
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        for key in reply.keys {
            for entry in key.ids {
                if let Some(envelope) = Envelope::from_entry(&entry) {
                    let route = routes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&envelope.job_id)
                        .cloned();
                    if let Some(route) = route {
                        let _ = route.send(envelope);
                    }
                } else {
                    tracing::warn!("broker {url}: a report this version cannot read, dropped");
                }
                let acked: redis::RedisResult<()> = async {
                    let _: i64 = conn.xack(REPORTS, SERVER_GROUP, &[&entry.id]).await?;
                    let _: i64 = conn.xdel(REPORTS, &[&entry.id]).await?;
                    Ok(())
                }
                .await;
                if let Err(e) = acked {
                    tracing::warn!("broker {url}: cannot acknowledge a report ({e})");
                }
            }
        }
    }
}
