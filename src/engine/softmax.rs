//! Softmax over the last dimension. On the CPU in f32 it is one pass per row with
//! `fastmath::exp`, vectorised (candle_nn's kernel calls libm's scalar `expf`); other devices and
//! dtypes use candle_nn. [`softmax_row_in_place`] is also the fused attention kernel's softmax.

use candle_core::{CpuStorage, DType, Storage, Tensor};
use rayon::prelude::*;

use super::fastmath;

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
                .for_each(|(d, s)| {
                    d.copy_from_slice(s);
                    softmax_row_in_place(d);
                });
        }
        out
    };
    Tensor::from_vec(out, x.dims(), x.device())
}

fastmath::vectorised! {
    /// Softmax of one row, in place. A fully masked row (all −∞) becomes NaN, as in candle (0/0).
    pub fn softmax_row_in_place(dst: &mut [f32]) {
        let mut lanes = [f32::NEG_INFINITY; 8];
        let mut chunks = dst.chunks_exact(8);
        for c in &mut chunks {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l = l.max(v);
            }
        }
        let max = lanes
            .iter()
            .chain(chunks.remainder())
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            dst.fill(f32::NAN);
            return;
        }
        for d in dst.iter_mut() {
            *d = fastmath::exp(*d - max);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

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
