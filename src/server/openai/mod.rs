//! OpenAI's images dialect, for the official SDKs and the tools built on them (Open WebUI's
//! openai engine): `POST /v1/images/generations` (a job in the page's queue, awaited through
//! `server::waiting`) and `GET /v1/models`. Errors have OpenAI's `{error: {message, type,
//! param, code}}` shape and `x-should-retry: false`, so that the SDK never runs a job twice.
//!
//! Knows nothing of the other dialects, of tensors or sampling.

pub mod handlers;
pub mod wire;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use super::waiting::WaitError;
use crate::pipeline::plan::RequestError;

/// An OpenAI-shaped error answer.
#[derive(Debug)]
pub struct OpenAiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault.
    pub param: Option<String>,
}

impl OpenAiError {
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        OpenAiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param: Some(param.to_string()),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_client_error() {
            "invalid_request_error"
        } else {
            "server_error"
        };
        let body = ErrorBody {
            error: ErrorObject {
                message: &self.message,
                kind,
                param: self.param.as_deref(),
                code: None,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        response
            .headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("false"));
        response
    }
}

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        OpenAiError {
            status: StatusCode::BAD_REQUEST,
            message: e.message,
            param: e.field,
        }
    }
}

/// Our request field → the OpenAI parameter a client sent it in.
fn their_param(ours: &str) -> &str {
    match ours {
        "image_number" => "n",
        "aspect_ratio" | "width" | "height" => "size",
        "base_model" => "model",
        other => other,
    }
}

impl From<WaitError> for OpenAiError {
    fn from(e: WaitError) -> Self {
        match e {
            WaitError::Request(RequestError { field, message }) => {
                OpenAiError::invalid(their_param(field), message)
            }
            WaitError::Queue(e) => OpenAiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
                param: None,
            },
            other => OpenAiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: other.to_string(),
                param: None,
            },
        }
    }
}
