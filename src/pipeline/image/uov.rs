//! "Upscale or Variation" (Fooocus 2.x): Vary (Subtle, Strong) re-samples an image at its own
//! size brought into the shape-ceil band [1024, 2048], at denoise 0.5 or 0.85 with the
//! performance's steps; Upscale (1.5×, 2×) runs the 4× upscaler, resizes to the factor (or to
//! shape ceil 1024 for small results) and re-samples at denoise 0.382 with the Upscale step
//! table, unless the target's shape ceil passes 2800, where the resized image is the result;
//! Fast 2× is that resize, always without sampling.

use std::str::FromStr;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use super::sizes::{crop_to_8, set_shape_ceil, shape_ceil, shape_ceil_size};
use crate::imaging::lanczos;
use crate::nets::esrgan::Rrdb;
use crate::nets::sdxl::tiling::encode_tiled;
use crate::nets::sdxl::vae::Vae;
use crate::nn::tiling::Tiles;
use crate::pipeline::request::Performance;

/// Vary's shape-ceil band.
pub const VARY_CEIL: (f64, f64) = (1024.0, 2048.0);
/// Upscale's denoising strength.
pub const UPSCALE_DENOISE: f64 = 0.382;
/// Above this target shape ceil an upscale is returned without sampling.
pub const DIRECT_RETURN_CEIL: f64 = 2800.0;
/// Small upscales are brought to this shape ceil.
pub const MIN_UPSCALE_CEIL: f64 = 1024.0;
/// The upscaler's tiles: 512 pixels, overlapping by 32.
pub const UPSCALER_TILES: Tiles = Tiles {
    width: 512,
    height: 512,
    overlap: 32,
};

/// One of the methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UovMethod {
    VarySubtle,
    VaryStrong,
    Upscale15,
    Upscale2,
    UpscaleFast2,
}

/// Every method, in Fooocus' order.
pub const METHODS: [UovMethod; 5] = [
    UovMethod::VarySubtle,
    UovMethod::VaryStrong,
    UovMethod::Upscale15,
    UovMethod::Upscale2,
    UovMethod::UpscaleFast2,
];

impl UovMethod {
    /// Fooocus' name (what its page shows and its metadata and API use).
    pub fn label(self) -> &'static str {
        match self {
            Self::VarySubtle => "Vary (Subtle)",
            Self::VaryStrong => "Vary (Strong)",
            Self::Upscale15 => "Upscale (1.5x)",
            Self::Upscale2 => "Upscale (2x)",
            Self::UpscaleFast2 => "Upscale (Fast 2x)",
        }
    }

    pub fn is_vary(self) -> bool {
        matches!(self, Self::VarySubtle | Self::VaryStrong)
    }

    /// The denoising strength; 0 for Fast 2× (no sampling).
    pub fn denoise(self) -> f64 {
        match self {
            Self::VarySubtle => 0.5,
            Self::VaryStrong => 0.85,
            Self::Upscale15 | Self::Upscale2 => UPSCALE_DENOISE,
            Self::UpscaleFast2 => 0.0,
        }
    }

    /// The upscale factor; 1 for Vary.
    pub fn factor(self) -> f64 {
        match self {
            Self::VarySubtle | Self::VaryStrong => 1.0,
            Self::Upscale15 => 1.5,
            Self::Upscale2 | Self::UpscaleFast2 => 2.0,
        }
    }

    /// The step count with `performance` when no steps are forced: Vary keeps the mode's,
    /// Upscale takes the reduced table (Speed 18, Quality 36, the 4- and 8-step modes their
    /// own).
    pub fn steps(self, performance: Performance) -> usize {
        match self {
            Self::Upscale15 | Self::Upscale2 => match performance {
                Performance::Speed => 18,
                Performance::Quality => 36,
                other => other.steps(),
            },
            _ => performance.steps(),
        }
    }
}

impl FromStr for UovMethod {
    type Err = String;

