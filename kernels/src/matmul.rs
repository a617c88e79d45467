//! The f32 product of the CPU linear and convolution layers, `C += A·B`, built on the tile of
//! `microkernel`: B as packed panels (packed here into a per-thread buffer that is reused
//! from call to call, or written in that layout directly by the convolution's im2col), A read in
//! place. Rayon tasks take blocks of C rows × panels; each walks k in steps that keep a panel
//! slice in L1 while the block's A rows stay in L2. It replaces the `gemm` crate there, which
//! packed both operands on every call (a tenth of a VAE decode). A layer's weight can be packed
//! once at load ([`pack_rows`], [`pack_pairs`]; `nn::panels` keeps them): packing every linear
//! weight on every call was a twelfth of a UNet step.

use std::cell::Cell;
use std::sync::Arc;

use rayon::prelude::*;

use crate::microkernel::{pack_panels, tile, Lhs, SharedMut, Store, MR, NR};
use crate::microkernel_bf16::{self, pair_word, pairs_of};
use crate::{fail, Result};

/// Depth of one pass over a panel: a 256×16 slice (16 KiB) stays in L1.
const KC: usize = 256;
/// C rows per task (a multiple of `MR`): their A rows, 72 KiB per step, stay in L2.
const MC: usize = 12 * MR;
/// Panels (of `NR` columns) per task.
const PANELS_PER_TASK: usize = 8;
/// Bytes of B one group of tasks shares (the panels of `k` rows that fit): it stays in L3
/// while all rows of A pass over it, instead of streaming from memory once per row block.
const SHARED_B_BYTES: usize = 4 << 20;

thread_local! {
    static PACKED: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// A bf16 product's left operand rounded to pairs, reused from call to call.
    static LEFT_PAIRS: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
}

/// Values of the packed panels of a `k × n` right operand (columns padded to `NR`).
pub fn packed_len(k: usize, n: usize) -> usize {
    n.div_ceil(NR) * k * NR
}

/// Calls `f` with this thread's reusable buffer, sized for the packed panels of a `k × n`
/// operand (its contents left for `f` to fill; a nested call gets a buffer of its own).
pub fn with_panel_buffer<R>(
    (k, n): (usize, usize),
    f: impl FnOnce(&mut [f32]) -> Result<R>,
) -> Result<R> {
    let mut buffer = PACKED.take();
    let len = packed_len(k, n);
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    let result = f(&mut buffer[..len]);
    PACKED.set(buffer);
    result
}

/// Calls `f` with the `k × n` matrix in `src` (element (i, j) at `i·rs + j·cs`) packed into
/// panels, in this thread's reusable buffer.
pub fn with_packed<R>(
    src: &[f32],
    (k, n): (usize, usize),
    (rs, cs): (usize, usize),
    f: impl FnOnce(&[f32]) -> Result<R>,
) -> Result<R> {
    if k > 0 && n > 0 && (k - 1) * rs + (n - 1) * cs >= src.len() {
        fail!(
            "matmul: a {k}×{n} operand of strides ({rs}, {cs}) overruns its {} values",
            src.len()
        );
    }
    with_panel_buffer((k, n), |panels| {
        if k > 0 {
            panels
                .par_chunks_mut(k * NR)
                .enumerate()
                .for_each(|(p, panel)| {
                    let cols = NR.min(n - p * NR);
                    // SAFETY: elements (i, p·NR + j), i < k, j < cols, lie inside `src`
                    // (checked above).
                    unsafe { pack_panels(panel, k, cols, src[p * NR * cs..].as_ptr(), rs, cs) };
                });
        }
        f(panels)
    })
}

/// The pair panels of the transpose of the row-major `[n, k]` matrix `w`, rounded to bf16: per
/// panel, `⌈k/2⌉` rows of `NR` words (see `microkernel_bf16`).
pub fn pack_pairs(w: &[f32], n: usize, k: usize) -> Vec<u32> {
    let kp = k.div_ceil(2);
    let mut out = vec![0u32; packed_len(kp, n)];
    if kp > 0 {
        out.par_chunks_mut(kp * NR)
            .enumerate()
            .for_each(|(p, panel)| {
                for (j, row) in w.chunks_exact(k).skip(p * NR).take(NR).enumerate() {
                    for (q, pair) in row.chunks(2).enumerate() {
                        panel[q * NR + j] = pair_word(pair[0], pair.get(1).map_or(0.0, |v| *v));
                    }
                }
            });
    }
    out
}

