//! The job table: every job's state, progress and images, the waiting jobs (order and plans, in
//! a [`QueueStore`]), the running ones, and each job's Stop/Skip control. Finished jobs are kept for
//! a while so clients can ask about them.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::events::{JobId, JobImage, Progress};
use super::store::QueueStore;
use crate::pipeline::run::RunControl;

/// How many finished jobs are remembered.
pub const KEEP_FINISHED: usize = 500;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Done,
    Stopped,
    Failed,
}

impl JobState {
    pub fn finished(self) -> bool {
        matches!(self, JobState::Done | JobState::Stopped | JobState::Failed)
    }
}

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
}

pub(crate) struct JobRecord {
    pub status: JobStatus,
    pub control: Arc<RunControl>,
}

/// All known jobs.
pub(crate) struct JobTable {
    pub records: BTreeMap<JobId, JobRecord>,
    /// The waiting jobs with their plans, first to run first.
    pub waiting: Box<dyn QueueStore>,
    /// The running jobs, in the order they started (one per worker at most).
    pub running: Vec<JobId>,
    /// Set at shutdown: nothing more is taken or accepted.
    pub closed: bool,
}

impl JobTable {
    pub fn new(waiting: Box<dyn QueueStore>) -> Self {
        Self {
            records: BTreeMap::new(),
            waiting,
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
            .ids()
            .iter()
            .position(|&q| q == id)
            .map(|p| p + self.running.len());
        Some(status)
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
