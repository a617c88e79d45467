//! The worker: one thread that owns the models (and so the GPU), fed by a bounded FIFO queue.
//! Clients submit validated plans and get a job id at once; the thread runs one job at a time,
//! broadcasts [`Event`]s and keeps only the newest [`PreviewFrame`] (a slow listener never holds
//! the thread up). A job that fails (or panics) is reported and the next one runs; loaded models
//! and merged LoRAs stay cached between jobs.
//!
//! * [`events`]: the events and preview frames; [`jobs`]: the job table;
//! * [`thread`]: the loop that runs jobs.

pub mod events;
pub mod jobs;
mod thread;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{broadcast, watch};

pub use events::{Event, JobId, JobImage, PreviewFrame};
pub use jobs::{JobState, JobStatus, Progress};

use crate::config::Config;
use crate::engine::device::Placement;
use crate::pipeline::plan::Plan;
use crate::pipeline::run::RunControl;
use crate::pipeline::styles::StyleLibrary;
use crate::store::OutputStore;
use jobs::{JobRecord, JobTable};

/// How many events a listener may fall behind before it misses some.
const EVENT_BUFFER: usize = 4096;

/// Why a job was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the queue is full ({0} jobs waiting): wait for a job to finish, or stop one, and submit again")]
    QueueFull(usize),
    #[error("the worker has stopped (it is shutting down): restart fooocus")]
    Closed,
}

/// What the worker needs besides the jobs.
pub struct WorkerSetup {
    pub config: Arc<Config>,
    pub styles: Arc<StyleLibrary>,
    pub store: Arc<OutputStore>,
    /// Where the models run and what stays resident.
    pub placement: Placement,
    /// Jobs that may wait in the queue (besides the running one).
    pub capacity: usize,
}

/// A job on its way to the thread.
pub(crate) struct QueuedJob {
    pub id: JobId,
    pub plan: Plan,
}

/// State shared by the handle and the thread.
pub(crate) struct Shared {
    pub jobs: Mutex<JobTable>,
    pub events: broadcast::Sender<Event>,
    pub previews: watch::Sender<Option<Arc<PreviewFrame>>>,
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

/// The handle to the worker thread; cheap to share behind an `Arc`.
pub struct Worker {
    tx: Mutex<Option<SyncSender<QueuedJob>>>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    capacity: usize,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Worker {
    /// Starts the thread.
    pub fn start(setup: WorkerSetup) -> std::io::Result<Self> {
        let capacity = setup.capacity.max(1);
        let (tx, rx) = sync_channel(capacity);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (previews, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            jobs: Mutex::new(JobTable::default()),
            events,
            previews,
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fooocus-worker".into())
            .spawn(move || thread::run(rx, thread_shared, setup))?;
        Ok(Worker {
            tx: Mutex::new(Some(tx)),
            shared,
            next_id: AtomicU64::new(1),
            capacity,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `plan`: its id and how many jobs are ahead of it.
    pub fn submit(&self, plan: Plan) -> Result<(JobId, usize), SubmitError> {
        let prompt = plan.prompt.clone();
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let tx = tx.as_ref().ok_or(SubmitError::Closed)?;
        // The table stays locked while sending, so the thread never sees a job it does not know.
        let mut jobs = self.shared.jobs();
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        match tx.try_send(QueuedJob { id, plan }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(SubmitError::QueueFull(self.capacity)),
            Err(TrySendError::Disconnected(_)) => return Err(SubmitError::Closed),
        }
        let position = jobs.ahead();
        jobs.queue.push_back(id);
        jobs.records.insert(
            id,
            JobRecord {
                status: JobStatus {
                    job_id: id,
                    state: JobState::Queued,
                    position: Some(position),
                    prompt,
                    progress: Progress::default(),
                    images: Vec::new(),
                    skipped: Vec::new(),
                    error: None,
                },
                control: Arc::new(RunControl::default()),
            },
        );
        jobs.prune();
        // Announced while the table is still locked: the thread announces `started` only after
        // taking the lock, so every listener sees `queued` first.
        self.shared.emit(Event::Queued {
            job_id: id,
            position,
        });
        drop(jobs);
        Ok((id, position))
    }

    /// The status of job `id`, if it is known.
    pub fn status(&self, id: JobId) -> Option<JobStatus> {
        self.shared.jobs().status(id)
    }

    /// The running job (first) and the queued ones, in order.
    pub fn queue(&self) -> Vec<JobStatus> {
        let jobs = self.shared.jobs();
        jobs.running
            .iter()
            .chain(jobs.queue.iter())
            .filter_map(|&id| jobs.status(id))
            .collect()
    }

    /// Stops job `id`: a running job ends after the current step, a queued one never starts.
    /// `None` when the job is unknown; `Some(false)` when it had already finished.
    pub fn stop(&self, id: JobId) -> Option<bool> {
        let mut jobs = self.shared.jobs();
        let record = jobs.records.get(&id)?;
        let state = record.status.state;
        record.control.stop();
        match state {
            JobState::Running => Some(true),
            JobState::Queued => {
                jobs.queue.retain(|&q| q != id);
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

    /// Closes the queue, stops the running and queued jobs and waits for the thread.
    pub fn shutdown(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        {
            let jobs = self.shared.jobs();
            for record in jobs.records.values() {
                record.control.stop();
            }
        }
        let ids: Vec<JobId> = self.shared.jobs().queue.iter().copied().collect();
        for id in ids {
            self.stop(id);
        }
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shutdown();
    }
}
