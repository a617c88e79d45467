//! What the page reads, as serde structs: the replies of its API and the WebSocket's event
//! messages, written down here field by field rather than assembled from `json!` in the
//! handlers, and kept apart from the jobs' own types (which know no wire format).

use serde::Serialize;

use crate::jobs::{Event, JobId, JobImage, JobState, JobStatus, Progress};
use crate::store::{HistoryDay, ImageMetadata};

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Queued,
    Running,
    Done,
    Stopped,
    Failed,
}

impl From<JobState> for State {
    fn from(state: JobState) -> Self {
        match state {
            JobState::Queued => State::Queued,
            JobState::Running => State::Running,
            JobState::Done => State::Done,
            JobState::Stopped => State::Stopped,
            JobState::Failed => State::Failed,
        }
    }
}

/// One finished image of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Image {
    /// Index in the job's batch (0-based).
    pub index: usize,
    pub seed: u64,
    /// Where to fetch it, relative to the page: `outputs/YYYY-MM-DD/<file>`.
    pub url: String,
    /// Its path relative to the output root, `YYYY-MM-DD/<file>`.
    pub path: String,
    /// Its thumbnail (JPEG, ≤ 256 px), relative to the page: `thumbs/YYYY-MM-DD/<file>`.
    pub thumb: String,
}

impl From<JobImage> for Image {
    fn from(image: JobImage) -> Self {
        Image {
            index: image.index,
            seed: image.seed,
            url: format!("outputs/{}", image.path),
            thumb: format!("thumbs/{}", image.path),
            path: image.path,
        }
    }
}

fn images(images: Vec<JobImage>) -> Vec<Image> {
    images.into_iter().map(Image::from).collect()
}

/// The last progress of a running job (1-based image and step).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Steps {
    pub image: usize,
    pub images: usize,
    pub step: usize,
    pub steps: usize,
    pub percent: u32,
    pub text: String,
}

impl From<Progress> for Steps {
    fn from(p: Progress) -> Self {
        Steps {
            image: p.image,
            images: p.images,
            step: p.step,
            steps: p.steps,
            percent: p.percent,
            text: p.text,
        }
    }
}

/// `GET /api/jobs/{id}`, and each job of the queue.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub job_id: JobId,
    pub state: State,
    /// Jobs ahead of it while queued.
    pub position: Option<usize>,
    pub prompt: String,
    pub progress: Steps,
    pub images: Vec<Image>,
    /// 0-based indices of skipped images.
    pub skipped: Vec<usize>,
    pub error: Option<String>,
    /// Who runs (or ran) it: a worker thread's number, or a worker host's name (`--broker`).
    pub worker: Option<String>,
}

impl From<JobStatus> for Status {
    fn from(s: JobStatus) -> Self {
        Status {
            job_id: s.job_id,
            state: s.state.into(),
            position: s.position,
            prompt: s.prompt,
            progress: s.progress.into(),
            images: images(s.images),
            skipped: s.skipped,
            error: s.error,
            worker: s.worker,
        }
    }
}

/// A WebSocket text frame: JSON with a `type` tag.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// The first frame: the running and queued jobs.
    Hello { queue: Vec<Status> },
    /// The socket fell behind and `missed` events were dropped.
    Lagged { missed: u64 },
    /// The binary frame that follows is the preview of step `step` of image `image` (1-based)
    /// of job `job_id` (several jobs preview at once with `--workers`).
    Preview {
        job_id: JobId,
        image: usize,
        step: usize,
    },
    /// A job entered the queue with `position` jobs ahead of it.
    Queued { job_id: JobId, position: usize },
    /// The worker took the job.
    Started { job_id: JobId, worker: usize },
    /// A preparation stage ("Loading …", "Encoding prompts …", "Saving image …").
    Stage { job_id: JobId, text: String },
    /// A sampling step finished. `image` and `step` are 1-based, as in `text`.
    Progress {
        job_id: JobId,
        #[serde(flatten)]
        steps: Steps,
    },
    /// An image was saved, with the generation parameters embedded in it, when it has them.
    Image {
        job_id: JobId,
        #[serde(flatten)]
        image: Image,
        parameters: Option<Box<ImageMetadata>>,
    },
    /// Skip abandoned image `index` (0-based).
    Skipped { job_id: JobId, index: usize },
    /// The job finished; `images` are all it saved.
    Done { job_id: JobId, images: Vec<Image> },
    /// Stop ended the job (or removed it from the queue); finished images are kept.
    Stopped { job_id: JobId, images: Vec<Image> },
    /// The job failed; the worker goes on with the next.
    Failed { job_id: JobId, message: String },
}

