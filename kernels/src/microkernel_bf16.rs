//! The bf16 matrix-product tile of the CPU linear layers under `--cpu-bf16`: a 12×16 block of
//! f32 C from `kp` steps of bf16 pairs, `C += Σ (a₂ₚ·b₂ₚ + a₂ₚ₊₁·b₂ₚ₊₁)`. A row of A is its
//! values rounded to bf16, two to a `u32` (the even k in the low half); a panel of B holds, for
//! each pair of k, the 16 columns' two values side by side (one 512-bit register). Where the
//! CPU has AVX-512 BF16, each step is one load of B and twelve `vdpbf16ps` with A's pair
//! broadcast: twice the multiplies of an f32 FMA per instruction. Elsewhere plain Rust computes
//! the same products in f32 (correct, not fast). Written by hand: no maintained crate has a
//! bf16 dot-product GEMM for the CPU.

use crate::fastmath;
use crate::microkernel::{Store, MR, NR};

/// `x` rounded to bf16 (to nearest, ties to even; NaN stays NaN), as its 16 bits. Both results
/// are computed and one selected, so that loops over it vectorise.
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
    let quiet = ((bits >> 16) | 0x40) as u16;
    if x.is_nan() {
        quiet
    } else {
        rounded
    }
}

/// The f32 value of bf16 bits.
#[inline(always)]
fn widen(h: u32) -> f32 {
    f32::from_bits(h << 16)
}

/// The pair word of two values along k, `lo` (the even one) rounded to bf16 in the low half.
#[inline(always)]
pub fn pair_word(lo: f32, hi: f32) -> u32 {
    u32::from(to_bf16(lo)) | u32::from(to_bf16(hi)) << 16
}

fastmath::vectorised! {
    /// `x` rounded to bf16 pairs into `dst`: `⌈len/2⌉` words, the even value in the low half, a
    /// zero after an odd last value.
    pub fn pairs_of(x: &[f32], dst: &mut [u32]) {
        let whole = x.len() / 2;
        for (d, pair) in dst.iter_mut().zip(x.chunks_exact(2)) {
            *d = pair_word(pair[0], pair[1]);
        }
        if let (Some(&last), Some(d)) = (x.get(2 * whole), dst.get_mut(whole)) {
            *d = pair_word(last, 0.0);
        }
    }
}

/// `C[i][j] (+)= Σ_p pair products of A row i and panel column j` for the `store.rows ×
/// store.cols` tile at `c`: `rows[i]` points at row i's `kp` pairs, `b` at `kp` rows of `NR`
/// pairs.
///
/// # Safety
/// Each of `rows` (rows past `store.rows` may repeat a valid one) must be readable for `kp`
/// words, `b` for `kp · NR`, and C's tile rows writable for `store.cols` values.
#[inline]
pub unsafe fn tile(kp: usize, rows: [*const u32; MR], b: *const u32, c: *mut f32, store: Store) {
    // SAFETY: the caller upholds the contract in this function's `# Safety` section.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        if fastmath::has_avx512_bf16() {
            return avx512::tile(kp, rows, b, c, store);
        }
        portable(kp, rows, b, c, store)
    }
}

