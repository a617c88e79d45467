//! A job planned, queued and awaited in one request, for the dialects whose clients wait for
//! their images (A1111's `/sdapi/v1`, OpenAI's images API). It is the page's kind of job: queued
//! with the others, previewed on the WebSocket, saved with its metadata and in the history. A
//! client that leaves while it waits cancels nothing: the job runs to its end and its images stay
//! in the history.

use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use crate::jobs::{JobId, JobState, SubmitError};
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
    pub job_id: JobId,
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

/// Queues `plan` and waits for its job to end; the saved images are read back.
pub async fn run_to_end(state: &SharedState, plan: Plan) -> Result<Finished, WaitError> {
    let mut events = state.worker.subscribe();
    let (job_id, _) = state.worker.submit(plan.clone())?;
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
        job_id,
        plan,
        images,
        stopped: status.state == JobState::Stopped,
    })
}
