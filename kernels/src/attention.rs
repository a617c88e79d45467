//! Fused attention for f32 on the CPU. Keys and values are packed once per (batch, head) into
//! the right-operand panels of `microkernel`; then, for each block of query rows (rayon
//! spreads the blocks over the cores), the scaled scores against all keys go into a per-thread
//! buffer, become softmax numerators in place, and their product with the values lands in the
//! output scaled by each row's reciprocal sum. Queries are read through their strides, so the
//! heads of a `[B, T, H·d]` projection need no transposed copy. Built on the `gemm` crate, the
//! same blocks spent a third of their time re-packing keys, values and scores on every call.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::microkernel::{pack_panels, tile, Lhs, SharedMut, Store, MR, NR};
use crate::softmax::softmax_numerators;
use crate::{fail, Result};

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

/// Where element (b, h, t, i) of a 4-D operand lies in its slice.
#[derive(Debug, Clone, Copy)]
pub struct Strides {
    pub start: usize,
    pub batch: usize,
    pub head: usize,
    pub row: usize,
    pub col: usize,
}

impl Strides {
    fn at(&self, b: usize, h: usize, t: usize) -> usize {
        self.start + b * self.batch + h * self.head + t * self.row
    }
}

/// One operand `[B, H, T, d]`: its values and where each element lies among them.
#[derive(Debug, Clone, Copy)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub strides: Strides,
}

impl Operand<'_> {
    /// Refuses strides that reach past the data for `[b, h, t, d]` elements (an offset that
    /// overflows counts as past).
    fn check(&self, (b, h, t, d): (usize, usize, usize, usize), what: &str) -> Result<()> {
        if b == 0 || h == 0 || t == 0 || d == 0 {
            return Ok(());
        }
        let s = &self.strides;
        let last = [(b, s.batch), (h, s.head), (t, s.row), (d, s.col)]
            .iter()
            .try_fold(s.start, |at, &(n, stride)| {
                (n - 1).checked_mul(stride).and_then(|o| at.checked_add(o))
            });
        if last.is_none_or(|last| last >= self.data.len()) {
            fail!(
                "attention: {what} [{b}, {h}, {t}, {d}] with strides {s:?} overruns its {} values",
                self.data.len()
            );
        }
        Ok(())
    }
}

/// The sizes of one attention: batch, heads, queries, keys and channels per head.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub b: usize,
    pub h: usize,
    pub tq: usize,
    pub tk: usize,
    pub d: usize,
}

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// softmax(q·kᵀ/√d)·v for `q` `[B, H, Tq, d]` and `k`, `v` `[B, H, Tk, d]` of any strides. With
/// `causal`, query `i` sees keys `0..=i` only. The result holds `[B, H, Tq, d]` in `order`.
pub fn attention(
    q: Operand<'_>,
    k: Operand<'_>,
    v: Operand<'_>,
    sizes: Sizes,
    causal: bool,
    order: OutputOrder,
) -> Result<Vec<f32>> {
    let Sizes { b, h, tq, tk, d } = sizes;
    q.check((b, h, tq, d), "q")?;
    k.check((b, h, tk, d), "k")?;
    v.check((b, h, tk, d), "v")?;
    let mut out = vec![0f32; b * h * tq * d];
    if out.is_empty() {
        return Ok(out);
    }
    if tk == 0 {
        // No keys: every softmax is 0/0, as in candle.
        out.fill(f32::NAN);
        return Ok(out);
    }
    let heads = HeadPanels::pack(k, v, sizes);
    let rows = (BLOCK_SCORES / heads.tk_pad)
        .next_multiple_of(MR)
        .clamp(MIN_ROWS, MAX_ROWS)
        .min(tq);
    let blocks = tq.div_ceil(rows);
    let o = OutputLayout::of(order, sizes);
    let dst = SharedMut(out.as_mut_ptr());
    (0..b * h * blocks).into_par_iter().for_each(|task| {
        let (bh, block) = (task / blocks, task % blocks);
        let t0 = block * rows;
        let query = QueryBlock {
            bh,
            t0,
            n: rows.min(tq - t0),
        };
        SCORES.with_borrow_mut(|scores| {
            query.scores(q, &heads, sizes, scores);
            let reciprocal = query.softmax(scores, heads.tk_pad, tk, causal);
            query.add_values(&heads, scores, &reciprocal, sizes, o, dst);
        });
    });
    Ok(out)
}

