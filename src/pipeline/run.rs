//! One generation run: for each image of a plan, the prompts (wildcards, arrays, styles) become
//! conditioning, the sampler runs the Fooocus denoiser from the image's seed (base, then the
//! refiner after the switch step), the latent is decoded by the base VAE and saved with its
//! metadata. Stop ends the run and Skip the current image, within one step; finished images are
//! kept either way.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use super::conditioning::{base_stage, refiner_stage, PairedText};
use super::denoiser::FooocusDenoiser;
use super::error::PipelineError;
use super::image::uov::{self, Prepared};
use super::meta::{metadata, PromptsUsed};
use super::models::{Loaded, Models};
use super::plan::{Plan, Task};
use super::styles::{PromptLines, StyleLibrary, Workloads};
use super::wildcards::{apply_arrays, Wildcards};
use crate::config::Config;
use crate::hub::HubClient;
use crate::imaging::lanczos;
use crate::nets::sdxl::text::TextEncoders;
use crate::nets::sdxl::tiling::decode_tiled;
use crate::nets::sdxl::vae::{Vae, VAE_FACTOR};
use crate::sampling::{
    calculate_sigmas, DiscreteSchedule, SampleOutcome, SamplerOptions, SeededNoise, StepControl,
    TorchGenerator,
};
use crate::store::{EncodeOptions, OutputStore, SavedImage};

/// Stop and Skip, set from another thread and checked at every sampling step and before every
/// prompt chunk is encoded.
#[derive(Debug, Default)]
pub struct RunControl {
    stop: AtomicBool,
    skip: AtomicBool,
}

impl RunControl {
    /// Ends the run after the current step; finished images are kept.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Abandons the current image and goes on with the next.
    pub fn skip(&self) {
        self.skip.store(true, Ordering::SeqCst);
    }

    /// Whether Stop was asked for.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Whether a skip was asked for, clearing it.
    pub fn take_skip(&self) -> bool {
        self.skip.swap(false, Ordering::SeqCst)
    }

    /// Whether Stop or Skip asks to leave the current image (nothing is cleared).
    fn interrupts(&self) -> bool {
        self.stopped() || self.skip.load(Ordering::SeqCst)
    }

    /// How an image that Stop or Skip interrupted ends (clearing the skip); `None` when neither
    /// was asked for.
    fn interrupted_end(&self) -> Option<ImageEnd> {
        if self.stopped() {
            Some(ImageEnd::Stopped)
        } else if self.take_skip() {
            Some(ImageEnd::Skipped)
        } else {
            None
        }
    }
}

/// What a run reports as it goes.
pub enum RunEvent<'a> {
    /// A preparation stage ("Loading …", "Encoding prompts …").
    Stage(String),
    /// The run went to the worker host of this name (through a broker).
    Worker(String),
    /// Work on image `index` (0-based) of `images` begins.
    ImageStarted { index: usize, images: usize },
    /// Skip abandoned image `index` (0-based); the run goes on with the next.
    Skipped { index: usize },
    /// A sampling step finished its model call; `denoised` is the current x0 estimate (`None`
    /// when the step ran elsewhere: a remote worker sends its preview as a [`RunEvent::Preview`]).
    Step {
        image: usize,
        images: usize,
        step: usize,
        steps: usize,
        denoised: Option<&'a Tensor>,
    },
    /// A step preview already encoded as JPEG (1-based image and step), from a remote worker.
    Preview {
        image: usize,
        step: usize,
        jpeg: &'a [u8],
    },
    /// Image `index` is about to be written to `relative` (`YYYY-MM-DD/<file>` under the output
    /// folder): its name is chosen, the file not yet written.
    Saving { index: usize, relative: &'a str },
    /// Image `index` was saved.
    Saved {
        index: usize,
        seed: u64,
        image: &'a SavedImage,
    },
}

