//! Fully connected layers. On the CPU the transposed weight is packed once at load into the
//! right-operand panels of `kernels::matmul` (kept in its dtype: f16/bf16 under `--vram low`,
//! widened per call; or rounded to bf16 pairs when the builder's [`Kernels`] say so,
//! `--cpu-bf16`), and for f32 inputs one product multiplies all rows (leading dimensions
//! flattened) by it, straight into an output pre-filled with the bias; candle_nn's `Linear` adds
//! the bias in a second pass over the whole output. Other devices and dtypes use candle_nn's
//! `Linear`, with the weights cast to the input's dtype.

use candle_core::{DType, Module, Result, Tensor};

use crate::nn::cpu::cpu_f32;
use crate::nn::panels::Panels;
use crate::nn::{Builder, Kernels};

const WHAT: &str = "linear fast path";

/// A linear layer `y = x·Wᵀ + b`, `W` being `[out, in]`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
    kernels: Kernels,
}

#[derive(Debug, Clone)]
enum Weight {
    /// On the CPU: Wᵀ packed once for `kernels::matmul`, in the dtype the weight is kept in.
    Packed(Panels),
    /// Elsewhere (and placeholders that are never run): `[out, in]` as loaded.
    Dense(Tensor),
}

/// Loads `weight` `[out, in]` and `bias` `[out]` from `vb`.
pub fn linear(input: usize, output: usize, vb: Builder) -> Result<Linear> {
    let inner = candle_nn::linear(input, output, vb.vars())?;
    Linear::new(inner.weight().clone(), inner.bias().cloned(), vb.kernels())
}

/// Loads `weight` `[out, in]` from `vb`, without bias.
pub fn linear_no_bias(input: usize, output: usize, vb: Builder) -> Result<Linear> {
    let inner = candle_nn::linear_no_bias(input, output, vb.vars())?;
    Linear::new(inner.weight().clone(), None, vb.kernels())
}

impl Linear {
    /// A layer from a `[out, in]` weight and an optional `[out]` bias; on the CPU the weight is
    /// packed now (as bf16 pairs when `kernels.bf16_products`) and the dense copy let go.
    pub fn new(weight: Tensor, bias: Option<Tensor>, kernels: Kernels) -> Result<Self> {
        let packed = if kernels.bf16_products {
            Panels::pairs_of_transposed(&weight)?
        } else {
            Panels::of_transposed(&weight)?
        };
        let weight = match packed {
            Some(panels) => Weight::Packed(panels),
            None => Weight::Dense(weight),
        };
        Ok(Self {
            weight,
            bias,
            kernels,
        })
    }

    /// The dtype the weight is kept in.
    pub fn weight_dtype(&self) -> DType {
        match &self.weight {
            Weight::Packed(panels) => panels.dtype(),
            Weight::Dense(weight) => weight.dtype(),
        }
    }

    /// candle_nn's `Linear` with `weight`, the weight and bias cast to `x`'s dtype where they
    /// differ (lean or LoRA-merged weights).
    fn candle(&self, weight: &Tensor, x: &Tensor) -> Result<Tensor> {
        let cast = |t: &Tensor| {
            if t.dtype() == x.dtype() {
                Ok(t.clone())
            } else {
                t.to_dtype(x.dtype())
            }
        };
        let bias = self.bias.as_ref().map(cast).transpose()?;
        candle_nn::Linear::new(cast(weight)?, bias).forward(x)
    }