/// Per (batch, head): the keys as the d × tk right operand of q·kᵀ, `NR` keys per panel, and
/// the values as the tk × d right operand of p·v, `NR` channels per panel.
struct HeadPanels {
    keys: Vec<f32>,
    values: Vec<f32>,
    key_len: usize,
    value_len: usize,
    /// Keys padded to whole panels.
    tk_pad: usize,
}

impl HeadPanels {
    /// Packs `k` and `v` (checked against `sizes`).
    fn pack(k: Operand<'_>, v: Operand<'_>, sizes: Sizes) -> Self {
        let Sizes { b, h, tk, d, .. } = sizes;
        let tk_pad = tk.next_multiple_of(NR);
        let (key_len, value_len) = (tk_pad * d, d.next_multiple_of(NR) * tk);
        let mut keys = vec![0f32; b * h * key_len];
        let mut values = vec![0f32; b * h * value_len];
        let (kst, vst) = (k.strides, v.strides);
        keys.par_chunks_mut(key_len)
            .zip(values.par_chunks_mut(value_len))
            .enumerate()
            .for_each(|(bh, (key_panels, value_panels))| {
                let (k_at, v_at) = (kst.at(bh / h, bh % h, 0), vst.at(bh / h, bh % h, 0));
                // SAFETY: `Operand::check` kept every (b, h, t, i) of k and v inside their
                // slices; the panels hold tk_pad·d and d_pad·tk values.
                unsafe {
                    pack_panels(
                        key_panels,
                        d,
                        tk,
                        k.data.as_ptr().add(k_at),
                        kst.col,
                        kst.row,
                    );
                    pack_panels(
                        value_panels,
                        tk,
                        d,
                        v.data.as_ptr().add(v_at),
                        vst.row,
                        vst.col,
                    );
                }
            });
        Self {
            keys,
            values,
            key_len,
            value_len,
            tk_pad,
        }
    }

    fn keys(&self, bh: usize) -> &[f32] {
        &self.keys[bh * self.key_len..(bh + 1) * self.key_len]
    }

    fn values(&self, bh: usize) -> &[f32] {
        &self.values[bh * self.value_len..(bh + 1) * self.value_len]
    }
}

/// Where the output's rows lie: strides of a batch, a head and a query row.
#[derive(Debug, Clone, Copy)]
struct OutputLayout {
    batch: usize,
    head: usize,
    row: usize,
}

impl OutputLayout {
    fn of(order: OutputOrder, Sizes { h, tq, d, .. }: Sizes) -> Self {
        let (batch, head, row) = match order {
            OutputOrder::HeadsMajor => (h * tq * d, tq * d, d),
            OutputOrder::TokensMajor => (tq * h * d, d, h * d),
        };
        Self { batch, head, row }
    }
}

/// One task: `n` query rows from `t0` of (batch, head) `bh`.
struct QueryBlock {
    bh: usize,
    t0: usize,
    n: usize,
}

impl QueryBlock {
    /// Writes the block's scaled scores against all keys into `scores` (`n` rows of `tk_pad`).
    fn scores(&self, q: Operand<'_>, heads: &HeadPanels, sizes: Sizes, scores: &mut Vec<f32>) {
        let (n, d, tk_pad) = (self.n, sizes.d, heads.tk_pad);
        let scale = 1.0 / (d as f32).sqrt();
        let qst = q.strides;
        scores.resize(n * tk_pad, 0.0);
        let q_at = qst.at(self.bh / sizes.h, self.bh % sizes.h, self.t0);
        for (p, panel) in heads.keys(self.bh).chunks_exact(d * NR).enumerate() {
            for g in (0..n).step_by(MR) {
                let lhs = Lhs {
                    ptr: q.data[q_at + g * qst.row..].as_ptr(),
                    row: qst.row,
                    col: qst.col,
                };
                let store = Store {
                    ldc: tk_pad,
                    rows: MR.min(n - g),
                    cols: NR,
                    accumulate: false,
                };
                // SAFETY: query rows t0+g.. of the head lie in q's slice for d columns
                // (`Operand::check`); the panel holds d×NR values; the score tile lies inside
                // the n × tk_pad buffer.
                unsafe {
                    let c = scores.as_mut_ptr().add(g * tk_pad + p * NR);
                    tile(d, lhs, panel.as_ptr(), c, store, &[scale; MR]);
                }
            }
        }
    }

