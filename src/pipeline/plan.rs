//! From a request to a validated plan: the preset fills what the request leaves out, the
//! performance mode forces what it must, every field is checked before any work starts (each
//! error names the field), model names are resolved to files, and the seeds are fixed.

use std::path::PathBuf;

use crate::config::{Config, LoraChoice, ModelKind, Preset};
use crate::pipeline::guidance::Guidance;
use crate::pipeline::image::uov::output_size;
use crate::pipeline::image::{read_input, InputImage, UovMethod};
use crate::pipeline::request::{
    parse_aspect_ratio, FastMode, GenerateRequest, Performance, ASPECT_RATIOS,
};
use crate::pipeline::styles::StyleLibrary;
use crate::pipeline::wildcards::Wildcards;
use crate::sampling::{Sampler, Scheduler};
use crate::store::{OutputFormat, OutputStore};
use crate::weights::checkpoint::{Architecture, Checkpoint};

/// Seeds run from 0 to 2⁶³ − 1, as in Fooocus.
pub const SEED_MODULUS: u64 = 1 << 63;

/// Longest prompt or negative prompt, in characters: beyond any prompt CLIP reads usefully
/// (it is also bounded in 77-token chunks when encoded, see [`MAX_CHUNKS`]), and short enough
/// that one request cannot hold the worker for long.
pub const MAX_PROMPT_CHARS: usize = 10_000;

/// Most 77-token chunks one prompt line may take when encoded (40 × 75 = 3,000 tokens): far
/// beyond what CLIP reads usefully, and a bound on how long one request holds the text encoders.
pub const MAX_CHUNKS: usize = 40;
/// Most images one request may ask for.
pub const MAX_IMAGES: u32 = 32;
/// Most steps one request may force.
pub const MAX_STEPS: u32 = 200;
/// The smallest and largest side of a custom size (multiples of 8, as A1111 allows).
pub const MIN_SIDE: u32 = 64;
pub const MAX_SIDE: u32 = 2048;
/// The largest side a resize-only result may have (twice the largest input, as Fooocus' direct
/// upscale returns).
pub const MAX_RESIZE_SIDE: u32 = 8192;
/// Most LoRAs besides the performance one.
pub const MAX_LORAS: usize = 5;

/// A request that cannot run, naming the field and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct RequestError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> RequestError {
    RequestError {
        field,
        message: message.into(),
    }
}

/// A model chosen by name and found on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRef {
    pub name: String,
    pub path: PathBuf,
}

/// The scalers of negative ADM guidance: the positive and negative rows' original sizes are
/// scaled by `positive` and `negative` until the fraction `end` of the steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmScalers {
    pub positive: f64,
    pub negative: f64,
    pub end: f64,
}

/// The refiner and where it takes over.
#[derive(Debug, Clone, PartialEq)]
pub struct RefinerPlan {
    pub model: ModelRef,
    /// The fraction asked for.
    pub switch: f64,
    /// The step after whose model call the refiner takes over.
    pub switch_step: usize,
}

/// What a run makes of its images. Each input-image feature (vary, upscale, inpaint) adds a
/// task here and its step in `run`, rather than a branch through the whole pipeline.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Task {
    /// From noise, with the prompt alone.
    #[default]
    TextToImage,
    /// "Upscale or Variation" of an input image. `samples` is false where the result needs no
    /// diffusion (Fast 2×, or an upscale past the 2800 shape ceil); `upscaler` is where the
    /// upscaler file is (or will be downloaded to) for the upscale methods.
    Uov {
        method: UovMethod,
        input: InputImage,
        samples: bool,
        upscaler: Option<PathBuf>,
    },
    /// Image to image (A1111's img2img): the input resized to the plan's size and re-sampled at
    /// `denoise`.
    ImageToImage { input: InputImage, denoise: f64 },
    /// Resize only (A1111's extras upscale): the input through the upscaler at `upscaler` (or
    /// not), resized to the plan's size by Lanczos; one image, no sampling.
    Resize {
        input: InputImage,
        upscaler: Option<PathBuf>,
    },
}

