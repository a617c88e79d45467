//! The f32 matrix-product tile every fused CPU kernel is built from: a 6×16 block of C from
//! `kc` steps of a strided left operand and a packed right panel (16 columns, `kc` rows,
//! contiguous), with a scale per output row. AVX2 + FMA intrinsics where the CPU has them (12
//! accumulator registers, the BLIS Haswell shape), plain Rust elsewhere. Written by hand because
//! the `gemm` crate packs both operands on every call, which cost the attention kernel a third of
//! its time; here the caller packs each right operand once and reads the left one in place.

/// Rows of C one tile computes.
pub const MR: usize = 6;
/// Columns of C one tile computes (two AVX registers).
pub const NR: usize = 16;

/// A left operand read in place: element (i, k) lies at `ptr + i·row + k·col`.
#[derive(Debug, Clone, Copy)]
pub struct Lhs {
    pub ptr: *const f32,
    pub row: usize,
    pub col: usize,
}

/// A raw output pointer shared by parallel tasks, each of which writes its own tiles.
#[derive(Clone, Copy)]
pub struct SharedMut(pub *mut f32);
// SAFETY: users give each task disjoint regions to write.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so that closures capture the whole `Sync` wrapper).
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

/// How a tile lands in C.
#[derive(Debug, Clone, Copy)]
pub struct Store {
    /// Row stride of C.
    pub ldc: usize,
    /// Valid rows (≤ `MR`) and columns (≤ `NR`) of this tile.
    pub rows: usize,
    pub cols: usize,
    /// Add to what C holds instead of overwriting it.
    pub accumulate: bool,
}

/// Packs columns `0..n` of the `k × n` matrix at `src` (element (k, j) at `src + k·rs + j·cs`)
/// into `dst` as `n.div_ceil(NR)` panels of `k × NR` values, row after row, the columns past
/// `n` zero.
///
/// # Safety
/// Every element (k, j), k < `k`, j < `n`, must be readable.
pub unsafe fn pack_panels(
    dst: &mut [f32],
    k: usize,
    n: usize,
    src: *const f32,
    rs: usize,
    cs: usize,
) {
    for (p, panel) in dst
        .chunks_exact_mut(k * NR)
        .take(n.div_ceil(NR))
        .enumerate()
    {
        let cols = NR.min(n - p * NR);
        let base = src.add(p * NR * cs);
        for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
            let at = base.add(kk * rs);
            for (j, value) in row.iter_mut().enumerate() {
                *value = if j < cols { *at.add(j * cs) } else { 0.0 };
            }
        }
    }
}

/// `C[i][j] = scale[i] · Σ_k A(i, k) · B[k][j]` (added to C with `accumulate`) for the
/// `store.rows × store.cols` tile at `c`, B being `kc` rows of a packed panel: element (k, j) at
/// `b + k·NR + j`.
///
/// # Safety
/// Rows `0..store.rows` of `a` must be readable for `k < kc`, the `kc × NR` values of `b` too,
/// and C's tile rows must be writable for `store.cols` values.
#[inline]
pub unsafe fn tile(kc: usize, a: Lhs, b: *const f32, c: *mut f32, store: Store, scale: &[f32; MR]) {
    // Rows past the valid ones repeat the last valid row: read, computed, never stored.
    let last = store.rows.max(1) - 1;
    let rows: [*const f32; MR] = std::array::from_fn(|i| a.ptr.add(i.min(last) * a.row));
    #[cfg(target_arch = "x86_64")]
    if super::fastmath::has_avx2_fma() {
        return avx2::tile(kc, rows, a.col, b, c, store, scale);
    }
    portable(kc, rows, a.col, b, c, store, scale)
}

/// The tile in plain Rust (the compiler vectorises the inner loop for the target's SIMD).
unsafe fn portable(
    kc: usize,
    rows: [*const f32; MR],
    col: usize,
    b: *const f32,
    c: *mut f32,
    store: Store,
    scale: &[f32; MR],
) {
    let mut acc = [[0f32; NR]; MR];
    for kk in 0..kc {
        let bk = &*(b.add(kk * NR) as *const [f32; NR]);
        for (acc_row, row) in acc.iter_mut().zip(rows) {
            let ai = *row.add(kk * col);
            for (sum, &bv) in acc_row.iter_mut().zip(bk) {
                *sum += ai * bv;
            }
        }
    }
    write_back(&acc, c, store, scale);
}

