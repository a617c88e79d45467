//! The JSON API handlers: submit, job status, stop/skip, queue, options, history, health. What
//! reads files (planning opens model folders and checkpoint headers, history reads the output
//! folder) runs on tokio's blocking threads, never on the async runtime.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::options::{self, Health, Options};
use super::wire::{Control, Day, History, Queue, Status, Submitted};
use crate::hub::background::describe;
use crate::jobs::JobId;
use crate::pipeline::plan::plan;
use crate::pipeline::request::GenerateRequest;
use crate::server::error::{parse_json, ApiError};
use crate::server::SharedState;

/// Runs `f` on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Adds how the download of a model named in `message` goes, when one is under way or failed.
fn with_download_state(state: &SharedState, message: String) -> String {
    let names: Vec<String> = state
        .downloads
        .lock()
        .map(|d| d.iter().map(|s| s.name.clone()).collect())
        .unwrap_or_default();
    match names
        .iter()
        .find(|n| message.contains(n.as_str()))
        .and_then(|n| describe(&state.downloads, n))
    {
        Some(progress) => format!("{message} ({progress})"),
        None => message,
    }
}

/// `POST /api/generate`: validates the request and queues it; answers `{job_id, position}`.
pub async fn generate(
    State(state): State<SharedState>,
    body: Bytes,
) -> Result<Json<Submitted>, ApiError> {
    let request: GenerateRequest = parse_json(&body)?;
    let planner = state.clone();
    let planned =
        blocking(move || plan(&request, &planner.preset, &planner.config, &planner.styles))
            .await?
            .map_err(|e| ApiError {
                status: StatusCode::BAD_REQUEST,
                message: with_download_state(&state, e.to_string()),
                field: Some(e.field.to_owned()),
            })?;
    let seeds = planned.seeds.clone();
    let worker = state.worker.clone();
    match blocking(move || worker.submit(planned)).await? {
        Ok((job_id, position)) => Ok(Json(Submitted {
            job_id,
            position,
            seeds,
        })),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
        )),
    }
}

fn job_id(text: &str) -> Result<JobId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::not_found(format!("no job {text:?}: job ids are numbers")))
}

fn unknown(id: JobId) -> ApiError {
    ApiError::not_found(format!(
        "no job {id}: it never existed or finished long ago"
    ))
}

/// `GET /api/jobs/{id}`.
pub async fn job(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<Status>, ApiError> {
    let id = job_id(&id)?;
    let status = state.worker.status(id).ok_or_else(|| unknown(id))?;
    Ok(Json(status.into()))
}

/// `POST /api/jobs/{id}/stop`.
pub async fn stop(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<Control>, ApiError> {
    let job_id = job_id(&id)?;
    let applied = state.worker.stop(job_id).ok_or_else(|| unknown(job_id))?;
    Ok(Json(Control { job_id, applied }))
}

/// `POST /api/jobs/{id}/skip`.
pub async fn skip(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<Control>, ApiError> {
    let job_id = job_id(&id)?;
    let applied = state.worker.skip(job_id).ok_or_else(|| unknown(job_id))?;
    Ok(Json(Control { job_id, applied }))
}

/// `GET /api/queue`: the running job first, then the waiting ones.
pub async fn queue(State(state): State<SharedState>) -> Json<Queue> {
    Json(Queue {
        jobs: state.worker.queue().into_iter().map(Status::from).collect(),
    })
}

/// `GET /api/options` (scans the model folders).
pub async fn options(State(state): State<SharedState>) -> Result<Json<Options>, ApiError> {
    Ok(Json(blocking(move || options::options(&state)).await?))
}

/// `GET /api/health`.
pub async fn health(State(state): State<SharedState>) -> Result<Json<Health>, ApiError> {
    Ok(Json(blocking(move || options::health(&state)).await?))
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    /// `YYYY-MM-DD`: only that day.
    date: Option<String>,
    /// `YYYY-MM-DD`: a page of the days before it.
    before: Option<String>,
    /// How many days with images a page holds (1–31, default 1); asks for a page by itself.
    days: Option<usize>,
}

/// The most days one page of the history holds.
const MAX_PAGE_DAYS: usize = 31;

/// `GET /api/history[?date=YYYY-MM-DD | ?before=YYYY-MM-DD&days=N]`: saved images by date,
/// newest first, each with its URL and thumbnail; one day, one page of days, or all of them.
pub async fn history(
    State(state): State<SharedState>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<History>, ApiError> {
    let store = state.store.clone();
    let paged = query.before.is_some() || query.days.is_some();
    let limit = query.days.unwrap_or(1).clamp(1, MAX_PAGE_DAYS);
    let listed = blocking(move || match (query.date, paged) {
        (Some(date), _) => store.day(&date).map(|images| {
            let day = crate::store::HistoryDay {
                date: date.clone(),
                images,
            };
            (vec![day], false)
        }),
        (None, true) => store.days_before(query.before.as_deref(), limit),
        (None, false) => store.history().map(|days| (days, false)),
    })
    .await?
    .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let (days, more) = listed;
    Ok(Json(History {
        days: days.into_iter().map(Day::from).collect(),
        more,
    }))
}