impl Task {
    /// The denoising strength of its sampling (1 from noise).
    pub fn denoise(&self) -> f64 {
        match self {
            Task::TextToImage => 1.0,
            Task::Uov { method, .. } => method.denoise(),
            Task::ImageToImage { denoise, .. } => *denoise,
            Task::Resize { .. } => 0.0,
        }
    }

    /// The input image it reads, if any.
    pub fn input(&self) -> Option<&InputImage> {
        match self {
            Task::TextToImage => None,
            Task::Uov { input, .. }
            | Task::ImageToImage { input, .. }
            | Task::Resize { input, .. } => Some(input),
        }
    }

    /// Whether its result is made without diffusion (one image).
    pub fn is_direct(&self) -> bool {
        matches!(self, Task::Uov { samples: false, .. } | Task::Resize { .. })
    }
}

/// Everything a run needs, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub task: Task,
    pub prompt: String,
    pub negative_prompt: String,
    pub styles: Vec<String>,
    pub performance: Performance,
    pub width: u32,
    pub height: u32,
    /// One seed per image.
    pub seeds: Vec<u64>,
    pub base_model: ModelRef,
    pub refiner: Option<RefinerPlan>,
    pub loras: Vec<(ModelRef, f64)>,
    pub steps: usize,
    pub sampler: Sampler,
    pub scheduler: Scheduler,
    pub guidance: Guidance,
    pub adm: AdmScalers,
    pub clip_skip: usize,
    pub output_format: OutputFormat,
    pub save_metadata: bool,
}

fn in_range(field: &'static str, value: f64, lo: f64, hi: f64) -> Result<f64, RequestError> {
    if value.is_finite() && (lo..=hi).contains(&value) {
        Ok(value)
    } else {
        Err(bad(
            field,
            format!("{value} is out of range: use {lo} to {hi}"),
        ))
    }
}

/// Validates `request` over `preset` and resolves it into a plan.
pub fn plan(
    request: &GenerateRequest,
    preset: &Preset,
    config: &Config,
    styles: &StyleLibrary,
) -> Result<Plan, RequestError> {
    let r = request;
    let performance: Performance = r
        .performance
        .as_deref()
        .unwrap_or(&preset.performance)
        .parse()
        .map_err(|e: String| bad("performance", e))?;

    let style_names = r.styles.clone().unwrap_or_else(|| preset.styles.clone());
    styles
        .check(&style_names)
        .map_err(|e| bad("styles", e.to_string()))?;

    let task = task(r, config)?;
    let ((width, height), uov_steps) = match &task {
        Task::TextToImage => (size(r, preset)?, None),
        Task::ImageToImage { input, .. } => match (r.width, r.height) {
            (None, None) => (own_size(&input.pixels), None),
            _ => (size(r, preset)?, None),
        },
        Task::Uov {
            method,
            input,
            samples,
            ..
        } => {
            let ((h, w), _) = output_size(*method, input.pixels.height(), input.pixels.width());
            let steps = if *samples {
                method.steps(performance)
            } else {
                0
            };
            ((w, h), Some(steps))
        }
        Task::Resize { .. } => {
            let [w, h] = r.resize_to.unwrap_or_default();
            ((w, h), Some(0))
        }
    };
    let mut seeds = seeds(r, preset)?;
    if task.is_direct() {
        // A result without diffusion is one image, whatever the count asked for.
        seeds.truncate(1);
    }
    let negative_prompt = prompts(r, preset, config)?;

    let base_name = r
        .base_model
        .clone()
        .unwrap_or_else(|| preset.base_model.clone());
    let base_path = config
        .find_model(ModelKind::Checkpoint, &base_name)
        .map_err(|e| bad("base_model", e.to_string()))?;
    let base_model = checkpoint("base_model", &base_name, base_path, Architecture::SdxlBase)?;

    let perf_steps = performance.steps();
    let forced = r.steps.or(preset.steps);
    let steps = match uov_steps {
        Some(0) => Ok(0),
        Some(s) => steps(forced, s),
        None => steps(forced, perf_steps),
    }
    .map_err(|e| match r.steps {
        Some(_) => e,
        None => bad(
            "steps",
            format!(
                "{} (the preset's `steps`: fix it in the configuration)",
                e.message
            ),
        ),
    })?;
    let fast = performance.fast();
    let refiner = match fast {
        Some(_) => None,
        None => refiner(r, preset, config, &base_model, perf_steps, steps)?,
    };
    let loras = loras(r, preset, config, performance)?;
    let Tuning {
        guidance,
        adm,
        sampler,
        scheduler,
    } = tuning(r, preset, fast)?;

    let clip_skip = r.clip_skip.unwrap_or(preset.clip_skip);
    if !(1..=12).contains(&clip_skip) {
        return Err(bad("clip_skip", format!("{clip_skip}: use 1 to 12")));
    }
    let output_format: OutputFormat = r
        .output_format
        .as_deref()
        .unwrap_or(&preset.output_format)
        .parse()
        .map_err(|e: String| bad("output_format", e))?;

    Ok(Plan {
        task,
        prompt: r.prompt.clone(),
        negative_prompt,
        styles: style_names,
        performance,
        width,
        height,
        seeds,
        base_model,
        refiner,
        loras,
        steps,
        sampler,
        scheduler,
        guidance,
        adm,
        clip_skip,
        output_format,
        save_metadata: r.save_metadata.unwrap_or(preset.save_metadata),
    })
}

