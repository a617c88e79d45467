//! Where waiting jobs are kept, in order, with their plans: the one place the queue lives. The
//! trait is what a durable store (an embedded database, Redis Streams) implements later; today
//! there is the in-memory one.

use std::collections::VecDeque;

use super::events::JobId;
use crate::pipeline::plan::Plan;

/// The waiting jobs, first to run first.
pub trait QueueStore: Send {
    /// Adds job `id` at the end.
    fn push(&mut self, id: JobId, plan: Plan);
    /// Takes the first job out.
    fn pop(&mut self) -> Option<(JobId, Plan)>;
    /// Takes job `id` out wherever it is; whether it was there.
    fn remove(&mut self, id: JobId) -> bool;
    /// The waiting ids, in order.
    fn ids(&self) -> Vec<JobId>;
    /// How many jobs wait.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The waiting jobs in memory: lost when the process ends.
#[derive(Default)]
pub struct MemoryQueue {
    jobs: VecDeque<(JobId, Plan)>,
}

impl QueueStore for MemoryQueue {
    fn push(&mut self, id: JobId, plan: Plan) {
        self.jobs.push_back((id, plan));
    }

    fn pop(&mut self) -> Option<(JobId, Plan)> {
        self.jobs.pop_front()
    }

    fn remove(&mut self, id: JobId) -> bool {
        let before = self.jobs.len();
        self.jobs.retain(|(queued, _)| *queued != id);
        self.jobs.len() != before
    }

    fn ids(&self) -> Vec<JobId> {
        self.jobs.iter().map(|(id, _)| *id).collect()
    }

    fn len(&self) -> usize {
        self.jobs.len()
    }
}
