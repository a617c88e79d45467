//! The server's bounds on clients: failed logins, slow WebSocket readers, idle connections and
//! slow requests. The defaults are for people on a LAN or behind a notebook proxy; tests use
//! shorter ones.

use std::time::Duration;

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
