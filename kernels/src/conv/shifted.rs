//! Stride-1 k×k convolution on the CPU in f32 without im2col: the input goes once into a padded
//! channels-last copy, where the `cin` inputs of every kernel offset (ky, kx) for consecutive
//! output pixels are consecutive rows at a fixed shift. The convolution is then k² shifted
//! products, each reading those rows in place as the tile's left operand against the weights
//! packed as right panels; a task's block of output pixels × channels accumulates in a per-thread
//! buffer (within L2) and is transposed into the NCHW output at the end. Rows are computed across
//! the padded width, so the `k − 1` extra columns of each row are computed and dropped. The copy
//! is made in bands of output rows so that it stays in the last-level cache. Against im2col this
//! writes the input once instead of k² times, which dominated layers with few output channels
//! (the VAE's 128- and 256-channel levels).

use std::cell::Cell;

use crate::{fail, Result};
use rayon::prelude::*;

use super::lines::fill_line;
use super::Geometry;
use crate::matmul::with_panel_buffer;
use crate::microkernel::{pack_panels, tile, Lhs, SharedMut, Store, MR, NR};

/// Bytes of one band's channels-last copy: it stays in the last-level cache while the band's
/// products read it k times.
const BAND_BYTES: usize = 4 << 20;
/// Output pixels per task (a multiple of `MR`).
const MC: usize = 12 * MR;
/// Depth of one pass over a panel: a 256×16 slice (16 KiB) stays in L1.
const KC: usize = 256;
/// Panels (of `NR` output channels) per task.
const PANELS_PER_TASK: usize = 8;
/// Values of a task's accumulator block: `MC` pixels × `PANELS_PER_TASK · NR` channels.
const BLOCK_COLS: usize = PANELS_PER_TASK * NR;

thread_local! {
    static BLOCK: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Whether `g` runs this way: stride 1 (any kernel, any padding) with output rows of at least
/// 16·(k − 1) pixels, so that the dropped columns cost at most a sixteenth. Narrower rows (the
/// UNet's 16×16 level at 512²) keep im2col, which costs little there: with many output channels
/// each im2col value serves many products.
pub fn applies(g: &Geometry) -> bool {
    g.stride == 1 && g.k > 1 && g.out_w >= 16 * (g.k - 1)
}

/// Adds the convolution of the `b` images `input` (`[b, cin, h, w]`, or `[b, cin, h/2, w/2]`
/// upsampled virtually when `g.upsample`) with `weight` (`[cout, cin, k, k]`, packed once for
/// all images) to `output` (`[b, cout, out_h, out_w]`, e.g. pre-filled with the bias).
pub fn accumulate(
    input: &[f32],
    weight: &[f32],
    b: usize,
    cout: usize,
    g: &Geometry,
    output: &mut [f32],
) -> Result<()> {
    let (cin, k, pad) = (g.cin, g.k, g.pad);
    let (wp, taps) = (g.w + 2 * pad, k * k);
    let plane = g.out_h * g.out_w;
    let up = usize::from(g.upsample);
    let (src_h, src_w) = (g.h >> up, g.w >> up);
    if g.stride != 1
        || g.out_w + k != wp + 1
        || g.out_h + k != g.h + 2 * pad + 1
        || input.len() < b * cin * src_h * src_w
        || weight.len() < cout * cin * taps
        || output.len() < b * cout * plane
    {
        fail!(
            "conv2d: shifted products do not fit {cin}→{cout}, {}×{} k{k} s{} p{pad}",
            g.h,
            g.w,
            g.stride
        );
    }
    if b == 0 || plane == 0 || cout == 0 || cin == 0 {
        return Ok(());
    }
    let panels = cout.div_ceil(NR);
    // The weights as the (k²·cin) × cout right operand, rows in (ky, kx, channel) order: for
    // each offset, the cin × cout matrix of element (c, o) at o·cin·k² + c·k² + offset.
    with_panel_buffer((taps * cin, cout), |packed| {
        packed
            .par_chunks_mut(taps * cin * NR)
            .enumerate()
            .for_each(|(p, panel)| {
                let cols = NR.min(cout - p * NR);
                for (s, rows) in panel.chunks_exact_mut(cin * NR).enumerate() {
                    // SAFETY: elements (c, p·NR + j), c < cin, j < cols, of this offset lie
                    // inside `weight` (checked above).
                    unsafe {
                        let src = weight.as_ptr().add(p * NR * cin * taps + s);
                        pack_panels(rows, cin, cols, src, taps, cin * taps);
                    }
                }
            });
        let band_rows = (BAND_BYTES / (4 * wp * cin)).clamp(1, g.out_h);
        // The band's padded rows, and one more so the dropped columns of its last row can be
        // read past its end.
        let mut copy = vec![0f32; (band_rows + k) * wp * cin];
        let images = input
            .chunks_exact(cin * src_h * src_w)
            .zip(output.chunks_exact_mut(cout * plane));
        for (image, out) in images.take(b) {
            let dst = SharedMut(out.as_mut_ptr());
            for y0 in (0..g.out_h).step_by(band_rows) {
                let rows = band_rows.min(g.out_h - y0);
                copy.par_chunks_mut(wp * cin)
                    .enumerate()
                    .for_each(|(r, line)| fill_line(image, g, y0 + r, line));
                let band = Band {
                    copy: &copy,
                    packed,
                    y0,
                    pixels: rows * wp,
                };
                let (row_blocks, sub_blocks) =
                    (band.pixels.div_ceil(MC), panels.div_ceil(PANELS_PER_TASK));
                (0..row_blocks * sub_blocks)
                    .into_par_iter()
                    .for_each(|task| {
                        let first = task % sub_blocks * PANELS_PER_TASK;
                        let channels = first * NR..cout.min((first + PANELS_PER_TASK) * NR);
                        band.product(g, task / sub_blocks * MC, channels, dst);
                    });
            }
        }
        Ok(())
    })
}

/// One band of output rows: its channels-last copy and the packed weights.
struct Band<'a> {
    copy: &'a [f32],
    packed: &'a [f32],
    /// First output row.
    y0: usize,
    /// Pixels computed: the band's rows across the padded width.
    pixels: usize,
}