/// The row-major `[n, k]` bf16 bits whose transpose the pair panels `panels` hold (the inverse
/// of [`pack_pairs`], up to its rounding).
pub fn unpack_pairs(panels: &[u32], n: usize, k: usize) -> Vec<u16> {
    let kp = k.div_ceil(2);
    let mut rows = vec![0u16; n * k];
    for (row, dst) in rows.chunks_exact_mut(k.max(1)).take(n).enumerate() {
        let panel = &panels[row / NR * kp * NR..];
        for (kk, value) in dst.iter_mut().enumerate() {
            let word = panel[kk / 2 * NR + row % NR];
            *value = (word >> (16 * (kk % 2))) as u16;
        }
    }
    rows
}

/// [`accumulate`] in bf16: the `m` rows of `x` (`m × k`, row-major) rounded to bf16 pairs (in
/// this thread's reusable buffer), times the pair panels `b` of [`pack_pairs`], summed in f32.
pub fn accumulate_bf16(
    out: &mut [f32],
    ldc: usize,
    x: &[f32],
    (m, k, n): (usize, usize, usize),
    b: &[u32],
) -> Result<()> {
    if x.len() < m * k {
        fail!("matmul: {m} rows of {k} values in {} values", x.len());
    }
    let kp = k.div_ceil(2);
    let mut left = LEFT_PAIRS.take();
    left.resize(m * kp, 0);
    if kp > 0 {
        left.par_chunks_mut(kp)
            .zip(x.par_chunks(k))
            .for_each(|(dst, row)| pairs_of(row, dst));
    }
    let result = accumulate_pairs(out, ldc, &left, m, b, (kp, n));
    LEFT_PAIRS.set(left);
    result
}

/// The panels of the transpose of the row-major `[n, k]` matrix `w`: panel p holds rows
/// p·NR.. of `w` as its columns, `k × NR` values, the columns past `n` `zero`.
pub fn pack_rows<T: Copy + Send + Sync>(w: &[T], n: usize, k: usize, zero: T) -> Arc<[T]> {
    let mut out = vec![zero; packed_len(k, n)];
    if k > 0 {
        out.par_chunks_mut(k * NR)
            .enumerate()
            .for_each(|(p, panel)| {
                for (j, row) in w.chunks_exact(k).skip(p * NR).take(NR).enumerate() {
                    for (kk, &v) in row.iter().enumerate() {
                        panel[kk * NR + j] = v;
                    }
                }
            });
    }
    out.into()
}

/// The row-major `[n, k]` matrix whose transpose `panels` holds (the inverse of [`pack_rows`]).
pub fn unpack_rows<T: Copy + Send + Sync>(panels: &[T], n: usize, k: usize, zero: T) -> Vec<T> {
    let mut out = vec![zero; n * k];
    if k > 0 {
        out.par_chunks_mut(k).enumerate().for_each(|(row, dst)| {
            let panel = &panels[row / NR * k * NR..][..k * NR];
            for (kk, v) in dst.iter_mut().enumerate() {
                *v = panel[kk * NR + row % NR];
            }
        });
    }
    out
}

/// `out[i][j] += Σ_l a[i][l] · B[l][j]` for `i < m`, `j < n`: `a` is `m × k` row-major, `b` the
/// `k × n` matrix B packed by [`with_packed`] (or written in its layout: panel after panel of
/// `k × NR` values), and row `i` of `out` starts at `i·ldc`.
pub fn accumulate(
    out: &mut [f32],
    ldc: usize,
    a: &[f32],
    dims: (usize, usize, usize),
    b: &[f32],
) -> Result<()> {
    product(out, ldc, a, dims, b, false)
}

/// [`accumulate`] into an `out` whose old values are overwritten rather than added to (nothing
/// needs zeroing first).
pub fn multiply(
    out: &mut [f32],
    ldc: usize,
    a: &[f32],
    dims: (usize, usize, usize),
    b: &[f32],
) -> Result<()> {
    product(out, ldc, a, dims, b, true)
}

/// [`accumulate`], or [`multiply`] when `overwrite`.
fn product(
    out: &mut [f32],
    ldc: usize,
    a: &[f32],
    (m, k, n): (usize, usize, usize),
    b: &[f32],
    overwrite: bool,
) -> Result<()> {
    check_operands((out.len(), ldc), a.len(), (m, k, n), b.len())?;
    drive(out, ldc, (m, k, n), overwrite, |step, c, store| {
        let lhs = Lhs {
            ptr: a[step.row * k + step.depth..].as_ptr(),
            row: k,
            col: 1,
        };
        let panel = b[step.panel * k * NR + step.depth * NR..].as_ptr();
        // SAFETY: `check_operands` keeps rows `step.row..` of `a` (kc values from
        // `step.depth`) and the panel slice (kc × NR values) inside their slices; `drive`
        // hands out C tiles inside `out`.
        unsafe { tile(step.kc, lhs, panel, c, store, &[1.0; MR]) };
    })
}

