//! Tiled application over an image, as Fooocus (ComfyUI's `tiled_scale`) does it: a function
//! too large to run on a whole image (the upscaler, a VAE encode or decode) runs on tiles that
//! start at 0, t − o, 2(t − o), … and are cut at the border; each result is weighted by a
//! feather that ramps as (k + 1)/F over the F = round(o·s) cells at each of its four edges, the
//! weighted results are summed and divided by the summed weights. Peak memory depends on the
//! tile, not the image. Following the original to the cell keeps tiled results comparable with
//! the reference (including its quirk on tiles narrower than the feather, see [`feather`]).

use candle_core::{DType, Result, Tensor};

/// A tile shape: `width` × `height` input cells overlapping by `overlap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiles {
    pub width: usize,
    pub height: usize,
    pub overlap: usize,
}

impl Tiles {
    pub fn square(side: usize, overlap: usize) -> Self {
        Self {
            width: side,
            height: side,
            overlap,
        }
    }
}

/// Tile starts along an axis of `len` cells: 0, step, 2·step, … below `len`.
fn starts(len: usize, tile: usize, overlap: usize) -> impl Iterator<Item = usize> {
    (0..len).step_by(tile.saturating_sub(overlap).max(1))
}

/// `n · scale` rounded (scales are powers of two here, so the products are exact).
fn scaled(n: usize, scale: f64) -> usize {
    (n as f64 * scale).round() as usize
}

/// The feather along one axis of a tile result of `n` cells: every cell starts at 1; for
/// k = 0…F−1 the factor (k + 1)/F scales cell k and cell n−1−k, the second taken as a Python
/// slice `[n−1−k : n−k]` (on a result narrower than F its negative bounds wrap to the far end
/// and scale a cell once more, as in the original).
pub fn feather(n: usize, f: usize) -> Vec<f32> {
    let mut v = vec![1f32; n];
    let n_i = n as i64;
    let wrap = |i: i64| -> usize {
        let i = if i < 0 { i + n_i } else { i };
        i.clamp(0, n_i) as usize
    };
    for k in 0..f {
        let factor = (1.0 / f as f32) * (k + 1) as f32;
        if k < n {
            v[k] *= factor;
        }
        let (lo, hi) = (wrap(n_i - 1 - k as i64), wrap(n_i - k as i64));
        for x in v.iter_mut().take(hi).skip(lo) {
            *x *= factor;
        }
    }
    v
}

/// Applies `f` (a `[1, C, th, tw]` tile → a `[1, C', round(th·scale), round(tw·scale)]`
/// result) to `input` `[B, C, h, w]` in `tiles` and blends the results; see the module
/// documentation. The output is f32 on the input's device.
pub fn tiled_scale(
    input: &Tensor,
    tiles: Tiles,
    scale: f64,
    mut f: impl FnMut(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let (b, _, h, w) = input.dims4()?;
    let (oh, ow) = (scaled(h, scale), scaled(w, scale));
    let fade = scaled(tiles.overlap, scale);
    let mut images = Vec::with_capacity(b);
    for item in 0..b {
        let one = input.narrow(0, item, 1)?;
        let mut sum: Vec<f32> = Vec::new();
        let mut weight = vec![0f32; oh * ow];
        let mut channels = 0;
        for y in starts(h, tiles.height, tiles.overlap) {
            for x in starts(w, tiles.width, tiles.overlap) {
                let (th, tw) = (tiles.height.min(h - y), tiles.width.min(w - x));
                let part = one.narrow(2, y, th)?.narrow(3, x, tw)?.contiguous()?;
                let result = f(&part)?.to_dtype(DType::F32)?;
                let (_, c, rh, rw) = result.dims4()?;
                if sum.is_empty() {
                    channels = c;
                    sum = vec![0f32; c * oh * ow];
                }
                let values = result.flatten_all()?.to_vec1::<f32>()?;
                let (ry, rx) = (feather(rh, fade), feather(rw, fade));
                let (oy, ox) = (scaled(y, scale), scaled(x, scale));
                let rows = rh.min(oh.saturating_sub(oy));
                let cols = rw.min(ow.saturating_sub(ox));
                for ch in 0..c.min(channels) {
                    for i in 0..rows {
                        let src = &values[(ch * rh + i) * rw..][..cols];
                        let dst = &mut sum[(ch * oh + oy + i) * ow + ox..][..cols];
                        for (j, (d, s)) in dst.iter_mut().zip(src).enumerate() {
                            *d += s * (ry[i] * rx[j]);
                        }
                    }
                }
                for i in 0..rows {
                    let dst = &mut weight[(oy + i) * ow + ox..][..cols];
                    for (j, d) in dst.iter_mut().enumerate() {
                        *d += ry[i] * rx[j];
                    }
                }
            }
        }
        for (i, v) in sum.iter_mut().enumerate() {
            *v /= weight[i % (oh * ow)];
        }
        images.push(Tensor::from_vec(
            sum,
            (1, channels, oh, ow),
            input.device(),
        )?);
    }
    Tensor::cat(&images, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn tiles_start_at_multiples_of_the_step() {
        assert_eq!(starts(10, 16, 4).collect::<Vec<_>>(), vec![0]);
        assert_eq!(starts(40, 16, 4).collect::<Vec<_>>(), vec![0, 12, 24, 36]);
    }

    #[test]
    fn the_feather_ramps_at_both_ends_and_wraps_on_narrow_results() {
        let v = feather(8, 2);
        assert_eq!(v, vec![0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5]);
        // n = 2, F = 5: k = 0 and 1 scale both cells by 0.2 and 0.4; k = 2 takes the empty
        // slice [-1:0]; k = 3 the slice [-2:-1], i.e. cell 0 again, by 0.8; k = 4 [-3:-2], empty.
        let v = feather(2, 5);
        assert!((v[0] - 0.2 * 0.4 * 0.8).abs() < 1e-6 && (v[1] - 0.2 * 0.4).abs() < 1e-6);
    }

    /// With a function that acts on each cell alone, tiling reproduces the whole result.
    #[test]
    fn tiling_a_local_function_is_exact() -> Result<()> {
        let device = Device::Cpu;
        let input = Tensor::randn(0f32, 1.0, (2, 4, 13, 21), &device)?;
        let local = |t: &Tensor| -> Result<Tensor> {
            let (_, _, h, w) = t.dims4()?;
            (t.narrow(1, 0, 3)? * 2.0)?.upsample_nearest2d(h * 8, w * 8)
        };
        let whole = local(&input)?;
        for (tile, overlap) in [(8, 4), (6, 2), (12, 1), (5, 4)] {
            let tiled = tiled_scale(&input, Tiles::square(tile, overlap), 8.0, local)?;
            let err = (tiled - &whole)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(err < 1e-5, "tile {tile} overlap {overlap}: {err}");
        }
        let pooled = tiled_scale(
            &input.narrow(2, 0, 8)?.narrow(3, 0, 16)?,
            Tiles::square(8, 4),
            0.5,
            |t| t.avg_pool2d(2),
        )?;
        assert_eq!(pooled.dims4()?, (2, 4, 4, 8));
        Ok(())
    }
}
