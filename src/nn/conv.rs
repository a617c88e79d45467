//! 2-D convolution for the UNet and VAE. On the CPU in f32 it runs our kernels
//! (`kernels::conv`: Winograd, shifted products or im2col, a nearest 2× upsample folded in so the
//! upsampled tensor is never built); candle's CPU conv2d converts the whole input to NHWC
//! single-threaded and multiplies 512-pixel tiles, which is slow when channels are few. Weights
//! kept in f16/bf16 are widened to f32 first. Other devices and dtypes use candle.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig};

use crate::kernels::conv::{convolve, Geometry};
use crate::nn::cpu::{cpu_f32, with_f32};
use crate::nn::{Builder, Kernels};

const WHAT: &str = "conv2d fast path";

/// A convolution layer; see the module documentation for how it runs.
#[derive(Debug, Clone)]
pub struct Conv {
    inner: Conv2d,
    kernels: Kernels,
    kernel: usize,
    stride: usize,
    padding: usize,
}

/// Loads a `kernel`×`kernel` convolution with bias from `vb`.
pub fn conv(
    vb: Builder,
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Conv> {
    let cfg = Conv2dConfig {
        padding,
        stride,
        ..Default::default()
    };
    Ok(Conv {
        inner: candle_nn::conv2d(cin, cout, kernel, cfg, vb.vars())?,
        kernels: vb.kernels(),
        kernel,
        stride,
        padding,
    })
}

impl Conv {
    /// The `[out, in, k, k]` kernel.
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    /// Convolves `x` `[B, C, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.own_path(x) {
            self.im2col_product(x, false)
        } else {
            self.candle(x)
        }
    }

    /// candle's conv2d, the weights cast to the input's dtype where they differ.
    fn candle(&self, x: &Tensor) -> Result<Tensor> {
        let same = |t: &Tensor| t.dtype() == x.dtype();
        if same(self.inner.weight()) && self.inner.bias().is_none_or(same) {
            return self.inner.forward(x);
        }
        let cast = |t: &Tensor| t.to_dtype(x.dtype());
        let bias = self.inner.bias().map(cast).transpose()?;
        Conv2d::new(cast(self.inner.weight())?, bias, *self.inner.config()).forward(x)
    }

    /// Convolves the nearest-neighbour 2× upsampling of `x`, without building it on the CPU.
    pub fn forward_upsampled(&self, x: &Tensor) -> Result<Tensor> {
        if self.own_path(x) {
            self.im2col_product(x, true)
        } else {
            let (_, _, h, w) = x.dims4()?;
            self.candle(&x.upsample_nearest2d(2 * h, 2 * w)?)
        }
    }

    fn own_path(&self, x: &Tensor) -> bool {
        self.kernels.own_for(x)
            && matches!(
                self.inner.weight().dtype(),
                DType::F32 | DType::F16 | DType::BF16
            )
            && (self.kernel > 1 || (self.stride == 1 && self.padding == 0))
            && x.rank() == 4
    }

    fn im2col_product(&self, x: &Tensor, upsample: bool) -> Result<Tensor> {
        let x = x.contiguous()?;
        let (b, cin, h, w) = x.dims4()?;
        let (h, w) = if upsample { (2 * h, 2 * w) } else { (h, w) };
        let weight = self.inner.weight();
        let (cout, wcin, kh, kw) = weight.dims4()?;
        if wcin != cin || kh != self.kernel || kw != self.kernel {
            candle_core::bail!(
                "conv2d: input has {cin} channels, weight is {:?}",
                weight.dims()
            );
        }
        let k = self.kernel;
        let (s, pad) = (self.stride, self.padding);
        if h + 2 * pad < k || w + 2 * pad < k {
            candle_core::bail!("conv2d: input {h}×{w} smaller than the {k}×{k} kernel");
        }
        let geo = Geometry {
            cin,
            h,
            w,
            k,
            stride: s,
            pad,
            out_h: (h + 2 * pad - k) / s + 1,
            out_w: (w + 2 * pad - k) / s + 1,
            upsample,
        };
        let bias = match self.inner.bias() {
            Some(bias) => bias.to_dtype(DType::F32)?.to_vec1::<f32>()?,
            None => vec![0f32; cout],
        };
        let out = {
            let (xs, xl) = x.storage_and_layout();
            let xd = cpu_f32(&xs, xl, WHAT)?;
            with_f32(weight, WHAT, |wd| {
                convolve(xd, wd, &bias, b, cout, &geo).map_err(candle_core::Error::wrap)
            })?
        };
        Tensor::from_vec(out, (b, cout, geo.out_h, geo.out_w), x.device())
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Conv::forward(self, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn check(cin: usize, cout: usize, h: usize, w: usize, stride: usize, up: bool) -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, cin, h, w), &dev)?;
        let weight = Tensor::randn(0f32, 0.2, (cout, cin, 3, 3), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, cout, &dev)?;
        let cfg = Conv2dConfig {
            padding: 1,
            stride,
            ..Default::default()
        };
        let ours = Conv {
            inner: Conv2d::new(weight, Some(bias), cfg),
            kernels: Kernels::default(),
            kernel: 3,
            stride,
            padding: 1,
        };
        let (got, input) = if up {
            let big = x.upsample_nearest2d(2 * h, 2 * w)?;
            (ours.forward_upsampled(&x)?, big)
        } else {
            (ours.forward(&x)?, x)
        };
        let want = ours.inner.forward(&input)?;
        assert_eq!(got.dims(), want.dims());
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(
            diff < 1e-4,
            "{cin}→{cout} {h}×{w} s{stride} up={up}: {diff}"
        );
        Ok(())
    }

    /// The im2col + product path matches candle's conv2d, with stride 2 and a folded upsample.
    #[test]
    fn matches_candle_conv2d() -> Result<()> {
        check(3, 5, 9, 7, 1, false)?;
        check(4, 6, 9, 8, 2, false)?;
        check(5, 3, 4, 6, 1, true)?;
        check(8, 16, 17, 13, 1, false)?;
        check(4, 4, 10, 9, 2, true)
    }

    /// A 1×1 convolution (the VAE's attention projections, skip connections) matches candle's,
    /// also when its pixels are packed in several chunks (the last one partial).
    #[test]
    fn pointwise_matches_candle_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        for (cin, cout, h, w) in [(6, 4, 5, 7), (1024, 20, 33, 40)] {
            let x = Tensor::randn(0f32, 1.0, (2, cin, h, w), &dev)?;
            let std = 0.5 / (cin as f32).sqrt();
            let weight = Tensor::randn(0f32, std, (cout, cin, 1, 1), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, cout, &dev)?;
            let ours = Conv {
                inner: Conv2d::new(weight, Some(bias), Conv2dConfig::default()),
                kernels: Kernels::default(),
                kernel: 1,
                stride: 1,
                padding: 0,
            };
            let diff = (ours.forward(&x)? - ours.inner.forward(&x)?)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(diff < 1e-5, "{cin}→{cout} {h}×{w}: {diff}");
        }
        Ok(())
    }
}