impl From<Event> for Message {
    fn from(event: Event) -> Self {
        match event {
            Event::Queued { job_id, position } => Message::Queued { job_id, position },
            Event::Started { job_id, worker } => Message::Started { job_id, worker },
            Event::Stage { job_id, text } => Message::Stage { job_id, text },
            Event::Progress { job_id, progress } => Message::Progress {
                job_id,
                steps: progress.into(),
            },
            Event::Image {
                job_id,
                image,
                parameters,
            } => Message::Image {
                job_id,
                image: image.into(),
                parameters,
            },
            Event::Skipped { job_id, index } => Message::Skipped { job_id, index },
            Event::Done { job_id, images: i } => Message::Done {
                job_id,
                images: images(i),
            },
            Event::Stopped { job_id, images: i } => Message::Stopped {
                job_id,
                images: images(i),
            },
            Event::Failed { job_id, message } => Message::Failed { job_id, message },
        }
    }
}

/// `POST /api/generate`.
#[derive(Debug, Serialize)]
pub struct Submitted {
    pub job_id: JobId,
    /// Jobs ahead of it.
    pub position: usize,
    /// One seed per image.
    pub seeds: Vec<u64>,
}

/// `POST /api/jobs/{id}/stop` and `…/skip`.
#[derive(Debug, Serialize)]
pub struct Control {
    pub job_id: JobId,
    /// Whether it changed anything (false: the job had finished, or was not running).
    pub applied: bool,
}

/// `GET /api/queue`: the running job first, then the waiting ones in the order they will run.
#[derive(Debug, Serialize)]
pub struct Queue {
    pub jobs: Vec<Status>,
}

/// `GET /api/history`.
#[derive(Debug, Serialize)]
pub struct History {
    pub days: Vec<Day>,
    /// Whether days before the last one listed hold images (ask with `before`).
    pub more: bool,
}

/// One day of saved images, newest first.
#[derive(Debug, Serialize)]
pub struct Day {
    pub date: String,
    /// The day's log page.
    pub log: String,
    pub images: Vec<SavedImage>,
}

/// One saved image.
#[derive(Debug, Serialize)]
pub struct SavedImage {
    pub url: String,
    /// Its thumbnail (JPEG, ≤ 256 px): `thumbs/YYYY-MM-DD/<file>`.
    pub thumb: String,
    pub path: String,
    pub file_name: String,
    pub metadata: Option<ImageMetadata>,
}

impl From<HistoryDay> for Day {
    fn from(day: HistoryDay) -> Self {
        let images = day
            .images
            .into_iter()
            .map(|image| SavedImage {
                url: format!("outputs/{}", image.path),
                thumb: format!("thumbs/{}", image.path),
                path: image.path,
                file_name: image.file_name,
                metadata: image.metadata,
            })
            .collect();
        Day {
            log: format!("outputs/{}/log.html", day.date),
            date: day.date,
            images,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events go out tagged with their type, an image's fields flattened beside the job id and
    /// its URL made from its path.
    #[test]
    fn events_serialize_with_a_type_tag() {
        let event = Event::Image {
            job_id: 3,
            image: JobImage {
                index: 0,
                seed: 7,
                path: "2024-01-01/a.png".into(),
            },
            parameters: None,
        };
        let v = serde_json::to_value(Message::from(event)).unwrap();
        assert_eq!(v["type"], "image");
        assert_eq!(v["url"], "outputs/2024-01-01/a.png");
        assert_eq!(v["path"], "2024-01-01/a.png");
        assert_eq!(v["job_id"], 3);
        let lagged = serde_json::to_value(Message::Lagged { missed: 2 }).unwrap();
        assert_eq!(lagged, serde_json::json!({ "type": "lagged", "missed": 2 }));
        let preview = Message::Preview {
            job_id: 4,
            image: 1,
            step: 3,
        };
        assert_eq!(
            serde_json::to_value(preview).unwrap(),
            serde_json::json!({ "type": "preview", "job_id": 4, "image": 1, "step": 3 })
        );
    }
}
