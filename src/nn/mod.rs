//! The layers every network imports (`Linear`, `Conv2d`, `GroupNorm`, attention, activations),
//! each choosing our CPU kernel from `kernels/` or candle's op for the tensor it is given.
//!
//! Knows nothing of SIMD details (that is `kernels/`) nor of which network uses a layer.

pub mod activation;
pub mod attention;
pub mod conv;
pub mod cpu;
pub mod linear;
pub mod norm;
pub mod panels;