/// The task: text to image, or one of the input-image tasks (the image read and decoded here,
/// so that a bad image is refused before anything is queued).
fn task(r: &GenerateRequest, config: &Config) -> Result<Task, RequestError> {
    let method = r
        .uov_method
        .as_deref()
        .filter(|m| !m.trim().is_empty() && !m.trim().eq_ignore_ascii_case("disabled"));
    let asked = [
        ("uov_method", method.is_some()),
        ("denoise", r.denoise.is_some()),
        ("resize_to", r.resize_to.is_some()),
    ];
    let Some(input) = r.input_image.as_deref() else {
        return match asked.iter().find(|(_, given)| *given) {
            None => Ok(Task::TextToImage),
            Some((field, _)) => Err(bad(
                "input_image",
                format!(
                    "`{field}` needs an input image: base64, a data URL or the address of one \
                     of our saved images"
                ),
            )),
        };
    };
    let mut given = asked.iter().filter(|(_, given)| *given).map(|(f, _)| *f);
    let (Some(what), None) = (given.next(), given.next()) else {
        return Err(bad(
            asked
                .iter()
                .rev()
                .find(|(_, g)| *g)
                .map_or("uov_method", |(f, _)| f),
            "an input image needs a method (`uov_method`: Vary (Subtle), Vary (Strong), Upscale \
             (1.5x), Upscale (2x) or Upscale (Fast 2x)), a denoising strength (`denoise`) for \
             image to image, or a size to resize to (`resize_to`): one of them",
        ));
    };
    let store = OutputStore::new(&config.paths.outputs);
    let input = read_input(input, &store).map_err(|e| bad("input_image", e))?;
    let upscaler = || config.paths.upscale_models.join(crate::hub::UPSCALER_FILE);
    match (what, method, r.denoise, r.resize_to) {
        ("denoise", _, Some(denoise), _) => Ok(Task::ImageToImage {
            input,
            denoise: in_range("denoise", denoise, 0.01, 1.0)?,
        }),
        ("resize_to", _, _, Some([w, h])) => {
            for (field, v) in [("resize_to", w), ("resize_to", h)] {
                if !(1..=MAX_RESIZE_SIDE).contains(&v) {
                    return Err(bad(
                        field,
                        format!("{v}: use 1 to {MAX_RESIZE_SIDE} pixels a side"),
                    ));
                }
            }
            let upscaler = r.resize_upscaler.unwrap_or(true).then(upscaler);
            Ok(Task::Resize { input, upscaler })
        }
        (_, Some(method), _, _) => {
            let method: UovMethod = method.parse().map_err(|e: String| bad("uov_method", e))?;
            let (_, samples) = output_size(method, input.pixels.height(), input.pixels.width());
            Ok(Task::Uov {
                method,
                input,
                samples,
                upscaler: (!method.is_vary()).then(upscaler),
            })
        }
        _ => Err(bad("uov_method", "an input image needs a method")),
    }
}

