//! The f32 matrix-product tile every fused CPU kernel is built from: a 12×16 block of C from
//! `kc` steps of a strided left operand and a packed right panel (16 columns, `kc` rows,
//! contiguous), with a scale per output row. AVX-512 intrinsics where the CPU has them (one
//! 16-wide accumulator per row, masked stores for partial columns), else AVX2 + FMA (the tile as
//! two halves of 6 rows, 12 accumulator registers each: the BLIS Haswell shape), plain Rust
//! elsewhere. Written by hand because the `gemm` crate packs both operands on every call, which
//! cost the attention kernel a third of its time; here the caller packs each right operand once
//! and reads the left one in place.

/// Rows of C one tile computes.
pub const MR: usize = 12;
/// Columns of C one tile computes (one AVX-512 register, two AVX ones).
pub const NR: usize = 16;
/// Rows of half a tile: one AVX2 pass, and the AVX-512 variant for tiles with no more valid
/// rows.
#[cfg(target_arch = "x86_64")]
const HALF: usize = MR / 2;

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
// SAFETY: as for `Send`: no two tasks write the same element.
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
    // SAFETY: the caller upholds the contract in this function's `# Safety` section.
    unsafe {
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
    // SAFETY: the caller upholds the contract in this function's `# Safety` section.
    unsafe {
        // Rows past the valid ones repeat the last valid row: read, computed, never stored.
        let last = store.rows.max(1) - 1;
        let rows: [*const f32; MR] = std::array::from_fn(|i| a.ptr.add(i.min(last) * a.row));
        #[cfg(target_arch = "x86_64")]
        {
            if crate::fastmath::has_avx512() {
                return avx512::tile(kc, rows, a.col, b, c, store, scale);
            }
            if crate::fastmath::has_avx2_fma() {
                return avx2::tile(kc, rows, a.col, b, c, store, scale);
            }
        }
        portable(kc, rows, a.col, b, c, store, scale)
    }
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
    // SAFETY: the caller upholds the contract in this function's `# Safety` section.
    unsafe {
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
}

/// Scales the accumulated rows and stores (or adds) their valid part: `store.rows` of them.
unsafe fn write_back(acc: &[[f32; NR]], c: *mut f32, store: Store, scale: &[f32]) {
    // SAFETY: the caller upholds the contract in this function's `# Safety` section.
    unsafe {
        for (i, (acc_row, &s)) in acc.iter().zip(scale).take(store.rows).enumerate() {
            let out = std::slice::from_raw_parts_mut(c.add(i * store.ldc), store.cols);
            for (o, &v) in out.iter_mut().zip(acc_row) {
                *o = if store.accumulate { *o + s * v } else { s * v };
            }
        }
    }
}

/// Asks for the C rows of a tile ahead of their use: they are read only after the products,
/// and usually come from memory (a fresh output), so this hides that latency behind the loop.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn prefetch_c(c: *mut f32, store: Store) {
    // SAFETY: the caller upholds the contract in this function's `# Safety` section.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        for i in 0..store.rows {
            let row = c.add(i * store.ldc) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(row);
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(4 * NR - 1));
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{prefetch_c, Store, HALF, MR, NR};

    /// One 16-wide accumulator per row: per step one load of B, a broadcast of A and an FMA
    /// per row. Tiles of at most `HALF` valid rows compute only those.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile(
        kc: usize,
        rows: [*const f32; MR],
        col: usize,
        b: *const f32,
        c: *mut f32,
        store: Store,
        scale: &[f32; MR],
    ) {
        // SAFETY: the caller upholds the contract in this function's `# Safety` section.
        unsafe {
            prefetch_c(c, store);
            if store.rows <= HALF {
                let rows: [*const f32; HALF] = std::array::from_fn(|i| rows[i]);
                block(kc, rows, col, b, c, store, scale)
            } else {
                block(kc, rows, col, b, c, store, scale)
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block<const R: usize>(
        kc: usize,
        rows: [*const f32; R],
        col: usize,
        b: *const f32,
        c: *mut f32,
        store: Store,
        scale: &[f32; MR],
    ) {
        // SAFETY: the caller upholds the contract in this function's `# Safety` section.
        unsafe {
            let mut acc = [_mm512_setzero_ps(); R];
            for kk in 0..kc {
                let bk = _mm512_loadu_ps(b.add(kk * NR));
                for (sum, row) in acc.iter_mut().zip(rows) {
                    *sum = _mm512_fmadd_ps(_mm512_set1_ps(*row.add(kk * col)), bk, *sum);
                }
            }
            // Columns past `store.cols` are neither read nor written.
            let mask: __mmask16 = if store.cols >= NR {
                !0
            } else {
                (1 << store.cols) - 1
            };
            // A loop of constant length (unrolled, so that `acc` stays in registers) with the
            // valid rows stored.
            for (i, (sum, &s)) in acc.iter().zip(scale).enumerate() {
                if i >= store.rows {
                    continue;
                }
                let at = c.add(i * store.ldc);
                let scaled = _mm512_mul_ps(_mm512_set1_ps(s), *sum);
                let value = if store.accumulate {
                    _mm512_add_ps(_mm512_maskz_loadu_ps(mask, at), scaled)
                } else {
                    scaled
                };
                _mm512_mask_storeu_ps(at, mask, value);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{prefetch_c, write_back, Store, HALF, MR, NR};

    /// The tile as two halves of `HALF` rows (the second only when it has valid rows).
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
        // SAFETY: the caller upholds the contract in this function's `# Safety` section.
        unsafe {
            prefetch_c(c, store);
            for h in (0..store.rows).step_by(HALF) {
                let half_rows: [*const f32; HALF] = std::array::from_fn(|i| rows[h + i]);
                let half_store = Store {
                    rows: HALF.min(store.rows - h),
                    ..store
                };
                let c = c.add(h * store.ldc);
                half(kc, half_rows, col, b, c, half_store, &scale[h..h + HALF]);
            }
        }
    }

    /// Twelve 8-wide accumulators: per step two loads of B, six broadcasts of A, twelve FMAs.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn half(
        kc: usize,
        rows: [*const f32; HALF],
        col: usize,
        b: *const f32,
        c: *mut f32,
        store: Store,
        scale: &[f32],
    ) {
        // SAFETY: the caller upholds the contract in this function's `# Safety` section.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 2 * HALF];
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
            if store.rows == HALF && store.cols == NR {
                for (i, &s) in scale.iter().enumerate() {
                    let s = _mm256_set1_ps(s);
                    let out = c.add(i * store.ldc);
                    for part in 0..2 {
                        let at = out.add(8 * part);
                        let scaled = _mm256_mul_ps(s, acc[2 * i + part]);
                        let value = if store.accumulate {
                            _mm256_add_ps(_mm256_loadu_ps(at), scaled)
                        } else {
                            scaled
                        };
                        _mm256_storeu_ps(at, value);
                    }
                }
            } else {
                let mut spill = [[0f32; NR]; HALF];
                for (i, row) in spill.iter_mut().enumerate() {
                    _mm256_storeu_ps(row.as_mut_ptr(), acc[2 * i]);
                    _mm256_storeu_ps(row.as_mut_ptr().add(8), acc[2 * i + 1]);
                }
                write_back(&spill, c, store, scale);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tile body: the rows' pointers, their step, B, C, where and how, the row scales.
    type Kernel =
        unsafe fn(usize, [*const f32; MR], usize, *const f32, *mut f32, Store, &[f32; MR]);

    /// The tile versions this CPU can run.
    fn kernels() -> Vec<(&'static str, Kernel)> {
        let mut found: Vec<(&'static str, Kernel)> = vec![("portable", portable)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                found.push(("avx512", avx512::tile));
            }
            if crate::fastmath::has_avx2_fma() {
                found.push(("avx2", avx2::tile));
            }
        }
        found
    }

    /// Every tile version matches a plain triple loop, for full tiles and tiles with fewer
    /// rows (within and past the first half) or columns, strided and packed left operands,
    /// overwriting and accumulating; C outside the tile is left alone.
    #[test]
    fn tiles_match_a_plain_product() {
        let k = 37;
        for (m, n, col) in [(5, 13, 1), (MR, NR, 1), (9, 16, 1), (MR, 7, 3), (1, 1, 2)] {
            let a: Vec<f32> = (0..m * k * col)
                .map(|i| ((i * 7 % 19) as f32 - 9.0) * 0.1)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 23) as f32 - 11.0) * 0.1)
                .collect();
            let mut panel = vec![f32::NAN; k * NR];
            // SAFETY: b is k×n row-major.
            unsafe { pack_panels(&mut panel, k, n, b.as_ptr(), n, 1) };
            let scale: [f32; MR] = std::array::from_fn(|i| 0.5 + i as f32);
            let ldc = n + 2;
            for accumulate in [false, true] {
                let mut want = vec![1f32; m * ldc];
                for i in 0..m {
                    for j in 0..n {
                        let dot: f32 = (0..k).map(|kk| a[(i * k + kk) * col] * b[kk * n + j]).sum();
                        want[i * ldc + j] = scale[i] * dot + if accumulate { 1.0 } else { 0.0 };
                    }
                }
                let store = Store {
                    ldc,
                    rows: m,
                    cols: n,
                    accumulate,
                };
                let lhs = Lhs {
                    ptr: a.as_ptr(),
                    row: k * col,
                    col,
                };
                let mut got = vec![1f32; m * ldc];
                // SAFETY: a holds m rows of k values `col` apart, the panel k×NR, got m×ldc.
                unsafe { tile(k, lhs, panel.as_ptr(), got.as_mut_ptr(), store, &scale) };
                let mut versions = vec![("dispatched", got)];
                for (name, kernel) in kernels() {
                    let rows: [*const f32; MR] =
                        std::array::from_fn(|i| a[i.min(m - 1) * k * col..].as_ptr());
                    let mut out = vec![1f32; m * ldc];
                    // SAFETY: as above.
                    unsafe {
                        kernel(
                            k,
                            rows,
                            col,
                            panel.as_ptr(),
                            out.as_mut_ptr(),
                            store,
                            &scale,
                        )
                    };
                    versions.push((name, out));
                }
                for (name, out) in versions {
                    for (g, w) in out.iter().zip(&want) {
                        assert!((g - w).abs() < 1e-4, "{name} {m}×{n}: {g} vs {w}");
                    }
                }
            }
        }
    }
}
