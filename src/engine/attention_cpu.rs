//! Fused attention for f32 on the CPU. Keys and values are packed once per (batch, head) into
//! the right-operand panels of `engine::microkernel`; then, for each block of query rows (rayon
//! spreads the blocks over the cores), the scaled scores against all keys go into a per-thread
//! buffer, become softmax numerators in place, and their product with the values lands in the
//! output scaled by each row's reciprocal sum. Queries are read through their strides, so the
//! heads of a `[B, T, H·d]` projection need no transposed copy. Built on the `gemm` crate, the
//! same blocks spent a third of their time re-packing keys, values and scores on every call.

use std::cell::RefCell;

use candle_core::{CpuStorage, Layout, Result, Storage, Tensor};
use rayon::prelude::*;

use super::microkernel::{pack_panels, tile, Lhs, SharedMut, Store, MR, NR};
use super::softmax::softmax_numerators;

/// Query rows per task: a multiple of `MR` such that the task's scores hold about
/// `BLOCK_SCORES` values (384 KiB, within L2), but at least `MIN_ROWS` so that each key and
/// value panel read serves a few row groups.
const MIN_ROWS: usize = 2 * MR;
const MAX_ROWS: usize = 21 * MR;
const BLOCK_SCORES: usize = 48 << 10;
/// Keys per step of the product with the values, so that the values' panel slice stays in L1.
const KEY_STEP: usize = 256;

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
    let tk_pad = tk.next_multiple_of(NR);
    let rows = (BLOCK_SCORES / tk_pad)
        .next_multiple_of(MR)
        .clamp(MIN_ROWS, MAX_ROWS)
        .min(tq);
    let blocks = tq.div_ceil(rows);
    let scale = 1.0 / (d as f32).sqrt();
    {
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let (qd, kd, vd) = (f32_data(&qs)?, f32_data(&ks)?, f32_data(&vs)?);
        let (qst, kst, vst) = (Strides::of(ql)?, Strides::of(kl)?, Strides::of(vl)?);
        // Per (batch, head): the keys as the d × tk right operand of q·kᵀ, NR keys per panel,
        // and the values as the tk × d right operand of p·v, NR channels per panel.
        let (key_len, value_len) = (tk_pad * d, d.next_multiple_of(NR) * tk);
        let mut keys = vec![0f32; b * h * key_len];
        let mut values = vec![0f32; b * h * value_len];
        keys.par_chunks_mut(key_len)
            .zip(values.par_chunks_mut(value_len))
            .enumerate()
            .for_each(|(bh, (key_panels, value_panels))| {
                let (k_at, v_at) = (kst.at(bh / h, bh % h, 0), vst.at(bh / h, bh % h, 0));
                // SAFETY: candle's layouts keep every (b, h, t, i) of k and v inside their
                // storages; the panels hold tk_pad·d and d_pad·tk values.
                unsafe {
                    pack_panels(key_panels, d, tk, kd.as_ptr().add(k_at), kst.col, kst.row);
                    pack_panels(value_panels, tk, d, vd.as_ptr().add(v_at), vst.row, vst.col);
                }
            });
        let dst = SharedMut(out.as_mut_ptr());
        (0..b * h * blocks).into_par_iter().for_each(|task| {
            let (bh, block) = (task / blocks, task % blocks);
            let (bi, hi) = (bh / h, bh % h);
            let t0 = block * rows;
            let n = rows.min(tq - t0);
            let key_panels = &keys[bh * key_len..(bh + 1) * key_len];
            let value_panels = &values[bh * value_len..(bh + 1) * value_len];
            SCORES.with_borrow_mut(|scores| {
                scores.resize(n * tk_pad, 0.0);
                let q_at = qst.at(bi, hi, t0);
                for (p, panel) in key_panels.chunks_exact(d * NR).enumerate() {
                    for g in (0..n).step_by(MR) {
                        let lhs = Lhs {
                            ptr: qd[q_at + g * qst.row..].as_ptr(),
                            row: qst.row,
                            col: qst.col,
                        };
                        let store = Store {
                            ldc: tk_pad,
                            rows: MR.min(n - g),
                            cols: NR,
                            accumulate: false,
                        };
                        // SAFETY: query rows t0+g.. of head (bi, hi) lie in q's storage for
                        // d columns; the panel holds d×NR values; the score tile lies inside
                        // the n × tk_pad buffer.
                        unsafe {
                            let c = scores.as_mut_ptr().add(g * tk_pad + p * NR);
                            let rhs = panel.as_ptr();
                            tile(d, lhs, rhs, c, store, &[scale; MR]);
                        }
                    }
                }
                let mut reciprocal = [0f32; MAX_ROWS];
                for (r, row) in scores.chunks_exact_mut(tk_pad).enumerate() {
                    let row = &mut row[..tk];
                    if causal {
                        row[(t0 + r + 1).min(tk)..].fill(f32::NEG_INFINITY);
                    }
                    reciprocal[r] = 1.0 / softmax_numerators(row);
                }
                let o_at = bi * o_batch + hi * o_head + t0 * o_row;
                for k0 in (0..tk).step_by(KEY_STEP) {
                    let kc = KEY_STEP.min(tk - k0);
                    for (p, panel) in value_panels.chunks_exact(tk * NR).enumerate() {
                        for g in (0..n).step_by(MR) {
                            let lhs = Lhs {
                                ptr: scores[g * tk_pad + k0..].as_ptr(),
                                row: tk_pad,
                                col: 1,
                            };
                            let store = Store {
                                ldc: o_row,
                                rows: MR.min(n - g),
                                cols: NR.min(d - p * NR),
                                accumulate: k0 > 0,
                            };
                            let row_scale = std::array::from_fn(|i| reciprocal[(g + i).min(n - 1)]);
                            // SAFETY: score rows g.. hold tk values from k0; the panel slice
                            // holds kc×NR values; the output tile (rows t0+g.., channels
                            // p·NR..) of head (bi, hi) lies inside `out` and belongs to this
                            // task alone.
                            unsafe {
                                let c = dst.get().add(o_at + g * o_row + p * NR);
                                let rhs = panel[k0 * NR..].as_ptr();
                                tile(kc, lhs, rhs, c, store, &row_scale);
                            }
                        }
                    }
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
