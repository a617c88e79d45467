//! Activation functions of the SDXL networks that candle-nn does not name directly.

use candle_core::{Result, Tensor, D};

/// Exact (erf) GELU.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    x.gelu_erf()
}

/// `x · sigmoid(1.702 x)`, CLIP-L's activation.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    x * candle_nn::ops::sigmoid(&(x * 1.702)?)?
}

/// Splits the last axis in two halves (value, gate) and returns `value · gelu(gate)` (GEGLU).
pub fn geglu(x: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let value = x.narrow(D::Minus1, 0, half)?;
    let gate = x.narrow(D::Minus1, half, half)?;
    value * gelu(&gate)?
}
