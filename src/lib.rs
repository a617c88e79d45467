//! fooocus-rs: Fooocus rebuilt in Rust.
//!
//! The library holds everything the `fooocus` binary does: the configuration (`config`), the SDXL
//! engine (`engine`), the k-diffusion samplers (`sampling`) and, later, the Fooocus pipeline, worker, store and server.

pub mod bench;
pub mod cli;
pub mod config;
pub mod hub;
pub mod jobs;
pub mod kernels;
pub mod nets;
pub mod nn;
pub mod pipeline;
pub mod runtime;
pub mod sampling;
pub mod server;
pub mod store;
pub mod weights;
