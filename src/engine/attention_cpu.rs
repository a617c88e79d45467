//! Fused attention for f32 on the CPU: for each (batch, head) and block of query rows, the scores
//! against all keys, their softmax and the product with the values stay in one small per-thread
//! buffer, and rayon spreads the blocks over the cores. Queries, keys and values are read through
//! their strides, so the heads of a `[B, T, H·d]` projection need no transposed copy. Unfused, the
//! same attention wrote and re-read a 64 MB score matrix per chunk and ran at a fifth of the
//! matmul speed.

use std::cell::RefCell;

use candle_core::{CpuStorage, Layout, Result, Storage, Tensor};
use rayon::prelude::*;

use super::softmax::softmax_row_in_place;

/// How many query rows one task handles at least and at most; within that, enough that the
/// score block holds about 64 Ki values (256 KiB, within L2).
const MIN_ROWS: usize = 64;
const MAX_ROWS: usize = 256;
const BLOCK_SCORES: usize = 1 << 16;

/// How the output `[B, H, Tq, d]` is laid out in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputOrder {
    /// `[B, H, Tq, d]` contiguous.
    HeadsMajor,
    /// `[B, Tq, H, d]` contiguous, i.e. `[B, Tq, H·d]` once reshaped.
    TokensMajor,
}

/// Where element (b, h, t, i) of a 4-D operand lies in its storage.
#[derive(Debug, Clone, Copy)]
struct Strides {
    start: usize,
    batch: usize,
    head: usize,
    row: usize,
    col: usize,
}

impl Strides {
    fn of(layout: &Layout) -> Result<Self> {
        let &[batch, head, row, col] = layout.stride() else {
            candle_core::bail!("attention expects 4-D operands, got {:?}", layout.dims());
        };
        Ok(Self {
            start: layout.start_offset(),
            batch,
            head,
            row,
            col,
        })
    }

    fn at(&self, b: usize, h: usize, t: usize) -> usize {
        self.start + b * self.batch + h * self.head + t * self.row
    }
}

/// A raw output pointer shared by the tasks, each of which writes its own rows of its own head.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint (head, row) regions; see `attention`.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer (a method, so that closures capture the whole `Sync` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// softmax(q·kᵀ/√d)·v for f32 CPU tensors `q` `[B, H, Tq, d]`, `k`, `v` `[B, H, Tk, d]`, of any
/// strides. With `causal`, query `i` sees keys `0..=i` only. The result is `[B, H, Tq, d]`,
/// stored in `order`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    causal: bool,
    order: OutputOrder,
) -> Result<Tensor> {
    let (b, h, tq, d) = q.dims4()?;
    let tk = k.dim(2)?;
    if k.dims() != [b, h, tk, d] || v.dims() != [b, h, tk, d] {
        candle_core::bail!(
            "attention: q {:?}, k {:?} and v {:?} do not match",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    let mut out = vec![0f32; b * h * tq * d];
    if out.is_empty() {
        return shape_output(out, b, h, tq, d, order, q.device());
    }
    if tk == 0 {
        // No keys: every softmax is 0/0, as in candle.
        out.fill(f32::NAN);
        return shape_output(out, b, h, tq, d, order, q.device());
    }
    let (o_batch, o_head, o_row) = match order {
        OutputOrder::HeadsMajor => (h * tq * d, tq * d, d),
        OutputOrder::TokensMajor => (tq * h * d, d, h * d),
    };
    let rows = (BLOCK_SCORES / tk).clamp(MIN_ROWS, MAX_ROWS).min(tq);
    let blocks = tq.div_ceil(rows);
    let scale = 1.0 / (d as f32).sqrt();
    {
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let (qd, kd, vd) = (f32_data(&qs)?, f32_data(&ks)?, f32_data(&vs)?);
        let (qst, kst, vst) = (Strides::of(ql)?, Strides::of(kl)?, Strides::of(vl)?);
        let dst = SharedOut(out.as_mut_ptr());
        (0..b * h * blocks).into_par_iter().for_each(|task| {
            let (bh, block) = (task / blocks, task % blocks);
            let (bi, hi) = (bh / h, bh % h);
            let t0 = block * rows;
            let n = rows.min(tq - t0);
            SCORES.with_borrow_mut(|scores| {
                scores.resize(n * tk, 0.0);
                let q_at = qst.at(bi, hi, t0);
                let (k_at, v_at) = (kst.at(bi, hi, 0), vst.at(bi, hi, 0));
                let o_at = bi * o_batch + hi * o_head + t0 * o_row;
                // SAFETY: candle's layouts keep every (b, h, t, i) of q, k and v inside their
                // storages; `scores` holds n×tk values; the output rows t0..t0+n of head (bi, hi)
                // lie inside `out` and belong to this task alone.
                unsafe {
                    gemm::gemm(
                        n,
                        tk,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        tk as isize,
                        false,
                        qd.as_ptr().add(q_at),
                        qst.col as isize,
                        qst.row as isize,
                        kd.as_ptr().add(k_at),
                        kst.row as isize,
                        kst.col as isize,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                for (r, row) in scores.chunks_mut(tk).enumerate() {
                    if causal {
                        row[(t0 + r + 1).min(tk)..].fill(f32::NEG_INFINITY);
                    }
                    softmax_row_in_place(row);
                }
                // SAFETY: as above; the output block is n×d with row stride `o_row`.
                unsafe {
                    gemm::gemm(
                        n,
                        d,
                        tk,
                        dst.get().add(o_at),
                        1,
                        o_row as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        tk as isize,
                        vd.as_ptr().add(v_at),
                        vst.col as isize,
                        vst.row as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            });
        });
    }
    shape_output(out, b, h, tq, d, order, q.device())
}

fn f32_data(storage: &Storage) -> Result<&[f32]> {
    match storage {
        Storage::Cpu(CpuStorage::F32(data)) => Ok(data),
        _ => candle_core::bail!("fused attention expects f32 CPU tensors"),
    }
}

fn shape_output(
    out: Vec<f32>,
    b: usize,
    h: usize,
    tq: usize,
    d: usize,
    order: OutputOrder,
    device: &candle_core::Device,
) -> Result<Tensor> {
    match order {
        OutputOrder::HeadsMajor => Tensor::from_vec(out, (b, h, tq, d), device),
        OutputOrder::TokensMajor => Tensor::from_vec(out, (b, tq, h, d), device)?.transpose(1, 2),
    }
}
