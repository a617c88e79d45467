//! Fully connected layers. On the CPU in f32 one product (`engine::matmul`) multiplies all rows
//! (leading dimensions flattened) by the transposed weight, straight into an output pre-filled
//! with the bias; candle_nn's `Linear` adds the bias in a second pass over the whole output.
//! Weights kept in f16/bf16 (`--vram low` on the CPU) are widened to f32 for the product. Other
//! devices and dtypes use candle_nn's `Linear`, with the weights cast to the input's dtype.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::kernels::{cpu_f32, own_kernels, with_f32};
use super::matmul::{accumulate, with_packed};

const WHAT: &str = "linear fast path";

/// A linear layer `y = x·Wᵀ + b`, `W` being `[out, in]`.
#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
}

/// Loads `weight` `[out, in]` and `bias` `[out]` from `vb`.
pub fn linear(input: usize, output: usize, vb: VarBuilder) -> Result<Linear> {
    Ok(Linear {
        inner: candle_nn::linear(input, output, vb)?,
    })
}

/// Loads `weight` `[out, in]` from `vb`, without bias.
pub fn linear_no_bias(input: usize, output: usize, vb: VarBuilder) -> Result<Linear> {
    Ok(Linear {
        inner: candle_nn::linear_no_bias(input, output, vb)?,
    })
}

impl Linear {
    /// A layer from a `[out, in]` weight and an optional `[out]` bias.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            inner: candle_nn::Linear::new(weight, bias),
        }
    }

    /// The `[out, in]` weight.
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    /// Whether the weight or the bias is of another dtype than `x` (lean or LoRA-merged weights).
    fn dtype_differs(&self, x: &Tensor) -> bool {
        self.inner.weight().dtype() != x.dtype()
            || self.inner.bias().is_some_and(|b| b.dtype() != x.dtype())
    }

    fn own_path(&self, x: &Tensor) -> bool {
        own_kernels()
            && x.device().is_cpu()
            && x.dtype() == DType::F32
            && matches!(
                self.inner.weight().dtype(),
                DType::F32 | DType::F16 | DType::BF16
            )
            && x.rank() >= 1
    }

    fn forward_cpu(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        let weight = self.inner.weight();
        let (out_dim, in_dim) = weight.dims2()?;
        let mut dims = x.dims().to_vec();
        let k = dims.pop().unwrap_or(0);
        if k != in_dim {
            candle_core::bail!("linear: input has {k} features, weight is {out_dim}×{in_dim}");
        }
        let m: usize = dims.iter().product();
        let mut out = match self.inner.bias() {
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
            with_f32(weight, WHAT, |wd| {
                // Wᵀ is the k×out_dim matrix of row stride 1 and column stride k.
                with_packed(wd, (k, out_dim), (1, k), |wt| {
                    accumulate(&mut out, out_dim, xd, (m, k, out_dim), wt)
                })
            })?;
        }
        dims.push(out_dim);
        Tensor::from_vec(out, dims, x.device())
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.own_path(x) {
            self.forward_cpu(x)
        } else if self.dtype_differs(x) {
            let cast = |t: &Tensor| t.to_dtype(x.dtype());
            let bias = self.inner.bias().map(cast).transpose()?;
            candle_nn::Linear::new(cast(self.inner.weight())?, bias).forward(x)
        } else {
            self.inner.forward(x)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The gemm path matches candle_nn's Linear on 2-, 3- and 4-D inputs, with and without bias.
    #[test]
    fn matches_candle_nn() -> Result<()> {
        let dev = Device::Cpu;
        let weight = Tensor::randn(0f32, 0.3, (7, 5), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, 7, &dev)?;
        for with_bias in [false, true] {
            let inner = candle_nn::Linear::new(weight.clone(), with_bias.then(|| bias.clone()));
            let ours = Linear::new(weight.clone(), with_bias.then(|| bias.clone()));
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
        );
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
}
