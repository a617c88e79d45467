//! The page's own API (Fooocus-style JSON): submit, job status, stop/skip, queue, options,
//! history, health, presets, and the WebSocket's events and previews (`ws`), all typed in `wire`. Other dialects (A1111 `/sdapi/v1`, OpenAI
//! images) land as sibling folders.

pub mod api;
pub mod options;
pub mod presets;
pub mod wire;
pub mod ws;
