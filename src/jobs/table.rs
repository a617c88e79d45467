//! The job table: every job's state, progress and images, the waiting jobs (in order, with their
//! plans), the running ones, each job's Stop/Skip control, and the [`JobStore`] every change is
//! recorded in. Finished jobs are kept for a while so clients can ask about them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

pub use super::events::JobState;
use super::events::{JobId, JobImage, Progress};
use super::store::{JobStore, StoreFault};
use crate::pipeline::plan::Plan;
use crate::pipeline::run::RunControl;

/// How many finished jobs are remembered.
pub const KEEP_FINISHED: usize = 500;

/// Where a job is, what it has made so far and how it ended.
#[derive(Debug, Clone)]
pub struct JobStatus {
    pub job_id: JobId,
    pub state: JobState,
    /// Jobs ahead of it while queued.
    pub position: Option<usize>,
    pub prompt: String,
    pub progress: Progress,
    pub images: Vec<JobImage>,
    /// 0-based indices of skipped images.
    pub skipped: Vec<usize>,
    pub error: Option<String>,
    /// When the worker took it.
    pub started: Option<std::time::Instant>,
    /// Who runs (or ran) it: the worker thread's number, or the worker host's name.
    pub worker: Option<String>,
}

pub(crate) struct JobRecord {
    pub status: JobStatus,
    pub control: Arc<RunControl>,
}

/// A job waiting for a worker.
pub(crate) struct Waiting {
    pub id: JobId,
    pub plan: Plan,
    /// The first image to make: images before it were finished before a restart.
    pub first_image: usize,
}

/// All known jobs.
pub(crate) struct JobTable {
    pub records: BTreeMap<JobId, JobRecord>,
    /// The waiting jobs with their plans, first to run first.
    pub waiting: VecDeque<Waiting>,
    /// Where every change is recorded.
    pub journal: Box<dyn JobStore>,
    /// The running jobs, in the order they started (one per worker at most).
    pub running: Vec<JobId>,
    /// Set at shutdown: nothing more is taken or accepted.
    pub closed: bool,
}

impl JobTable {
    pub fn new(journal: Box<dyn JobStore>) -> Self {
        Self {
            records: BTreeMap::new(),
            waiting: VecDeque::new(),
            journal,
            running: Vec::new(),
            closed: false,
        }
    }

    /// How many jobs are ahead of a job added now.
    pub fn ahead(&self) -> usize {
        self.waiting.len() + self.running.len()
    }

    /// The status of `id`, with its current queue position.
    pub fn status(&self, id: JobId) -> Option<JobStatus> {
        let record = self.records.get(&id)?;
        let mut status = record.status.clone();
        status.position = self
            .waiting
            .iter()
            .position(|w| w.id == id)
            .map(|p| p + self.running.len());
        Some(status)
    }

    /// The waiting ids, in order.
    pub fn waiting_ids(&self) -> Vec<JobId> {
        self.waiting.iter().map(|w| w.id).collect()
    }

    /// Records a change with `write`; a store that fails is logged and the work goes on.
    pub fn record(&mut self, write: impl FnOnce(&mut dyn JobStore) -> Result<(), StoreFault>) {
        if let Err(e) = write(self.journal.as_mut()) {
            tracing::warn!("{e}");
        }
    }

    pub fn get_mut(&mut self, id: JobId) -> Option<&mut JobStatus> {
        self.records.get_mut(&id).map(|r| &mut r.status)
    }

    /// Forgets the oldest finished jobs beyond [`KEEP_FINISHED`].
    pub fn prune(&mut self) {
        let finished: Vec<JobId> = self
            .records
            .iter()
            .filter(|(_, r)| r.status.state.finished())
            .map(|(&id, _)| id)
            .collect();
        if finished.len() > KEEP_FINISHED {
            for id in &finished[..finished.len() - KEEP_FINISHED] {
                self.records.remove(id);
            }
        }
    }
}
