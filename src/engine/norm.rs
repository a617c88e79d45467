//! Group normalisation with an optional fused SiLU. On the CPU in f32 it runs as one hand-written
//! kernel (two passes per group, rayon over batch × groups) instead of candle_nn's chain of eight
//! tensor ops, each of which walks the whole activation; on other devices and dtypes it is
//! candle_nn's `GroupNorm` followed by `silu`.

use candle_core::{DType, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::fastmath;
use super::kernels::cpu_f32;

const WHAT: &str = "fused GroupNorm";

/// A GroupNorm layer (`weight`, `bias` per channel) that can apply SiLU in the same pass.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

/// Loads `weight` and `bias` (`[channels]`) from `vb`.
pub fn group_norm(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<GroupNorm> {
    let weight = vb.get(channels, "weight")?;
    let bias = vb.get(channels, "bias")?;
    Ok(GroupNorm {
        weight,
        bias,
        groups,
        eps,
    })
}

impl GroupNorm {
    /// Normalises `x` `[B, C, …]`; with `silu`, applies `x·σ(x)` to the result.
    pub fn forward_act(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        let fused = super::kernels::own_kernels()
            && x.device().is_cpu()
            && x.dtype() == DType::F32
            && x.rank() >= 3;
        if !fused {
            let inner = candle_nn::GroupNorm::new(
                self.weight.to_dtype(x.dtype())?,
                self.bias.to_dtype(x.dtype())?,
                self.weight.elem_count(),
                self.groups,
                self.eps,
            )?;
            let y = inner.forward(x)?;
            return if silu { y.silu() } else { Ok(y) };
        }
        let x = x.contiguous()?;
        let (b, c) = (x.dim(0)?, x.dim(1)?);
        if c % self.groups != 0 || c != self.weight.elem_count() {
            candle_core::bail!(
                "GroupNorm over {c} channels in {} groups with {} weights",
                self.groups,
                self.weight.elem_count()
            );
        }
        let spatial = x.elem_count() / (b * c).max(1);
        let weight = self.weight.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let bias = self.bias.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let params = Params {
            channels: c,
            group_channels: c / self.groups,
            spatial,
            eps: self.eps,
            silu,
        };
        let out = {
            let (storage, layout) = x.storage_and_layout();
            let src = cpu_f32(&storage, layout, WHAT)?;
            normalise(src, &weight, &bias, &params)
        };
        Tensor::from_vec(out, Shape::from(x.dims()), x.device())
    }
}

/// A LayerNorm whose `weight` and `bias` (`[channels]`, from `vb`) are cast to the compute dtype
/// `dtype`: the network may keep its weights narrower (lean weights on the CPU).
pub fn layer_norm(
    channels: usize,
    eps: f64,
    vb: VarBuilder,
    dtype: DType,
) -> Result<candle_nn::LayerNorm> {
    let weight = vb.get(channels, "weight")?.to_dtype(dtype)?;
    let bias = vb.get(channels, "bias")?.to_dtype(dtype)?;
    Ok(candle_nn::LayerNorm::new(weight, bias, eps))
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, false)
    }
}

struct Params {
    channels: usize,
    group_channels: usize,
    spatial: usize,
    eps: f64,
    silu: bool,
}

/// `x` is `[B, C, spatial]` contiguous; each (batch, group) span is `group_channels · spatial`
/// consecutive values, normalised independently.
fn normalise(x: &[f32], weight: &[f32], bias: &[f32], p: &Params) -> Vec<f32> {
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
    fn normalise_group(dst: &mut [f32], src: &[f32], weight: &[f32], bias: &[f32], p: &Params) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The fused kernel matches candle_nn's GroupNorm (+ silu) to f32 rounding.
    #[test]
    fn fused_matches_candle_nn() -> Result<()> {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 3.0, (2, 8, 5, 7), &dev)? + 1.5)?;
        let weight = Tensor::randn(1f32, 0.5, 8, &dev)?;
        let bias = Tensor::randn(0f32, 0.5, 8, &dev)?;
        let inner = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), 8, 4, 1e-5)?;
        let ours = GroupNorm {
            weight,
            bias,
            groups: 4,
            eps: 1e-5,
        };
        for silu in [false, true] {
            let reference = inner.forward(&x)?;
            let reference = if silu { reference.silu()? } else { reference };
            let diff = (ours.forward_act(&x, silu)? - reference)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(diff < 1e-5, "silu={silu}: {diff}");
        }
        Ok(())
    }
}
