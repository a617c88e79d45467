//! API errors as JSON: `{"error": "...", "field": "..."}` with the right status code. Every error
//! answer of the server has this body: handlers return [`ApiError`], and [`json_errors`] rewrites
//! the plain-text or empty errors that come from elsewhere (an unknown address, a wrong method, a
//! body over the limit, a request over the time limit).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An error answer of the API.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault, when there is one.
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            field: None,
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, what)
    }

    /// The same error, blamed on the request field `field`.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

/// The body of an error answer.
#[derive(Serialize)]
struct ErrorBody {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            field: self.field,
        };
        (self.status, Json(body)).into_response()
    }
}

/// Parses a JSON request body; a value of the wrong type names its field (the first part of its
/// path, e.g. `image_number` or `loras`) in `field` and its whole path in the message.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut reader = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut reader).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let top = path
            .split(['.', '['])
            .next()
            .filter(|s| !s.is_empty() && *s != "?")
            .map(str::to_owned);
        let bad = ApiError::new(StatusCode::BAD_REQUEST, String::new());
        match (inner.classify(), top) {
            (serde_json::error::Category::Data, Some(field)) => ApiError {
                message: format!("\"{path}\": {inner}"),
                ..bad.with_field(field)
            },
            _ => ApiError {
                message: format!("invalid JSON in the request body: {inner}"),
                ..bad
            },
        }
    })?;
    reader.end().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid JSON in the request body: {e} (after the JSON value)"),
        )
    })?;
    Ok(value)
}

/// Largest error body [`json_errors`] reads back to wrap it.
const MAX_WRAPPED_ERROR: usize = 16 * 1024;

/// The request body limits, named in the 413 message.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub body: usize,
    /// The routes that may carry images (see [`carries_images`]).
    pub generate: usize,
}

/// Whether requests to `path` may carry images (and so have the larger body limit).
pub fn carries_images(path: &str) -> bool {
    matches!(
        path,
        "/api/generate"
            | "/sdapi/v1/txt2img"
            | "/sdapi/v1/img2img"
            | "/sdapi/v1/extra-single-image"
            | "/sdapi/v1/png-info"
            | "/v1/images/generations"
    )
}

/// Middleware: an error answer that is not JSON already (axum's plain-text rejections, an empty
/// 404 or 405) becomes the documented `{"error": ...}` body, keeping its status and headers;
/// `limits` are named in the 413 message.
pub async fn json_errors(
    State(limits): State<BodyLimits>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_WRAPPED_ERROR)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let allowed = parts
        .headers
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body_limit = if carries_images(uri.path()) {
        limits.generate
    } else {
        limits.body
    };
    let message = explain(status, &method, &uri, body_limit, allowed.as_deref(), text);
    let body = serde_json::to_vec(&ErrorBody {
        error: message,
        field: None,
    })
    .unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

/// The message of a wrapped error: our words for the statuses axum answers alone, else its text.
fn explain(
    status: StatusCode,
    method: &Method,
    uri: &Uri,
    body_limit: usize,
    allowed: Option<&str>,
    text: String,
) -> String {
    let path = uri.path();
    match status {
        StatusCode::NOT_FOUND if text.is_empty() => format!(
            "nothing at {path}: the page is at /, the API under /api (see the README for its \
             addresses)"
        ),
        StatusCode::METHOD_NOT_ALLOWED => match allowed {
            Some(allowed) => format!("{path} does not answer {method}; use {allowed}"),
            None => format!(
                "{path} does not answer {method}; the README lists the method of each address"
            ),
        },
        StatusCode::REQUEST_TIMEOUT => format!(
            "{method} {path} took longer than the server's time limit (its body arrived too \
             slowly, or the server is overloaded); send it again"
        ),
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "the request body is larger than the server's limit of {body_limit} bytes; send a \
             smaller one"
        ),
        _ if text.is_empty() => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_owned(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Request {
        prompt: Option<String>,
        image_number: Option<u32>,
        loras: Option<Vec<Lora>>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Lora {
        name: String,
        weight: f64,
    }

    fn error_of(body: &str) -> ApiError {
        match parse_json::<Request>(body.as_bytes()) {
            Ok(r) => panic!("{body} parsed as {r:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn type_errors_name_the_field() {
        let e = error_of(r#"{"prompt": "x", "image_number": "2"}"#);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.field.as_deref(), Some("image_number"));
        assert!(e.message.contains("\"image_number\""), "{}", e.message);

        let e = error_of(r#"{"loras": [{"name": "a", "weight": "heavy"}]}"#);
        assert_eq!(e.field.as_deref(), Some("loras"));
        assert!(e.message.contains("loras[0].weight"), "{}", e.message);
    }

    #[test]
    fn syntax_errors_and_trailing_text_have_no_field() {
        for body in [r#"{"prompt": "#, r#"{"prompt": "x"} junk"#] {
            let e = error_of(body);
            assert_eq!(e.field, None, "{body}");
            assert!(
                e.message.starts_with("invalid JSON"),
                "{body}: {}",
                e.message
            );
        }
    }
}
