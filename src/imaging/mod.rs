//! Pixels in and pixels between networks: `decode` turns image bytes from users or files into
//! RGB with bounds on size and memory (a decompression bomb is refused before it allocates), and
//! `resample` resizes them with Lanczos exactly as Pillow does (its fixed-point separable
//! filter), which is what makes Fooocus' input images reproducible here to the byte.
//!
//! Knows nothing of networks, of Fooocus' size rules (that is `pipeline`) or of HTTP.

pub mod decode;
pub mod resample;

pub use decode::{decode_image, DecodeError, DecodeLimits};
pub use resample::lanczos;
