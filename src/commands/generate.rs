//! `fooocus generate`: the whole pipeline from the command line, with a progress bar; prints the
//! saved paths, and exits non-zero with the reason when the request or the run fails.

use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine;
use clap::Args;
use fooocus::cli::ComputeArgs;
use fooocus::config::{Config, LoraChoice};
use fooocus::hub::HubClient;
use fooocus::pipeline::models::Models;
use fooocus::pipeline::plan::plan;
use fooocus::pipeline::request::GenerateRequest;
use fooocus::pipeline::run::{run as run_plan, RunContext, RunControl, RunEvent};
use fooocus::pipeline::styles::StyleLibrary;
use fooocus::store::OutputStore;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args)]
pub struct GenerateArgs {
    /// The prompt (several lines: each extra line is its own prompt part).
    prompt: String,
    #[arg(long)]
    negative: Option<String>,
    /// A style by name; repeat for several (replaces the preset's styles).
    #[arg(long = "style")]
    styles: Vec<String>,
    /// Use no style at all.
    #[arg(long, conflicts_with = "styles")]
    no_styles: bool,
    /// Speed, Quality, Extreme Speed, Lightning or Hyper-SD.
    #[arg(long)]
    performance: Option<String>,
    /// An SDXL resolution such as 1152×896 (or 1152x896).
    #[arg(long)]
    aspect_ratio: Option<String>,
    /// A custom size (with --height): multiples of 64 from 512 to 2048.
    #[arg(long, requires = "height")]
    width: Option<u32>,
    #[arg(long, requires = "width")]
    height: Option<u32>,
    /// Number of images (1–32).
    #[arg(long, short = 'n')]
    image_number: Option<u32>,
    /// Image i uses seed + i; random when left out.
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    base_model: Option<String>,
    /// A refiner checkpoint, or `None`.
    #[arg(long)]
    refiner_model: Option<String>,
    #[arg(long)]
    refiner_switch: Option<f64>,
    /// `NAME:WEIGHT`; repeat for several (replaces the preset's LoRAs).
    #[arg(long = "lora", value_parser = parse_lora)]
    loras: Vec<LoraChoice>,
    /// Use no LoRA besides a performance mode's.
    #[arg(long, conflicts_with = "loras")]
    no_loras: bool,
    /// Force a step count (1–200).
    #[arg(long)]
    steps: Option<u32>,
    #[arg(long)]
    guidance_scale: Option<f64>,
    #[arg(long)]
    sharpness: Option<f64>,
    #[arg(long)]
    sampler: Option<String>,
    #[arg(long)]
    scheduler: Option<String>,
    /// png, jpeg or webp.
    #[arg(long)]
    format: Option<String>,
    /// Do not embed the parameters in the images.
    #[arg(long)]
    no_metadata: bool,
    /// The preset that fills what is not given.
    #[arg(long, default_value = fooocus::config::DEFAULT_PRESET)]
    preset: String,
    /// Where to save (default: the config's output folder).
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// An input image (PNG, JPEG or WebP) to vary or upscale.
    #[arg(long, requires = "method")]
    input_image: Option<PathBuf>,
    /// Vary the input image: subtle (denoise 0.5) or strong (0.85).
    #[arg(long, value_parser = ["subtle", "strong"], group = "method", requires = "input_image")]
    vary: Option<String>,
    /// Upscale the input image: 1.5, 2 (both re-sampled at denoise 0.382) or fast (2× without
    /// sampling).
    #[arg(long, value_parser = ["1.5", "2", "fast"], group = "method", requires = "input_image")]
    upscale: Option<String>,
    /// Never download a missing model (the upscaler is fetched on first use otherwise).
    #[arg(long)]
    no_download: bool,
    #[command(flatten)]
    compute: ComputeArgs,
}

