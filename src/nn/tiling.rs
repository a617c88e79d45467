//! Tiled application over an image: a function too large to run on a whole image (a VAE decode,
//! an upscaler) runs on overlapping tiles one by one, and the results are blended with linear
//! ramps across the overlaps, so peak memory depends on the tile size, not the image size.

use candle_core::{Device, Result, Tensor};

/// Tile placement along one axis: starts of `tile`-long windows covering `len` with at least
/// `overlap` shared cells between neighbours.
fn starts(len: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if len <= tile {
        return vec![0];
    }
    let step = tile.saturating_sub(overlap).max(1);
    let mut s: Vec<usize> = (0..)
        .map(|i| i * step)
        .take_while(|&p| p + tile < len)
        .collect();
    s.push(len - tile);
    s
}

/// Blend weights along one axis of a tile of `size` pixels: a ramp over `ramp` pixels on each
/// side that touches a neighbouring tile, 1 elsewhere.
fn ramp(size: usize, ramp: usize, fade_start: bool, fade_end: bool) -> Vec<f32> {
    (0..size)
        .map(|i| {
            let from_start = if fade_start {
                (i as f32 + 0.5) / ramp as f32
            } else {
                1.0
            };
            let from_end = if fade_end {
                ((size - i) as f32 - 0.5) / ramp as f32
            } else {
                1.0
            };
            from_start.min(from_end).clamp(0.0, 1.0)
        })
        .collect()
}

/// Applies `f` (a `[B, C, th, tw]` tile → a `[B, C', scale·th, scale·tw]` tile) to `input`
/// `[B, C, h, w]` tile by tile, `tile` × `tile` cells overlapping by `overlap`, and blends the
/// results with linear ramps across the overlaps; an input no larger than one tile goes whole.
pub fn map_tiled(
    input: &Tensor,
    tile: usize,
    overlap: usize,
    scale: usize,
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let (b, _, h, w) = input.dims4()?;
    let (tile_h, tile_w) = (tile.min(h), tile.min(w));
    if tile_h == h && tile_w == w {
        return f(input);
    }
    let device = input.device();
    let ys = starts(h, tile_h, overlap);
    let xs = starts(w, tile_w, overlap);
    let mut sum: Option<Tensor> = None;
    let mut weight_sum = Tensor::zeros(
        (1, 1, h * scale, w * scale),
        candle_core::DType::F32,
        device,
    )?;
    for (iy, &y) in ys.iter().enumerate() {
        for (ix, &x) in xs.iter().enumerate() {
            let part = input.narrow(2, y, tile_h)?.narrow(3, x, tile_w)?;
            let image = f(&part)?;
            let mask = tile_mask(
                tile_h * scale,
                tile_w * scale,
                overlap * scale,
                (iy > 0, iy + 1 < ys.len()),
                (ix > 0, ix + 1 < xs.len()),
                device,
            )?;
            let (py, px) = (y * scale, x * scale);
            let placed = place(&image.broadcast_mul(&mask)?, py, px, h * scale, w * scale)?;
            let placed_mask = place(&mask, py, px, h * scale, w * scale)?;
            weight_sum = (weight_sum + placed_mask)?;
            sum = Some(match sum {
                Some(s) => (s + placed)?,
                None => placed,
            });
        }
    }
    match sum {
        Some(s) => s.broadcast_div(&weight_sum.broadcast_as((b, 1, h * scale, w * scale))?),
        None => candle_core::bail!("nothing to tile: an empty input"),
    }
}

fn tile_mask(
    th: usize,
    tw: usize,
    overlap: usize,
    fade_y: (bool, bool),
    fade_x: (bool, bool),
    device: &Device,
) -> Result<Tensor> {
    let ry = Tensor::from_vec(
        ramp(th, overlap.max(1), fade_y.0, fade_y.1),
        (th, 1),
        device,
    )?;
    let rx = Tensor::from_vec(
        ramp(tw, overlap.max(1), fade_x.0, fade_x.1),
        (1, tw),
        device,
    )?;
    ry.broadcast_mul(&rx)?.reshape((1, 1, th, tw))
}

/// Zero-pads `t` `[B, C, th, tw]` so that it sits at (y, x) in an `h × w` canvas.
fn place(t: &Tensor, y: usize, x: usize, h: usize, w: usize) -> Result<Tensor> {
    let (_, _, th, tw) = t.dims4()?;
    t.pad_with_zeros(2, y, h - y - th)?
        .pad_with_zeros(3, x, w - x - tw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_axis_with_overlap() {
        assert_eq!(starts(10, 16, 4), vec![0]);
        assert_eq!(starts(24, 16, 4), vec![0, 8]);
        assert_eq!(starts(40, 16, 4), vec![0, 12, 24]);
        for (len, tile, overlap) in [(100, 32, 8), (33, 32, 8), (64, 32, 16)] {
            let s = starts(len, tile, overlap);
            assert_eq!(s.last().map(|l| l + tile), Some(len));
            assert!(s.windows(2).all(|p| p[0] + tile >= p[1] + overlap));
        }
    }

    #[test]
    fn ramps_fade_only_towards_neighbours() {
        let r = ramp(8, 4, true, false);
        assert!(r[0] < r[1] && r[3] <= 1.0 && r[7] == 1.0);
        let r = ramp(8, 4, false, false);
        assert!(r.iter().all(|&v| v == 1.0));
    }

    /// With a function that acts on each cell alone, tiling must reproduce the whole result.
    #[test]
    fn tiling_a_local_decoder_is_exact() -> Result<()> {
        let device = Device::Cpu;
        let latent = Tensor::randn(0f32, 1.0, (2, 4, 13, 21), &device)?;
        let local = |t: &Tensor| -> Result<Tensor> {
            let (_, _, h, w) = t.dims4()?;
            (t.narrow(1, 0, 3)? * 2.0)?.upsample_nearest2d(h * 8, w * 8)
        };
        let whole = local(&latent)?;
        for (tile, overlap) in [(8, 4), (6, 2), (12, 1), (5, 4)] {
            let tiled = map_tiled(&latent, tile, overlap, 8, local)?;
            let err = (tiled - &whole)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(err < 1e-5, "tile {tile} overlap {overlap}: {err}");
        }
        Ok(())
    }
}
