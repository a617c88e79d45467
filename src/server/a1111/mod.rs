//! AUTOMATIC1111's `/sdapi/v1` dialect, for the tools that speak it (Open WebUI, SillyTavern,
//! chaiNNer, the `webuiapi` package): `wire` (its bodies), `meaning` (an A1111 request as one of
//! ours, names mapped both ways), `models` (checkpoint titles and the API's selected checkpoint),
//! `handlers` (the routes). Generations are jobs in the page's queue, awaited through
//! `server::waiting`; errors have A1111's `{error, detail, body, errors}` shape.
//!
//! Knows nothing of the page's dialect, of tensors or sampling.

pub mod handlers;
pub mod meaning;
pub mod models;
pub mod wire;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use super::waiting::WaitError;
use crate::jobs::SubmitError;

/// An A1111-shaped error answer.
#[derive(Debug)]
pub struct A1111Error {
    pub status: StatusCode,
    /// The exception class A1111 would name (`HTTPException`, `RuntimeError`).
    pub error: &'static str,
    pub detail: String,
}

impl A1111Error {
    pub fn bad_request(detail: impl Into<String>) -> Self {
        A1111Error {
            status: StatusCode::BAD_REQUEST,
            error: "HTTPException",
            detail: detail.into(),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    detail: &'a str,
    body: &'a str,
    errors: &'a str,
}

impl IntoResponse for A1111Error {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.error,
            detail: &self.detail,
            body: "",
            errors: &self.detail,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<ApiError> for A1111Error {
    /// A body that does not parse: 422, as FastAPI answers, naming the field.
    fn from(e: ApiError) -> Self {
        A1111Error {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error: "RequestValidationError",
            detail: match e.field {
                Some(field) if !e.message.contains(&field) => format!("`{field}`: {}", e.message),
                _ => e.message,
            },
        }
    }
}

impl From<WaitError> for A1111Error {
    fn from(e: WaitError) -> Self {
        let (status, error) = match &e {
            WaitError::Request(_) => (StatusCode::BAD_REQUEST, "HTTPException"),
            WaitError::Queue(
                SubmitError::QueueFull(_) | SubmitError::Closed | SubmitError::Unrecorded(_),
            ) => (StatusCode::SERVICE_UNAVAILABLE, "HTTPException"),
            WaitError::Failed(_) | WaitError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "RuntimeError")
            }
        };
        A1111Error {
            status,
            error,
            detail: e.to_string(),
        }
    }
}