/// [`accumulate`] in bf16 for `m` rows of `kp` bf16 pairs `a` and the pair panels `b` of
/// [`pack_pairs`] (`kp` rows of `NR` pairs each); products are summed in f32
/// (`microkernel_bf16`).
fn accumulate_pairs(
    out: &mut [f32],
    ldc: usize,
    a: &[u32],
    m: usize,
    b: &[u32],
    (kp, n): (usize, usize),
) -> Result<()> {
    check_operands((out.len(), ldc), a.len(), (m, kp, n), b.len())?;
    drive(out, ldc, (m, kp, n), false, |step, c, store| {
        let last = store.rows.max(1) - 1;
        let rows: [*const u32; MR] =
            std::array::from_fn(|r| a[(step.row + r.min(last)) * kp + step.depth..].as_ptr());
        let panel = b[step.panel * kp * NR + step.depth * NR..].as_ptr();
        // SAFETY: as in `product`, with pairs for values.
        unsafe { microkernel_bf16::tile(step.kc, rows, panel, c, store) };
    })
}

/// Refuses operands too short for an `m × k` by `k × n` product into rows `ldc` apart (`k` in
/// steps of the operands' 4-byte elements).
fn check_operands(
    (out_len, ldc): (usize, usize),
    a_len: usize,
    (m, k, n): (usize, usize, usize),
    b_len: usize,
) -> Result<()> {
    if m > 0
        && n > 0
        && (a_len < m * k || b_len < packed_len(k, n) || out_len < (m - 1) * ldc + n || ldc < n)
    {
        fail!(
            "matmul: {m}×{k}·{k}×{n} does not fit its operands ({a_len} and {out_len} values, \
             ldc {ldc})"
        );
    }
    Ok(())
}

/// Where one tile of a product reads: C rows from `row` (up to `MR`), panel `panel`, depth
/// steps `depth..depth + kc`.
struct Step {
    row: usize,
    panel: usize,
    depth: usize,
    kc: usize,
}

