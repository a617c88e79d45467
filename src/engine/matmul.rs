//! The f32 product of the CPU linear and convolution layers, `C += A·B`, built on the tile of
//! `engine::microkernel`: B as packed panels (packed here into a per-thread buffer that is reused
//! from call to call, or written in that layout directly by the convolution's im2col), A read in
//! place. Rayon tasks take blocks of C rows × panels; each walks k in steps that keep a panel
//! slice in L1 while the block's A rows stay in L2. It replaces the `gemm` crate there, which
//! packed both operands on every call (a tenth of a VAE decode). A layer's weight can be packed
//! once at load ([`Panels`]), in the dtype it is kept in: packing every linear weight on every
//! call was a twelfth of a UNet step.

use std::cell::Cell;
use std::sync::Arc;

use candle_core::{CpuStorage, DType, Device, Result, Storage, Tensor};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

use super::kernels::widen;
use super::microkernel::{pack_panels, tile, Lhs, SharedMut, Store, MR, NR};

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

/// The transpose of a `[n, k]` weight packed once as the `k × n` right operand, in the dtype the
/// weight is kept in (f16/bf16 panels are widened per call, in one pass).
#[derive(Debug, Clone)]
pub struct Panels {
    values: PanelValues,
    k: usize,
    n: usize,
}

#[derive(Debug, Clone)]
enum PanelValues {
    F32(Arc<[f32]>),
    F16(Arc<[f16]>),
    BF16(Arc<[bf16]>),
}

impl Panels {
    /// Packs the transpose of `weight` `[n, k]` when it is a contiguous f32, f16 or bf16 CPU
    /// tensor; `None` otherwise (other devices, and stride-0 placeholders that must stay
    /// unmaterialised).
    pub fn of_transposed(weight: &Tensor) -> Result<Option<Self>> {
        let (n, k) = weight.dims2()?;
        if !weight.device().is_cpu() || !weight.is_contiguous() {
            return Ok(None);
        }
        let (storage, layout) = weight.storage_and_layout();
        let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets())
        else {
            return Ok(None);
        };
        let values = match cpu {
            CpuStorage::F32(w) => PanelValues::F32(pack_rows(&w[start..end], n, k, 0.0)),
            CpuStorage::F16(w) => PanelValues::F16(pack_rows(&w[start..end], n, k, f16::ZERO)),
            CpuStorage::BF16(w) => PanelValues::BF16(pack_rows(&w[start..end], n, k, bf16::ZERO)),
            _ => return Ok(None),
        };
        Ok(Some(Self { values, k, n }))
    }

    /// `(k, n)`: the inputs and outputs of the layer.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// The dtype the panels are kept in.
    pub fn dtype(&self) -> DType {
        match self.values {
            PanelValues::F32(_) => DType::F32,
            PanelValues::F16(_) => DType::F16,
            PanelValues::BF16(_) => DType::BF16,
        }
    }

    /// Calls `f` with the panels in f32 (borrowed, or widened into this thread's buffer).
    pub fn with_f32<R>(&self, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
        match &self.values {
            PanelValues::F32(v) => f(v),
            PanelValues::F16(v) => widen(v, f, |s, d| s.convert_to_f32_slice(d)),
            PanelValues::BF16(v) => widen(v, f, |s, d| s.convert_to_f32_slice(d)),
        }
    }

    /// The weight `[n, k]` again, in the dtype it is kept in (for candle's ops).
    pub fn dense(&self, device: &Device) -> Result<Tensor> {
        let (k, n) = (self.k, self.n);
        match &self.values {
            PanelValues::F32(v) => Tensor::from_vec(unpack_rows(v, n, k, 0.0), (n, k), device),
            PanelValues::F16(v) => {
                Tensor::from_vec(unpack_rows(v, n, k, f16::ZERO), (n, k), device)
            }
            PanelValues::BF16(v) => {
                Tensor::from_vec(unpack_rows(v, n, k, bf16::ZERO), (n, k), device)
            }
        }
    }
}

/// The panels of the transpose of the row-major `[n, k]` matrix `w`: panel p holds rows
/// p·NR.. of `w` as its columns, `k × NR` values, the columns past `n` `zero`.
fn pack_rows<T: Copy + Send + Sync>(w: &[T], n: usize, k: usize, zero: T) -> Arc<[T]> {
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
fn unpack_rows<T: Copy + Send + Sync>(panels: &[T], n: usize, k: usize, zero: T) -> Vec<T> {
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
    if m == 0 || n == 0 {
        return Ok(());
    }
    if a.len() < m * k || b.len() < packed_len(k, n) || out.len() < (m - 1) * ldc + n || ldc < n {
        candle_core::bail!(
            "matmul: {m}×{k}·{k}×{n} does not fit its operands ({} and {} values, ldc {ldc})",
            a.len(),
            out.len()
        );
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
                            accumulate: !overwrite || pc > 0,
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
            for i in 0..m {
                for j in 0..ldc {
                    let g = got[i * ldc + j];
                    if j >= n {
                        assert!(g.is_nan(), "{m}×{k}×{n}: ({i}, {j}) was written");
                        continue;
                    }
                    let w: f32 = (0..k).map(|l| a[i * k + l] * bt[j * k + l]).sum();
                    assert!(
                        (g - w).abs() < 1e-3 * w.abs().max(1.0),
                        "{m}×{k}×{n}: {g} vs {w}"
                    );
                }
            }
        }
        Ok(())
    }

    /// Packed weights come back exactly as they were, in each dtype they are kept in; a
    /// stride-0 placeholder is not packed.
    #[test]
    fn panels_round_trip() -> Result<()> {
        let dev = Device::Cpu;
        for (n, k) in [(1, 1), (7, 5), (33, 300)] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                let w = w.to_dtype(dtype)?;
                let Some(panels) = Panels::of_transposed(&w)? else {
                    panic!("{n}×{k} {dtype:?} not packed");
                };
                assert_eq!((panels.dims(), panels.dtype()), ((k, n), dtype));
                let back = panels.dense(&dev)?;
                let diff = (back.to_dtype(DType::F32)? - w.to_dtype(DType::F32)?)?
                    .abs()?
                    .max_all()?
                    .to_scalar::<f32>()?;
                assert_eq!(diff, 0.0, "{n}×{k} {dtype:?}");
                let widened = panels.with_f32(|v| Ok(v.to_vec()))?;
                let f32_panels = Panels::of_transposed(&w.to_dtype(DType::F32)?)?;
                let f32_values = f32_panels.map(|p| p.with_f32(|v| Ok(v.to_vec())));
                assert_eq!(Some(widened), f32_values.transpose()?);
            }
        }
        let placeholder = Tensor::zeros(1, DType::F32, &dev)?.broadcast_as((4, 3))?;
        assert!(Panels::of_transposed(&placeholder)?.is_none());
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
