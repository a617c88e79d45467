//! fooocus-rs: Fooocus rebuilt in Rust.
//!
//! The library holds everything the `fooocus` binary does. The tree reads as the data path, edges
//! at the top, arithmetic at the bottom (`docs/ARCHITECTURE.md` draws it):
//! `cli` and `server` (HTTP, the page's API) → `broker` (workers on other hosts through Redis) →
//! `jobs` (the queue and the model-owning threads) →
//! `pipeline` (Fooocus semantics) → `sampling` (k-diffusion) and `nets` (SDXL's networks) →
//! `weights` (checkpoints, LoRAs) and `nn` (layers) → `kernels` (raw-slice CPU compute), with
//! `runtime` (device, precision, placement), `store` (outputs), `hub` (downloads) and `config`
//! beside them. `bench` times the networks.

pub mod bench;
pub mod broker;
pub mod cli;
pub mod config;
pub use fooocus_kernels as kernels;
pub mod hub;
pub mod imaging;
pub mod jobs;
pub mod nets;
pub mod nn;
pub mod pipeline;
pub mod runtime;
pub mod sampling;
pub mod server;
pub mod store;
pub mod weights;
