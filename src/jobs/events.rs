//! What the worker tells its listeners: events (queued, started, stage, progress, image,
//! skipped, done, stopped, failed) and the newest step preview as a JPEG frame. How they look on
//! a wire is the server's business (`server::fooocus::wire`).

use crate::store::ImageMetadata;

/// A job's number, unique for the life of the process.
pub type JobId = u64;

/// One finished image of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobImage {
    /// Index in the job's batch (0-based).
    pub index: usize,
    pub seed: u64,
    /// Its path relative to the output root, `YYYY-MM-DD/<file>`.
    pub path: String,
}

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

/// The last progress of a running job (1-based image and step).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub image: usize,
    pub images: usize,
    pub step: usize,
    pub steps: usize,
    pub percent: u32,
    pub text: String,
}

impl Progress {
    /// Before the first step: image 1 of `images`, step 0 of `steps`.
    pub fn waiting(images: usize, steps: usize) -> Self {
        Progress {
            image: 1,
            images,
            step: 0,
            steps,
            percent: 0,
            text: String::new(),
        }
    }
}

/// A broadcast event.
#[derive(Debug, Clone)]
pub enum Event {
    /// A job entered the queue with `position` jobs ahead of it.
    Queued { job_id: JobId, position: usize },
    /// Worker `worker` (0-based) took the job.
    Started { job_id: JobId, worker: usize },
    /// A preparation stage ("Loading …", "Encoding prompts …", "Saving image …").
    Stage { job_id: JobId, text: String },
    /// A sampling step finished. `image` and `step` are 1-based, as in `text`.
    Progress { job_id: JobId, progress: Progress },
    /// An image was saved.
    Image {
        job_id: JobId,
        image: JobImage,
        /// The generation parameters embedded in the file, when it has them.
        parameters: Option<Box<ImageMetadata>>,
    },
    /// Skip abandoned image `index` (0-based).
    Skipped { job_id: JobId, index: usize },
    /// The job finished; `images` are all it saved.
    Done {
        job_id: JobId,
        images: Vec<JobImage>,
    },
    /// Stop ended the job (or removed it from the queue); finished images are kept.
    Stopped {
        job_id: JobId,
        images: Vec<JobImage>,
    },
    /// The job failed; the worker goes on with the next.
    Failed { job_id: JobId, message: String },
}

impl Event {
    /// The job the event is about.
    pub fn job_id(&self) -> JobId {
        match self {
            Event::Queued { job_id, .. }
            | Event::Started { job_id, .. }
            | Event::Stage { job_id, .. }
            | Event::Progress { job_id, .. }
            | Event::Image { job_id, .. }
            | Event::Skipped { job_id, .. }
            | Event::Done { job_id, .. }
            | Event::Stopped { job_id, .. }
            | Event::Failed { job_id, .. } => *job_id,
        }
    }
}

/// The newest step preview.
#[derive(Debug, Clone)]
pub struct PreviewFrame {
    pub job_id: JobId,
    /// 1-based image and step, as in the progress event.
    pub image: usize,
    pub step: usize,
    /// JPEG bytes, at most 512 px on the longest side.
    pub jpeg: Vec<u8>,
}

/// `"Sampling step k/N, image i/M"`, as the original says it.
pub fn progress_text(step: usize, steps: usize, image: usize, images: usize) -> String {
    format!("Sampling step {step}/{steps}, image {image}/{images}")
}

/// Percent of all sampling steps of the job done after 1-based `step` of 1-based `image`.
pub fn percent(step: usize, steps: usize, image: usize, images: usize) -> u32 {
    let total = steps.saturating_mul(images).max(1);
    let done = image
        .saturating_sub(1)
        .saturating_mul(steps)
        .saturating_add(step)
        .min(total);
    (done * 100 / total) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_like_the_original() {
        assert_eq!(
            progress_text(12, 30, 1, 2),
            "Sampling step 12/30, image 1/2"
        );
        assert_eq!(percent(15, 30, 1, 2), 25);
        assert_eq!(percent(30, 30, 2, 2), 100);
        assert_eq!(percent(0, 0, 0, 0), 0);
    }
}
