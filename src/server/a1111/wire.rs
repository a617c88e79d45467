//! A1111's request and reply bodies as serde structs. Requests are lenient as A1111's pydantic
//! models are: every field may be absent or `null`, unknown keys are ignored. Replies have A1111's
//! key names; `info` is a JSON string inside the JSON reply, as A1111 sends it.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A whole number as A1111's pydantic models take one: an integer, a whole float (`20.0`) or a
/// numeric string (`"20"`).
pub fn whole_number(value: &Value) -> Option<u64> {
    let whole = |f: f64| (f.is_finite() && f.fract() == 0.0 && f >= 0.0).then_some(f as u64);
    match value {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().and_then(whole)),
        Value::String(s) => s.trim().parse::<f64>().ok().and_then(whole),
        _ => None,
    }
}

/// An optional whole-number field read as [`whole_number`] does; `null` is absent.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let value = Option::<Value>::deserialize(deserializer)?;
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => whole_number(&v)
            .and_then(|n| T::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("{v} is not a whole number in range"))),
    }
}

/// The fields of `txt2img` and `img2img` that mean something here; the others (hires fix,
/// scripts, `eta`, `s_*`, `tiling`, …) are accepted and ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GenerationRequest {
    pub prompt: Option<String>,
    pub negative_prompt: Option<String>,
    pub styles: Option<Vec<String>>,
    /// `-1`, `""` or `null`: random.
    pub seed: Option<Value>,
    pub sampler_name: Option<String>,
    pub sampler_index: Option<String>,
    pub scheduler: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub batch_size: Option<u32>,
    #[serde(deserialize_with = "lenient")]
    pub n_iter: Option<u32>,
    #[serde(deserialize_with = "lenient")]
    pub steps: Option<u32>,
    pub cfg_scale: Option<f64>,
    #[serde(deserialize_with = "lenient")]
    pub width: Option<u32>,
    #[serde(deserialize_with = "lenient")]
    pub height: Option<u32>,
    #[serde(deserialize_with = "lenient")]
    pub clip_skip: Option<usize>,
    pub refiner_checkpoint: Option<String>,
    pub refiner_switch_at: Option<f64>,
    pub override_settings: Option<BTreeMap<String, Value>>,
    pub send_images: Option<bool>,
    /// img2img: the first one is the input.
    pub init_images: Option<Vec<String>>,
    pub mask: Option<String>,
    pub denoising_strength: Option<f64>,
}

/// `txt2img` / `img2img` reply.
#[derive(Debug, Serialize)]
pub struct ImagesReply {
    /// Raw base64 (no `data:` prefix, no line breaks).
    pub images: Vec<String>,
    /// The request as it came.
    pub parameters: Value,
    /// [`Info`] as a JSON string.
    pub info: String,
}

/// What A1111's `Processed.js()` says of a run (the keys clients read, in its order).
#[derive(Debug, Serialize)]
pub struct Info {
    pub prompt: String,
    pub all_prompts: Vec<String>,
    pub negative_prompt: String,
    pub all_negative_prompts: Vec<String>,
    pub seed: u64,
    pub all_seeds: Vec<u64>,
    pub subseed: u64,
    pub all_subseeds: Vec<u64>,
    pub subseed_strength: f64,
    pub width: u32,
    pub height: u32,
    pub sampler_name: String,
    pub cfg_scale: f64,
    pub steps: usize,
    pub batch_size: usize,
    pub restore_faces: bool,
    pub face_restoration_model: Option<String>,
    pub sd_model_name: String,
    pub sd_model_hash: Option<String>,
    pub sd_vae_name: Option<String>,
    pub sd_vae_hash: Option<String>,
    pub seed_resize_from_w: i32,
    pub seed_resize_from_h: i32,
    pub denoising_strength: Option<f64>,
    pub extra_generation_params: BTreeMap<String, Value>,
    pub index_of_first_image: usize,
    pub infotexts: Vec<String>,
    pub styles: Vec<String>,
    pub job_timestamp: String,
    pub clip_skip: usize,
    pub is_using_inpainting_conditioning: bool,
    pub version: String,
}