    fn forward_packed(&self, panels: &Panels, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        let (in_dim, out_dim) = panels.dims();
        let mut dims = x.dims().to_vec();
        let k = dims.pop().unwrap_or(0);
        if k != in_dim {
            candle_core::bail!("linear: input has {k} features, weight is {out_dim}×{in_dim}");
        }
        let m: usize = dims.iter().product();
        let mut out = match &self.bias {
            Some(bias) => {
                let bias = bias.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                if bias.len() != out_dim {
                    candle_core::bail!("linear: {} biases for {out_dim} outputs", bias.len());
                }
                bias.repeat(m)
            }
            None => vec![0f32; m * out_dim],
        };
        if m > 0 && out_dim > 0 && k > 0 {
            let (xs, xl) = x.storage_and_layout();
            let xd = cpu_f32(&xs, xl, WHAT)?;
            panels.accumulate(&mut out, out_dim, xd, m)?;
        }
        dims.push(out_dim);
        Tensor::from_vec(out, dims, x.device())
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.weight {
            Weight::Packed(panels) if self.kernels.own_for(x) && x.rank() >= 1 => {
                self.forward_packed(panels, x)
            }
            // candle's path (`--compare-candle`, f16/bf16 compute on the CPU) gets the dense
            // weight back for each call.
            Weight::Packed(panels) => self.candle(&panels.dense(x.device())?, x),
            Weight::Dense(weight) => self.candle(weight, x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The packed path matches candle_nn's Linear on 2-, 3- and 4-D inputs, with and without bias.
    #[test]
    fn matches_candle_nn() -> Result<()> {
        let dev = Device::Cpu;
        let weight = Tensor::randn(0f32, 0.3, (7, 5), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, 7, &dev)?;
        for with_bias in [false, true] {
            let inner = candle_nn::Linear::new(weight.clone(), with_bias.then(|| bias.clone()));
            let ours = Linear::new(
                weight.clone(),
                with_bias.then(|| bias.clone()),
                Kernels::default(),
            )?;
            for shape in [vec![3, 5], vec![2, 4, 5], vec![2, 3, 2, 5]] {
                let x = Tensor::randn(0f32, 1.0, shape.as_slice(), &dev)?;
                let (got, want) = (ours.forward(&x)?, inner.forward(&x)?);
                assert_eq!(got.dims(), want.dims());
                let diff = (got - want)?
                    .abs()?
                    .flatten_all()?
                    .max(0)?
                    .to_scalar::<f32>()?;
                assert!(diff < 1e-5, "{shape:?} bias={with_bias}: {diff}");
            }
        }
        // f16 weights with f32 inputs: the same as the weights widened beforehand.
        let half = Linear::new(
            weight.to_dtype(DType::F16)?,
            Some(bias.to_dtype(DType::F16)?),
            Kernels::default(),
        )?;
        let widened = candle_nn::Linear::new(
            weight.to_dtype(DType::F16)?.to_dtype(DType::F32)?,
            Some(bias.to_dtype(DType::F16)?.to_dtype(DType::F32)?),
        );
        let x = Tensor::randn(0f32, 1.0, (4, 5), &dev)?;
        let diff = (half.forward(&x)? - widened.forward(&x)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "f16 weights: {diff}");
        Ok(())
    }

    /// Layers built with bf16 products keep bf16 pairs and come within bf16 rounding of
    /// candle_nn's f32 layer (but not equal to it); layers built without are f32.
    #[test]
    fn bf16_products_stay_within_bf16_rounding() -> Result<()> {
        let dev = Device::Cpu;
        let weight = Tensor::randn(0f32, 0.3, (33, 70), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, 33, &dev)?;
        let bf16 = Kernels {
            bf16_products: true,
            ..Kernels::default()
        };
        let ours = Linear::new(weight.clone(), Some(bias.clone()), bf16)?;
        assert_eq!(ours.weight_dtype(), DType::BF16);
        let x = Tensor::randn(0f32, 1.0, (2, 9, 70), &dev)?;
        let want = candle_nn::Linear::new(weight.clone(), Some(bias.clone())).forward(&x)?;
        let got = ours.forward(&x)?;
        let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
        let diff = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()? / scale;
        assert!(diff > 0.0 && diff < 2e-2, "bf16 products: {diff}");
        let after = Linear::new(weight, Some(bias), Kernels::default())?;
        assert_eq!(after.weight_dtype(), DType::F32);
        Ok(())
    }

    /// A packed layer also runs through candle's ops: with our kernels off, and with f16 inputs.
    #[test]
    fn packed_weights_serve_candles_path() -> Result<()> {
        let dev = Device::Cpu;
        let weight = Tensor::randn(0f32, 0.3, (19, 6), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, 19, &dev)?;
        let ours = Linear::new(weight.clone(), Some(bias.clone()), Kernels::default())?;
        assert!(matches!(ours.weight, Weight::Packed(_)));
        let candles = Kernels {
            own: false,
            ..Kernels::default()
        };
        let theirs = Linear::new(weight.clone(), Some(bias.clone()), candles)?;
        assert!(matches!(theirs.weight, Weight::Packed(_)));
        let x = Tensor::randn(0f32, 1.0, (3, 6), &dev)?;
        let want = candle_nn::Linear::new(weight, Some(bias)).forward(&x)?;
        let half = ours
            .forward(&x.to_dtype(DType::F16)?)?
            .to_dtype(DType::F32)?;
        let max_diff = |t: Tensor| -> Result<f32> { (t - &want)?.abs()?.max_all()?.to_scalar() };
        assert!(max_diff(half)? < 2e-2);
        assert!(max_diff(theirs.forward(&x)?)? < 1e-5);
        Ok(())
    }
}
