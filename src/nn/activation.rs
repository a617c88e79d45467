//! Activation functions of the SDXL networks that candle-nn does not name directly. On the CPU in
//! f32 each is one vectorised pass (`kernels::activation`); GEGLU reads both halves and writes the product
//! in the same pass, where tensor ops made three copies and called libm's scalar `erff`. Other
//! devices and dtypes use candle's ops.

use crate::kernels::activation;
use crate::nn::cpu::cpu_f32;
use crate::nn::Kernels;
use candle_core::{Result, Tensor, D};

/// Exact (erf) GELU.
pub fn gelu(kernels: Kernels, x: &Tensor) -> Result<Tensor> {
    if kernels.own_for(x) {
        map(x, activation::gelu)
    } else {
        x.gelu_erf()
    }
}

/// `x · sigmoid(1.702 x)`, CLIP-L's activation.
pub fn quick_gelu(kernels: Kernels, x: &Tensor) -> Result<Tensor> {
    if kernels.own_for(x) {
        map(x, activation::quick_gelu)
    } else {
        x * candle_nn::ops::sigmoid(&(x * 1.702)?)?
    }
}

/// Splits the last axis in two halves (value, gate) and returns `value · gelu(gate)` (GEGLU).
pub fn geglu(kernels: Kernels, x: &Tensor) -> Result<Tensor> {
    let width = x.dim(D::Minus1)?;
    let half = width / 2;
    if !kernels.own_for(x) || half == 0 || width % 2 != 0 {
        let value = x.narrow(D::Minus1, 0, half)?;
        let gate = x.narrow(D::Minus1, half, half)?;
        return value * gelu(kernels, &gate)?;
    }
    let x = x.contiguous()?;
    let rows = x.elem_count() / width;
    let out = {
        let (storage, layout) = x.storage_and_layout();
        activation::geglu(cpu_f32(&storage, layout, "GEGLU")?, rows, half)
    };
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = half;
    }
    Tensor::from_vec(out, dims, x.device())
}

/// `kernel` applied to an f32 CPU tensor in parallel slices.
fn map(x: &Tensor, kernel: fn(&[f32]) -> Vec<f32>) -> Result<Tensor> {
    let x = x.contiguous()?;
    let out = {
        let (storage, layout) = x.storage_and_layout();
        kernel(cpu_f32(&storage, layout, "activation")?)
    };
    Tensor::from_vec(out, x.dims(), x.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    /// The fused kernels match candle's ops (libm erf and sigmoid) to f32 rounding.
    #[test]
    fn fused_kernels_match_candle() -> Result<()> {
        let x = (Tensor::randn(0f32, 3.0, (3, 5, 2 * 4100), &Device::Cpu)? + 0.5)?;
        let ours = Kernels::default();
        assert!(max_diff(&gelu(ours, &x)?, &x.gelu_erf()?)? < 2e-6);
        let quick = (&x * candle_nn::ops::sigmoid(&(&x * 1.702)?)?)?;
        assert!(max_diff(&quick_gelu(ours, &x)?, &quick)? < 2e-6);
        let half = 4100;
        let want =
            (x.narrow(D::Minus1, 0, half)? * x.narrow(D::Minus1, half, half)?.gelu_erf()?)?;
        let got = geglu(ours, &x)?;
        assert_eq!(got.dims(), &[3, 5, half]);
        assert!(max_diff(&got, &want)? < 1e-5);
        Ok(())
    }
}
