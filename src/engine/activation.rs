//! Activation functions of the SDXL networks that candle-nn does not name directly. On the CPU in
//! f32 each is one vectorised pass (`fastmath`); GEGLU reads both halves and writes the product
//! in the same pass, where tensor ops made three copies and called libm's scalar `erff`. Other
//! devices and dtypes use candle's ops.

use candle_core::{DType, Result, Tensor, D};
use rayon::prelude::*;

use super::fastmath;
use super::kernels::{cpu_f32, own_kernels};

/// Values per parallel task of the elementwise kernels.
const TASK: usize = 1 << 14;

/// Exact (erf) GELU.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if own_path(x) {
        map(x, gelu_values)
    } else {
        x.gelu_erf()
    }
}

/// `x · sigmoid(1.702 x)`, CLIP-L's activation.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    if own_path(x) {
        map(x, quick_gelu_values)
    } else {
        x * candle_nn::ops::sigmoid(&(x * 1.702)?)?
    }
}

/// Splits the last axis in two halves (value, gate) and returns `value · gelu(gate)` (GEGLU).
pub fn geglu(x: &Tensor) -> Result<Tensor> {
    let width = x.dim(D::Minus1)?;
    let half = width / 2;
    if !own_path(x) || half == 0 || width % 2 != 0 {
        let value = x.narrow(D::Minus1, 0, half)?;
        let gate = x.narrow(D::Minus1, half, half)?;
        return value * gelu(&gate)?;
    }
    let x = x.contiguous()?;
    let rows = x.elem_count() / width;
    let mut out = vec![0f32; rows * half];
    {
        let (storage, layout) = x.storage_and_layout();
        let src = cpu_f32(&storage, layout, "GEGLU")?;
        let rows_per_task = (TASK / half).max(1);
        out.par_chunks_mut(rows_per_task * half)
            .zip(src.par_chunks(rows_per_task * width))
            .for_each(|(dst, src)| geglu_rows(dst, src, half));
    }
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = half;
    }
    Tensor::from_vec(out, dims, x.device())
}

fn own_path(x: &Tensor) -> bool {
    own_kernels() && x.device().is_cpu() && x.dtype() == DType::F32
}

fastmath::vectorised! {
    /// GEGLU of whole rows: `src` holds rows of `2·half` values, `dst` rows of `half`.
    fn geglu_rows(dst: &mut [f32], src: &[f32], half: usize) {
        for (d, s) in dst.chunks_exact_mut(half).zip(src.chunks_exact(2 * half)) {
            let (value, gate) = s.split_at(half);
            for ((o, &v), &g) in d.iter_mut().zip(value).zip(gate) {
                *o = v * fastmath::gelu(g);
            }
        }
    }
}

fastmath::vectorised! {
    fn gelu_values(dst: &mut [f32], src: &[f32]) {
        for (o, &v) in dst.iter_mut().zip(src) {
            *o = fastmath::gelu(v);
        }
    }
}

fastmath::vectorised! {
    fn quick_gelu_values(dst: &mut [f32], src: &[f32]) {
        for (o, &v) in dst.iter_mut().zip(src) {
            *o = v / (1.0 + fastmath::exp(-1.702 * v));
        }
    }
}

/// `kernel` applied to an f32 CPU tensor in parallel slices.
fn map(x: &Tensor, kernel: fn(&mut [f32], &[f32])) -> Result<Tensor> {
    let x = x.contiguous()?;
    let mut out = vec![0f32; x.elem_count()];
    {
        let (storage, layout) = x.storage_and_layout();
        let src = cpu_f32(&storage, layout, "activation")?;
        out.par_chunks_mut(TASK)
            .zip(src.par_chunks(TASK))
            .for_each(|(d, s)| kernel(d, s));
    }
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
        assert!(max_diff(&gelu(&x)?, &x.gelu_erf()?)? < 2e-6);
        let quick = (&x * candle_nn::ops::sigmoid(&(&x * 1.702)?)?)?;
        assert!(max_diff(&quick_gelu(&x)?, &quick)? < 2e-6);
        let half = 4100;
        let want =
            (x.narrow(D::Minus1, 0, half)? * x.narrow(D::Minus1, half, half)?.gelu_erf()?)?;
        let got = geglu(&x)?;
        assert_eq!(got.dims(), &[3, 5, half]);
        assert!(max_diff(&got, &want)? < 1e-5);
        Ok(())
    }
}
