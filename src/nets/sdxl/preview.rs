//! Step previews: an SDXL latent (the sampler's current x0 estimate, in the UNet's scaled
//! space) → a small RGB frame through a linear 4→3 map, then a JPEG of at most
//! [`MAX_PREVIEW_SIDE`] pixels. Cheap enough to run every step on any device.
//!
//! The factors and the 3×3 smoothing kernel are InvokeAI's (`SDXL_LATENT_RGB_FACTORS` and
//! `SDXL_SMOOTH_MATRIX` in `invokeai/app/util/step_callback.py`, Apache-2.0, fitted by
//! @StAlKeR7779), as is the mapping `rgb = (latent · F + 1) / 2`, clamped to 0…1.

use candle_core::{DType, Device, Tensor};
use image::{imageops::FilterType, RgbImage};

/// Longest side of a preview frame, in pixels.
pub const MAX_PREVIEW_SIDE: u32 = 512;

/// Rows: latent channels 0–3; columns: R, G, B.
pub const SDXL_LATENT_RGB_FACTORS: [[f32; 3]; 4] = [
    [0.3816, 0.4930, 0.5320],
    [-0.3753, 0.1631, 0.1739],
    [0.1770, 0.3588, -0.2048],
    [-0.4350, -0.2644, -0.4289],
];

/// Spatial smoothing applied to each colour plane after the projection.
pub const SDXL_SMOOTH_MATRIX: [[f32; 3]; 3] = [
    [0.0358, 0.0964, 0.0358],
    [0.0964, 0.4711, 0.0964],
    [0.0358, 0.0964, 0.0358],
];

/// Why a preview could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("a preview needs a latent of shape (1, 4, h, w) or (4, h, w), got {0:?}")]
    Shape(Vec<usize>),
    #[error("reading the latent for a preview failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("encoding the preview JPEG failed: {0}")]
    Encode(#[from] image::ImageError),
}

/// The latent as an RGB image of the latent's own size (image / 8).
pub fn latent_to_rgb(latent: &Tensor) -> Result<RgbImage, PreviewError> {
    let dims = latent.dims().to_vec();
    let latent = match dims.as_slice() {
        [1, 4, _, _] => latent.squeeze(0)?,
        [4, _, _] => latent.clone(),
        _ => return Err(PreviewError::Shape(dims)),
    };
    let (_, h, w) = latent.dims3()?;
    let data: Vec<f32> = latent
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let plane = h * w;
    // Project each pixel's 4 channels to RGB.
    let mut rgb = vec![[0f32; 3]; plane];
    for (p, out) in rgb.iter_mut().enumerate() {
        for (c, row) in SDXL_LATENT_RGB_FACTORS.iter().enumerate() {
            let v = data[c * plane + p];
            for k in 0..3 {
                out[k] += v * row[k];
            }
        }
    }
    // Smooth (zero padding, as a 3×3 convolution with padding 1), then map to bytes.
    let mut img = RgbImage::new(w as u32, h as u32);
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0f32; 3];
            for (dy, krow) in SDXL_SMOOTH_MATRIX.iter().enumerate() {
                for (dx, kv) in krow.iter().enumerate() {
                    let (sy, sx) = (y + dy, x + dx);
                    if sy == 0 || sx == 0 || sy > h || sx > w {
                        continue;
                    }
                    let src = rgb[(sy - 1) * w + (sx - 1)];
                    for k in 0..3 {
                        acc[k] += kv * src[k];
                    }
                }
            }
            let px = acc.map(|v| (((v + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0) as u8);
            img.put_pixel(x as u32, y as u32, image::Rgb(px));
        }
    }
    Ok(img)
}

/// The preview frame for `latent`: projected, enlarged (or kept) so the longest side is at most
/// [`MAX_PREVIEW_SIDE`] and at most 4× the latent (half the image size), JPEG-encoded.
pub fn preview_jpeg(latent: &Tensor) -> Result<Vec<u8>, PreviewError> {
    let small = latent_to_rgb(latent)?;
    let (w, h) = small.dimensions();
    let long = w.max(h).max(1);
    let scale = (MAX_PREVIEW_SIDE as f32 / long as f32).min(4.0);
    let (tw, th) = (
        ((w as f32 * scale).round() as u32).clamp(1, MAX_PREVIEW_SIDE),
        ((h as f32 * scale).round() as u32).clamp(1, MAX_PREVIEW_SIDE),
    );
    let frame = if (tw, th) == (w, h) {
        small
    } else {
        image::imageops::resize(&small, tw, th, FilterType::Triangle)
    };
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 80).encode_image(&frame)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_latent_is_mid_grey_and_frames_stay_small() {
        let zero = Tensor::zeros((1, 4, 8, 6), DType::F32, &Device::Cpu).unwrap();
        let img = latent_to_rgb(&zero).unwrap();
        assert_eq!(img.dimensions(), (6, 8));
        assert_eq!(img.get_pixel(3, 3).0, [127, 127, 127]);
        let big = Tensor::zeros((1, 4, 144, 112), DType::F32, &Device::Cpu).unwrap();
        let jpeg = preview_jpeg(&big).unwrap();
        let decoded = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (398, 512));
    }

    #[test]
    fn channel_one_drives_the_colours_as_the_factors_say() {
        let mut data = vec![0f32; 4 * 3 * 3];
        data[..9].fill(1.0);
        let t = Tensor::from_vec(data, (4, 3, 3), &Device::Cpu).unwrap();
        let img = latent_to_rgb(&t).unwrap();
        // The centre sees the whole kernel (sum 1): (F[0] + 1) / 2.
        let expect = SDXL_LATENT_RGB_FACTORS[0].map(|f| (((f + 1.0) / 2.0) * 255.0) as u8);
        let got = img.get_pixel(1, 1).0;
        for k in 0..3 {
            assert!(
                (got[k] as i32 - expect[k] as i32).abs() <= 1,
                "{got:?} vs {expect:?}"
            );
        }
        assert!(matches!(
            latent_to_rgb(&Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap()),
            Err(PreviewError::Shape(_))
        ));
    }
}
