//! The row softmax of the fused CPU attention kernel (`kernels::attention`): a max pass and one
//! exp-and-sum pass per row, the division left to the caller. With AVX2 + FMA the exp runs as
//! intrinsics (Cephes' polynomial in fused multiply-adds, specialised to the softmax's
//! non-positive arguments): it is a fifth of the attention's time at 4096 keys. Elsewhere
//! `fastmath::exp` in a loop the compiler vectorises. Other paths use candle_nn's softmax.

use crate::fastmath;

/// The numerators of a row's softmax, in place: `exp(x − max)`; returns their sum (the caller
/// divides later, where fewer values remain). A fully masked row (all −∞) becomes zeros with
/// sum 0, so that the division gives NaN, as candle's 0/0 does.
pub fn softmax_numerators(row: &mut [f32]) -> f32 {
    let max = row_max(row);
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return 0.0;
    }
    #[cfg(target_arch = "x86_64")]
    if fastmath::has_avx2_fma() {
        // SAFETY: the CPU has the features `avx2::exp_sum` is compiled for.
        return unsafe { avx2::exp_sum(row, max) };
    }
    exp_sum(row, max)
}

fastmath::vectorised! {
    /// The row's maximum (NaN entries ignored), in eight lanes and then across them.
    fn max_into(row: &[f32], max: &mut f32) {
        let mut lanes = [f32::NEG_INFINITY; 8];
        let mut chunks = row.chunks_exact(8);
        for c in &mut chunks {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l = l.max(v);
            }
        }
        *max = lanes
            .iter()
            .chain(chunks.remainder())
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
    }
}

fn row_max(row: &[f32]) -> f32 {
    let mut max = f32::NEG_INFINITY;
    max_into(row, &mut max);
    max
}

/// `exp(x − max)` in place and its sum, in plain Rust.
fn exp_sum(row: &mut [f32], max: f32) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks = row.chunks_exact_mut(8);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *v = fastmath::exp(*v - max);
            *l += *v;
        }
    }
    let mut tail = 0.0;
    for v in chunks.into_remainder() {
        *v = fastmath::exp(*v - max);
        tail += *v;
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::fastmath;

    /// `exp(x − max)` in place and its sum, eight lanes at a time.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_sum(row: &mut [f32], max: f32) -> f32 {
        // SAFETY: the caller upholds the contract in this function's `# Safety` section.
        unsafe {
            let shift = _mm256_set1_ps(max);
            let mut sum = _mm256_setzero_ps();
            let mut chunks = row.chunks_exact_mut(8);
            for c in &mut chunks {
                let e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), shift));
                _mm256_storeu_ps(c.as_mut_ptr(), e);
                sum = _mm256_add_ps(sum, e);
            }
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
            let mut tail = 0.0;
            for v in chunks.into_remainder() {
                *v = fastmath::exp(*v - max);
                tail += *v;
            }
            lanes.iter().sum::<f32>() + tail
        }
    }

    /// e^x for x ≤ 0 (or NaN, kept): `fastmath::exp`'s reduction and polynomial with fused
    /// multiply-adds; below −87.3 (−∞ for masked keys) exactly 0. With x ≤ 0, 2^n is a normal
    /// number built in one step.
    #[target_feature(enable = "avx2,fma")]
    fn exp_nonpositive(x: __m256) -> __m256 {
        let low = _mm256_set1_ps(-87.3);
        let round = _mm256_set1_ps(12_582_912.0);
        // max(low, x) returns x where x is NaN.
        let xc = _mm256_max_ps(low, x);
        let shifted = _mm256_fmadd_ps(xc, _mm256_set1_ps(std::f32::consts::LOG2_E), round);
        let n = _mm256_sub_ps(shifted, round);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), xc);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            5e-1,
        ] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let p = _mm256_fmadd_ps(
            _mm256_mul_ps(p, r),
            r,
            _mm256_add_ps(r, _mm256_set1_ps(1.0)),
        );
        let exponent = _mm256_sub_epi32(_mm256_castps_si256(shifted), _mm256_castps_si256(round));
        let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(exponent, _mm256_set1_epi32(127)));
        let y = _mm256_mul_ps(p, _mm256_castsi256_ps(pow2));
        _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(x, low), y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Row by row, divided by the sum, the same as candle_nn's softmax (masked entries
    /// included); a fully masked row gives zeros and sum 0.
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
            let sum = softmax_numerators(row);
            for (a, b) in row.iter().zip(want) {
                assert!((a / sum - b).abs() < 1e-6, "{a} / {sum} vs {b}");
            }
        }
        let mut masked = [f32::NEG_INFINITY; 9];
        let sum = softmax_numerators(&mut masked);
        assert!(masked.iter().all(|&v| v == 0.0) && sum == 0.0);
        Ok(())
    }
}