/// How many model evaluations each image took, per model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evaluations {
    pub base: usize,
    pub refiner: usize,
}

/// A finished image.
#[derive(Debug, Clone)]
pub struct ImageResult {
    pub index: usize,
    pub seed: u64,
    pub saved: SavedImage,
    pub evaluations: Evaluations,
}

/// What a run produced.
#[derive(Debug, Clone, Default)]
pub struct RunOutcome {
    pub images: Vec<ImageResult>,
    /// Indices of skipped images.
    pub skipped: Vec<usize>,
    /// Whether Stop ended the run early.
    pub stopped: bool,
}

/// Everything a run reads besides the plan.
pub struct RunContext<'a> {
    pub config: &'a Config,
    pub styles: &'a StyleLibrary,
    pub store: &'a OutputStore,
    pub control: &'a RunControl,
    /// Fetches a missing upscaler on first use; `None`: downloads are off.
    pub hub: Option<&'a HubClient>,
    /// The first image to make (0-based): a job resumed after a restart skips the images it had
    /// finished (saved or skipped) before.
    pub first_image: usize,
}

/// Runs `plan`, saving each image as it finishes.
pub fn run(
    plan: &Plan,
    models: &mut Models,
    ctx: &RunContext<'_>,
    on_event: &mut dyn FnMut(RunEvent<'_>),
) -> Result<RunOutcome, PipelineError> {
    if ctx.first_image >= plan.seeds.len().max(1) {
        return Ok(RunOutcome::default());
    }
    if plan.task.is_direct() {
        return direct_result(plan, models, ctx, on_event);
    }
    models.prepare(plan, ctx.config, &mut |s| on_event(RunEvent::Stage(s)))?;
    let start = start_latent_of_input(plan, models, ctx, on_event)?;
    sample_from(plan, models, start.as_ref(), ctx, on_event)
}

/// Runs `plan` from `start` (its encoded input; `None`: from noise) with the models prepared,
/// saving each image as it finishes.
pub fn sample_from(
    plan: &Plan,
    models: &mut Models,
    start: Option<&Start>,
    ctx: &RunContext<'_>,
    on_event: &mut dyn FnMut(RunEvent<'_>),
) -> Result<RunOutcome, PipelineError> {
    let device = models.device().clone();
    let mut loaded = models.loaded()?;
    let table = DiscreteSchedule::sdxl();
    let sigmas = calculate_sigmas(
        &table,
        plan.scheduler,
        plan.steps,
        plan.task.denoise(),
        plan.sampler,
    )?;
    let schedule = Schedule {
        table: &table,
        sigmas: &sigmas,
        start,
    };
    let mut wildcards = Wildcards::new(&ctx.config.paths.wildcards);
    let mut outcome = RunOutcome::default();
    for (index, &seed) in plan.seeds.iter().enumerate().skip(ctx.first_image) {
        if ctx.control.stopped() {
            outcome.stopped = true;
            break;
        }
        let image = ImageJob { plan, index, seed };
        let end = image.run(
            &mut loaded,
            &device,
            schedule,
            &mut wildcards,
            ctx,
            on_event,
        )?;
        match end {
            ImageEnd::Saved(result) => outcome.images.push(*result),
            ImageEnd::Skipped => {
                on_event(RunEvent::Skipped { index });
                outcome.skipped.push(index);
            }
            ImageEnd::Stopped => {
                outcome.stopped = true;
                break;
            }
        }
    }
    Ok(outcome)
}

/// The sampling schedule every image of a run shares, and the encoded input it starts from.
#[derive(Clone, Copy)]
struct Schedule<'a> {
    table: &'a DiscreteSchedule,
    sigmas: &'a [f32],
    start: Option<&'a Start>,
}

/// What an image-to-image run starts from: the encoded input (model space, `[1, 4, h, w]`),
/// and whether its VAE passes are tiled (Upscale) or whole (Vary, as Fooocus).
pub struct Start {
    pub latent: Tensor,
    pub tiled: bool,
}

/// Fooocus' VAE tile for a decode, in latent cells (three shapes around it).
const DECODE_TILE: usize = 64;

/// The encoded input of an image-to-image run: the input brought to its size (through the
/// upscaler for Upscale; resized for image to image), kept in the store, and VAE-encoded once
/// for every image.
fn start_latent_of_input(
    plan: &Plan,
    models: &mut Models,
    ctx: &RunContext<'_>,
    on_event: &mut dyn FnMut(RunEvent<'_>),
) -> Result<Option<Start>, PipelineError> {
    let (pixels, tiled) = match &plan.task {
        Task::TextToImage | Task::Resize { .. } => return Ok(None),
        Task::Uov { method, .. } => match prepared_input(plan, models, ctx, on_event)? {
            Prepared::Sample(pixels) => (pixels, !method.is_vary()),
            Prepared::Direct(_) => {
                return Err(PipelineError::Other(
                    "the input needs no sampling, yet the plan samples it".into(),
                ))
            }
        },
        Task::ImageToImage { input, .. } => {
            ctx.store
                .keep_input(&input.sha256, &input.bytes, input.extension())?;
            (lanczos(&input.pixels, plan.width, plan.height), false)
        }
    };
    on_event(RunEvent::Stage("VAE encoding the input image".into()));
    let device = models.device().clone();
    let vae = models.loaded()?.vae;
    let latent = uov::encode(&vae, &pixels, tiled, &device)?;
    Ok(Some(Start { latent, tiled }))
}

/// The input of an "Upscale or Variation" or a resize plan brought to what its task needs; the
/// input file is kept in the store (by its sha256, which the outputs' metadata names).
fn prepared_input(
    plan: &Plan,
    models: &mut Models,
    ctx: &RunContext<'_>,
    on_event: &mut dyn FnMut(RunEvent<'_>),
) -> Result<Prepared, PipelineError> {
    let (input, upscaler, label) = match &plan.task {
        Task::Uov {
            method,
            input,
            upscaler,
            ..
        } => (input, upscaler, method.label()),
        Task::Resize { input, upscaler } => (input, upscaler, "Resizing"),
        _ => return Err(PipelineError::Other("the plan has no input image".into())),
    };
    ctx.store
        .keep_input(&input.sha256, &input.bytes, input.extension())?;
    let device = models.device().clone();
    let network = match upscaler {
        Some(path) => {
            let mut stage = |s: String| on_event(RunEvent::Stage(s));
            Some(models.upscaler(path, ctx.hub, &mut stage)?)
        }
        None => None,
    };
    on_event(RunEvent::Stage(format!("{label} of the input image")));
    Ok(match &plan.task {
        Task::Uov { method, .. } => uov::prepare(*method, &input.pixels, network, &device)?,
        _ => {
            let upscaled = match network {
                Some(network) => Some(uov::super_resolve(network, &input.pixels, &device)?),
                None => None,
            };
            let pixels = upscaled.as_ref().unwrap_or(&input.pixels);
            Prepared::Direct(lanczos(pixels, plan.width, plan.height))
        }
    })
}

/// A result that needs no sampling (Upscale (Fast 2x), an upscale too large to sample, a
/// resize):
/// the upscaled input, saved with its metadata as the run's one image.
fn direct_result(
    plan: &Plan,
    models: &mut Models,
    ctx: &RunContext<'_>,
    on_event: &mut dyn FnMut(RunEvent<'_>),
) -> Result<RunOutcome, PipelineError> {
    let seed = plan.seeds.first().copied().unwrap_or(0);
    on_event(RunEvent::ImageStarted {
        index: 0,
        images: 1,
    });
    let image = match prepared_input(plan, models, ctx, on_event)? {
        Prepared::Direct(image) => image,
        Prepared::Sample(_) => {
            return Err(PipelineError::Other(
                "the input needs sampling, yet the plan does not sample it".into(),
            ))
        }
    };
    let workloads = Workloads::none();
    let used = PromptsUsed {
        prompt: &plan.prompt,
        negative: &plan.negative_prompt,
        workloads: &workloads,
    };
    let mut announce = |relative: &str| on_event(RunEvent::Saving { index: 0, relative });
    let saved = save(plan, seed, &image, &used, ctx.store, &mut announce)?;
    on_event(RunEvent::Saved {
        index: 0,
        seed,
        image: &saved,
    });
    Ok(RunOutcome {
        images: vec![ImageResult {
            index: 0,
            seed,
            saved,
            evaluations: Evaluations::default(),
        }],
        ..RunOutcome::default()
    })
}

/// Saves `image` of `plan` (seed `seed`) with its metadata, telling `announce` its name before
/// the file is written.
fn save(
    plan: &Plan,
    seed: u64,
    image: &RgbImage,
    used: &PromptsUsed<'_>,
    store: &OutputStore,
    announce: &mut dyn FnMut(&str),
) -> Result<SavedImage, PipelineError> {
    let meta = metadata(plan, seed, used);
    let options = EncodeOptions {
        format: plan.output_format,
        embed_metadata: plan.save_metadata,
        ..Default::default()
    };
    Ok(store.save_announced(image, &meta, &options, announce)?)
}

/// How one image ended.
enum ImageEnd {
    Saved(Box<ImageResult>),
    Skipped,
    Stopped,
}

/// One image of a plan: its index and seed.
struct ImageJob<'p> {
    plan: &'p Plan,
    index: usize,
    seed: u64,
}

impl ImageJob<'_> {
    /// Prompts → conditioning → sampling → decode → save.
    fn run(
        &self,
        loaded: &mut Loaded<'_>,
        device: &Device,
        schedule: Schedule<'_>,
        wildcards: &mut Wildcards,
        ctx: &RunContext<'_>,
        on_event: &mut dyn FnMut(RunEvent<'_>),
    ) -> Result<ImageEnd, PipelineError> {
        let (plan, index, seed) = (self.plan, self.index, self.seed);
        let images = plan.seeds.len();
        on_event(RunEvent::ImageStarted { index, images });
        on_event(RunEvent::Stage(format!(
            "Preparing image {}/{images}",
            index + 1
        )));
        let prompts = self.prompts(wildcards, ctx.styles)?;
        on_event(RunEvent::Stage(format!(
            "Encoding prompts of image {}/{images}",
            index + 1
        )));
        let text = match self.encode(loaded, &prompts.workloads, device, ctx.control) {
            Ok(text) => text,
            Err(e) => return ctx.control.interrupted_end().ok_or(e),
        };
        let size = (plan.height as usize, plan.width as usize);
        let base = loaded.base;
        let base_stage = base_stage(
            loaded.base_unet,
            &text,
            size,
            &plan.adm,
            base.file.config.time_id_dim,
        )?;
        let mut denoiser = FooocusDenoiser::new(base_stage, schedule.table, plan.guidance);
        let refiner = loaded.refiner.zip(loaded.refiner_unet);
        if let (Some(r), Some((refiner, unet))) = (&plan.refiner, refiner) {
            let config = &refiner.file.config;
            let stage = refiner_stage(unet, &text, size, config.clip_g.hidden, config.time_id_dim)?;
            let switch_sigma = schedule.sigmas.get(r.switch_step).copied().unwrap_or(0.0);
            denoiser = denoiser.with_refiner(stage, f64::from(switch_sigma));
        }
        let Some(latent) = self.sample(&mut denoiser, schedule, device, ctx, on_event)? else {
            return Ok(if ctx.control.stopped() {
                ImageEnd::Stopped
            } else {
                ImageEnd::Skipped
            });
        };
        check_finite(
            &latent,
            "sampled latent",
            base.file.precision.dtype_on(device),
        )?;
        let evaluations = Evaluations {
            base: denoiser.evaluations[0],
            refiner: denoiser.evaluations[1],
        };
        on_event(RunEvent::Stage(format!(
            "Saving image {}/{images}",
            index + 1
        )));
        let tiled = schedule.start.is_some_and(|s| s.tiled);
        let mut announce = |relative: &str| on_event(RunEvent::Saving { index, relative });
        let saved = self.decode_and_save(
            &latent,
            &loaded.vae,
            tiled,
            &prompts,
            ctx.store,
            &mut announce,
        )?;
        on_event(RunEvent::Saved {
            index,
            seed,
            image: &saved,
        });
        Ok(ImageEnd::Saved(Box::new(ImageResult {
            index,
            seed,
            saved,
            evaluations,
        })))
    }

    /// The image's prompts after wildcards and arrays, and its style workloads.
    fn prompts(
        &self,
        wildcards: &mut Wildcards,
        styles: &StyleLibrary,
    ) -> Result<Prompts, PipelineError> {
        let plan = self.plan;
        let mut rng = TorchGenerator::new(self.seed);
        let prompt = apply_arrays(&wildcards.apply(&plan.prompt, &mut rng)?, self.index);
        let negative = wildcards.apply(&plan.negative_prompt, &mut rng)?;
        let mut style_rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(self.seed);
        let workloads = styles.workloads(
            &plan.styles,
            &PromptLines::parse(&prompt),
            &PromptLines::parse(&negative),
            &mut style_rng,
        )?;
        Ok(Prompts {
            prompt,
            negative,
            workloads,
        })
    }

    /// Encodes the positive and negative workloads (the negative is the positive again at CFG 1,
    /// where its pass is skipped) and pairs them on `device`.
    fn encode(
        &self,
        loaded: &mut Loaded<'_>,
        workloads: &Workloads,
        device: &Device,
        control: &RunControl,
    ) -> Result<PairedText, PipelineError> {
        let clip_skip = self.plan.clip_skip;
        let interrupted = || control.interrupts();
        let encoders = TextEncoders {
            clip_l: Some(&loaded.clip_l),
            clip_g: &loaded.clip_g,
        };
        let (cache, tokenizer) = (&mut *loaded.cache, loaded.tokenizer);
        let pos = cache.encode(
            &encoders,
            tokenizer,
            &workloads.positive,
            workloads.k_pos,
            clip_skip,
            &interrupted,
        )?;
        let neg = if self.plan.guidance.cfg == 1.0 {
            pos.clone()
        } else {
            cache.encode(
                &encoders,
                tokenizer,
                &workloads.negative,
                usize::MAX,
                clip_skip,
                &interrupted,
            )?
        };
        Ok(PairedText::new(&pos, &neg, device)?)
    }

    /// Samples from the image's seed; `None` when Stop or Skip ended it.
    fn sample(
        &self,
        denoiser: &mut FooocusDenoiser<'_>,
        schedule: Schedule<'_>,
        device: &Device,
        ctx: &RunContext<'_>,
        on_event: &mut dyn FnMut(RunEvent<'_>),
    ) -> Result<Option<Tensor>, PipelineError> {
        let plan = self.plan;
        let (h, w) = (plan.height as usize, plan.width as usize);
        let latent_shape = (1, 4, h / VAE_FACTOR, w / VAE_FACTOR);
        let mut noise = SeededNoise::new(self.seed, latent_shape, device);
        let sigmas = schedule.sigmas;
        let x = start_latent(
            noise.randn()?,
            sigmas.first().copied().unwrap_or(0.0),
            schedule.table,
        )?;
        let x = match schedule.start {
            Some(start) => (start.latent.to_dtype(x.dtype())? + x)?,
            None => x,
        };
        let (steps, images) = (sigmas.len().saturating_sub(1), plan.seeds.len());
        let mut callback = |state: &crate::sampling::StepState<'_>| {
            on_event(RunEvent::Step {
                image: self.index,
                images,
                step: state.step,
                steps,
                denoised: Some(state.denoised),
            });
            if ctx.control.stopped() || ctx.control.take_skip() {
                StepControl::Stop
            } else {
                StepControl::Continue
            }
        };
        let result = plan.sampler.sample(
            SamplerOptions::default(),
            denoiser,
            &mut noise,
            x,
            sigmas,
            &mut callback,
        )?;
        Ok(match result {
            SampleOutcome::Finished(latent) => Some(latent),
            SampleOutcome::Stopped { .. } => None,
        })
    }

    /// Decodes `latent` with the base VAE (in tiles or whole) and saves it with the image's
    /// metadata.
    fn decode_and_save(
        &self,
        latent: &Tensor,
        vae: &Vae,
        tiled: bool,
        prompts: &Prompts,
        store: &OutputStore,
        announce: &mut dyn FnMut(&str),
    ) -> Result<SavedImage, PipelineError> {
        let decoded = if tiled {
            decode_tiled(vae, latent, DECODE_TILE)?
        } else {
            vae.decode(latent)?
        };
        check_finite(&decoded, "decoded image", DType::F32)?;
        let image = to_rgb(&decoded)?;
        let used = PromptsUsed {
            prompt: &prompts.prompt,
            negative: &prompts.negative,
            workloads: &prompts.workloads,
        };
        save(self.plan, self.seed, &image, &used, store, announce)
    }
}

/// One image's prompts after wildcards and arrays, and the style workloads made of them.
struct Prompts {
    prompt: String,
    negative: String,
    workloads: Workloads,
}

/// Refuses a tensor holding NaN or infinity (a black or noisy image otherwise): half precision
/// overflowing on some GPUs, or broken weights.
fn check_finite(t: &Tensor, what: &'static str, dtype: DType) -> Result<(), PipelineError> {
    let sum = t.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
    if sum.is_finite() {
        return Ok(());
    }
    let hint = match dtype {
        DType::F16 | DType::BF16 => {
            "half precision overflowed (some GPUs do): run again with --precision f32, or bf16"
        }
        _ => "the checkpoint's weights may be broken: try another file (fooocus inspect checks it)",
    };
    Err(PipelineError::NotFinite {
        what,
        dtype: dtype.as_str(),
        hint,
    })
}

/// The first latent: noise·√(1 + σ₀²) for a full denoise from σ_max (ComfyUI/Fooocus), noise·σ₀
/// otherwise.
fn start_latent(
    noise: Tensor,
    sigma0: f32,
    table: &DiscreteSchedule,
) -> candle_core::Result<Tensor> {
    let s = f64::from(sigma0);
    if s >= table.sigma_max() * (1.0 - 1e-5) {
        noise * (1.0 + s * s).sqrt()
    } else {
        noise * s
    }
}

/// A decoded `[1, 3, H, W]` image in about [−1, 1] to RGB8: `uint8(255·clamp((x + 1)/2, 0, 1))`
/// with truncation, as ComfyUI and Fooocus do.
pub fn to_rgb(image: &Tensor) -> Result<RgbImage, PipelineError> {
    let (_, c, h, w) = image.dims4()?;
    if c != 3 {
        return Err(PipelineError::Other(format!(
            "the VAE gave {c} channels, not 3"
        )));
    }
    let values = ((image.get(0)?.to_dtype(DType::F32)? + 1.0)? / 2.0)?
        .clamp(0f32, 1f32)?
        .permute((1, 2, 0))?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let bytes: Vec<u8> = values.iter().map(|v| (v * 255.0) as u8).collect();
    RgbImage::from_raw(w as u32, h as u32, bytes)
        .ok_or_else(|| PipelineError::Other("the decoded image has the wrong size".into()))
}