fn parse_lora(text: &str) -> Result<LoraChoice, String> {
    let (name, weight) = match text.rsplit_once(':') {
        Some((name, w)) => (
            name,
            w.parse::<f64>()
                .map_err(|_| format!("{w:?} is not a weight"))?,
        ),
        None => (text, 1.0),
    };
    Ok(LoraChoice {
        name: name.to_string(),
        weight,
    })
}

impl GenerateArgs {
    fn request(&self) -> Result<GenerateRequest, String> {
        let input_image = match &self.input_image {
            Some(path) => Some(
                std::fs::read(path)
                    .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes))
                    .map_err(|e| format!("--input-image {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let uov_method = match (&self.vary, &self.upscale) {
            (Some(v), _) => Some(format!("vary {v}")),
            (None, Some(u)) => Some(format!("upscale {u}")),
            (None, None) => None,
        };
        Ok(GenerateRequest {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative.clone(),
            styles: if self.no_styles {
                Some(Vec::new())
            } else {
                (!self.styles.is_empty()).then(|| self.styles.clone())
            },
            performance: self.performance.clone(),
            aspect_ratio: self.aspect_ratio.clone(),
            width: self.width,
            height: self.height,
            image_number: self.image_number,
            seed: self.seed,
            base_model: self.base_model.clone(),
            refiner_model: self.refiner_model.clone(),
            refiner_switch: self.refiner_switch,
            loras: if self.no_loras {
                Some(Vec::new())
            } else {
                (!self.loras.is_empty()).then(|| self.loras.clone())
            },
            guidance_scale: self.guidance_scale,
            sharpness: self.sharpness,
            sampler: self.sampler.clone(),
            scheduler: self.scheduler.clone(),
            steps: self.steps,
            output_format: self.format.clone(),
            save_metadata: self.no_metadata.then_some(false),
            input_image,
            uov_method,
            ..Default::default()
        })
    }
}

pub fn run(args: GenerateArgs, mut config: Config) -> ExitCode {
    if let Some(dir) = &args.output_dir {
        config.paths.outputs = dir.clone();
    }
    match generate(&args, &config) {
        Ok(paths) => {
            for p in paths {
                println!("{}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(args: &GenerateArgs, config: &Config) -> Result<Vec<PathBuf>, String> {
    let preset = config.preset(&args.preset).map_err(|e| e.to_string())?;
    let styles = StyleLibrary::load(&config.paths.styles).map_err(|e| e.to_string())?;
    let plan = plan(&args.request()?, preset, config, &styles).map_err(|e| e.to_string())?;
    let hub = (!args.no_download).then(|| HubClient::from_env(None));
    let store = OutputStore::new(&config.paths.outputs);
    let control = RunControl::default();
    let ctx = RunContext {
        config,
        styles: &styles,
        store: &store,
        control: &control,
        hub: hub.as_ref(),
        first_image: 0,
    };
    let images = plan.seeds.len();
    let bar = ProgressBar::new((plan.steps * images) as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let placement = args.compute.placement().map_err(|e| e.to_string())?;
    let mut models = Models::new(placement);
    let outcome = run_plan(&plan, &mut models, &ctx, &mut |event| match event {
        RunEvent::Stage(text) => bar.set_message(text),
        RunEvent::Step {
            image,
            images,
            step,
            steps,
            ..
        } => {
            bar.set_position((image * steps + step + 1) as u64);
            bar.set_message(format!(
                "Sampling step {}/{steps}, image {}/{images}",
                step + 1,
                image + 1
            ));
        }
        RunEvent::Saved { image, seed, .. } => {
            bar.println(format!("saved {} (seed {seed})", image.path.display()));
        }
        RunEvent::Skipped { index } => bar.println(format!("skipped image {}", index + 1)),
        RunEvent::ImageStarted { .. }
        | RunEvent::Saving { .. }
        | RunEvent::Preview { .. }
        | RunEvent::Worker(_) => {}
    });
    bar.finish_and_clear();
    let outcome = outcome.map_err(|e| e.to_string())?;
    Ok(outcome.images.into_iter().map(|i| i.saved.path).collect())
}
