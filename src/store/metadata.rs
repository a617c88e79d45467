//! [`ImageMetadata`]: everything needed to reproduce a saved image, as embedded in the file (JSON)
//! and listed in `log.html`. The serde field names are a stable, documented format.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The PNG text-chunk keyword (and JSON identity) of our own metadata scheme: the chunk holds
/// [`ImageMetadata`] serialized as JSON.
pub const JSON_KEYWORD: &str = "fooocus-rs";

/// The `Version` written into metadata: `fooocus-rs <crate version>`.
pub fn version_string() -> String {
    format!("fooocus-rs {}", env!("CARGO_PKG_VERSION"))
}

/// The file format of a saved image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Lossless PNG (the default).
    #[default]
    Png,
    /// Baseline JPEG at the requested quality.
    Jpeg,
    /// Lossless WebP (the encoder we use has no lossy mode; quality is ignored).
    Webp,
}

impl OutputFormat {
    /// The file extension written: `png`, `jpeg` or `webp` (Fooocus' spelling).
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Png => "png",
            OutputFormat::Jpeg => "jpeg",
            OutputFormat::Webp => "webp",
        }
    }

    /// The format a file extension names (`png`, `jpeg`, `jpg`, `webp`; any case).
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "png" => Some(OutputFormat::Png),
            "jpeg" | "jpg" => Some(OutputFormat::Jpeg),
            "webp" => Some(OutputFormat::Webp),
            _ => None,
        }
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

impl FromStr for OutputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OutputFormat::from_extension(s)
            .ok_or_else(|| format!("unknown output format {s:?} (expected png, jpeg or webp)"))
    }
}

/// One LoRA applied to the image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraEntry {
    /// The LoRA's file name as the user picked it (e.g. `sd_xl_offset_example-lora_1.0.safetensors`).
    pub name: String,
    /// First 10 hex chars of the file's SHA-256 (see [`super::hash`]), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// The strength it was merged with.
    pub weight: f64,
}

/// What an image-to-image run started from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputImageRecord {
    /// Fooocus' name of the method (`Vary (Subtle)`, `Upscale (2x)`, …).
    pub method: String,
    /// The denoising strength (0 for a result returned without diffusion).
    pub denoise: f64,
    /// SHA-256 of the input file's bytes (64 lowercase hex digits); the store keeps the file
    /// under `inputs/<sha256>.<ext>`.
    pub sha256: String,
}

/// Everything needed to reproduce one saved image. The pipeline fills it; the store embeds it,
/// logs it and reads it back.
///
/// The serialized field names below are a stable format (they are what the `fooocus-rs` PNG chunk
/// and `log.jsonl` hold): add fields, never rename them. Missing fields deserialize to
/// [`ImageMetadata::default`], so older files stay readable.
///
/// Model hashes are the first 10 hex chars of the file's SHA-256 (A1111's "AutoV2"; see
/// [`super::hash::short_hash`]); a longer hex string is accepted and cut to 10 in the A1111 text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageMetadata {
    /// The positive prompt as the user typed it (before styles).
    pub prompt: String,
    /// The negative prompt as the user typed it.
    pub negative_prompt: String,
    /// Selected style names, in order (e.g. `["Fooocus V2", "Fooocus Enhance"]`).
    pub styles: Vec<String>,
    /// Performance preset name (`Speed`, `Quality`, `Extreme Speed`, ...).
    pub performance: String,
    /// Sampling steps actually run.
    pub steps: u32,
    /// Sampler, Fooocus name (`dpmpp_2m_sde_gpu`, `euler_ancestral`, ...).
    pub sampler: String,
    /// Scheduler, Fooocus name (`karras`, `exponential`, `sgm_uniform`, ...).
    pub scheduler: String,
    /// Classifier-free guidance scale (CFG).
    pub guidance_scale: f64,
    /// Fooocus sharpness (anisotropic filter strength).
    pub sharpness: f64,
    /// Positive ADM scaler.
    pub adm_scaler_positive: f64,
    /// Negative ADM scaler.
    pub adm_scaler_negative: f64,
    /// Fraction of the steps after which ADM guidance ends.
    pub adm_scaler_end: f64,
    /// CFG mimicking from TSNR (`adaptive_cfg`).
    pub adaptive_cfg: f64,
    /// CLIP skip (1 = last layer).
    pub clip_skip: u32,
    /// The image's seed.
    pub seed: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Base checkpoint file name (e.g. `juggernautXL_v8Rundiffusion.safetensors`).
    pub base_model: String,
    /// Base checkpoint hash (first 10 hex of SHA-256), if known.
    pub base_model_hash: Option<String>,
    /// Refiner checkpoint file name; `None` when no refiner ran.
    pub refiner_model: Option<String>,
    /// Refiner hash, if known.
    pub refiner_model_hash: Option<String>,
    /// Fraction of the steps at which the refiner takes over.
    pub refiner_switch: f64,
    /// LoRAs applied, in order.
    pub loras: Vec<LoraEntry>,
    /// VAE file name; `None` for the checkpoint's own VAE.
    pub vae: Option<String>,
    /// The format the image was saved in.
    pub output_format: OutputFormat,
    /// Program that made the image: `fooocus-rs <version>` (see [`version_string`]).
    pub version: String,
    /// The prompt after wildcards and arrays, before styles (equal to `prompt` when it has
    /// neither; empty in images saved before this field existed).
    pub expanded_prompt: String,
    /// The negative prompt after wildcards.
    pub expanded_negative_prompt: String,
    /// The positive texts as encoded, one per conditioning chunk (after wildcards, arrays and
    /// styles; Fooocus' "Full Prompt").
    pub encoded_prompt: Vec<String>,
    /// The negative texts as encoded (Fooocus' "Full Negative Prompt").
    pub encoded_negative_prompt: Vec<String>,
    /// The input image of an image-to-image run ("Upscale or Variation"); `None` for text to
    /// image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_image: Option<InputImageRecord>,
    /// Free-form extra fields (older versions kept the expanded prompts here); not written to
    /// the A1111 text.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Default for ImageMetadata {
    /// Fooocus' shipped defaults (behaviour reference §2), with empty prompts and no models.
    fn default() -> Self {
        ImageMetadata {
            prompt: String::new(),
            negative_prompt: String::new(),
            styles: Vec::new(),
            performance: "Speed".into(),
            steps: 30,
            sampler: "dpmpp_2m_sde_gpu".into(),
            scheduler: "karras".into(),
            guidance_scale: 4.0,
            sharpness: 2.0,
            adm_scaler_positive: 1.5,
            adm_scaler_negative: 0.8,
            adm_scaler_end: 0.3,
            adaptive_cfg: 7.0,
            clip_skip: 2,
            seed: 0,
            width: 1152,
            height: 896,
            base_model: String::new(),
            base_model_hash: None,
            refiner_model: None,
            refiner_model_hash: None,
            refiner_switch: 0.5,
            loras: Vec::new(),
            vae: None,
            output_format: OutputFormat::Png,
            version: version_string(),
            expanded_prompt: String::new(),
            expanded_negative_prompt: String::new(),
            encoded_prompt: Vec::new(),
            encoded_negative_prompt: Vec::new(),
            input_image: None,
            extra: serde_json::Map::new(),
        }
    }
}

