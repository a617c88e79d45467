//! Fooocus' size rules for input images (its `util.py`): the "shape ceil" of an image is the
//! side of the 64-aligned square with at least its area, `ceil(√(h·w)/64)·64`; bringing an image
//! to a shape ceil scales both sides by target/ceil and rounds each to a multiple of 64 (half to
//! even, as Python's `round`), up to 256 times until the ceil is the target, then resizes once
//! with Lanczos (an image already there is returned as it is, even if not 64-aligned).

use image::RgbImage;

use crate::imaging::lanczos;

/// `ceil(√(h·w)/64)·64`.
pub fn shape_ceil(height: f64, width: f64) -> f64 {
    ((height * width).sqrt() / 64.0).ceil() * 64.0
}

/// The (height, width) `set_image_shape_ceil` gives an image of (height, width) for `target`.
pub fn shape_ceil_size(height: u32, width: u32, target: f64) -> (u32, u32) {
    let (mut h, mut w) = (f64::from(height), f64::from(width));
    for _ in 0..256 {
        let ceil = shape_ceil(h, w);
        if (ceil - target).abs() < 0.1 {
            break;
        }
        let k = target / ceil;
        h = (h * k / 64.0).round_ties_even() * 64.0;
        w = (w * k / 64.0).round_ties_even() * 64.0;
    }
    (h.max(0.0) as u32, w.max(0.0) as u32)
}

/// `image` brought to shape ceil `target`.
pub fn set_shape_ceil(image: &RgbImage, target: f64) -> RgbImage {
    let (h, w) = shape_ceil_size(image.height(), image.width(), target);
    if (h, w) == (image.height(), image.width()) {
        image.clone()
    } else {
        lanczos(image, w, h)
    }
}

/// The size (height, width) the VAE encodes: each side cut down to a multiple of 8.
pub fn encoded_size(height: u32, width: u32) -> (u32, u32) {
    (height / 8 * 8, width / 8 * 8)
}

/// The centre crop of `image` to multiples of 8 (what the VAE encoder takes), offset by half
/// the remainder rounded down on each axis.
pub fn crop_to_8(image: &RgbImage) -> RgbImage {
    let (h, w) = encoded_size(image.height(), image.width());
    if (h, w) == (image.height(), image.width()) {
        return image.clone();
    }
    let (y, x) = ((image.height() % 8) / 2, (image.width() % 8) / 2);
    image::imageops::crop_imm(image, x, y, w, h).to_image()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_ceil_rules_match_fooocus_examples() {
        assert_eq!(shape_ceil(512.0, 512.0), 512.0);
        assert_eq!(shape_ceil(3000.0, 4000.0), 3520.0);
        // 4000×3000 at 2048: one step, k = 2048/3520.
        assert_eq!(shape_ceil_size(3000, 4000, 2048.0), (1728, 2304));
        assert_eq!(shape_ceil_size(512, 512, 1024.0), (1024, 1024));
        // 640×448 reaches 1024 in two steps: 1152×768, then 1216×832.
        assert_eq!(shape_ceil_size(448, 640, 1024.0), (832, 1216));
        // Already there: unchanged, even when not 64-aligned.
        assert_eq!(shape_ceil_size(1000, 1000, 1024.0), (1000, 1000));
    }

    #[test]
    fn crops_are_centred() {
        let image = RgbImage::from_fn(21, 10, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let c = crop_to_8(&image);
        assert_eq!(c.dimensions(), (16, 8));
        assert_eq!(c.get_pixel(0, 0).0, [2, 1, 0]);
    }
}