/// Runs the blocked product loop of an `m × k` by `k × n` product into `out` (rows `ldc`
/// apart; operands checked by the caller): rayon tasks take blocks of rows × panels and walk k
/// in `KC` steps, calling `tile` for each tile with its C pointer and how to store it (the
/// first step overwrites when `overwrite`).
fn drive(
    out: &mut [f32],
    ldc: usize,
    (m, k, n): (usize, usize, usize),
    overwrite: bool,
    tile: impl Fn(Step, *mut f32, Store) + Sync,
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if overwrite {
            out.chunks_mut(ldc)
                .take(m)
                .for_each(|row| row[..n].fill(0.0));
        }
        return Ok(());
    }
    let panels = n.div_ceil(NR);
    let group_panels = (SHARED_B_BYTES / (k * NR * 4)).clamp(1, panels);
    let groups = panels.div_ceil(group_panels);
    let (row_blocks, sub_blocks) = (m.div_ceil(MC), group_panels.div_ceil(PANELS_PER_TASK));
    let dst = SharedMut(out.as_mut_ptr());
    (0..groups * row_blocks * sub_blocks)
        .into_par_iter()
        .for_each(|task| {
            let (group, row_block) = (
                task / (row_blocks * sub_blocks),
                task / sub_blocks % row_blocks,
            );
            let first_panel = group * group_panels + task % sub_blocks * PANELS_PER_TASK;
            let end_panel = (first_panel + PANELS_PER_TASK)
                .min((group + 1) * group_panels)
                .min(panels);
            let (r0, block_panels) = (row_block * MC, first_panel..end_panel);
            let rows = MC.min(m - r0);
            for depth in (0..k).step_by(KC) {
                let kc = KC.min(k - depth);
                for panel in block_panels.clone() {
                    for g in (0..rows).step_by(MR) {
                        let row = r0 + g;
                        let store = Store {
                            ldc,
                            rows: MR.min(rows - g),
                            cols: NR.min(n - panel * NR),
                            accumulate: !overwrite || depth > 0,
                        };
                        // SAFETY: the caller checked that `out` holds m rows `ldc` apart of
                        // n values; tasks write disjoint tiles.
                        let c = unsafe { dst.get().add(row * ldc + panel * NR) };
                        tile(
                            Step {
                                row,
                                panel,
                                depth,
                                kc,
                            },
                            c,
                            store,
                        );
                    }
                }
            }
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packing a transposed and a plain operand, then accumulating, matches a plain triple loop
    /// for shapes that leave partial tiles, steps and tasks.
    #[test]
    fn accumulate_matches_a_plain_product() -> Result<()> {
        for (m, k, n) in [(1, 1, 1), (7, 300, 19), (80, 513, 290), (13, 5, 40)] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 19) as f32 - 9.0) * 0.1)
                .collect();
            // The right operand stored transposed (n × k), as a linear layer's weight is.
            let bt: Vec<f32> = (0..n * k)
                .map(|i| ((i * 5 % 23) as f32 - 11.0) * 0.1)
                .collect();
            let ldc = n + 3;
            let mut want = vec![0.5f32; m * ldc];
            for i in 0..m {
                for j in 0..n {
                    want[i * ldc + j] += (0..k).map(|l| a[i * k + l] * bt[j * k + l]).sum::<f32>();
                }
            }
            let mut got = vec![0.5f32; m * ldc];
            with_packed(&bt, (k, n), (1, k), |b| {
                accumulate(&mut got, ldc, &a, (m, k, n), b)
            })?;
            // The same operand stored row-major (k × n).
            let rows: Vec<f32> = (0..k * n).map(|i| bt[(i % n) * k + i / n]).collect();
            let mut plain = vec![0.5f32; m * ldc];
            with_packed(&rows, (k, n), (n, 1), |b| {
                accumulate(&mut plain, ldc, &a, (m, k, n), b)
            })?;
            assert_eq!(plain, got, "{m}×{k}×{n} row-major");
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() < 1e-3 * w.abs().max(1.0),
                    "{m}×{k}×{n}: {g} vs {w}"
                );
            }
        }
        Ok(())
    }

    /// `multiply` overwrites what the rows held (NaN here, which any addition would keep), in
    /// one k pass, several and none, and leaves the columns between n and ldc alone.
    #[test]
    fn multiply_overwrites_the_rows() -> Result<()> {
        for (m, k, n) in [(5, 3, 17), (30, 1100, 40), (4, 0, 9)] {
            let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
            let bt: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32 * 0.2 - 0.6).collect();
            let ldc = n + 2;
            let mut got = vec![f32::NAN; m * ldc];
            with_packed(&bt, (k, n), (1, k), |b| {
                multiply(&mut got, ldc, &a, (m, k, n), b)
            })?;
            for (i, row) in got.chunks_exact(ldc).enumerate() {
                assert!(
                    row[n..].iter().all(|v| v.is_nan()),
                    "{m}×{k}×{n}: row {i} padding written"
                );
            }
            assert_products(
                &got,
                ldc,
                (m, n),
                1e-3,
                &format!("{m}×{k}×{n}"),
                |i, j| {
                    (0..k)
                        .map(|l| f64::from(a[i * k + l] * bt[j * k + l]))
                        .sum()
                },
            );
        }
        Ok(())
    }

    /// Asserts that element (i, j) of the `m × n` rows `got` (`ldc` apart) is within `tol`
    /// (relative, absolute below 1) of `want(i, j)`.
    fn assert_products(
        got: &[f32],
        ldc: usize,
        (m, n): (usize, usize),
        tol: f64,
        what: &str,
        want: impl Fn(usize, usize) -> f64,
    ) {
        for i in 0..m {
            for j in 0..n {
                let (g, w) = (f64::from(got[i * ldc + j]), want(i, j));
                assert!(
                    (g - w).abs() < tol * w.abs().max(1.0),
                    "{what} ({i}, {j}): {g} vs {w}"
                );
            }
        }
    }

    /// Pair panels multiply the inputs rounded to bf16 by the weights rounded to bf16, summed in
    /// f32 (odd k, and k over several depth passes), and unpack to the weight rounded to bf16.
    #[test]
    fn pair_panels_multiply_in_bf16() -> Result<()> {
        use crate::microkernel_bf16::to_bf16;
        let rounded = |v: f32| f64::from(f32::from_bits(u32::from(to_bf16(v)) << 16));
        for (m, k, n) in [(3, 7, 5), (30, 601, 40)] {
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.0137)
                .collect();
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.0191)
                .collect();
            let panels = pack_pairs(&w, n, k);
            let back = unpack_pairs(&panels, n, k);
            assert!(back.iter().zip(&w).all(|(&b, &v)| b == to_bf16(v)));
            let mut got = vec![0.5f32; m * n];
            accumulate_bf16(&mut got, n, &x, (m, k, n), &panels)?;
            assert_products(&got, n, (m, n), 1e-4, &format!("{m}×{k}×{n}"), |i, j| {
                let dot: f64 = (0..k)
                    .map(|l| rounded(x[i * k + l]) * rounded(w[j * k + l]))
                    .sum();
                0.5 + dot
            });
        }
        Ok(())
    }

    /// Operands that do not fit their shapes are refused, not read past.
    #[test]
    fn refuses_short_operands() {
        let short = [0f32; 5];
        assert!(with_packed(&short, (3, 2), (2, 1), |_| Ok(())).is_err());
        let mut out = [0f32; 4];
        assert!(accumulate(&mut out, 2, &short, (2, 3, 2), &[0.0; 48]).is_err());
        assert!(accumulate(&mut out, 2, &[0.0; 6], (2, 3, 2), &[0.0; 47]).is_err());
    }
}