/// One seed per image: `seed + i` (wrapped), a random seed when none is given.
fn seeds(r: &GenerateRequest, preset: &Preset) -> Result<Vec<u64>, RequestError> {
    let image_number = r.image_number.unwrap_or(preset.image_number);
    if !(1..=MAX_IMAGES).contains(&image_number) {
        return Err(bad(
            "image_number",
            format!("{image_number} images: ask for 1 to {MAX_IMAGES}"),
        ));
    }
    if let Some(seed) = r.seed.filter(|&s| s >= SEED_MODULUS) {
        return Err(bad(
            "seed",
            format!(
                "{seed} is out of range: seeds run from 0 to {} (2^63 − 1), as in Fooocus",
                SEED_MODULUS - 1
            ),
        ));
    }
    let seed = r
        .seed
        .unwrap_or_else(|| rand::random::<u64>() % SEED_MODULUS);
    Ok((0..u64::from(image_number))
        .map(|i| (seed % SEED_MODULUS + i) % SEED_MODULUS)
        .collect())
}

/// Checks the wildcards of the prompt and the negative prompt; returns the negative prompt.
fn prompts(r: &GenerateRequest, preset: &Preset, config: &Config) -> Result<String, RequestError> {
    let mut wildcards = Wildcards::new(&config.paths.wildcards);
    let negative_prompt = r
        .negative_prompt
        .clone()
        .unwrap_or_else(|| preset.negative_prompt.clone());
    for (field, text) in [("prompt", &r.prompt), ("negative_prompt", &negative_prompt)] {
        let length = text.chars().count();
        if length > MAX_PROMPT_CHARS {
            return Err(bad(
                field,
                format!(
                    "{length} characters: the limit is {MAX_PROMPT_CHARS} characters (and {} \
                     chunks of 75 tokens per line); shorten it",
                    MAX_CHUNKS
                ),
            ));
        }
    }
    wildcards
        .check(&r.prompt)
        .map_err(|e| bad("prompt", e.to_string()))?;
    wildcards
        .check(&negative_prompt)
        .map_err(|e| bad("negative_prompt", e.to_string()))?;
    Ok(negative_prompt)
}

/// The steps asked for, else the performance's.
fn steps(forced: Option<u32>, perf_steps: usize) -> Result<usize, RequestError> {
    match forced {
        Some(s) if s == 0 || s > MAX_STEPS => {
            Err(bad("steps", format!("{s} steps: use 1 to {MAX_STEPS}")))
        }
        Some(s) => Ok(s as usize),
        None => Ok(perf_steps),
    }
}

/// The LoRAs asked for (else the preset's), and the fast mode's own LoRA last.
fn loras(
    r: &GenerateRequest,
    preset: &Preset,
    config: &Config,
    performance: Performance,
) -> Result<Vec<(ModelRef, f64)>, RequestError> {
    let mut loras = Vec::new();
    let chosen = r.loras.clone().unwrap_or_else(|| preset.loras.clone());
    if chosen.len() > MAX_LORAS {
        return Err(bad(
            "loras",
            format!("{} LoRAs: use at most {MAX_LORAS}", chosen.len()),
        ));
    }
    for LoraChoice { name, weight } in &chosen {
        loras.push((lora(config, name)?, in_range("loras", *weight, -2.0, 2.0)?));
    }
    if let Some(mode) = performance.fast() {
        let model = lora(config, mode.lora).map_err(|e| {
            bad(
                "performance",
                format!("{performance} needs the LoRA {}: {}", mode.lora, e.message),
            )
        })?;
        loras.push((model, mode.lora_weight));
    }
    Ok(loras)
}

