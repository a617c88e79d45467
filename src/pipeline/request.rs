//! A generation request as clients send it (JSON or the command line): every field optional,
//! missing ones taken from the preset. Also the fixed vocabularies: performance modes, the SDXL
//! resolutions and output formats.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::LoraChoice;

/// What a client asks for. `None` means "the preset's value".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateRequest {
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub styles: Option<Vec<String>>,
    pub performance: Option<String>,
    /// `W×H` from the SDXL list.
    pub aspect_ratio: Option<String>,
    /// A custom size (advanced): both set, multiples of 8 from 64 to 2048.
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub image_number: Option<u32>,
    /// Image i uses seed + i; absent: a random seed.
    pub seed: Option<u64>,
    pub base_model: Option<String>,
    /// `"None"` disables the refiner.
    pub refiner_model: Option<String>,
    pub refiner_switch: Option<f64>,
    pub loras: Option<Vec<LoraChoice>>,
    pub guidance_scale: Option<f64>,
    pub sharpness: Option<f64>,
    pub sampler: Option<String>,
    pub scheduler: Option<String>,
    /// Forced step count (advanced); the refiner switch still follows the performance steps.
    pub steps: Option<u32>,
    pub clip_skip: Option<usize>,
    pub adm_positive: Option<f64>,
    pub adm_negative: Option<f64>,
    pub adm_end: Option<f64>,
    pub adaptive_cfg: Option<f64>,
    pub output_format: Option<String>,
    pub save_metadata: Option<bool>,
    /// The input image of "Upscale or Variation": base64 bytes, a `data:` URL, the address of
    /// one of our saved images (`/outputs/…`), or `sha256:<hex>` of a kept or saved image.
    pub input_image: Option<String>,
    /// `Vary (Subtle)`, `Vary (Strong)`, `Upscale (1.5x)`, `Upscale (2x)`, `Upscale (Fast 2x)`
    /// (or `subtle`, `strong`, `1.5`, `2`, `fast`); `Disabled` or absent: text to image.
    pub uov_method: Option<String>,
    /// Image to image (A1111's img2img): with an input image and no method, the input is resized
    /// to the size asked for (else its own) and re-sampled at this denoising strength (0.01–1).
    pub denoise: Option<f64>,
    /// Resize only (A1111's extras upscale): the input image brought to `[width, height]` (1 to
    /// 8192 pixels a side), through the 4× upscaler first unless `resize_upscaler` is false
    /// (Lanczos alone); one image, no sampling.
    pub resize_to: Option<[u32; 2]>,
    pub resize_upscaler: Option<bool>,
}

/// Fooocus' performance modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Performance {
    Speed,
    Quality,
    #[serde(rename = "Extreme Speed")]
    ExtremeSpeed,
    Lightning,
    #[serde(rename = "Hyper-SD")]
    HyperSd,
}

/// What a fast mode forces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FastMode {
    pub lora: &'static str,
    pub lora_weight: f64,
    pub sampler: &'static str,
    pub scheduler: &'static str,
}

impl Performance {
    pub const ALL: [Performance; 5] = [
        Performance::Speed,
        Performance::Quality,
        Performance::ExtremeSpeed,
        Performance::Lightning,
        Performance::HyperSd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Performance::Speed => "Speed",
            Performance::Quality => "Quality",
            Performance::ExtremeSpeed => "Extreme Speed",
            Performance::Lightning => "Lightning",
            Performance::HyperSd => "Hyper-SD",
        }
    }

    pub fn steps(self) -> usize {
        match self {
            Performance::Speed => 30,
            Performance::Quality => 60,
            Performance::ExtremeSpeed => 8,
            Performance::Lightning | Performance::HyperSd => 4,
        }
    }

    /// The LoRA, sampler and scheduler a fast mode forces (with CFG 1, sharpness 0, neutral
    /// ADM and no refiner); `None` for Speed and Quality.
    pub fn fast(self) -> Option<FastMode> {
        let mode = |lora, lora_weight, sampler, scheduler| FastMode {
            lora,
            lora_weight,
            sampler,
            scheduler,
        };
        match self {
            Performance::Speed | Performance::Quality => None,
            Performance::ExtremeSpeed => Some(mode("sdxl_lcm_lora.safetensors", 1.0, "lcm", "lcm")),
            Performance::Lightning => Some(mode(
                "sdxl_lightning_4step_lora.safetensors",
                1.0,
                "euler",
                "sgm_uniform",
            )),
            Performance::HyperSd => Some(mode(
                "sdxl_hyper_sd_4step_lora.safetensors",
                0.8,
                "dpmpp_sde_gpu",
                "karras",
            )),
        }
    }
}

impl fmt::Display for Performance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Performance {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|p| p.name()).collect();
                format!(
                    "unknown performance {s:?}: choose one of {}",
                    known.join(", ")
                )
            })
    }
}

/// The SDXL resolutions (W, H), in Fooocus' order; the default is 1152×896.
pub const ASPECT_RATIOS: [(u32, u32); 26] = [
    (704, 1408),
    (704, 1344),
    (768, 1344),
    (768, 1280),
    (832, 1216),
    (832, 1152),
    (896, 1152),
    (896, 1088),
    (960, 1088),
    (960, 1024),
    (1024, 1024),
    (1024, 960),
    (1088, 960),
    (1088, 896),
    (1152, 896),
    (1152, 832),
    (1216, 832),
    (1280, 768),
    (1344, 768),
    (1344, 704),
    (1408, 704),
    (1472, 704),
    (1536, 640),
    (1600, 640),
    (1664, 576),
    (1728, 576),
];

/// `"1152×896"` (or `*`, `x`) → (1152, 896), when it is one of the SDXL resolutions.
pub fn parse_aspect_ratio(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split(['×', '*', 'x', 'X']).map(str::trim);
    let w = parts.next()?.parse().ok()?;
    let h = parts.next()?.split_whitespace().next()?.parse().ok()?;
    ASPECT_RATIOS.contains(&(w, h)).then_some((w, h))
}

/// The label of a resolution, `1152×896`.
pub fn aspect_label((w, h): (u32, u32)) -> String {
    format!("{w}×{h}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aspect_ratios_parse_in_every_spelling() {
        assert_eq!(parse_aspect_ratio("1152×896"), Some((1152, 896)));
        assert_eq!(parse_aspect_ratio("1152*896"), Some((1152, 896)));
        assert_eq!(parse_aspect_ratio("704x1408"), Some((704, 1408)));
        assert_eq!(parse_aspect_ratio("1152×896 ∣ 9:7"), Some((1152, 896)));
        assert_eq!(parse_aspect_ratio("1000×1000"), None);
        assert!(ASPECT_RATIOS
            .iter()
            .all(|(w, h)| w % 64 == 0 && h % 64 == 0));
    }

    #[test]
    fn performance_names_round_trip() {
        for p in Performance::ALL {
            assert_eq!(p.name().parse::<Performance>(), Ok(p));
        }
        assert!("Turbo".parse::<Performance>().is_err());
        assert_eq!(Performance::Quality.steps(), 60);
        assert!(Performance::Speed.fast().is_none());
    }
}
