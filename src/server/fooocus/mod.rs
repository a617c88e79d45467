//! The page's own API (Fooocus-style JSON): submit, job status, stop/skip, queue, options,
//! history, health, with typed replies (`wire`). Other dialects (A1111 `/sdapi/v1`, OpenAI
//! images) land as sibling folders.

pub mod api;
pub mod options;
pub mod wire;
