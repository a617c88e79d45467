//! The row softmax of the fused CPU attention kernel (`engine::attention_cpu`): one vectorised pass
//! per row with `fastmath::exp` (candle_nn's kernel calls libm's scalar `expf`). Other paths use
//! candle_nn's softmax.

use super::fastmath;

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
    use candle_core::{Device, Tensor};

    /// Row by row, the same as candle_nn's softmax (masked entries included); a fully masked
    /// row is NaN, as there.
    #[test]
    fn matches_candle_nn() -> candle_core::Result<()> {
        let x = (Tensor::randn(0f32, 4.0, (15, 77), &Device::Cpu)? - 2.0)?;
        let mask = Tensor::from_vec(
            (0..77)
                .map(|j| if j > 40 { f32::NEG_INFINITY } else { 0.0 })
                .collect::<Vec<f32>>(),
            77,
            &Device::Cpu,
        )?;
        let x = Tensor::cat(&[&x, &x.broadcast_add(&mask)?], 0)?;
        let want = candle_nn::ops::softmax_last_dim(&x)?.to_vec2::<f32>()?;
        for (row, want) in x.to_vec2::<f32>()?.iter_mut().zip(&want) {
            softmax_row_in_place(row);
            for (a, b) in row.iter().zip(want) {
                assert!((a - b).abs() < 1e-6, "{a} vs {b}");
            }
        }
        let mut masked = [f32::NEG_INFINITY; 9];
        softmax_row_in_place(&mut masked);
        assert!(masked.iter().all(|v| v.is_nan()));
        Ok(())
    }
}
