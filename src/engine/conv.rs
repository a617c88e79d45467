//! 2-D convolution for the UNet and VAE. On the CPU in f32, a k×k convolution runs as our own
//! im2col into bounded chunks of output rows (parallel over the kernel taps) followed by one
//! `gemm` per chunk that writes straight into the NCHW output, bias pre-filled; a nearest 2×
//! upsample can be folded into the im2col so the upsampled tensor is never built. candle's CPU
//! conv2d converts the whole input to NHWC single-threaded and multiplies 512-pixel tiles, which
//! is slow when channels are few. A 1×1 convolution is one `gemm` on the input as it is. Weights
//! kept in f16/bf16 are widened to f32 first. Other devices and dtypes use candle.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};
use rayon::prelude::*;

use super::kernels::{cpu_f32, with_f32};

const WHAT: &str = "conv2d fast path";

/// Largest im2col chunk, in f32 elements (4 MiB: measured faster than 16 MiB for both the tiny
/// and the full-size VAE), unless `MIN_CHUNK_PIXELS` asks for more (up to 94 MB for the UNet's
/// 2560-channel 3×3 convolutions).
const CHUNK_ELEMENTS: usize = 1 << 20;

/// Fewest output pixels per chunk, whatever the chunk's size: with thousands of input channels
/// (the UNet's 16×16 levels) the 4 MiB bound left 32-pixel products that streamed the whole
/// weight once per two output rows.
const MIN_CHUNK_PIXELS: usize = 1024;

/// A convolution layer; see the module documentation for how it runs.
#[derive(Debug, Clone)]
pub struct Conv {
    inner: Conv2d,
    kernel: usize,
    stride: usize,
    padding: usize,
}

/// Loads a `kernel`×`kernel` convolution with bias from `vb`.
pub fn conv(
    vb: VarBuilder,
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
        inner: candle_nn::conv2d(cin, cout, kernel, cfg, vb)?,
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
            self.im2col_gemm(x, false)
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
            self.im2col_gemm(x, true)
        } else {
            let (_, _, h, w) = x.dims4()?;
            self.candle(&x.upsample_nearest2d(2 * h, 2 * w)?)
        }
    }

    fn own_path(&self, x: &Tensor) -> bool {
        super::kernels::own_kernels()
            && x.device().is_cpu()
            && x.dtype() == DType::F32
            && matches!(
                self.inner.weight().dtype(),
                DType::F32 | DType::F16 | DType::BF16
            )
            && (self.kernel > 1 || (self.stride == 1 && self.padding == 0))
            && x.rank() == 4
    }

    fn im2col_gemm(&self, x: &Tensor, upsample: bool) -> Result<Tensor> {
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
            with_f32(weight, WHAT, |wd| Ok(run(xd, wd, &bias, b, cout, &geo)))?
        };
        Tensor::from_vec(out, (b, cout, geo.out_h, geo.out_w), x.device())
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Conv::forward(self, x)
    }
}

/// Shapes of one convolution; `h`, `w` are of the (virtually upsampled) input.
struct Geometry {
    cin: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
    out_h: usize,
    out_w: usize,
    upsample: bool,
}

fn run(x: &[f32], weight: &[f32], bias: &[f32], b: usize, cout: usize, g: &Geometry) -> Vec<f32> {
    let taps = g.cin * g.k * g.k;
    let plane = g.out_h * g.out_w;
    let (src_h, src_w) = if g.upsample {
        (g.h / 2, g.w / 2)
    } else {
        (g.h, g.w)
    };
    let rows_per_chunk = (CHUNK_ELEMENTS / (taps * g.out_w).max(1))
        .max(MIN_CHUNK_PIXELS.div_ceil(g.out_w.max(1)))
        .clamp(1, g.out_h);
    let mut out = vec![0f32; b * cout * plane];
    let pointwise = g.k == 1 && g.stride == 1 && g.pad == 0 && !g.upsample;
    let mut cols = if pointwise {
        Vec::new()
    } else {
        vec![0f32; taps * rows_per_chunk * g.out_w]
    };
    let threads = rayon::current_num_threads();
    for batch in 0..b {
        let input = &x[batch * g.cin * src_h * src_w..(batch + 1) * g.cin * src_h * src_w];
        let output = &mut out[batch * cout * plane..(batch + 1) * cout * plane];
        for (c, row) in output.chunks_mut(plane).enumerate() {
            row.fill(bias[c]);
        }
        if pointwise {
            // A pointwise convolution is one product with the input as it is (the input plane
            // equals the output plane).
            accumulate(output, plane, weight, input, plane, threads);
            continue;
        }
        let mut y0 = 0;
        while y0 < g.out_h {
            let rows = rows_per_chunk.min(g.out_h - y0);
            let n = rows * g.out_w;
            let cols = &mut cols[..taps * n];
            cols.par_chunks_mut(n).enumerate().for_each(|(tap, dst)| {
                fill_tap(input, src_w, src_h * src_w, g, tap, y0, dst);
            });
            accumulate(&mut output[y0 * g.out_w..], plane, weight, cols, n, threads);
            y0 += rows;
        }
    }
    out
}

