//! fooocus-rs: Fooocus rebuilt in Rust.
//!
//! The library holds everything the `fooocus` binary does: the configuration (`config`), the SDXL
//! engine (`engine`), the k-diffusion samplers (`sampling`) and, later, the Fooocus pipeline, worker, store and server.

pub mod bench;
pub mod config;
pub mod engine;
pub mod hub;
pub mod pipeline;
pub mod sampling;
pub mod server;
pub mod store;
pub mod worker;
