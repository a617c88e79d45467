//! `GET /ws`: the event stream. Every worker [`Event`] goes out as a JSON text frame; the newest
//! step preview goes out as a binary frame (JPEG). A slow client misses intermediate previews,
//! never events (up to the broadcast buffer, after which it gets a `lagged` notice); the worker
//! never waits for a socket.
//!
//! [`Event`]: crate::jobs::Event

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use serde_json::json;
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

use super::SharedState;
use crate::jobs::{Event, PreviewFrame};

/// The handshake (a foreign page's handshake never gets here: see [`super::security`]).
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
    let hello = json!({ "type": "hello", "queue": state.worker.queue() });
    if socket
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        let message = tokio::select! {
            event = events.recv() => match event {
                Ok(event) => match serde_json::to_string(&event) {
                    Ok(text) => Message::Text(text.into()),
                    Err(e) => {
                        tracing::warn!("event not serializable: {e}");
                        continue;
                    }
                },
                Err(RecvError::Lagged(missed)) => Message::Text(
                    json!({ "type": "lagged", "missed": missed }).to_string().into(),
                ),
                Err(RecvError::Closed) => break,
            },
            changed = previews.changed() => {
                if changed.is_err() {
                    break;
                }
                let frame = previews.borrow_and_update().clone();
                match frame {
                    Some(frame) => Message::Binary(frame.jpeg.clone().into()),
                    None => continue,
                }
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            },
        };
        if socket.send(message).await.is_err() {
            break;
        }
    }
}
