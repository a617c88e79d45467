//! Where jobs are recorded so that they outlive the process: the [`JobStore`] trait (what is
//! written as a job moves, and what is read back at start), the in-memory store that records
//! nothing, and [`StoredJob`], a job as read back. The SQLite store is in [`super::sqlite`];
//! the table and the threads call the trait only.

use super::events::{JobId, JobImage, JobState};
use crate::pipeline::plan::Plan;
use crate::pipeline::request::GenerateRequest;

/// A job store that cannot write or read: the message names the file and what failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreFault(pub String);

/// A job as the store kept it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredJob {
    pub id: JobId,
    /// The request that plans the job again (every field explicit, the seed fixed).
    pub request: GenerateRequest,
    pub state: JobState,
    /// The images saved, by index.
    pub images: Vec<JobImage>,
    /// Images whose file name was chosen but whose save was not recorded: a crash came between
    /// (the file may or may not have been written).
    pub pending: Vec<JobImage>,
    pub skipped: Vec<usize>,
    pub error: Option<String>,
}

/// What the jobs record as they move. Only [`JobStore::accepted`] must succeed before a job is
/// answered; a later write that fails is logged and the work goes on.
pub trait JobStore: Send {
    /// A job was accepted with `plan`, behind every job accepted before.
    fn accepted(&mut self, id: JobId, plan: &Plan) -> Result<(), StoreFault>;
    /// A worker took the job.
    fn started(&mut self, id: JobId) -> Result<(), StoreFault>;
    /// Image `image.index` is about to be written to `image.path`.
    fn saving(&mut self, id: JobId, image: &JobImage) -> Result<(), StoreFault>;
    /// Image `image.index` was written.
    fn saved(&mut self, id: JobId, image: &JobImage) -> Result<(), StoreFault>;
    /// Skip abandoned image `index`.
    fn skipped(&mut self, id: JobId, index: usize) -> Result<(), StoreFault>;
    /// The job ended (done, stopped or failed).
    fn ended(&mut self, id: JobId, state: JobState, error: Option<&str>) -> Result<(), StoreFault>;
    /// Every job kept, in the order they were accepted; finished ones beyond the newest `keep`
    /// are forgotten (their images stay in the output folder).
    fn restore(&mut self, keep: usize) -> Result<Vec<StoredJob>, StoreFault>;
    /// The highest job id ever recorded, even in a row that cannot be read (0 when none).
    fn last_id(&self) -> Result<JobId, StoreFault>;
}

/// Records nothing: jobs live as long as the process.
#[derive(Default)]
pub struct MemoryStore;

impl JobStore for MemoryStore {
    fn accepted(&mut self, _: JobId, _: &Plan) -> Result<(), StoreFault> {
        Ok(())
    }
    fn started(&mut self, _: JobId) -> Result<(), StoreFault> {
        Ok(())
    }
    fn saving(&mut self, _: JobId, _: &JobImage) -> Result<(), StoreFault> {
        Ok(())
    }
    fn saved(&mut self, _: JobId, _: &JobImage) -> Result<(), StoreFault> {
        Ok(())
    }
    fn skipped(&mut self, _: JobId, _: usize) -> Result<(), StoreFault> {
        Ok(())
    }
    fn ended(&mut self, _: JobId, _: JobState, _: Option<&str>) -> Result<(), StoreFault> {
        Ok(())
    }
    fn restore(&mut self, _: usize) -> Result<Vec<StoredJob>, StoreFault> {
        Ok(Vec::new())
    }
    fn last_id(&self) -> Result<JobId, StoreFault> {
        Ok(0)
    }
}
