//! A plan's image metadata (what the store embeds in every image) and the way back: the request
//! that reproduces a saved image.

use super::plan::{Plan, Task};
use super::request::GenerateRequest;
use super::styles::Workloads;
use crate::config::LoraChoice;
use crate::store::{short_hash, ImageMetadata, InputImageRecord, LoraEntry};

/// What one image's prompts became: the texts after wildcards and arrays, and the workloads
/// encoded from them.
pub struct PromptsUsed<'a> {
    pub prompt: &'a str,
    pub negative: &'a str,
    pub workloads: &'a Workloads,
}

/// The metadata of image `seed` of `plan`, recording the prompts as written and as encoded, and
/// the models' short hashes.
pub fn metadata(plan: &Plan, seed: u64, used: &PromptsUsed<'_>) -> ImageMetadata {
    let mut meta = recipe(plan, seed, used);
    meta.base_model_hash = short_hash(&plan.base_model.path).ok();
    meta.refiner_model_hash = plan
        .refiner
        .as_ref()
        .and_then(|r| short_hash(&r.model.path).ok());
    for (entry, (model, _)) in meta.loras.iter_mut().zip(&plan.loras) {
        entry.hash = short_hash(&model.path).ok();
    }
    meta
}

/// The request that plans `plan` again, whatever the preset: every field explicit, the first
/// seed fixed, an input image named by its sha256 (so it must be kept in the store, as runs
/// do). What a durable queue records for a job.
pub fn request_of_plan(plan: &Plan) -> GenerateRequest {
    let none = Workloads::none();
    let used = PromptsUsed {
        prompt: &plan.prompt,
        negative: &plan.negative_prompt,
        workloads: &none,
    };
    let first_seed = plan.seeds.first().copied().unwrap_or(0);
    GenerateRequest {
        image_number: Some(plan.seeds.len() as u32),
        save_metadata: Some(plan.save_metadata),
        ..request_from_metadata(&recipe(plan, first_seed, &used))
    }
}

/// What image `seed` of `plan` records, without the models' hashes (which read whole files).
fn recipe(plan: &Plan, seed: u64, used: &PromptsUsed<'_>) -> ImageMetadata {
    ImageMetadata {
        expanded_prompt: used.prompt.to_owned(),
        expanded_negative_prompt: used.negative.to_owned(),
        encoded_prompt: used.workloads.positive.clone(),
        encoded_negative_prompt: used.workloads.negative.clone(),
        prompt: plan.prompt.clone(),
        negative_prompt: plan.negative_prompt.clone(),
        styles: plan.styles.clone(),
        performance: plan.performance.name().to_string(),
        steps: plan.steps as u32,
        sampler: plan.sampler.name().to_string(),
        scheduler: plan.scheduler.name().to_string(),
        guidance_scale: plan.guidance.cfg,
        sharpness: plan.guidance.sharpness,
        adm_scaler_positive: plan.adm.positive,
        adm_scaler_negative: plan.adm.negative,
        adm_scaler_end: plan.adm.end,
        adaptive_cfg: plan.guidance.mimic,
        clip_skip: plan.clip_skip as u32,
        seed,
        width: plan.width,
        height: plan.height,
        base_model: plan.base_model.name.clone(),
        refiner_model: plan.refiner.as_ref().map(|r| r.model.name.clone()),
        refiner_switch: plan.refiner.as_ref().map_or(1.0, |r| r.switch),
        loras: plan
            .loras
            .iter()
            .map(|(m, weight)| LoraEntry {
                name: m.name.clone(),
                hash: None,
                weight: *weight,
            })
            .collect(),
        vae: None,
        output_format: plan.output_format,
        input_image: match &plan.task {
            Task::TextToImage => None,
            Task::Uov { method, input, .. } => Some(InputImageRecord {
                method: method.label().to_string(),
                denoise: method.denoise(),
                sha256: input.sha256.clone(),
            }),
            Task::ImageToImage { input, denoise } => Some(InputImageRecord {
                method: IMAGE_TO_IMAGE.to_string(),
                denoise: *denoise,
                sha256: input.sha256.clone(),
            }),
            Task::Resize { input, upscaler } => Some(InputImageRecord {
                method: if upscaler.is_some() {
                    RESIZE_UPSCALER
                } else {
                    RESIZE_LANCZOS
                }
                .to_string(),
                denoise: 0.0,
                sha256: input.sha256.clone(),
            }),
        },
        ..ImageMetadata::default()
    }
}

/// The method the metadata names for image to image (A1111's img2img).
pub const IMAGE_TO_IMAGE: &str = "Image to image";
/// The methods the metadata names for a resize, through the upscaler or by Lanczos alone.
pub const RESIZE_UPSCALER: &str = "Resize (upscaler)";
pub const RESIZE_LANCZOS: &str = "Resize (Lanczos)";

fn is_image_to_image(input: &InputImageRecord) -> bool {
    input.method == IMAGE_TO_IMAGE
}

fn is_resize(input: &InputImageRecord) -> bool {
    input.method == RESIZE_UPSCALER || input.method == RESIZE_LANCZOS
}

/// The request that makes the image `meta` describes again (one image, its seed). LoRAs that a
/// performance mode adds are left to the mode; an input image is named by its sha256 (the store
/// keeps every input under that name).
pub fn request_from_metadata(meta: &ImageMetadata) -> GenerateRequest {
    let forced = meta
        .performance
        .parse::<super::request::Performance>()
        .ok()
        .and_then(|p| p.fast());
    let kept = meta.input_image.as_ref();
    GenerateRequest {
        prompt: meta.prompt.clone(),
        negative_prompt: Some(meta.negative_prompt.clone()),
        styles: Some(meta.styles.clone()),
        performance: Some(meta.performance.clone()),
        aspect_ratio: None,
        width: Some(meta.width),
        height: Some(meta.height),
        image_number: Some(1),
        seed: Some(meta.seed),
        base_model: Some(meta.base_model.clone()),
        refiner_model: Some(meta.refiner_model.clone().unwrap_or_else(|| "None".into())),
        refiner_switch: Some(meta.refiner_switch),
        loras: Some(
            meta.loras
                .iter()
                .filter(|l| forced.is_none_or(|f| l.name != f.lora))
                .map(|l| LoraChoice {
                    name: l.name.clone(),
                    weight: l.weight,
                })
                .collect(),
        ),
        guidance_scale: Some(meta.guidance_scale),
        sharpness: Some(meta.sharpness),
        sampler: Some(meta.sampler.clone()),
        scheduler: Some(meta.scheduler.clone()),
        steps: Some(meta.steps),
        clip_skip: Some(meta.clip_skip as usize),
        adm_positive: Some(meta.adm_scaler_positive),
        adm_negative: Some(meta.adm_scaler_negative),
        adm_end: Some(meta.adm_scaler_end),
        adaptive_cfg: Some(meta.adaptive_cfg),
        output_format: Some(meta.output_format.extension().to_string()),
        save_metadata: Some(true),
        input_image: meta
            .input_image
            .as_ref()
            .map(|i| format!("sha256:{}", i.sha256)),
        uov_method: kept
            .filter(|i| !is_image_to_image(i) && !is_resize(i))
            .map(|i| i.method.clone()),
        denoise: kept.filter(|i| is_image_to_image(i)).map(|i| i.denoise),
        resize_to: kept
            .filter(|i| is_resize(i))
            .map(|_| [meta.width, meta.height]),
        resize_upscaler: kept
            .filter(|i| is_resize(i))
            .map(|i| i.method == RESIZE_UPSCALER),
    }
}
