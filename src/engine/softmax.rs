//! Softmax over the last dimension for attention scores. On the CPU in f32 it is one pass per row
//! with a branch-free exp (Cephes polynomial, within 2 ulp of libm) that the compiler vectorises;
//! candle_nn's kernel calls libm's scalar `expf`, the largest cost of attention at these sizes.
//! Other devices and dtypes use candle_nn.

use candle_core::{CpuStorage, DType, Storage, Tensor};
use rayon::prelude::*;

/// `softmax(x)` along the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    let own = super::kernels::own_kernels() && x.device().is_cpu() && x.dtype() == DType::F32;
    if !own || x.rank() == 0 {
        return candle_nn::ops::softmax_last_dim(x);
    }
    let x = x.contiguous()?;
    let row = x.dim(x.rank() - 1)?;
    let out = {
        let (storage, layout) = x.storage_and_layout();
        let Storage::Cpu(CpuStorage::F32(data)) = &*storage else {
            candle_core::bail!("softmax expects an f32 CPU tensor");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("softmax expects a contiguous tensor");
        };
        let src = &data[start..end];
        let mut out = vec![0f32; src.len()];
        if row > 0 {
            out.par_chunks_mut(row)
                .zip(src.par_chunks(row))
                .for_each(|(d, s)| softmax_row(s, d));
        }
        out
    };
    Tensor::from_vec(out, x.dims(), x.device())
}

fn softmax_row(src: &[f32], dst: &mut [f32]) {
    let max = src.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        // A fully masked row: candle gives NaN (0/0); keep that behaviour.
        dst.fill(f32::NAN);
        return;
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = exp(s - max);
    }
    let mut lanes = [0f32; 8];
    let mut chunks = dst.chunks_exact(8);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    let sum = lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
    for d in dst.iter_mut() {
        *d /= sum;
    }
}

/// e^x for x ≤ 0 (softmax arguments), branch-free: 2^n · p(r) with n = round(x·log2 e),
/// r = x − n·ln 2 (in two parts), p Cephes' degree-6 minimax polynomial. Below −87.3 gives 0.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5·2^23: adding and subtracting rounds to an integer
    let underflow = x < -87.3;
    let xc = x.max(-87.3);
    let n = (xc * LOG2E + ROUND) - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    p = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if underflow {
        0.0
    } else {
        p * scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn exp_within_a_few_ulp() {
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (ours, libm) = (exp(x), x.exp());
            assert!(((ours - libm) / libm).abs() < 3e-7, "{x}: {ours} vs {libm}");
            x += 0.0137;
        }
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn matches_candle_nn() -> candle_core::Result<()> {
        let x = (Tensor::randn(0f32, 4.0, (3, 5, 77), &Device::Cpu)? - 2.0)?;
        let diff = (softmax_last_dim(&x)? - candle_nn::ops::softmax_last_dim(&x)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-6, "{diff}");
        Ok(())
    }
}
