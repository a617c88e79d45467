//! The server on a loopback port with the tiny checkpoints: the HTTP API, the WebSocket events
//! and previews, the queue and worker, and the safety checks.

mod apis;
mod broker;
mod client;
mod clients;
#[path = "../common/mod.rs"]
mod common;
mod durable;
mod flows;
mod hardening;
mod harness;
mod load;
mod models;
mod pages;
mod queue;
mod security;
mod uov;

pub use harness::{serve, Spec, TestServer};