impl ImageMetadata {
    /// The JSON embedded in images and kept in `log.jsonl` (compact, field order fixed).
    pub fn to_json(&self) -> String {
        // Serializing plain strings, numbers and a JSON map cannot fail; `null` keeps this total.
        serde_json::to_string(self).unwrap_or_else(|_| "null".into())
    }

    /// Parses [`ImageMetadata::to_json`] output; `None` when `text` is not such an object.
    pub fn from_json(text: &str) -> Option<Self> {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        if !value.is_object() {
            return None;
        }
        serde_json::from_value(value).ok()
    }
}

/// `name` without folders and without a model-file extension (`.safetensors`, `.ckpt`, ...):
/// what A1111 and Fooocus write as `Model`.
pub fn model_stem(name: &str) -> &str {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    const EXTENSIONS: [&str; 6] = [".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft"];
    for ext in EXTENSIONS {
        if base.len() > ext.len() && base.to_ascii_lowercase().ends_with(ext) {
            return &base[..base.len() - ext.len()];
        }
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_defaults_for_missing_fields() {
        let mut m = ImageMetadata {
            prompt: "a cat".into(),
            seed: 42,
            ..Default::default()
        };
        m.extra
            .insert("full_prompt".into(), serde_json::json!(["a cat, detailed"]));
        let back = ImageMetadata::from_json(&m.to_json()).unwrap();
        assert_eq!(back, m);

        let partial = ImageMetadata::from_json(r#"{"prompt":"x","seed":7}"#).unwrap();
        assert_eq!(partial.prompt, "x");
        assert_eq!(partial.seed, 7);
        assert_eq!(partial.steps, 30);
        assert!(ImageMetadata::from_json("[1,2]").is_none());
        assert!(ImageMetadata::from_json("Steps: 3").is_none());
    }

    #[test]
    fn format_names() {
        assert_eq!("JPG".parse::<OutputFormat>(), Ok(OutputFormat::Jpeg));
        assert_eq!(OutputFormat::Jpeg.extension(), "jpeg");
        assert_eq!(
            serde_json::to_string(&OutputFormat::Webp).unwrap(),
            "\"webp\""
        );
        assert!("gif".parse::<OutputFormat>().is_err());
    }

    #[test]
    fn stems() {
        assert_eq!(
            model_stem("juggernautXL_v8Rundiffusion.safetensors"),
            "juggernautXL_v8Rundiffusion"
        );
        assert_eq!(model_stem("sub/dir\\model.v1.5.CKPT"), "model.v1.5");
        assert_eq!(model_stem("model.v1.5"), "model.v1.5");
        assert_eq!(model_stem(".safetensors"), ".safetensors");
    }
}