impl Band<'_> {
    /// Computes pixels `q0..q0 + MC` (of the padded width) × output `channels` into this
    /// thread's block, then adds its valid pixels into `output`.
    fn product(
        &self,
        g: &Geometry,
        q0: usize,
        channels: std::ops::Range<usize>,
        output: SharedMut,
    ) {
        let (cin, k) = (g.cin, g.k);
        let (wp, taps) = (g.w + 2 * g.pad, k * k);
        let rows = MC.min(self.pixels - q0);
        let mut block = BLOCK.take();
        block.resize(MC * BLOCK_COLS, 0.0);
        let first_panel = channels.start / NR;
        for s in 0..taps {
            let shift = s / k * wp + s % k;
            for pc in (0..cin).step_by(KC) {
                let kc = KC.min(cin - pc);
                for (j, p) in (first_panel..channels.end.div_ceil(NR)).enumerate() {
                    let panel = &self.packed[(p * taps * cin + s * cin + pc) * NR..];
                    for i in (0..rows).step_by(MR) {
                        let lhs = Lhs {
                            ptr: self.copy[(q0 + i + shift) * cin + pc..].as_ptr(),
                            row: cin,
                            col: 1,
                        };
                        let store = Store {
                            ldc: BLOCK_COLS,
                            rows: MR.min(rows - i),
                            cols: NR.min(channels.end - p * NR),
                            accumulate: s > 0 || pc > 0,
                        };
                        // SAFETY: pixel rows q0+i+shift.. of the copy hold kc values from pc
                        // (the copy has k − 1 padded rows and one spare row past the band); the
                        // panel slice holds kc × NR values; the tile lies inside the block.
                        unsafe {
                            let c = block.as_mut_ptr().add(i * BLOCK_COLS + j * NR);
                            tile(kc, lhs, panel.as_ptr(), c, store, &[1.0; MR]);
                        }
                    }
                }
            }
        }
        let plane = g.out_h * g.out_w;
        for (j, o) in channels.enumerate() {
            for (i, q) in (q0..q0 + rows).enumerate() {
                let x = q % wp;
                if x < g.out_w {
                    let y = self.y0 + q / wp;
                    // SAFETY: (o, y, x) lies inside the output (y < out_h, x < out_w); tasks
                    // own disjoint (pixel, channel) blocks.
                    unsafe {
                        *output.get().add(o * plane + y * g.out_w + x) += block[i * BLOCK_COLS + j]
                    };
                }
            }
        }
        BLOCK.set(block);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use candle_core::{Device, Result, Tensor};

    /// A stride-1 convolution kernel with `accumulate`'s signature.
    pub(crate) type Kernel =
        fn(&[f32], &[f32], usize, usize, &Geometry, &mut [f32]) -> crate::Result<()>;

    /// Checks that `kernel` matches candle's conv2d (no bias, on a 0.5-filled output) for two
    /// random `[cin, h, w]` images (upsampled virtually to 2h × 2w with `up`) and a `k`×`k`
    /// kernel to `cout` channels at padding `pad`; `applies` must accept the geometry.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn check_against_candle(
        kernel: Kernel,
        applies: fn(&Geometry) -> bool,
        (cin, cout): (usize, usize),
        (h, w): (usize, usize),
        k: usize,
        pad: usize,
        up: bool,
    ) -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, cin, h, w), &dev)?;
        let weight = Tensor::randn(0f32, 0.2, (cout, cin, k, k), &dev)?;
        let (vh, vw) = if up { (2 * h, 2 * w) } else { (h, w) };
        let want = x
            .upsample_nearest2d(vh, vw)?
            .conv2d(&weight, pad, 1, 1, 1)?;
        let g = Geometry {
            cin,
            h: vh,
            w: vw,
            k,
            stride: 1,
            pad,
            out_h: vh + 2 * pad + 1 - k,
            out_w: vw + 2 * pad + 1 - k,
            upsample: up,
        };
        assert!(
            applies(&g),
            "{cin}→{cout} {vh}×{vw} k{k} takes another path"
        );
        let mut got = vec![0.5f32; 2 * cout * g.out_h * g.out_w];
        let (xd, wd) = (
            x.flatten_all()?.to_vec1::<f32>()?,
            weight.flatten_all()?.to_vec1::<f32>()?,
        );
        kernel(&xd, &wd, 2, cout, &g, &mut got)?;
        let want = (want + 0.5)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(got.len(), want.len());
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() < 1e-3 * b.abs().max(1.0),
                "{cin}→{cout} {vh}×{vw} k{k} p{pad} up={up} at {i}: {a} vs {b}"
            );
        }
        Ok(())
    }

    /// Shifted products match candle's conv2d on two images: kernels 3 and 5, a folded
    /// upsample, more channels than one k pass, more output channels than one task's panels, and
    /// bands of a single row.
    #[test]
    fn matches_candle_conv2d() -> Result<()> {
        for (cin, cout, h, w, k, pad, up) in [
            (3, 5, 7, 34, 3, 1, false),
            (4, 3, 5, 17, 3, 1, true),
            (300, 20, 3, 33, 3, 1, false),
            (6, 150, 4, 66, 5, 2, false),
            (2, 7, 6, 41, 3, 0, false),
            (1200, 17, 9, 32, 3, 1, false),
            (4000, 3, 2, 300, 3, 1, false),
        ] {
            check_against_candle(accumulate, applies, (cin, cout), (h, w), k, pad, up)?;
        }
        Ok(())
    }

    /// Operands that do not fit the geometry are refused, not read past.
    #[test]
    fn refuses_short_operands() {
        let g = Geometry {
            cin: 2,
            h: 4,
            w: 32,
            k: 3,
            stride: 1,
            pad: 1,
            out_h: 4,
            out_w: 32,
            upsample: false,
        };
        let mut out = vec![0f32; 3 * 128];
        assert!(accumulate(&[0.0; 255], &[0.0; 54], 1, 3, &g, &mut out).is_err());
        assert!(accumulate(&[0.0; 256], &[0.0; 53], 1, 3, &g, &mut out).is_err());
        assert!(accumulate(&[0.0; 256], &[0.0; 54], 1, 3, &g, &mut out[1..]).is_err());
        assert!(accumulate(&[0.0; 256], &[0.0; 54], 1, 3, &g, &mut out).is_ok());
    }
}
