//! The jobs: one owner of the queue and the worker threads that own the models (one by default;
//! `--workers N` runs N, each with its own models). Clients submit validated plans and get a job
//! id once the job is recorded in the [`store::JobStore`] (SQLite in the server, [`sqlite`]);
//! the table ([`table`]) holds every job's state and the waiting jobs' order and plans: a free
//! worker takes the next job from there (woken by a condvar), so what `queue()` shows is what
//! runs. At start the store's jobs come back ([`restore`]): queued ones in their order, a job
//! that was running from its first image not yet saved. Each worker runs one job at a time; they
//! broadcast [`Event`]s, and the newest [`PreviewFrame`] is encoded on a thread of its own (a
//! slow listener never holds the models up).
//! A job that fails (or panics) is reported and the next one runs; loaded models and merged LoRAs
//! stay cached between jobs.
//!
//! Knows nothing of HTTP or sockets: the server turns these events and statuses into replies.

pub mod events;
mod preview;
mod restore;
pub mod sqlite;
pub mod store;
pub mod table;
mod thread;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::{broadcast, watch};

pub use events::{Event, JobId, JobImage, PreviewFrame, Progress};
pub use table::{JobState, JobStatus};

use crate::config::Config;
use crate::hub::HubClient;
use crate::pipeline::plan::Plan;
use crate::pipeline::request::GenerateRequest;
use crate::pipeline::run::RunControl;
use crate::pipeline::styles::StyleLibrary;
use crate::runtime::Placement;
use crate::store::OutputStore;
use store::{JobStore, MemoryStore, StoreFault};
use table::{JobRecord, JobTable, Waiting};

/// How many events a listener may fall behind before it misses some.
const EVENT_BUFFER: usize = 4096;

/// Why a job was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the queue is full ({0} jobs waiting): wait for a job to finish, or stop one, and submit again")]
    QueueFull(usize),
    #[error("the worker has stopped (it is shutting down): restart fooocus")]
    Closed,
    /// The job could not be recorded (or its input image kept), so it was not accepted.
    #[error("the job was not accepted: {0}")]
    Unrecorded(String),
}

/// What the workers need besides the jobs.
#[derive(Clone)]
pub struct WorkerSetup {
    pub config: Arc<Config>,
    pub styles: Arc<StyleLibrary>,
    pub store: Arc<OutputStore>,
    /// One worker thread per entry, taking jobs from the one queue with its own models there
    /// (`--devices cuda:0,cuda:1`, or `--workers N` copies of one placement); at least one.
    pub placements: Vec<Placement>,
    /// Jobs that may wait in the queue (besides the running one).
    pub capacity: usize,
    /// Fetches models a job needs on first use (the upscaler); `None`: downloads are off.
    pub hub: Option<HubClient>,
    /// What runs a job: [`local_pipeline`] here, the broker's dispatch when workers on other
    /// hosts run the jobs (the queue's benchmark passes one that makes nothing).
    pub pipeline: RunFn,
}

/// A job's run (job id, plan) over a worker's models, reporting as it goes.
pub type RunFn = Arc<
    dyn Fn(
            JobId,
            &Plan,
            &mut crate::pipeline::models::Models,
            &crate::pipeline::run::RunContext<'_>,
            &mut dyn FnMut(crate::pipeline::run::RunEvent<'_>),
        ) -> Result<crate::pipeline::run::RunOutcome, crate::pipeline::PipelineError>
        + Send
        + Sync,
>;

/// The pipeline run on this process' models.
pub fn local_pipeline() -> RunFn {
    Arc::new(|_, plan, models, ctx, on_event| {
        crate::pipeline::run::run(plan, models, ctx, on_event)
    })
}

/// State shared by the handle and the thread.
pub(crate) struct Shared {
    pub jobs: Mutex<JobTable>,
    /// Signalled when a job is queued or the table is closed.
    pub wake: Condvar,
    pub events: broadcast::Sender<Event>,
    pub previews: preview::PreviewEncoder,
}

impl Shared {
    pub fn jobs(&self) -> MutexGuard<'_, JobTable> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Broadcasts `event`; nobody listening is fine.
    pub fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }
}

