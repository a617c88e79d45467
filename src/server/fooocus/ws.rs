//! `GET /ws`: the event stream. Every worker [`Event`] goes out as a JSON text frame
//! ([`wire::Message`]); the newest step preview goes out as a binary frame (JPEG), right after a
//! `preview` text frame naming its job, image and step. A slow client misses intermediate previews,
//! never events (up to the broadcast buffer, after which it gets a `lagged` notice); the worker
//! never waits for a socket. A client whose socket has not taken a message within
//! [`AppState::ws_send_timeout`] (it stopped reading) is dropped.
//!
//! [`AppState::ws_send_timeout`]: crate::server::AppState::ws_send_timeout
//!
//! [`Event`]: crate::jobs::Event

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

use super::wire;
use crate::jobs::{Event, PreviewFrame};
use crate::server::SharedState;

/// The handshake (a foreign page's handshake never gets here: see [`crate::server::security`]).
pub async fn handler(State(state): State<SharedState>, upgrade: WebSocketUpgrade) -> Response {
    // Subscribe before answering, so a client sees every event after its handshake.
    let events = state.worker.subscribe();
    let mut previews = state.worker.previews();
    previews.mark_unchanged();
    upgrade.on_upgrade(move |socket| serve(socket, state, events, previews))
}

async fn serve(
    mut socket: WebSocket,
    state: SharedState,
    mut events: broadcast::Receiver<Event>,
    mut previews: watch::Receiver<Option<Arc<PreviewFrame>>>,
) {
    let queue = state.worker.queue().into_iter().map(Into::into).collect();
    let Some(hello) = text(&wire::Message::Hello { queue }) else {
        return;
    };
    let bound = state.ws_send_timeout;
    if !deliver(&mut socket, hello, bound).await {
        return;
    }
    loop {
        let mut header = None;
        let message = tokio::select! {
            event = events.recv() => match event {
                Ok(event) => match text(&wire::Message::from(event)) {
                    Some(message) => message,
                    None => continue,
                },
                Err(RecvError::Lagged(missed)) => match text(&wire::Message::Lagged { missed }) {
                    Some(message) => message,
                    None => continue,
                },
                Err(RecvError::Closed) => break,
            },
            changed = previews.changed() => {
                if changed.is_err() {
                    break;
                }
                let frame = previews.borrow_and_update().clone();
                let Some(frame) = frame else { continue };
                header = text(&wire::Message::Preview {
                    job_id: frame.job_id,
                    image: frame.image,
                    step: frame.step,
                });
                Message::Binary(frame.jpeg.clone().into())
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            },
        };
        for message in header.into_iter().chain([message]) {
            if !deliver(&mut socket, message, bound).await {
                return;
            }
        }
    }
}

/// Sends `message`; false when the client is gone or has not taken it within `bound`.
async fn deliver(socket: &mut WebSocket, message: Message, bound: Duration) -> bool {
    match tokio::time::timeout(bound, socket.send(message)).await {
        Ok(sent) => sent.is_ok(),
        Err(_) => {
            tracing::info!(
                "dropping a WebSocket client that took no message for {} s",
                bound.as_secs_f32()
            );
            false
        }
    }
}

/// `message` as a JSON text frame (`None`, logged, if it would not serialize).
fn text(message: &wire::Message) -> Option<Message> {
    match serde_json::to_string(message) {
        Ok(json) => Some(Message::Text(json.into())),
        Err(e) => {
            tracing::warn!("message not serializable: {e}");
            None
        }
    }
}
