//! `GET /thumbs/{date}/{file}`: a saved image's thumbnail (JPEG, longest side 256 px), for the
//! history. Made when the image was saved, else on this first request, then kept on disk; names
//! that are not the store's images (the log, `..`, other files) are 404.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::SharedState;
use crate::store::StoreError;

/// `GET /thumbs/{date}/{file}`.
pub async fn thumb(
    State(state): State<SharedState>,
    Path(relative): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let shown = relative.clone();
    let made = tokio::task::spawn_blocking(move || {
        // Not one of the saved images (a bad name, a missing file): 404, as for the image.
        store.resolve(&relative).ok()?;
        Some(store.thumbnail(&relative))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let bytes = match made {
        None => return Err(ApiError::not_found(format!("no saved image {shown:?}"))),
        Some(Err(StoreError::InvalidPath { .. })) => {
            return Err(ApiError::not_found(format!("no saved image {shown:?}")))
        }
        Some(Err(e)) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot make the thumbnail of {shown:?}: {e}"),
            ))
        }
        Some(Ok(bytes)) => bytes,
    };
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    // A saved image never changes under its name; the thumbnail neither.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=604800"),
    );
    Ok(response)
}
