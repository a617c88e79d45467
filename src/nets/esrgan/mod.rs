//! ESRGAN's RRDBNet, the super-resolution network of Fooocus' Upscale (`fooocus_upscaler_*.bin`):
//! `keys` reads a state dict (PyTorch pickle or safetensors) in any of the ESRGAN spellings into
//! the one canonical layout and infers the shapes from it; `rrdb` is the network, run in f32 on
//! `[B, 3, H, W]` pixels in [0, 1], with `upscale_tiled` for images larger than one tile.
//!
//! Knows nothing of Fooocus' resize rules, of the diffusion pipeline or of HTTP.

pub mod keys;
pub mod rrdb;

pub use keys::{load_upscaler, RrdbConfig, FOOOCUS_UPSCALER};
pub use rrdb::Rrdb;
