//! The f32 product of the CPU linear and convolution layers, `C += A·B`, built on the tile of
//! `engine::microkernel`: B as packed panels (packed here into a per-thread buffer that is reused
//! from call to call, or written in that layout directly by the convolution's im2col), A read in
//! place. Rayon tasks take blocks of C rows × panels; each walks k in steps that keep a panel
//! slice in L1 while the block's A rows stay in L2. It replaces the `gemm` crate there, which
//! packed both operands on every call (a tenth of a VAE decode).

use std::cell::Cell;

use candle_core::Result;
use rayon::prelude::*;

use super::microkernel::{pack_panels, tile, Lhs, SharedMut, Store, MR, NR};

/// Depth of one pass over a panel: a 256×16 slice (16 KiB) stays in L1.
const KC: usize = 256;
/// C rows per task (a multiple of `MR`): their A rows, 72 KiB per step, stay in L2.
const MC: usize = 24 * MR;
/// Panels (of `NR` columns) per task.
const PANELS_PER_TASK: usize = 8;
/// Bytes of B one group of tasks shares (the panels of `k` rows that fit): it stays in L3
/// while all rows of A pass over it, instead of streaming from memory once per row block.
const SHARED_B_BYTES: usize = 4 << 20;

thread_local! {
    static PACKED: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
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
        candle_core::bail!(
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

/// `out[i][j] += Σ_l a[i][l] · B[l][j]` for `i < m`, `j < n`: `a` is `m × k` row-major, `b` the
/// `k × n` matrix B packed by [`with_packed`] (or written in its layout: panel after panel of
/// `k × NR` values), and row `i` of `out` starts at `i·ldc`.
pub fn accumulate(
    out: &mut [f32],
    ldc: usize,
    a: &[f32],
    (m, k, n): (usize, usize, usize),
    b: &[f32],
) -> Result<()> {
    if m == 0 || n == 0 || k == 0 {
        return Ok(());
    }
    if a.len() < m * k || b.len() < packed_len(k, n) || out.len() < (m - 1) * ldc + n || ldc < n {
        candle_core::bail!(
            "matmul: {m}×{k}·{k}×{n} does not fit its operands ({} and {} values, ldc {ldc})",
            a.len(),
            out.len()
        );
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
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                for p in block_panels.clone() {
                    let panel = b[p * k * NR + pc * NR..].as_ptr();
                    for g in (0..rows).step_by(MR) {
                        let i = r0 + g;
                        let lhs = Lhs {
                            ptr: a[i * k + pc..].as_ptr(),
                            row: k,
                            col: 1,
                        };
                        let store = Store {
                            ldc,
                            rows: MR.min(rows - g),
                            cols: NR.min(n - p * NR),
                            accumulate: true,
                        };
                        // SAFETY: the checks above keep rows i.. of `a` (kc values from pc),
                        // the panel slice (kc×NR values) and the C tile (rows i.., columns
                        // p·NR..) inside their slices; tasks write disjoint tiles.
                        unsafe {
                            let c = dst.get().add(i * ldc + p * NR);
                            tile(kc, lhs, panel, c, store, &[1.0; MR]);
                        }
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
