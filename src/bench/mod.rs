//! `fooocus bench`: times the networks at real sizes (one UNet step with CFG, the text encoders,
//! a VAE decode, a whole generation) from a checkpoint, from random weights with the SDXL 1.0
//! layout, or on the tiny test fixtures (`--tiny`, so CI can check that it runs).

mod random;
pub mod report;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::engine::checkpoint::{UNET_PREFIX, VAE_PREFIX};
use crate::engine::clip::ClipTextModel;
use crate::engine::config::{HeadDims, SdxlConfig};
use crate::engine::device::{describe, open_device, ComputeArgs};
use crate::engine::kernels::set_own_kernels;
use crate::engine::model::SdxlFile;
use crate::engine::unet::UNet;
use crate::engine::vae::Vae;
use crate::engine::weights::LoadMode;
use report::{load_average, peak_rss, reset_peak_rss, Measurement, Report};

/// Every part, in the order they run.
pub const PARTS: [&str; 8] = [
    "conv512",
    "norm512",
    "text",
    "unet512",
    "unet1024",
    "vae512",
    "vae1024",
    "generate512",
];

/// Options of `fooocus bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// An SDXL base checkpoint to time (default: random weights with the SDXL 1.0 layout).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Run on the tiny fixtures in this folder (`sdxl_base.safetensors`, `tiny_configs.json`).
    #[arg(long, value_name = "FIXTURES_DIR")]
    pub tiny: Option<PathBuf>,
    /// Folder of the SDXL 1.0 layouts used for random weights.
    #[arg(long, default_value = "../shared/fixtures/layouts")]
    pub layouts: PathBuf,
    /// Comma-separated parts: conv512 (one 3×3 conv 32→32 on [1,32,512,512]), norm512
    /// (GroupNorm 32 + SiLU on the same), text, unet512, unet1024, vae512, vae1024, generate512.
    #[arg(long, value_delimiter = ',', default_values_t = PARTS.map(String::from))]
    pub parts: Vec<String>,
    /// Timed runs per part (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Untimed runs before the timed ones.
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// Sampling steps of `generate512`.
    #[arg(long, default_value_t = 4)]
    pub steps: usize,
    /// VAE tile in latent cells for decodes larger than it (0: never tile).
    #[arg(long, default_value_t = 64)]
    pub vae_tile: usize,
    /// Also time every part with candle's own ops instead of our CPU kernels, and print ratios.
    #[arg(long)]
    pub compare_candle: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// Where the weights come from, and the configuration they have.
struct Source {
    config: SdxlConfig,
    file: Option<SdxlFile>,
    label: String,
    _sparse: Option<random::SparseLayout>,
}

/// The networks a part needs; built on demand and dropped between parts to bound memory.
pub(crate) struct Networks<'a> {
    source: &'a Source,
    device: Device,
    /// The dtype of the text encoders and UNet (the VAE is f32).
    dtype: DType,
}

impl Networks<'_> {
    fn vb(&self, dtype: DType) -> VarBuilder<'static> {
        VarBuilder::from_backend(
            Box::new(random::RandomBackend { seed: 0 }),
            dtype,
            self.device.clone(),
        )
    }

    pub(crate) fn config(&self) -> &SdxlConfig {
        &self.source.config
    }

    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    pub(crate) fn clips(&self) -> anyhow::Result<(Option<ClipTextModel>, ClipTextModel)> {
        if let Some(file) = &self.source.file {
            let l = file.clip_l(LoadMode::Real, &self.device)?.map(|(m, _)| m);
            let (g, _) = file.clip_g(LoadMode::Real, &self.device)?;
            return Ok((l, g));
        }
        let cfg = self.config();
        let vb = self.vb(self.dtype);
        let l = cfg
            .clip_l
            .as_ref()
            .map(|c| ClipTextModel::load(vb.pp(&c.prefix), c))
            .transpose()?;
        let g = ClipTextModel::load(vb.pp(&cfg.clip_g.prefix), &cfg.clip_g)?;
        Ok((l, g))
    }

    pub(crate) fn unet(&self) -> anyhow::Result<UNet> {
        match &self.source.file {
            Some(file) => Ok(file.unet(LoadMode::Real, &self.device)?.0),
            None => Ok(UNet::load(
                self.vb(self.dtype).pp(UNET_PREFIX),
                &self.config().unet,
            )?),
        }
    }

    pub(crate) fn vae(&self) -> anyhow::Result<Vae> {
        match &self.source.file {
            Some(file) => Ok(file.vae(LoadMode::Real, &self.device)?.0),
            None => Ok(Vae::load(
                self.vb(DType::F32).pp(VAE_PREFIX),
                &self.config().vae,
            )?),
        }
    }
}

