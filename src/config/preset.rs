//! Presets: the defaults of a generation (models, LoRAs, guidance, sampler, styles, size), named
//! in `config.toml` and chosen with `--preset`. The built-in `default` is the original Fooocus
//! setup: SDXL base 1.0 + refiner 1.0 (both with the 0.9 VAE), the offset LoRA at 0.5, CFG 7.

use serde::{Deserialize, Serialize};

/// The styles a default preset selects: our cinematic look plus the negative-only quality
/// booster (one positive workload, like Fooocus' defaults without prompt expansion).
pub const DEFAULT_STYLES: [&str; 2] = ["Base: Cinematic", "Base: Quality Boost"];

/// The preset used when none is chosen.
pub const DEFAULT_PRESET: &str = "default";

/// A LoRA and its strength.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraChoice {
    /// File name (or path relative to a LoRA folder).
    pub name: String,
    /// Strength, −2…2.
    pub weight: f64,
}

/// Every default a request can override.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Preset {
    pub base_model: String,
    /// `None` (or the base itself) disables the refiner swap.
    pub refiner_model: Option<String>,
    /// Fraction of the steps after which the refiner takes over.
    pub refiner_switch: f64,
    pub loras: Vec<LoraChoice>,
    pub performance: String,
    pub styles: Vec<String>,
    /// `W×H` from the SDXL list (also accepted: `W*H`, `WxH`).
    pub aspect_ratio: String,
    pub image_number: u32,
    pub negative_prompt: String,
    pub guidance_scale: f64,
    pub sharpness: f64,
    pub sampler: String,
    pub scheduler: String,
    pub clip_skip: usize,
    pub adm_positive: f64,
    pub adm_negative: f64,
    pub adm_end: f64,
    /// CFG mimicking scale (Fooocus' "adaptive CFG").
    pub adaptive_cfg: f64,
    /// `png`, `jpeg` or `webp`.
    pub output_format: String,
    pub save_metadata: bool,
    /// A step count forced on every request that forces none (Fooocus' `default_overwrite_step`);
    /// `None`: the performance's.
    pub steps: Option<u32>,
}

impl Default for Preset {
    fn default() -> Self {
        Self {
            base_model: "sd_xl_base_1.0_0.9vae.safetensors".into(),
            refiner_model: Some("sd_xl_refiner_1.0_0.9vae.safetensors".into()),
            refiner_switch: 0.667,
            loras: vec![LoraChoice {
                name: "sd_xl_offset_example-lora_1.0.safetensors".into(),
                weight: 0.5,
            }],
            performance: "Speed".into(),
            styles: DEFAULT_STYLES.iter().map(|s| s.to_string()).collect(),
            aspect_ratio: "1152×896".into(),
            image_number: 2,
            negative_prompt: String::new(),
            guidance_scale: 7.0,
            sharpness: 2.0,
            sampler: "dpmpp_2m_sde_gpu".into(),
            scheduler: "karras".into(),
            clip_skip: 2,
            adm_positive: 1.5,
            adm_negative: 0.8,
            adm_end: 0.3,
            adaptive_cfg: 7.0,
            output_format: "png".into(),
            save_metadata: true,
            steps: None,
        }
    }
}
