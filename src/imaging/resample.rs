//! Lanczos resizing as Pillow computes it (`Image.resize(size, LANCZOS)`, its `Resample.c`),
//! so that resized inputs equal Fooocus' to the byte: a separable filter, horizontal pass first
//! (over only the rows the vertical pass reads), then vertical, each through 8-bit pixels. Per
//! output pixel the window is centred at (x + 0.5)·scale with support 3·max(scale, 1) (the
//! filter is stretched when reducing), its weights `sinc(t)·sinc(t/3)` normalised to sum 1 and
//! rounded to fixed point with 22 fractional bits; sums start at one half and are clipped to
//! 0…255.

use image::RgbImage;

const PRECISION_BITS: u32 = 32 - 8 - 2;
const SUPPORT: f64 = 3.0;

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos3(x: f64) -> f64 {
    if (-SUPPORT..SUPPORT).contains(&x) {
        sinc(x) * sinc(x / SUPPORT)
    } else {
        0.0
    }
}

/// One axis' filter: for each output cell the first input cell and its fixed-point weights.
struct Coefficients {
    starts: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

fn coefficients(in_size: usize, out_size: usize) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = SUPPORT * filter_scale;
    let mut starts = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for out in 0..out_size {
        let center = (out as f64 + 0.5) * scale;
        // Pillow's `(int)` casts truncate toward zero; the bounds are then clamped.
        let lo = ((center - support + 0.5) as i64).max(0) as usize;
        let hi = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
        let raw: Vec<f64> = (lo..hi.max(lo))
            .map(|i| lanczos3((i as f64 - center + 0.5) / filter_scale))
            .collect();
        let total: f64 = raw.iter().sum();
        let fixed = raw
            .iter()
            .map(|w| {
                let w = if total != 0.0 { w / total } else { *w };
                // Round half away from zero, as Pillow's (int)(w·2²² ± 0.5).
                (w * f64::from(1u32 << PRECISION_BITS)).round() as i32
            })
            .collect();
        starts.push(lo);
        weights.push(fixed);
    }
    Coefficients { starts, weights }
}

fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One filtered value: `get(i)` reads input cell `i` of the line.
fn filtered(start: usize, weights: &[i32], get: impl Fn(usize) -> u8) -> u8 {
    let mut sum: i32 = 1 << (PRECISION_BITS - 1);
    for (k, w) in weights.iter().enumerate() {
        sum = sum.wrapping_add(i32::from(get(start + k)).wrapping_mul(*w));
    }
    clip8(sum)
}

/// Resizes `image` to `width` × `height` (each at least 1) with Pillow's Lanczos.
pub fn lanczos(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (width, height) = (width.max(1), height.max(1));
    let (in_w, in_h) = image.dimensions();
    if (in_w, in_h) == (width, height) {
        return image.clone();
    }
    let horizontal = (in_w != width).then(|| coefficients(in_w as usize, width as usize));
    let vertical = (in_h != height).then(|| coefficients(in_h as usize, height as usize));
    // The rows the vertical pass reads (all of them when there is no vertical pass).
    let (first_row, last_row) = match &vertical {
        Some(v) => {
            let end = v.starts.last().copied().unwrap_or(0) + v.weights.last().map_or(0, Vec::len);
            (v.starts.first().copied().unwrap_or(0), end)
        }
        None => (0, in_h as usize),
    };
    let rows = match &horizontal {
        Some(h) => {
            let mut out = RgbImage::new(width, (last_row - first_row) as u32);
            for y in first_row..last_row {
                for (x, (start, weights)) in h.starts.iter().zip(&h.weights).enumerate() {
                    for c in 0..3 {
                        let v =
                            filtered(*start, weights, |i| image.get_pixel(i as u32, y as u32)[c]);
                        out.get_pixel_mut(x as u32, (y - first_row) as u32)[c] = v;
                    }
                }
            }
            out
        }
        None => image.clone(),
    };
    let Some(v) = vertical else {
        return rows;
    };
    let offset = if horizontal.is_some() { first_row } else { 0 };
    let mut out = RgbImage::new(width, height);
    for (y, (start, weights)) in v.starts.iter().zip(&v.weights).enumerate() {
        for x in 0..width {
            for c in 0..3 {
                let value = filtered(start - offset, weights, |i| rows.get_pixel(x, i as u32)[c]);
                out.get_pixel_mut(x, y as u32)[c] = value;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (a, b) in [(640, 1216), (384, 1216), (1216, 192), (7, 3)] {
            let c = coefficients(a, b);
            for w in &c.weights {
                let sum: i32 = w.iter().sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= w.len() as i32,
                    "{a}->{b}: {sum}"
                );
            }
        }
    }

    #[test]
    fn a_flat_image_stays_flat() {
        let flat = RgbImage::from_pixel(13, 9, image::Rgb([10, 128, 250]));
        let out = lanczos(&flat, 31, 4);
        assert!(out.pixels().all(|p| p.0 == [10, 128, 250]));
    }
}