/// The handle to the worker threads; cheap to share behind an `Arc`.
pub struct Worker {
    shared: Arc<Shared>,
    next_id: AtomicU64,
    capacity: usize,
    /// Where a job's input image is kept when it is accepted.
    outputs: Arc<OutputStore>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// Why the workers did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartFault {
    #[error("cannot start the worker threads: {0}")]
    Thread(#[from] std::io::Error),
    #[error("{0}")]
    Store(#[from] StoreFault),
}

/// Plans a stored job's request again (with the server's configuration), or says why not.
pub type Replan<'a> = &'a dyn Fn(&GenerateRequest) -> Result<Plan, String>;

impl Worker {
    /// Starts the threads, with jobs kept in memory only.
    pub fn start(setup: WorkerSetup) -> Result<Self, StartFault> {
        Self::start_with(setup, Box::new(MemoryStore), &|_| {
            Err("nothing to plan".into())
        })
    }

    /// Starts the threads with every job recorded in `journal`, after restoring the jobs it kept
    /// (planned again by `replan`): ids go on from the last one, queued jobs wait in their
    /// order, an interrupted job continues from its first image not yet finished.
    pub fn start_with(
        setup: WorkerSetup,
        journal: Box<dyn JobStore>,
        replan: Replan<'_>,
    ) -> Result<Self, StartFault> {
        let capacity = setup.capacity.max(1);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let mut table = JobTable::new(journal);
        let last_id = restore::restore(&mut table, &setup.store, replan)?;
        let shared = Arc::new(Shared {
            jobs: Mutex::new(table),
            wake: Condvar::new(),
            events,
            previews: preview::PreviewEncoder::start()?,
        });
        let worker = Worker {
            shared,
            next_id: AtomicU64::new(last_id + 1),
            capacity,
            outputs: setup.store.clone(),
            threads: Mutex::new(Vec::new()),
        };
        let placements = match setup.placements.as_slice() {
            [] => vec![Placement::cpu()],
            some => some.to_vec(),
        };
        for (index, placement) in placements.into_iter().enumerate() {
            let (thread_shared, thread_setup) = (worker.shared.clone(), setup.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("fooocus-worker-{index}"))
                .spawn(move || thread::run(thread_shared, thread_setup, index, placement));
            match spawned {
                Ok(handle) => worker.threads().push(handle),
                // The ones started are stopped and joined by `worker`'s drop.
                Err(e) => return Err(e.into()),
            }
        }
        Ok(worker)
    }

    /// Queues `plan` once it is recorded (its input image kept in the output folder): its id
    /// and how many jobs are ahead of it. Blocks on the disk: call it off the async threads.
    pub fn submit(&self, plan: Plan) -> Result<(JobId, usize), SubmitError> {
        self.submit_from(plan, 0)
    }

    /// [`Worker::submit`] for a job whose images before `first_image` were made elsewhere (a
    /// job a broker hands to this host after another host began it).
    pub fn submit_from(
        &self,
        plan: Plan,
        first_image: usize,
    ) -> Result<(JobId, usize), SubmitError> {
        if let Some(input) = plan.task.input() {
            self.outputs
                .keep_input(&input.sha256, &input.bytes, input.extension())
                .map_err(|e| SubmitError::Unrecorded(e.to_string()))?;
        }
        let mut jobs = self.shared.jobs();
        if jobs.closed {
            return Err(SubmitError::Closed);
        }
        if jobs.waiting.len() >= self.capacity {
            return Err(SubmitError::QueueFull(self.capacity));
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        jobs.journal
            .accepted(id, &plan)
            .map_err(|e| SubmitError::Unrecorded(e.to_string()))?;
        let position = jobs.ahead();
        let status = JobStatus {
            job_id: id,
            state: JobState::Queued,
            position: Some(position),
            prompt: plan.prompt.clone(),
            progress: Progress::waiting(plan.seeds.len(), plan.steps),
            images: Vec::new(),
            skipped: Vec::new(),
            error: None,
            started: None,
            worker: None,
        };
        let control = Arc::new(RunControl::default());
        jobs.records.insert(id, JobRecord { status, control });
        jobs.waiting.push_back(Waiting {
            id,
            plan,
            first_image,
        });
        jobs.prune();
        // Announced while the table is still locked: the thread announces `started` only after
        // taking the lock, so every listener sees `queued` first.
        self.shared.emit(Event::Queued {
            job_id: id,
            position,
        });
        drop(jobs);
        self.shared.wake.notify_all();
        Ok((id, position))
    }

    /// The status of job `id`, if it is known.
    pub fn status(&self, id: JobId) -> Option<JobStatus> {
        self.shared.jobs().status(id)
    }

    /// The running jobs (first, in the order they started) and the queued ones, in the order
    /// they will run.
    pub fn queue(&self) -> Vec<JobStatus> {
        let jobs = self.shared.jobs();
        jobs.running
            .iter()
            .copied()
            .chain(jobs.waiting_ids())
            .filter_map(|id| jobs.status(id))
            .collect()
    }

    /// Stops job `id`: a running job ends after the current step, a queued one leaves the queue
    /// and never starts. `None` when the job is unknown; `Some(false)` when it had already
    /// finished.
    pub fn stop(&self, id: JobId) -> Option<bool> {
        let mut jobs = self.shared.jobs();
        let record = jobs.records.get(&id)?;
        let state = record.status.state;
        record.control.stop();
        match state {
            JobState::Running => Some(true),
            JobState::Queued => {
                jobs.waiting.retain(|w| w.id != id);
                if !jobs.closed {
                    jobs.record(|store| store.ended(id, JobState::Stopped, None));
                }
                let images = match jobs.get_mut(id) {
                    Some(status) => {
                        status.state = JobState::Stopped;
                        status.images.clone()
                    }
                    None => Vec::new(),
                };
                drop(jobs);
                self.shared.emit(Event::Stopped { job_id: id, images });
                Some(true)
            }
            _ => Some(false),
        }
    }

    /// Skips the current image of job `id` (when it is running). `None` when unknown.
    pub fn skip(&self, id: JobId) -> Option<bool> {
        let jobs = self.shared.jobs();
        let record = jobs.records.get(&id)?;
        if record.status.state == JobState::Running {
            record.control.skip();
            Some(true)
        } else {
            Some(false)
        }
    }

    /// A new listener for the events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// A listener for the newest preview frame.
    pub fn previews(&self) -> watch::Receiver<Option<Arc<PreviewFrame>>> {
        self.shared.previews.subscribe()
    }

    /// Closes the queue, stops the running and queued jobs and waits for the threads. The store
    /// records none of them as stopped: they run again at the next start.
    pub fn shutdown(&self) {
        let ids = {
            let mut jobs = self.shared.jobs();
            jobs.closed = true;
            for record in jobs.records.values() {
                record.control.stop();
            }
            jobs.waiting_ids()
        };
        self.shared.wake.notify_all();
        for id in ids {
            self.stop(id);
        }
        let handles = std::mem::take(&mut *self.threads());
        for handle in handles {
            let _ = handle.join();
        }
    }
}

impl Worker {
    fn threads(&self) -> MutexGuard<'_, Vec<std::thread::JoinHandle<()>>> {
        self.threads.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shutdown();
    }
}