fn tiny_heads(dir: &std::path::Path) -> anyhow::Result<HeadDims> {
    let path = dir.join("tiny_configs.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let cfg: serde_json::Value = serde_json::from_str(&text)?;
    let n = |k: &str, f: &str| -> anyhow::Result<usize> {
        cfg[k][f]
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| anyhow!("{}: missing {k}.{f}", path.display()))
    };
    Ok(HeadDims {
        clip_l: n("clip_l", "hidden_size")? / n("clip_l", "num_attention_heads")?.max(1),
        clip_g: n("clip_g", "hidden_size")? / n("clip_g", "num_attention_heads")?.max(1),
        unet: n("base_unet_sgm", "num_head_channels")?,
    })
}

fn source(args: &BenchArgs) -> anyhow::Result<Source> {
    let open = |path: PathBuf, heads: HeadDims, label: String| -> anyhow::Result<Source> {
        let file = SdxlFile::open(&path, heads)?;
        Ok(Source {
            config: file.config.clone(),
            file: Some(file),
            label,
            _sparse: None,
        })
    };
    if let Some(dir) = &args.tiny {
        let path = dir.join("sdxl_base.safetensors");
        let label = format!("tiny fixtures {}", path.display());
        return open(path, tiny_heads(dir)?, label);
    }
    if let Some(path) = &args.checkpoint {
        let label = format!("checkpoint {}", path.display());
        return open(path.clone(), HeadDims::default(), label);
    }
    let sparse = random::SparseLayout::write(&args.layouts, "base")?;
    let file = SdxlFile::open(&sparse.path, HeadDims::default())?;
    Ok(Source {
        config: file.config,
        file: None,
        label: "random weights, SDXL 1.0 base layout".into(),
        _sparse: Some(sparse),
    })
}

/// Runs the benchmark and returns its report.
pub fn run(args: &BenchArgs) -> anyhow::Result<Report> {
    if let Some(bad) = args.parts.iter().find(|p| !PARTS.contains(&p.as_str())) {
        return Err(anyhow!(
            "unknown part `{bad}`: choose from {}",
            PARTS.join(", ")
        ));
    }
    let mut source = source(args)?;
    let device = open_device(args.compute.device)?;
    let dtype = args.compute.precision.dtype_on(&device);
    if let Some(file) = &mut source.file {
        file.precision = args.compute.precision;
    }
    let nets = Networks {
        source: &source,
        device: device.clone(),
        dtype,
    };
    let kernel_sets: &[bool] = if args.compare_candle {
        &[false, true]
    } else {
        &[true]
    };
    let mut measurements = Vec::new();
    for part in PARTS.iter().filter(|p| args.parts.iter().any(|a| a == *p)) {
        let mut work = workloads::prepare(part, &nets, args)?;
        for &own in kernel_sets {
            set_own_kernels(own);
            let load_before = load_average();
            let rss_reset = reset_peak_rss();
            let (median_s, samples_s) = report::time(args.warmup, args.repeats, &mut work)?;
            measurements.push(Measurement {
                part: part.to_string(),
                kernels: if own { "ours" } else { "candle" },
                median_s,
                samples_s,
                peak_rss_bytes: peak_rss(),
                rss_reset,
                load_before,
            });
        }
        set_own_kernels(true);
    }
    Ok(Report {
        source: source.label.clone(),
        device: format!("{} {dtype:?} (VAE F32)", describe(&device)),
        threads: rayon::current_num_threads(),
        measurements,
        load_after: load_average(),
    })
}

/// `fooocus bench` as a command: prints the table (or JSON) and returns the exit code.
pub fn main(args: &BenchArgs) -> ExitCode {
    match run(args) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