/// The tile in plain Rust: each pair's two products summed in f32.
unsafe fn portable(kp: usize, rows: [*const u32; MR], b: *const u32, c: *mut f32, store: Store) {
    // SAFETY: the caller upholds the contract in this function's `# Safety` section.
    unsafe {
        let mut acc = [[0f32; NR]; MR];
        for p in 0..kp {
            let bp = &*(b.add(p * NR) as *const [u32; NR]);
            for (acc_row, row) in acc.iter_mut().zip(rows) {
                let a = *row.add(p);
                let (a0, a1) = (widen(a & 0xffff), widen(a >> 16));
                for (sum, &bv) in acc_row.iter_mut().zip(bp) {
                    *sum += a0 * widen(bv & 0xffff) + a1 * widen(bv >> 16);
                }
            }
        }
        for (i, acc_row) in acc.iter().take(store.rows).enumerate() {
            let out = std::slice::from_raw_parts_mut(c.add(i * store.ldc), store.cols);
            for (o, &v) in out.iter_mut().zip(acc_row) {
                *o = if store.accumulate { *o + v } else { v };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Store, MR, NR};

    /// One 16-wide f32 accumulator per row; per step one load of B and a `vdpbf16ps` per row
    /// with A's pair broadcast.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn tile(
        kp: usize,
        rows: [*const u32; MR],
        b: *const u32,
        c: *mut f32,
        store: Store,
    ) {
        // SAFETY: the caller upholds the contract in this function's `# Safety` section.
        unsafe {
            let mut acc = [_mm512_setzero_ps(); MR];
            for p in 0..kp {
                let bp: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(b.add(p * NR) as *const _));
                for (sum, row) in acc.iter_mut().zip(rows) {
                    let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(*row.add(p) as i32));
                    *sum = _mm512_dpbf16_ps(*sum, a, bp);
                }
            }
            let mask: __mmask16 = if store.cols >= NR {
                !0
            } else {
                (1 << store.cols) - 1
            };
            // A loop of constant length, so that `acc` stays in registers (see `kernels::microkernel`).
            for (i, sum) in acc.iter().enumerate() {
                if i >= store.rows {
                    continue;
                }
                let at = c.add(i * store.ldc);
                let value = if store.accumulate {
                    _mm512_add_ps(_mm512_maskz_loadu_ps(mask, at), *sum)
                } else {
                    *sum
                };
                _mm512_mask_storeu_ps(at, mask, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tile version: pair steps, A's rows, B, C, how to store.
    type Kernel = unsafe fn(usize, [*const u32; MR], *const u32, *mut f32, Store);

    /// Rounding to bf16 is to nearest with ties to even, keeps signs, infinities and NaN.
    #[test]
    fn rounds_to_nearest_even() {
        for (x, want) in [
            (1.0f32, 0x3f80u16),
            (-2.5, 0xc020),
            (f32::from_bits(0x3f80_8000), 0x3f80), // a tie, to the even 0x3f80
            (f32::from_bits(0x3f81_8000), 0x3f82), // a tie, to the even 0x3f82
            (f32::from_bits(0x3f80_8001), 0x3f81),
            (f32::INFINITY, 0x7f80),
            (f32::MAX, 0x7f80), // overflows to infinity, as any rounding to nearest does
        ] {
            assert_eq!(to_bf16(x), want, "{x}");
        }
        assert!(widen(u32::from(to_bf16(f32::NAN))).is_nan());
        let mut pairs = [0u32; 2];
        pairs_of(&[1.0, -2.5, 1.0], &mut pairs);
        assert_eq!(pairs, [0xc020_3f80, 0x3f80]);
    }

    /// Every tile version this CPU runs matches the pair products summed in f64 from the same
    /// bf16 values, for full and partial tiles, overwriting and accumulating; C outside the tile
    /// is left alone.
    #[test]
    fn tiles_match_pair_products() {
        let kp = 41;
        let mut kernels: Vec<(&str, Kernel)> = vec![("portable", portable), ("dispatched", tile)];
        #[cfg(target_arch = "x86_64")]
        if fastmath::has_avx512_bf16() {
            kernels.push(("avx512_bf16", avx512::tile));
        }
        for (m, n) in [(MR, NR), (5, 13), (1, 1), (9, 16)] {
            let a: Vec<f32> = (0..m * 2 * kp)
                .map(|i| ((i * 7 % 19) as f32 - 9.0) * 0.13)
                .collect();
            let b: Vec<f32> = (0..2 * kp * n)
                .map(|i| ((i * 5 % 23) as f32 - 11.0) * 0.07)
                .collect();
            let mut rows_a = vec![0u32; m * kp];
            for (row, src) in rows_a.chunks_exact_mut(kp).zip(a.chunks_exact(2 * kp)) {
                pairs_of(src, row);
            }
            // Panel: for pair p, column j's two values (k = 2p, 2p + 1) in one word.
            let mut panel = vec![0u32; kp * NR];
            for p in 0..kp {
                for j in 0..n {
                    pairs_of(
                        &[b[2 * p * n + j], b[(2 * p + 1) * n + j]],
                        &mut panel[p * NR + j..][..1],
                    );
                }
            }
            let rounded = |x: f32| f64::from(widen(u32::from(to_bf16(x))));
            let ldc = n + 3;
            for accumulate in [false, true] {
                let base = if accumulate { 1.0 } else { 0.0 };
                let mut want = vec![1f64; m * ldc];
                for i in 0..m {
                    for j in 0..n {
                        let dot: f64 = (0..2 * kp)
                            .map(|k| rounded(a[i * 2 * kp + k]) * rounded(b[k * n + j]))
                            .sum();
                        want[i * ldc + j] = base + dot;
                    }
                }
                let store = Store {
                    ldc,
                    rows: m,
                    cols: n,
                    accumulate,
                };
                let rows: [*const u32; MR] =
                    std::array::from_fn(|i| rows_a[i.min(m - 1) * kp..].as_ptr());
                for (name, kernel) in &kernels {
                    let mut got = vec![1f32; m * ldc];
                    // SAFETY: every row holds kp words, the panel kp·NR, got m·ldc values.
                    unsafe { kernel(kp, rows, panel.as_ptr(), got.as_mut_ptr(), store) };
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (f64::from(*g) - w).abs() < 1e-4 * w.abs().max(1.0),
                            "{name} {m}×{n} accumulate={accumulate}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }
}
