//! The replies of the page's API, as serde structs: what a client reads is written down here,
//! field by field, rather than assembled from `json!` in the handlers.

use serde::Serialize;

use crate::jobs::{JobId, JobStatus};
use crate::store::{HistoryDay, ImageMetadata};

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
    pub jobs: Vec<JobStatus>,
}

/// `GET /api/history`.
#[derive(Debug, Serialize)]
pub struct History {
    pub days: Vec<Day>,
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