/// Guidance, ADM scalers, sampler and scheduler: a fast mode forces its own.
struct Tuning {
    guidance: Guidance,
    adm: AdmScalers,
    sampler: Sampler,
    scheduler: Scheduler,
}

fn tuning(
    r: &GenerateRequest,
    preset: &Preset,
    fast: Option<FastMode>,
) -> Result<Tuning, RequestError> {
    let number = |field, value: Option<f64>, default: f64, lo, hi| {
        in_range(field, value.unwrap_or(default), lo, hi)
    };
    let mut guidance = Guidance {
        cfg: number(
            "guidance_scale",
            r.guidance_scale,
            preset.guidance_scale,
            1.0,
            30.0,
        )?,
        mimic: number(
            "adaptive_cfg",
            r.adaptive_cfg,
            preset.adaptive_cfg,
            1.0,
            30.0,
        )?,
        sharpness: number("sharpness", r.sharpness, preset.sharpness, 0.0, 30.0)?,
    };
    let mut adm = AdmScalers {
        positive: number(
            "adm_positive",
            r.adm_positive,
            preset.adm_positive,
            0.1,
            3.0,
        )?,
        negative: number(
            "adm_negative",
            r.adm_negative,
            preset.adm_negative,
            0.1,
            3.0,
        )?,
        end: number("adm_end", r.adm_end, preset.adm_end, 0.0, 1.0)?,
    };
    let sampler_name = r.sampler.as_deref().unwrap_or(&preset.sampler);
    let scheduler_name = r.scheduler.as_deref().unwrap_or(&preset.scheduler);
    let (sampler_name, scheduler_name) = match fast {
        Some(mode) => (mode.sampler, mode.scheduler),
        None => (sampler_name, scheduler_name),
    };
    let sampler: Sampler = sampler_name
        .parse()
        .map_err(|e: crate::sampling::SamplingError| bad("sampler", e.to_string()))?;
    let scheduler: Scheduler = scheduler_name
        .parse()
        .map_err(|e: crate::sampling::SamplingError| bad("scheduler", e.to_string()))?;
    if fast.is_some() {
        guidance = Guidance {
            cfg: 1.0,
            mimic: 1.0,
            sharpness: 0.0,
        };
        adm = AdmScalers {
            positive: 1.0,
            negative: 1.0,
            end: 0.0,
        };
    }
    Ok(Tuning {
        guidance,
        adm,
        sampler,
        scheduler,
    })
}

/// The step after whose model call the refiner takes over: round_half_even(steps · switch).
pub fn switch_step(steps: usize, refiner_switch: f64) -> usize {
    (steps as f64 * refiner_switch).round_ties_even().max(0.0) as usize
}

/// The image size: a custom width and height (both, multiples of 64 in 512…2048) or an SDXL
/// resolution.
fn size(r: &GenerateRequest, preset: &Preset) -> Result<(u32, u32), RequestError> {
    match (r.width, r.height) {
        (Some(w), Some(h)) => {
            for (field, v) in [("width", w), ("height", h)] {
                if !(MIN_SIDE..=MAX_SIDE).contains(&v) || v % 8 != 0 {
                    return Err(bad(
                        field,
                        format!("{v}: use a multiple of 8 from {MIN_SIDE} to {MAX_SIDE}"),
                    ));
                }
            }
            Ok((w, h))
        }
        (Some(_), None) => Err(bad("height", "a custom size needs both width and height")),
        (None, Some(_)) => Err(bad("width", "a custom size needs both width and height")),
        (None, None) => {
            let text = r.aspect_ratio.as_deref().unwrap_or(&preset.aspect_ratio);
            parse_aspect_ratio(text).ok_or_else(|| {
                let known: Vec<String> = ASPECT_RATIOS
                    .iter()
                    .map(|&(w, h)| format!("{w}×{h}"))
                    .collect();
                bad(
                    "aspect_ratio",
                    format!(
                        "{text:?} is not an SDXL resolution: use one of {}",
                        known.join(", ")
                    ),
                )
            })
        }
    }
}