    /// Turns each score row into softmax numerators in place (keys past the query masked when
    /// `causal`) and returns the rows' reciprocal sums.
    fn softmax(
        &self,
        scores: &mut [f32],
        tk_pad: usize,
        tk: usize,
        causal: bool,
    ) -> [f32; MAX_ROWS] {
        let mut reciprocal = [0f32; MAX_ROWS];
        for (r, row) in scores.chunks_exact_mut(tk_pad).enumerate() {
            let row = &mut row[..tk];
            if causal {
                row[(self.t0 + r + 1).min(tk)..].fill(f32::NEG_INFINITY);
            }
            reciprocal[r] = 1.0 / softmax_numerators(row);
        }
        reciprocal
    }

    /// Writes the block's output rows: the numerators times the values, each row scaled by its
    /// reciprocal sum.
    fn add_values(
        &self,
        heads: &HeadPanels,
        scores: &[f32],
        reciprocal: &[f32; MAX_ROWS],
        sizes: Sizes,
        o: OutputLayout,
        dst: SharedMut,
    ) {
        let (n, tk, d, tk_pad) = (self.n, sizes.tk, sizes.d, heads.tk_pad);
        let o_at = self.bh / sizes.h * o.batch + self.bh % sizes.h * o.head + self.t0 * o.row;
        for k0 in (0..tk).step_by(KEY_STEP) {
            let kc = KEY_STEP.min(tk - k0);
            for (p, panel) in heads.values(self.bh).chunks_exact(tk * NR).enumerate() {
                for g in (0..n).step_by(MR) {
                    let lhs = Lhs {
                        ptr: scores[g * tk_pad + k0..].as_ptr(),
                        row: tk_pad,
                        col: 1,
                    };
                    let store = Store {
                        ldc: o.row,
                        rows: MR.min(n - g),
                        cols: NR.min(d - p * NR),
                        accumulate: k0 > 0,
                    };
                    let row_scale = std::array::from_fn(|i| reciprocal[(g + i).min(n - 1)]);
                    // SAFETY: score rows g.. hold tk values from k0; the panel slice holds
                    // kc×NR values; the output tile (rows t0+g.., channels p·NR..) of the head
                    // lies inside the output and belongs to this task alone.
                    unsafe {
                        let c = dst.get().add(o_at + g * o.row + p * NR);
                        tile(kc, lhs, panel[k0 * NR..].as_ptr(), c, store, &row_scale);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operand(data: &[f32], strides: Strides) -> Operand<'_> {
        Operand { data, strides }
    }

    /// Strides that reach past the data, or overflow on the way, are refused, never read.
    #[test]
    fn refuses_operands_past_their_data() {
        let data = vec![0.5f32; 2 * 3 * 4];
        let fits = Strides {
            start: 0,
            batch: 12,
            head: 4,
            row: 4,
            col: 1,
        };
        let sizes = Sizes {
            b: 2,
            h: 3,
            tq: 1,
            tk: 1,
            d: 4,
        };
        let ok = attention(
            operand(&data, fits),
            operand(&data, fits),
            operand(&data, fits),
            sizes,
            false,
            OutputOrder::HeadsMajor,
        );
        assert_eq!(ok.map(|o| o.len()).ok(), Some(2 * 3 * 4));
        for bad in [
            Strides { start: 1, ..fits },
            Strides { batch: 13, ..fits },
            Strides {
                head: usize::MAX / 2,
                ..fits
            },
        ] {
            let refused = attention(
                operand(&data, bad),
                operand(&data, fits),
                operand(&data, fits),
                sizes,
                false,
                OutputOrder::HeadsMajor,
            );
            assert!(refused.is_err(), "{bad:?}");
        }
    }
}