/// Scales the accumulated tile and stores (or adds) its valid part.
unsafe fn write_back(acc: &[[f32; NR]; MR], c: *mut f32, store: Store, scale: &[f32; MR]) {
    for (i, (acc_row, &s)) in acc.iter().zip(scale).take(store.rows).enumerate() {
        let out = std::slice::from_raw_parts_mut(c.add(i * store.ldc), store.cols);
        for (o, &v) in out.iter_mut().zip(acc_row) {
            *o = if store.accumulate { *o + s * v } else { s * v };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{write_back, Store, MR, NR};

    /// Twelve 8-wide accumulators: per step two loads of B, six broadcasts of A, twelve FMAs.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile(
        kc: usize,
        rows: [*const f32; MR],
        col: usize,
        b: *const f32,
        c: *mut f32,
        store: Store,
        scale: &[f32; MR],
    ) {
        // C's tile is read only after the products, and usually comes from memory (a fresh
        // output): asking for it now hides that latency behind the loop.
        for i in 0..store.rows {
            let row = c.add(i * store.ldc) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(row);
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(4 * NR - 1));
        }
        let mut acc = [_mm256_setzero_ps(); 2 * MR];
        for kk in 0..kc {
            let bk = b.add(kk * NR);
            let b0 = _mm256_loadu_ps(bk);
            let b1 = _mm256_loadu_ps(bk.add(8));
            for (i, row) in rows.iter().enumerate() {
                let ai = _mm256_broadcast_ss(&*row.add(kk * col));
                acc[2 * i] = _mm256_fmadd_ps(ai, b0, acc[2 * i]);
                acc[2 * i + 1] = _mm256_fmadd_ps(ai, b1, acc[2 * i + 1]);
            }
        }
        if store.rows == MR && store.cols == NR {
            for (i, &s) in scale.iter().enumerate() {
                let s = _mm256_set1_ps(s);
                let out = c.add(i * store.ldc);
                for half in 0..2 {
                    let at = out.add(8 * half);
                    let scaled = _mm256_mul_ps(s, acc[2 * i + half]);
                    let value = if store.accumulate {
                        _mm256_add_ps(_mm256_loadu_ps(at), scaled)
                    } else {
                        scaled
                    };
                    _mm256_storeu_ps(at, value);
                }
            }
        } else {
            let mut spill = [[0f32; NR]; MR];
            for (i, row) in spill.iter_mut().enumerate() {
                _mm256_storeu_ps(row.as_mut_ptr(), acc[2 * i]);
                _mm256_storeu_ps(row.as_mut_ptr().add(8), acc[2 * i + 1]);
            }
            write_back(&spill, c, store, scale);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both tile versions match a plain triple loop, for full and partial tiles, strided and
    /// packed left operands, overwriting and accumulating.
    #[test]
    fn tiles_match_a_plain_product() {
        let (m, k, n) = (5, 37, 13);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 19) as f32 - 9.0) * 0.1)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 23) as f32 - 11.0) * 0.1)
            .collect();
        let mut panel = vec![f32::NAN; k * NR];
        // SAFETY: b is k×n row-major.
        unsafe { pack_panels(&mut panel, k, n, b.as_ptr(), n, 1) };
        let scale: [f32; MR] = std::array::from_fn(|i| 0.5 + i as f32);
        for accumulate in [false, true] {
            let mut want = vec![1f32; m * n];
            for i in 0..m {
                for j in 0..n {
                    let dot: f32 = (0..k).map(|kk| a[i * k + kk] * b[kk * n + j]).sum();
                    want[i * n + j] = scale[i] * dot + if accumulate { 1.0 } else { 0.0 };
                }
            }
            let store = Store {
                ldc: n,
                rows: m,
                cols: n,
                accumulate,
            };
            let lhs = Lhs {
                ptr: a.as_ptr(),
                row: k,
                col: 1,
            };
            let mut got = vec![1f32; m * n];
            let rhs = panel.as_ptr();
            // SAFETY: a is m×k, the panel k×NR, got m×n.
            unsafe { tile(k, lhs, rhs, got.as_mut_ptr(), store, &scale) };
            let mut plain = vec![1f32; m * n];
            let rows: [*const f32; MR] = std::array::from_fn(|i| a[i.min(m - 1) * k..].as_ptr());
            // SAFETY: as above.
            unsafe { portable(k, rows, 1, rhs, plain.as_mut_ptr(), store, &scale) };
            for ((g, p), w) in got.iter().zip(&plain).zip(&want) {
                assert!(
                    (g - w).abs() < 1e-4 && (p - w).abs() < 1e-4,
                    "{g} {p} vs {w}"
                );
            }
        }
    }
}
