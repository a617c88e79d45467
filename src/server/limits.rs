//! The server's bounds on clients: failed logins, slow WebSocket readers, idle connections and
//! slow requests. The defaults are for people on a LAN or behind a notebook proxy; tests use
//! shorter ones.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::throttle::LoginPolicy;

/// How long clients may take, and how failed logins are answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Failed basic-auth logins, per client address.
    pub login: LoginPolicy,
    /// A WebSocket client whose next message has not been taken by its socket within this is
    /// dropped.
    pub ws_send: Duration,
    /// An HTTP connection that sends no complete request head within this is closed (an idle
    /// keep-alive connection too).
    pub idle: Duration,
    /// A request not answered within this (its body included) gets 408.
    pub request: Duration,
}

impl Default for Limits {
    /// `ws_send` 30 s: a reading client takes a message in milliseconds, a phone on a poor
    /// network in seconds; beyond that nobody is watching. `idle` 30 s, hyper's own default
    /// (which `axum::serve` leaves off). `request` 60 s: handlers answer in seconds at most (a
    /// thumbnail of a large image on a busy CPU), and a 1 MiB body needs only 17 KB/s.
    fn default() -> Self {
        Limits {
            login: LoginPolicy::default(),
            ws_send: Duration::from_secs(30),
            idle: Duration::from_secs(30),
            request: Duration::from_secs(60),
        }
    }
}

/// Middleware for the routes that wait for a job (whose answers are not bounded in time): the
/// request body must arrive within `within` (else 408) and hold at most `limit` bytes (else
/// 413).
pub async fn read_body_within(
    State((within, limit)): State<(Duration, usize)>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, limit);
    match tokio::time::timeout(within, read).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) => {
            let status = if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            (status, e.to_string()).into_response()
        }
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        )
            .into_response(),
    }
}
