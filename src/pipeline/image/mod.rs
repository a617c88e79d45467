//! The input-image features, Fooocus' "Input Image" panel: `source` reads what a request names
//! as its input (base64, a data URL, one of our saved images by URL, or any kept image by
//! sha256) into bounded RGB pixels and the file's hash; `sizes` holds Fooocus' size rules
//! (the shape ceil and its 64-aligned resize); `uov` is "Upscale or Variation": the methods,
//! their strengths, steps and sizes, and the pixels a run starts from.
//!
//! Knows nothing of HTTP or of how the start latent is sampled (that is `run`).

pub mod sizes;
pub mod source;
pub mod uov;

pub use source::{read_input, InputImage};
pub use uov::UovMethod;