/// An image-to-image input's own size, scaled down to fit [`MAX_SIDE`] and cut to multiples of
/// 8 (at least [`MIN_SIDE`]).
fn own_size(pixels: &image::RgbImage) -> (u32, u32) {
    let (w, h) = pixels.dimensions();
    let scale = (f64::from(MAX_SIDE) / f64::from(w.max(h).max(1))).min(1.0);
    let side = |v: u32| ((f64::from(v) * scale) as u32 / 8 * 8).clamp(MIN_SIDE, MAX_SIDE);
    (side(w), side(h))
}

fn checkpoint(
    field: &'static str,
    name: &str,
    path: PathBuf,
    wanted: Architecture,
) -> Result<ModelRef, RequestError> {
    let found = Checkpoint::open(&path)
        .map_err(|e| bad(field, e.to_string()))?
        .architecture();
    if found != wanted {
        return Err(bad(
            field,
            format!(
                "{name} is a {}, but an {} is needed here",
                found.describe(),
                wanted.describe()
            ),
        ));
    }
    Ok(ModelRef {
        name: name.to_string(),
        path,
    })
}

fn lora(config: &Config, name: &str) -> Result<ModelRef, RequestError> {
    let path = config
        .find_model(ModelKind::Lora, name)
        .map_err(|e| bad("loras", e.to_string()))?;
    let found = Checkpoint::open(&path)
        .map_err(|e| bad("loras", e.to_string()))?
        .architecture();
    if found != Architecture::Lora {
        return Err(bad(
            "loras",
            format!("{name} is not a LoRA: it is a {}", found.describe()),
        ));
    }
    Ok(ModelRef {
        name: name.to_string(),
        path,
    })
}

fn refiner(
    r: &GenerateRequest,
    preset: &Preset,
    config: &Config,
    base: &ModelRef,
    perf_steps: usize,
    steps: usize,
) -> Result<Option<RefinerPlan>, RequestError> {
    let name = match &r.refiner_model {
        Some(n) => Some(n.clone()),
        None => preset.refiner_model.clone(),
    };
    let Some(name) = name.filter(|n| !n.is_empty() && n != "None") else {
        return Ok(None);
    };
    let switch = in_range(
        "refiner_switch",
        r.refiner_switch.unwrap_or(preset.refiner_switch),
        0.1,
        1.0,
    )?;
    let path = config
        .find_model(ModelKind::Checkpoint, &name)
        .map_err(|e| bad("refiner_model", e.to_string()))?;
    if path == base.path {
        return Ok(None);
    }
    let model = checkpoint("refiner_model", &name, path, Architecture::SdxlRefiner)?;
    let switch_step = switch_step(perf_steps, switch);
    if switch_step + 1 >= steps {
        return Ok(None);
    }
    Ok(Some(RefinerPlan {
        model,
        switch,
        switch_step,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_rounds_half_to_even() {
        assert_eq!(switch_step(30, 0.75), 22);
        assert_eq!(switch_step(30, 2.0 / 3.0), 20);
        assert_eq!(switch_step(60, 2.0 / 3.0), 40);
        assert_eq!(switch_step(10, 0.5), 5);
        assert_eq!(switch_step(5, 0.5), 2);
    }
}