    /// Fooocus' names and short forms, matched as Fooocus does (case-folded, by the words
    /// `subtle`, `strong`, `fast`, `1.5`, `2`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        let method = if t.contains("subtle") {
            Self::VarySubtle
        } else if t.contains("strong") {
            Self::VaryStrong
        } else if t.contains("fast") {
            Self::UpscaleFast2
        } else if t.contains("1.5") {
            Self::Upscale15
        } else if t.contains('2') && !t.contains("vary") {
            Self::Upscale2
        } else {
            let names: Vec<&str> = METHODS.iter().map(|m| m.label()).collect();
            return Err(format!(
                "{s:?} is not a method: use one of {}",
                names.join(", ")
            ));
        };
        Ok(method)
    }
}

/// What a method makes of an input: the pixels to encode and sample from, or the result itself.
pub enum Prepared {
    /// Encode these pixels (already a multiple of 8 on each side) and sample.
    Sample(RgbImage),
    /// The result, without sampling (Fast 2×, or an upscale past [`DIRECT_RETURN_CEIL`]).
    Direct(RgbImage),
}

/// The (height, width) a method's run produces from an input of (height, width): the sampled
/// size, or the direct result's size, and whether it samples.
pub fn output_size(method: UovMethod, height: u32, width: u32) -> ((u32, u32), bool) {
    let (h, w) = (f64::from(height), f64::from(width));
    if method.is_vary() {
        let c = shape_ceil(h, w).clamp(VARY_CEIL.0, VARY_CEIL.1);
        let (h, w) = shape_ceil_size(height, width, c);
        return ((h / 8 * 8, w / 8 * 8), true);
    }
    let f = method.factor();
    let c = shape_ceil(h * f, w * f);
    let size = if c < MIN_UPSCALE_CEIL {
        // The upscaler's 4× result brought to shape ceil 1024.
        shape_ceil_size(height * 4, width * 4, MIN_UPSCALE_CEIL)
    } else {
        ((h * f) as u32, (w * f) as u32)
    };
    let samples = method != UovMethod::UpscaleFast2 && c <= DIRECT_RETURN_CEIL;
    if samples {
        ((size.0 / 8 * 8, size.1 / 8 * 8), true)
    } else {
        (size, false)
    }
}

/// `image` as `[1, 3, H, W]` f32 in [0, 1] (value / 255).
fn unit_tensor(image: &RgbImage, device: &Device) -> candle_core::Result<Tensor> {
    let (w, h) = image.dimensions();
    let x = Tensor::from_vec(image.as_raw().clone(), (h as usize, w as usize, 3), device)?
        .permute((2, 0, 1))?
        .to_dtype(DType::F32)?;
    (x / 255.0)?.unsqueeze(0)
}

/// Runs `upscaler` on `image` (Fooocus: [0, 1] floats, 512-pixel tiles, clamped, truncated to
/// 8 bits).
pub fn super_resolve(
    upscaler: &Rrdb,
    image: &RgbImage,
    device: &Device,
) -> candle_core::Result<RgbImage> {
    let x = unit_tensor(image, device)?;
    let y = upscaler.upscale_tiled(&x, UPSCALER_TILES)?;
    let (_, _, oh, ow) = y.dims4()?;
    let values = (y.get(0)?.clamp(0f32, 1f32)? * 255.0)?
        .permute((1, 2, 0))?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let bytes = values.iter().map(|v| *v as u8).collect();
    RgbImage::from_raw(ow as u32, oh as u32, bytes)
        .ok_or_else(|| candle_core::Error::Msg("the upscaler's output has the wrong size".into()))
}

/// The VAE's tiles for an encode (Fooocus' upscale): 512 pixels, in three shapes.
pub const ENCODE_TILE: usize = 512;

/// Encodes `pixels` (sides multiples of 8) to a model-space latent, the posterior mean × the
/// scale (Fooocus samples the posterior with an unseeded generator; the mean makes a request
/// reproducible and serves every image of a batch, as Fooocus' one encode does), tiled in
/// Fooocus' three shapes or whole.
pub fn encode(
    vae: &Vae,
    pixels: &RgbImage,
    tiled: bool,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let x = ((unit_tensor(pixels, device)? * 2.0)? - 1.0)?;
    if tiled {
        encode_tiled(vae, &x, ENCODE_TILE)
    } else {
        vae.encode(&x)
    }
}

