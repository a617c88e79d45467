//! Group normalisation with an optional fused SiLU. On the CPU in f32 it runs as one hand-written
//! kernel (two passes per group, rayon over batch × groups) instead of candle_nn's chain of eight
//! tensor ops, each of which walks the whole activation; on other devices and dtypes it is
//! candle_nn's `GroupNorm` followed by `silu`.

use crate::kernels::norm::{group_norm as fused_group_norm, GroupShape};
use crate::nn::cpu::cpu_f32;
use crate::nn::{Builder, Kernels};
use candle_core::{DType, Module, Result, Shape, Tensor};

const WHAT: &str = "fused GroupNorm";

/// A GroupNorm layer (`weight`, `bias` per channel) that can apply SiLU in the same pass.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
    kernels: Kernels,
}

/// Loads `weight` and `bias` (`[channels]`) from `vb`.
pub fn group_norm(groups: usize, channels: usize, eps: f64, vb: Builder) -> Result<GroupNorm> {
    let weight = vb.get(channels, "weight")?;
    let bias = vb.get(channels, "bias")?;
    Ok(GroupNorm {
        weight,
        bias,
        groups,
        eps,
        kernels: vb.kernels(),
    })
}

impl GroupNorm {
    /// Normalises `x` `[B, C, …]`; with `silu`, applies `x·σ(x)` to the result.
    pub fn forward_act(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        let fused = self.kernels.own_for(x) && x.rank() >= 3;
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
        let params = GroupShape {
            channels: c,
            group_channels: c / self.groups,
            spatial,
            eps: self.eps,
            silu,
        };
        let out = {
            let (storage, layout) = x.storage_and_layout();
            let src = cpu_f32(&storage, layout, WHAT)?;
            fused_group_norm(src, &weight, &bias, &params)
        };
        Tensor::from_vec(out, Shape::from(x.dims()), x.device())
    }
}

/// A LayerNorm whose `weight` and `bias` (`[channels]`, from `vb`) are cast to the compute dtype
/// `dtype`: the network may keep its weights narrower (lean weights on the CPU).
pub fn layer_norm(
    channels: usize,
    eps: f64,
    vb: Builder,
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
            kernels: Kernels::default(),
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