/// `out[c][j] += Σ_t weight[c][t] · cols[t][j]`: `weight` is `cout × taps` and `cols` `taps × n`,
/// row-major; `out` holds `cout` rows of stride `stride`, of which the first `n` values are
/// written.
fn accumulate(
    out: &mut [f32],
    stride: usize,
    weight: &[f32],
    cols: &[f32],
    n: usize,
    threads: usize,
) {
    let taps = cols.len() / n.max(1);
    let cout = weight.len() / taps.max(1);
    assert!(
        cols.len() == taps * n
            && weight.len() == cout * taps
            && (cout == 0 || out.len() >= (cout - 1) * stride + n),
        "convolution product shapes do not fit"
    );
    // SAFETY: the assertion above keeps every row and column inside the three slices.
    unsafe {
        gemm::gemm(
            cout,
            n,
            taps,
            out.as_mut_ptr(),
            1,
            stride as isize,
            true,
            weight.as_ptr(),
            1,
            taps as isize,
            cols.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(threads),
        );
    }
}

/// Fills one im2col row: input channel and kernel offset `tap`, for output rows `y0..` (as many
/// as `dst` holds).
fn fill_tap(
    input: &[f32],
    src_w: usize,
    src_plane: usize,
    g: &Geometry,
    tap: usize,
    y0: usize,
    dst: &mut [f32],
) {
    let (ci, ky, kx) = (tap / (g.k * g.k), (tap / g.k) % g.k, tap % g.k);
    let channel = &input[ci * src_plane..(ci + 1) * src_plane];
    // Output columns whose input column `ox·stride + kx − pad` lies inside the image.
    let first = g.pad.saturating_sub(kx).div_ceil(g.stride).min(g.out_w);
    let end = if g.w + g.pad > kx {
        ((g.w + g.pad - kx - 1) / g.stride + 1).clamp(first, g.out_w)
    } else {
        first
    };
    for (r, line) in dst.chunks_mut(g.out_w).enumerate() {
        let iy = ((y0 + r) * g.stride + ky) as isize - g.pad as isize;
        if iy < 0 || iy >= g.h as isize {
            line.fill(0.0);
            continue;
        }
        let sy = if g.upsample {
            iy as usize / 2
        } else {
            iy as usize
        };
        let src = &channel[sy * src_w..(sy + 1) * src_w];
        line[..first].fill(0.0);
        line[end..].fill(0.0);
        let inside = &mut line[first..end];
        let ix0 = first * g.stride + kx - g.pad;
        match (g.upsample, g.stride) {
            (false, 1) => inside.copy_from_slice(&src[ix0..ix0 + inside.len()]),
            (true, 1) => {
                for (i, v) in inside.iter_mut().enumerate() {
                    *v = src[(ix0 + i) / 2];
                }
            }
            (true, s) => {
                for (i, v) in inside.iter_mut().enumerate() {
                    *v = src[(ix0 + i * s) / 2];
                }
            }
            (false, s) => {
                for (v, x) in inside.iter_mut().zip(src[ix0..].iter().step_by(s)) {
                    *v = *x;
                }
            }
        }
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

    /// The im2col + gemm path matches candle's conv2d, with stride 2 and a folded upsample.
    #[test]
    fn matches_candle_conv2d() -> Result<()> {
        check(3, 5, 9, 7, 1, false)?;
        check(4, 6, 9, 8, 2, false)?;
        check(5, 3, 4, 6, 1, true)?;
        check(8, 16, 17, 13, 1, false)?;
        check(4, 4, 10, 9, 2, true)
    }

    /// A 1×1 convolution (the VAE's attention projections, skip connections) matches candle's.
    #[test]
    fn pointwise_matches_candle_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 6, 5, 7), &dev)?;
        let weight = Tensor::randn(0f32, 0.2, (4, 6, 1, 1), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, 4, &dev)?;
        let ours = Conv {
            inner: Conv2d::new(weight, Some(bias), Conv2dConfig::default()),
            kernel: 1,
            stride: 1,
            padding: 0,
        };
        let diff = (ours.forward(&x)? - ours.inner.forward(&x)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        Ok(())
    }
}
