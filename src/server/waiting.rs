//! A job planned, queued and awaited in one request, for the dialects whose clients wait for
//! their images (A1111's `/sdapi/v1`, OpenAI's images API). It is the page's kind of job: queued
//! with the others, previewed on the WebSocket, saved with its metadata and in the history. A
//! client that leaves while it waits cancels nothing: the job runs to its end and its images stay
//! in the history.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::broadcast::error::RecvError;

use crate::jobs::{JobId, JobState, SubmitError, Worker};
use crate::pipeline::plan::{plan, Plan, RequestError};
use crate::pipeline::request::GenerateRequest;
use crate::server::SharedState;
use crate::store::{read_metadata, ImageMetadata};

/// How often a waiting request looks at its job when no event woke it.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Why a request got no images.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Queue(#[from] SubmitError),
    #[error("the generation failed: {0}")]
    Failed(String),
    #[error("{0}")]
    Internal(String),
}

/// One saved image of a finished job, read back.
#[derive(Debug, Clone)]
pub struct FinishedImage {
    pub seed: u64,
    /// Relative to the output root, `YYYY-MM-DD/<file>` (its address is `/outputs/<path>`).
    pub path: String,
    pub bytes: Vec<u8>,
    /// What the file carries (`None` when saved without metadata).
    pub metadata: Option<ImageMetadata>,
}

/// A job at its end: what it saved, and whether Stop cut it short.
#[derive(Debug, Clone)]
pub struct Finished {
    pub plan: Plan,
    pub images: Vec<FinishedImage>,
    pub stopped: bool,
}

/// Runs `f` on a blocking thread.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, WaitError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| WaitError::Internal(e.to_string()))
}

/// Validates `request` over the server's preset (off the async runtime: planning opens model
/// folders and checkpoint headers).
pub async fn plan_request(
    state: &SharedState,
    request: GenerateRequest,
) -> Result<Plan, WaitError> {
    let s = state.clone();
    Ok(blocking(move || plan(&request, &s.preset, &s.config, &s.styles)).await??)
}

/// A request's identity across a client's retries: the hash of its body, and whether this is a
/// retry (the OpenAI SDK sends `x-stainless-retry-count`).
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub key: [u8; 32],
    pub again: bool,
}

impl Retry {
    pub fn new(body: &[u8], again: bool) -> Self {
        Retry {
            key: Sha256::digest(body).into(),
            again,
        }
    }
}

/// The jobs of requests that may be retried, by [`Retry::key`]: a client that gave up waiting
/// (the OpenAI SDK's 600 s) and tries again waits for the job its first try queued, or takes its
/// saved images, instead of queueing the same work again.
#[derive(Debug, Default)]
pub struct InFlight(Mutex<HashMap<[u8; 32], JobId>>);

impl InFlight {
    /// The job an earlier try of `key` queued, while it is queued, running or done.
    fn find(&self, key: &[u8; 32], worker: &Worker) -> Option<JobId> {
        let jobs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let id = *jobs.get(key)?;
        let state = worker.status(id)?.state;
        matches!(state, JobState::Queued | JobState::Running | JobState::Done).then_some(id)
    }

    /// Remembers `id` for `key`, forgetting the jobs the worker no longer knows.
    fn insert(&self, key: [u8; 32], id: JobId, worker: &Worker) {
        let mut jobs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        jobs.retain(|_, job| worker.status(*job).is_some());
        jobs.insert(key, id);
    }
}

/// Queues `plan` (or, for a retry, finds the job its first try queued) and waits for the job to
/// end; the saved images are read back.
pub async fn run_to_end(
    state: &SharedState,
    plan: Plan,
    retry: Option<Retry>,
) -> Result<Finished, WaitError> {
    let mut events = state.worker.subscribe();
    let earlier = retry
        .filter(|r| r.again)
        .and_then(|r| state.in_flight.find(&r.key, &state.worker));
    let job_id = match earlier {
        Some(id) => id,
        None => {
            let (worker, submitted) = (state.worker.clone(), plan.clone());
            let (id, _) = blocking(move || worker.submit(submitted)).await??;
            if let Some(r) = retry {
                state.in_flight.insert(r.key, id, &state.worker);
            }
            id
        }
    };
    let status = loop {
        match state.worker.status(job_id) {
            Some(status) if status.state.finished() => break status,
            Some(_) => {}
            None => {
                return Err(WaitError::Internal(format!(
                    "job {job_id} was forgotten before it was read"
                )))
            }
        }
        match tokio::time::timeout(LOOK_EVERY, events.recv()).await {
            Ok(Err(RecvError::Closed)) => tokio::time::sleep(LOOK_EVERY).await,
            Ok(Ok(_) | Err(RecvError::Lagged(_))) | Err(_) => {}
        }
    };
    if status.state == JobState::Failed {
        return Err(WaitError::Failed(status.error.unwrap_or_default()));
    }
    let store = state.store.clone();
    let saved = status.images.clone();
    let images = blocking(move || {
        saved
            .into_iter()
            .map(|image| {
                let file = store
                    .resolve(&image.path)
                    .map_err(|e| WaitError::Internal(e.to_string()))?;
                let bytes = std::fs::read(&file).map_err(|e| {
                    WaitError::Internal(format!("cannot read {}: {e}", file.display()))
                })?;
                Ok(FinishedImage {
                    seed: image.seed,
                    metadata: read_metadata(&file).ok().flatten(),
                    path: image.path,
                    bytes,
                })
            })
            .collect::<Result<Vec<_>, WaitError>>()
    })
    .await??;
    Ok(Finished {
        plan,
        images,
        stopped: status.state == JobState::Stopped,
    })
}
