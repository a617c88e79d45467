//! GroupNorm with optional fused SiLU in f32: one task per (batch, group) on rayon, two passes for
//! mean and variance (f32 lanes per 256-value block summed in f64), one pass for normalise,
//! affine and SiLU.

use rayon::prelude::*;

use crate::fastmath;

/// How a GroupNorm runs over one tensor.
pub struct GroupShape {
    pub channels: usize,
    /// Channels per group.
    pub group_channels: usize,
    /// Values per channel.
    pub spatial: usize,
    pub eps: f64,
    /// Whether SiLU follows.
    pub silu: bool,
}

/// GroupNorm (with SiLU after it when `p.silu`) of `x`, `[B, C, spatial]` contiguous, with the
/// per-channel `weight` and `bias`: each (batch, group) span is `group_channels · spatial`
/// consecutive values, normalised independently.
pub fn group_norm(x: &[f32], weight: &[f32], bias: &[f32], p: &GroupShape) -> Vec<f32> {
    let span = p.group_channels * p.spatial;
    let mut out = vec![0f32; x.len()];
    if span == 0 {
        return out;
    }
    out.par_chunks_mut(span)
        .zip(x.par_chunks(span))
        .enumerate()
        .for_each(|(i, (dst, src))| {
            let groups = p.channels / p.group_channels;
            let first = (i % groups) * p.group_channels;
            let channels = first..first + p.group_channels;
            normalise_group(dst, src, &weight[channels.clone()], &bias[channels], p);
        });
    out
}

fastmath::vectorised! {
    /// One (batch, group) span: `weight` and `bias` hold the group's channels.
    fn normalise_group(dst: &mut [f32], src: &[f32], weight: &[f32], bias: &[f32], p: &GroupShape) {
        // Mean and variance: two passes, f32 partial sums over short blocks (vectorised) added
        // up in f64, as exact as candle's f32 reduction or better.
        let n = src.len() as f64;
        let mean = block_sum(src, |v| v) / n;
        let m32 = mean as f32;
        let var = block_sum(src, |v| (v - m32) * (v - m32)) / n;
        let inv = (1.0 / (var + p.eps).sqrt()) as f32;
        let mean = mean as f32;
        for ((d, s), (&w, &b)) in dst
            .chunks_mut(p.spatial)
            .zip(src.chunks(p.spatial))
            .zip(weight.iter().zip(bias))
        {
            let scale = inv * w;
            if p.silu {
                for (o, &v) in d.iter_mut().zip(s) {
                    *o = fastmath::silu((v - mean) * scale + b);
                }
            } else {
                for (o, &v) in d.iter_mut().zip(s) {
                    *o = (v - mean) * scale + b;
                }
            }
        }
    }
}

/// Σ f(v) over `values`, in f32 lanes per 256-value block and f64 across blocks.
#[inline(always)]
fn block_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    values
        .chunks(256)
        .map(|block| {
            let mut lanes = [0f32; 8];
            let mut chunks = block.chunks_exact(8);
            for c in &mut chunks {
                for (l, &v) in lanes.iter_mut().zip(c) {
                    *l += f(v);
                }
            }
            let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
            lanes.iter().map(|&l| l as f64).sum::<f64>() + tail as f64
        })
        .sum()
}
