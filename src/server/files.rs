//! Files over HTTP: the page and its script, style and icon (compiled into the binary from `web/`),
//! and saved images from the output folder, resolved by [`OutputStore::resolve`] so nothing
//! outside it is reachable (`..`, encoded and absolute variants end in 404). A day's `log.html`
//! gets its own Content-Security-Policy (see [`super::headers`]).
//!
//! [`OutputStore::resolve`]: crate::store::OutputStore::resolve

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::headers::log_page_policy;
use super::SharedState;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const APP_CSS: &str = include_str!("../../web/app.css");
const FAVICON: &str = include_str!("../../web/favicon.svg");

fn text(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    text(INDEX_HTML, "text/html; charset=utf-8")
}

pub async fn app_js() -> Response {
    text(APP_JS, "text/javascript; charset=utf-8")
}

pub async fn app_css() -> Response {
    text(APP_CSS, "text/css; charset=utf-8")
}

pub async fn favicon() -> Response {
    text(FAVICON, "image/svg+xml")
}

fn content_type(path: &std::path::Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("png") => "image/png",
        Some("jpeg" | "jpg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("html") => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// `GET /outputs/{date}/{file}`.
pub async fn output(
    State(state): State<SharedState>,
    Path(relative): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let shown = relative.clone();
    let missing = || ApiError::not_found(format!("no saved image {shown:?}"));
    let bytes = tokio::task::spawn_blocking(move || {
        let path = store.resolve(&relative).ok()?;
        let bytes = std::fs::read(&path).ok()?;
        Some((content_type(&path), bytes))
    })
    .await
    .ok()
    .flatten();
    let Some((kind, bytes)) = bytes else {
        return Err(missing());
    };
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    if kind.starts_with("text/html") {
        headers.insert(header::CONTENT_SECURITY_POLICY, log_page_policy());
    }
    Ok(response)
}