/// `GET progress`.
#[derive(Debug, Serialize)]
pub struct ProgressReply {
    pub progress: f64,
    pub eta_relative: f64,
    pub state: ProgressState,
    /// Raw base64 of the newest step preview (a JPEG), or `null`.
    pub current_image: Option<String>,
    pub textinfo: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ProgressState {
    pub skipped: bool,
    pub interrupted: bool,
    pub stopping_generation: bool,
    pub job: String,
    /// The running job and the queued ones.
    pub job_count: usize,
    pub job_timestamp: String,
    pub job_no: usize,
    pub sampling_step: usize,
    pub sampling_steps: usize,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct ProgressQuery {
    /// `true`, `1`, `yes` (any case) leave the preview out.
    pub skip_current_image: Option<String>,
}

impl ProgressQuery {
    pub fn skips_image(&self) -> bool {
        self.skip_current_image
            .as_deref()
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on"))
    }
}

/// One entry of `sd-models`.
#[derive(Debug, Clone, Serialize)]
pub struct SdModel {
    /// `"<name> [<sha256[:10]>]"`, byte-identical to `options.sd_model_checkpoint`.
    pub title: String,
    pub model_name: String,
    pub hash: String,
    pub sha256: String,
    pub filename: String,
    pub config: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SamplerItem {
    pub name: String,
    pub aliases: Vec<String>,
    pub options: BTreeMap<String, Value>,
}

#[derive(Debug, Serialize)]
pub struct SchedulerItem {
    pub name: &'static str,
    pub label: &'static str,
    pub aliases: Option<Vec<&'static str>>,
    pub default_rho: f64,
    pub need_inner_model: bool,
}

#[derive(Debug, Serialize)]
pub struct UpscalerItem {
    pub name: &'static str,
    pub model_name: Option<&'static str>,
    pub model_path: Option<String>,
    pub model_url: Option<String>,
    pub scale: f64,
}

#[derive(Debug, Serialize)]
pub struct LoraItem {
    pub name: String,
    pub alias: String,
    pub path: String,
    pub metadata: BTreeMap<String, Value>,
}

#[derive(Debug, Serialize)]
pub struct StyleItem {
    pub name: String,
    pub prompt: String,
    pub negative_prompt: String,
}

#[derive(Debug, Serialize)]
pub struct Scripts {
    pub txt2img: Vec<String>,
    pub img2img: Vec<String>,
}

/// `extra-single-image`: the fields of A1111's extras that mean something here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ExtrasRequest {
    pub image: Option<String>,
    /// 0: by `upscaling_resize`; 1: to `upscaling_resize_w` × `upscaling_resize_h`.
    #[serde(deserialize_with = "lenient")]
    pub resize_mode: Option<u8>,
    pub upscaling_resize: Option<f64>,
    #[serde(deserialize_with = "lenient")]
    pub upscaling_resize_w: Option<u32>,
    #[serde(deserialize_with = "lenient")]
    pub upscaling_resize_h: Option<u32>,
    pub upscaler_1: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ExtrasReply {
    /// Raw base64 of the saved image.
    pub image: String,
    pub html_info: String,
}

#[derive(Debug, Deserialize)]
pub struct PngInfoRequest {
    pub image: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PngInfoReply {
    /// The A1111 `parameters` text (`""` when the image has none).
    pub info: String,
    pub items: BTreeMap<String, Value>,
    pub parameters: BTreeMap<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_as_pydantic_reads_them() {
        let r: GenerationRequest = serde_json::from_str(
            r#"{"steps": 20.0, "width": "512", "height": 768, "batch_size": null, "clip_skip": 2}"#,
        )
        .unwrap();
        assert_eq!(
            (r.steps, r.width, r.height, r.batch_size),
            (Some(20), Some(512), Some(768), None)
        );
        assert_eq!(r.clip_skip, Some(2));
        for bad in [
            r#"{"steps": 20.5}"#,
            r#"{"steps": "many"}"#,
            r#"{"width": -8}"#,
        ] {
            assert!(
                serde_json::from_str::<GenerationRequest>(bad).is_err(),
                "{bad}"
            );
        }
    }
}