/// The pixels a method's run starts from, or its direct result. `upscaler` is needed by the
/// upscale methods.
pub fn prepare(
    method: UovMethod,
    input: &RgbImage,
    upscaler: Option<&Rrdb>,
    device: &Device,
) -> candle_core::Result<Prepared> {
    if method.is_vary() {
        let (h, w) = (f64::from(input.height()), f64::from(input.width()));
        let c = shape_ceil(h, w).clamp(VARY_CEIL.0, VARY_CEIL.1);
        return Ok(Prepared::Sample(crop_to_8(&set_shape_ceil(input, c))));
    }
    let Some(upscaler) = upscaler else {
        candle_core::bail!("an upscale needs the upscaler network");
    };
    let sr = super_resolve(upscaler, input, device)?;
    Ok(from_super_resolved(
        method,
        &sr,
        (input.height(), input.width()),
    ))
}

/// Steps 2–4 of an upscale: the upscaler's result `sr` of an input of `input_hw` (height,
/// width) resized to the factor (or to shape ceil 1024 when small), and whether it is sampled.
/// The upscaler's 8-bit output is where two implementations part: its truncation turns any
/// last-bit difference at a level boundary into a whole level.
pub fn from_super_resolved(method: UovMethod, sr: &RgbImage, input_hw: (u32, u32)) -> Prepared {
    let f = method.factor();
    let (h, w) = (f64::from(input_hw.0), f64::from(input_hw.1));
    let c = shape_ceil(h * f, w * f);
    let target = if c < MIN_UPSCALE_CEIL {
        set_shape_ceil(sr, MIN_UPSCALE_CEIL)
    } else {
        lanczos(sr, (w * f) as u32, (h * f) as u32)
    };
    if method == UovMethod::UpscaleFast2 || c > DIRECT_RETURN_CEIL {
        Prepared::Direct(target)
    } else {
        Prepared::Sample(crop_to_8(&target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_matched_like_fooocus() {
        for m in METHODS {
            assert_eq!(m.label().parse::<UovMethod>(), Ok(m));
        }
        assert_eq!("vary_strong".parse(), Ok(UovMethod::VaryStrong));
        assert_eq!("fast".parse(), Ok(UovMethod::UpscaleFast2));
        assert_eq!("1.5".parse(), Ok(UovMethod::Upscale15));
        assert_eq!("2".parse(), Ok(UovMethod::Upscale2));
        assert!("sideways".parse::<UovMethod>().is_err());
    }

    #[test]
    fn steps_and_sizes_follow_the_tables() {
        assert_eq!(UovMethod::Upscale2.steps(Performance::Speed), 18);
        assert_eq!(UovMethod::Upscale15.steps(Performance::Quality), 36);
        assert_eq!(UovMethod::VarySubtle.steps(Performance::Speed), 30);
        assert_eq!(
            output_size(UovMethod::VarySubtle, 512, 512),
            ((1024, 1024), true)
        );
        assert_eq!(
            output_size(UovMethod::VaryStrong, 3000, 4000),
            ((1728, 2304), true)
        );
        // 1024² at 2× has shape ceil 2048: sampled at 2048²; 1500² at 2× passes 2800.
        assert_eq!(
            output_size(UovMethod::Upscale2, 1024, 1024),
            ((2048, 2048), true)
        );
        assert_eq!(
            output_size(UovMethod::Upscale2, 1500, 1500),
            ((3000, 3000), false)
        );
        assert_eq!(
            output_size(UovMethod::UpscaleFast2, 1024, 1024),
            ((2048, 2048), false)
        );
        assert_eq!(
            output_size(UovMethod::Upscale2, 64, 96),
            ((832, 1216), true)
        );
    }
}
