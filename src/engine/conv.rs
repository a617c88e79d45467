//! 2-D convolution for the UNet and VAE. On the CPU in f32, a k×k convolution runs as our own
//! im2col into bounded chunks of output rows, written straight in the packed layout of
//! `engine::matmul` (parallel over its panels of 16 pixels), followed by one product per chunk
//! that writes into the NCHW output, bias pre-filled; a nearest 2× upsample can be folded into the im2col so the
//! upsampled tensor is never built. candle's CPU conv2d converts the whole input to NHWC
//! single-threaded and multiplies 512-pixel tiles, which is slow when channels are few. A 1×1
//! convolution is one product on the input as it is. Weights kept in f16/bf16 are widened to f32
//! first. Other devices and dtypes use candle.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};
use rayon::prelude::*;

use super::kernels::{cpu_f32, with_f32};
use super::matmul::{accumulate, packed_len, with_packed};
use super::microkernel::NR;
use super::{conv_shifted, conv_winograd};

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
            with_f32(weight, WHAT, |wd| run(xd, wd, &bias, b, cout, &geo))?
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
pub(super) struct Geometry {
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub upsample: bool,
}

fn run(
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    b: usize,
    cout: usize,
    g: &Geometry,
) -> Result<Vec<f32>> {
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
    for (c, row) in out.chunks_mut(plane).enumerate() {
        row.fill(bias[c % cout]);
    }
    if conv_winograd::applies(g) {
        conv_winograd::accumulate(x, weight, b, cout, g, &mut out)?;
        return Ok(out);
    }
    if conv_shifted::applies(g) {
        conv_shifted::accumulate(x, weight, b, cout, g, &mut out)?;
        return Ok(out);
    }
    let pointwise = g.k == 1 && g.stride == 1 && g.pad == 0 && !g.upsample;
    let mut cols = if pointwise {
        Vec::new()
    } else {
        vec![0f32; packed_len(taps, rows_per_chunk * g.out_w)]
    };
    for batch in 0..b {
        let input = &x[batch * g.cin * src_h * src_w..(batch + 1) * g.cin * src_h * src_w];
        let output = &mut out[batch * cout * plane..(batch + 1) * cout * plane];
        if pointwise {
            // A pointwise convolution is a product with the input as it is (`cin` rows of the
            // output's plane), packed a chunk of pixels at a time: packing the whole plane at
            // once kept a copy of the input (1 GB for the VAE's last shortcut at 1024²) in the
            // thread's reusable buffer.
            let chunk = (CHUNK_ELEMENTS / g.cin.max(1))
                .max(MIN_CHUNK_PIXELS)
                .next_multiple_of(NR);
            for j0 in (0..plane).step_by(chunk) {
                let n = chunk.min(plane - j0);
                with_packed(&input[j0..], (g.cin, n), (plane, 1), |panels| {
                    accumulate(&mut output[j0..], plane, weight, (cout, g.cin, n), panels)
                })?;
            }
            continue;
        }
        let mut y0 = 0;
        while y0 < g.out_h {
            let rows = rows_per_chunk.min(g.out_h - y0);
            let n = rows * g.out_w;
            let cols = &mut cols[..packed_len(taps, n)];
            cols.par_chunks_mut(taps * NR)
                .enumerate()
                .for_each(|(p, panel)| fill_panel(input, src_h * src_w, g, y0, n, p * NR, panel));
            accumulate(
                &mut output[y0 * g.out_w..],
                plane,
                weight,
                (cout, taps, n),
                cols,
            )?;
            y0 += rows;
        }
    }
    Ok(out)
}

/// Fills one panel of the im2col, written in `engine::matmul`'s packed layout: output pixels
/// `j0..j0 + NR` of the chunk that starts at output row `y0` (those past `n` zero), for every
/// tap (input channel × kernel offset), `NR` values per tap.
fn fill_panel(
    input: &[f32],
    src_plane: usize,
    g: &Geometry,
    y0: usize,
    n: usize,
    j0: usize,
    panel: &mut [f32],
) {
    // The panel's pixels as runs within output rows: (row, first column, offset, length).
    let mut runs = [(0, 0, 0, 0); NR];
    let mut count = 0;
    let mut j = 0;
    let cols = NR.min(n - j0);
    while j < cols {
        let (line, ox) = ((j0 + j) / g.out_w, (j0 + j) % g.out_w);
        let len = (g.out_w - ox).min(cols - j);
        runs[count] = (y0 + line, ox, j, len);
        count += 1;
        j += len;
    }
    let mut taps = panel.chunks_exact_mut(NR);
    for channel in input.chunks_exact(src_plane).take(g.cin) {
        for ky in 0..g.k {
            for kx in 0..g.k {
                let Some(dst) = taps.next() else { return };
                for &(oy, ox, at, len) in &runs[..count] {
                    fill_run(channel, g, oy, ox, ky, kx, &mut dst[at..at + len]);
                }
                dst[cols..].fill(0.0);
            }
        }
    }
}

/// Fills `dst` with the input values that kernel offset (`ky`, `kx`) meets for the output pixels
/// (`oy`, `ox..ox + dst.len()`) of one channel: zero outside the (virtually upsampled) image.
fn fill_run(
    channel: &[f32],
    g: &Geometry,
    oy: usize,
    ox: usize,
    ky: usize,
    kx: usize,
    dst: &mut [f32],
) {
    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
    if iy < 0 || iy >= g.h as isize || dst.is_empty() {
        dst.fill(0.0);
        return;
    }
    let (up, s) = (usize::from(g.upsample), g.stride);
    let src_w = g.w >> up;
    let row = &channel[(iy as usize >> up) * src_w..][..src_w];
    let first = (ox * s + kx) as isize - g.pad as isize;
    let last = first + ((dst.len() - 1) * s) as isize;
    if first < 0 || last >= g.w as isize {
        for (j, v) in dst.iter_mut().enumerate() {
            let ix = first + (j * s) as isize;
            *v = if ix < 0 || ix >= g.w as isize {
                0.0
            } else {
                row[ix as usize >> up]
            };
        }
        return;
    }
    let first = first as usize;
    match (g.upsample, s) {
        (false, 1) => match <&mut [f32; NR]>::try_from(&mut *dst) {
            // A whole panel row: a fixed-size copy the compiler inlines (a memmove call per 16
            // values cost a tenth of a VAE decode).
            Ok(whole) => whole.copy_from_slice(&row[first..first + NR]),
            Err(_) => dst.copy_from_slice(&row[first..first + dst.len()]),
        },
        _ => {
            for (j, v) in dst.iter_mut().enumerate() {
                *v = row[(first + j * s) >> up];
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
