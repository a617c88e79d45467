//! `fooocus bench`: times the networks at real sizes (one UNet step with CFG, the text encoders,
//! a VAE decode, a whole generation with the base and, given `--refiner-switch`, the refiner) at
//! any image size, from a checkpoint, from random weights with the SDXL 1.0 layouts, or on the
//! tiny test fixtures (`--tiny`, so CI can check that it runs), on any `--device` in any
//! `--precision`.

pub mod queue;
mod random;
pub mod report;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::cli::ComputeArgs;
use crate::nets::esrgan::{Rrdb, FOOOCUS_UPSCALER};
use crate::nets::sdxl::clip::ClipTextModel;
use crate::nets::sdxl::file::SdxlFile;
use crate::nets::sdxl::shapes::{HeadDims, SdxlConfig, UnetConfig};
use crate::nets::sdxl::unet::UNet;
use crate::nets::sdxl::vae::Vae;
use crate::nn::{Builder, Kernels};
use crate::runtime::describe;
use crate::weights::backend::LoadMode;
use crate::weights::checkpoint::{UNET_PREFIX, VAE_PREFIX};
use report::{load_average, peak_rss, reset_peak_rss, Measurement, Report};

/// The default parts, in the order they run.
pub const PARTS: [&str; 10] = [
    "conv512",
    "norm512",
    "linear",
    "attention",
    "text",
    "unet512",
    "unet1024",
    "vae512",
    "vae1024",
    "generate512",
];

/// One benchmark part; sizes are image sides in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Conv512,
    Norm512,
    Linear,
    Attention,
    Text,
    Unet(usize),
    Vae(usize),
    Generate(usize),
    /// Fooocus' upscaler (nf 64, 23 blocks, 4×) on an N² image in its 512-pixel tiles.
    Upscaler(usize),
    /// A VAE encode of an N² image in Fooocus' three tilings (512-pixel tiles).
    Encode(usize),
}

impl std::str::FromStr for Part {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Part> {
        let sized = |prefix: &str| -> Option<usize> {
            let px = s.strip_prefix(prefix)?.parse::<usize>().ok()?;
            (px >= 64 && px.is_multiple_of(64)).then_some(px)
        };
        Ok(match s {
            "conv512" => Part::Conv512,
            "norm512" => Part::Norm512,
            "linear" => Part::Linear,
            "attention" => Part::Attention,
            "text" => Part::Text,
            _ => {
                if let Some(px) = sized("unet") {
                    Part::Unet(px)
                } else if let Some(px) = sized("vae") {
                    Part::Vae(px)
                } else if let Some(px) = sized("generate") {
                    Part::Generate(px)
                } else if let Some(px) = sized("upscaler") {
                    Part::Upscaler(px)
                } else if let Some(px) = sized("encode") {
                    Part::Encode(px)
                } else {
                    return Err(anyhow!(
                        "unknown part `{s}`: choose from conv512, norm512, linear, attention, text, unetN, vaeN, \
                         generateN, upscalerN, encodeN (N = image side, a multiple of 64, e.g. unet1024)"
                    ));
                }
            }
        })
    }
}

/// Options of `fooocus bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// An SDXL base checkpoint to time (default: random weights with the SDXL 1.0 layout).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// The refiner checkpoint for `--refiner-switch` with `--checkpoint` (random weights in the
    /// SDXL 1.0 refiner layout otherwise).
    #[arg(long)]
    pub refiner: Option<PathBuf>,
    /// Run on the tiny fixtures in this folder (`sdxl_base.safetensors`, `tiny_configs.json`).
    #[arg(long, value_name = "FIXTURES_DIR")]
    pub tiny: Option<PathBuf>,
    /// Folder of the SDXL 1.0 layouts used for random weights (default: `fixtures/layouts` of
    /// the working folder, else of the repository the binary was built from).
    #[arg(long)]
    pub layouts: Option<PathBuf>,
    /// Comma-separated parts, run in the order given: conv512 (one 3×3 conv 128→128 on
    /// [1, 128, 512, 512], the VAE's last level at 512²), norm512 (GroupNorm 32 + SiLU on the
    /// same), linear (the UNet's widest at 1024²: 640 → 5120 on [2, 4096, 640]), attention (its
    /// self-attention there: 10 heads of 64, 4096 tokens, batch 2), text, unetN (one UNet step
    /// with CFG), vaeN (a decode), generateN (a whole generation), upscalerN (Fooocus' ESRGAN
    /// upscaler on an N² input, random weights), encodeN (a tiled VAE encode), N being the image
    /// side (512, 768, 1024, 1536…). An Upscale 2× of 1024²: upscaler1024, encode2048,
    /// unet2048 (one of its 18 steps at Speed), vae2048.
    #[arg(long, value_delimiter = ',', default_values_t = PARTS.map(String::from))]
    pub parts: Vec<String>,
    /// Timed runs per part (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Untimed runs before the timed ones.
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// Sampling steps of `generateN`.
    #[arg(long, default_value_t = 4)]
    pub steps: usize,
    /// Let the refiner take over `generateN` at this fraction of the steps (Fooocus: 0.667);
    /// without it the base runs alone. With `--checkpoint`, needs `--refiner`.
    #[arg(long, value_name = "FRACTION")]
    pub refiner_switch: Option<f64>,
    /// VAE tile in latent cells for decodes larger than it (0: never tile).
    #[arg(long, default_value_t = 64)]
    pub vae_tile: usize,
    /// Also time every part with candle's own ops instead of our CPU kernels, and print ratios.
    #[arg(long)]
    pub compare_candle: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Time the job queue instead of the networks: N jobs (planned against the `--tiny`
    /// fixtures) through the worker threads with a pipeline that makes nothing, jobs kept in
    /// memory, then in the SQLite job database, then through `--queue-broker`.
    #[arg(long, value_name = "N", requires = "tiny")]
    pub queue: Option<usize>,
    /// With `--queue`: also hand the jobs through this Redis broker to a worker host in this
    /// process.
    #[arg(long, value_name = "URL", requires = "queue")]
    pub queue_broker: Option<String>,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// Where the weights come from, and the configuration they have.
struct Source {
    config: SdxlConfig,
    file: Option<SdxlFile>,
    label: String,
    /// The refiner's configuration and file (`None` file: random weights).
    refiner: Option<(SdxlConfig, Option<SdxlFile>)>,
    _sparse: Vec<random::SparseLayout>,
}

/// The networks a part needs; built on demand and dropped between parts to bound memory.
pub(crate) struct Networks<'a> {
    source: &'a Source,
    device: Device,
    /// The dtype of the text encoders and UNet (the VAE is f32).
    dtype: DType,
    /// The dtype the text encoders' and UNet's random weights are kept in (f16 when lean, see
    /// `Placement::lean_weights`).
    weight_storage: DType,
    /// Our kernels or candle's; `bf16_products` applies to the UNets' linear layers only
    /// (`Placement::bf16_products`).
    kernels: Kernels,
}

impl Networks<'_> {
    /// Random weights kept in `dtype`, built with our kernels or candle's (no bf16 products).
    fn vb(&self, dtype: DType) -> Builder<'static> {
        let vars = VarBuilder::from_backend(
            Box::new(random::RandomBackend { seed: 0 }),
            dtype,
            self.device.clone(),
        );
        Builder::new(
            vars,
            Kernels {
                bf16_products: false,
                ..self.kernels
            },
        )
    }

    pub(crate) fn kernels(&self) -> Kernels {
        self.kernels
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
        let vb = self.vb(self.weight_storage);
        let l = cfg
            .clip_l
            .as_ref()
            .map(|c| ClipTextModel::load(vb.pp(&c.prefix), c, self.dtype))
            .transpose()?;
        let g = ClipTextModel::load(vb.pp(&cfg.clip_g.prefix), &cfg.clip_g, self.dtype)?;
        Ok((l, g))
    }

    pub(crate) fn unet(&self) -> anyhow::Result<UNet> {
        match &self.source.file {
            Some(file) => Ok(file.unet(LoadMode::Real, &self.device)?.0),
            None => Ok(self.random_unet(&self.config().unet)?),
        }
    }

    /// The refiner's configuration and UNet, when the source has one.
    pub(crate) fn refiner(&self) -> anyhow::Result<Option<(SdxlConfig, UNet)>> {
        let Some((config, file)) = &self.source.refiner else {
            return Ok(None);
        };
        let unet = match file {
            Some(file) => file.unet(LoadMode::Real, &self.device)?.0,
            None => self.random_unet(&config.unet)?,
        };
        Ok(Some((config.clone(), unet)))
    }

    /// A UNet of `config` with random weights, built as a checkpoint's would be.
    fn random_unet(&self, config: &UnetConfig) -> candle_core::Result<UNet> {
        let vb = self.vb(self.weight_storage).pp(UNET_PREFIX);
        UNet::load(vb.with_kernels(self.kernels), config, self.dtype)
    }

    /// Fooocus' upscaler with random weights (always f32, as Fooocus runs it).
    pub(crate) fn upscaler(&self) -> anyhow::Result<Rrdb> {
        let vb = self.vb(DType::F32);
        Ok(Rrdb::load(vb, FOOOCUS_UPSCALER)?)
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

/// Head widths of the tiny networks (not visible in the weights); `unet_key` names the UNet in
/// `tiny_configs.json`.
fn tiny_heads(dir: &std::path::Path, unet_key: &str) -> anyhow::Result<HeadDims> {
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
        unet: n(unet_key, "num_head_channels")?,
    })
}

fn source(args: &BenchArgs) -> anyhow::Result<Source> {
    let open =
        |path: &PathBuf, heads: HeadDims| -> anyhow::Result<(SdxlConfig, Option<SdxlFile>)> {
            let file = SdxlFile::open(path, heads)?;
            Ok((file.config.clone(), Some(file)))
        };
    let files = |base: (SdxlConfig, Option<SdxlFile>), refiner, label: String| Source {
        config: base.0,
        file: base.1,
        label,
        refiner,
        _sparse: Vec::new(),
    };
    if let Some(dir) = &args.tiny {
        let base = dir.join("sdxl_base.safetensors");
        let label = format!("tiny fixtures {}", base.display());
        let refiner = dir.join("sdxl_refiner.safetensors");
        let base = open(&base, tiny_heads(dir, "base_unet_sgm")?)?;
        let refiner = open(&refiner, tiny_heads(dir, "refiner_unet_sgm")?)?;
        return Ok(files(base, Some(refiner), label));
    }
    if let Some(path) = &args.checkpoint {
        let label = format!("checkpoint {}", path.display());
        let refiner = match &args.refiner {
            Some(r) => Some(open(r, HeadDims::default())?),
            None => None,
        };
        return Ok(files(open(path, HeadDims::default())?, refiner, label));
    }
    let layouts = args.layouts.clone().unwrap_or_else(default_layouts);
    let base = random::SparseLayout::write(&layouts, "base")?;
    let refiner = random::SparseLayout::write(&layouts, "refiner")?;
    let base_config = SdxlFile::open(&base.path, HeadDims::default())?.config;
    let refiner_config = SdxlFile::open(&refiner.path, HeadDims::default())?.config;
    Ok(Source {
        config: base_config,
        file: None,
        label: "random weights, SDXL 1.0 layouts".into(),
        refiner: Some((refiner_config, None)),
        _sparse: vec![base, refiner],
    })
}

/// Runs the benchmark and returns its report.
pub fn run(args: &BenchArgs) -> anyhow::Result<Report> {
    let parts = args
        .parts
        .iter()
        .map(|p| p.parse::<Part>())
        .collect::<anyhow::Result<Vec<Part>>>()?;
    if let Some(switch) = args.refiner_switch {
        if !(0.0..=1.0).contains(&switch) {
            return Err(anyhow!("--refiner-switch must lie in 0…1, not {switch}"));
        }
        if args.checkpoint.is_some() && args.refiner.is_none() {
            return Err(anyhow!(
                "--refiner-switch with --checkpoint needs --refiner FILE"
            ));
        }
    }
    let mut source = source(args)?;
    let placement = args.compute.placement()?;
    let device = placement.device.clone();
    let dtype = args.compute.precision.dtype_on(&device);
    let lean = placement.lean_weights();
    let bf16_products = placement.bf16_products();
    let kernel_sets: &[bool] = if args.compare_candle {
        &[false, true]
    } else {
        &[true]
    };
    let weight_storage = if lean && dtype == DType::F32 {
        DType::F16
    } else {
        dtype
    };
    let mut measurements = Vec::new();
    for (part, name) in parts.iter().zip(&args.parts) {
        for &own in kernel_sets {
            let refiner_file = source.refiner.as_mut().and_then(|(_, f)| f.as_mut());
            for file in source.file.iter_mut().chain(refiner_file) {
                file.precision = args.compute.precision;
                file.lean_weights = lean;
                file.bf16_products = bf16_products;
                file.own_kernels = own;
            }
            let nets = Networks {
                source: &source,
                device: device.clone(),
                dtype,
                weight_storage,
                kernels: Kernels { own, bf16_products },
            };
            measurements.push(measure(*part, name, &nets, args)?);
        }
    }
    let lean = match &source.file {
        Some(file) => file.keeps_half(dtype, &device),
        None => weight_storage != dtype,
    };
    Ok(Report {
        source: source.label.clone(),
        device: format!(
            "{} {}{}{} (VAE f32), --vram {}",
            describe(&device),
            dtype.as_str(),
            if lean {
                ", half-precision weights widened per layer"
            } else {
                ""
            },
            if bf16_products {
                ", UNet linear layers in bf16"
            } else {
                ""
            },
            placement.vram
        ),
        threads: rayon::current_num_threads(),
        measurements,
        load_after: load_average(),
    })
}

/// Times `part` on `nets`: the networks it needs are built first and dropped after.
fn measure(
    part: Part,
    name: &str,
    nets: &Networks,
    args: &BenchArgs,
) -> anyhow::Result<Measurement> {
    // What the previous part freed stays in glibc's heap (and the resident set) otherwise.
    crate::kernels::memory::release_freed();
    let mut work = workloads::prepare(part, nets, args)?;
    // Nor the dense weights that layers let go of once packed.
    crate::kernels::memory::release_freed();
    let load_before = load_average();
    let rss_reset = reset_peak_rss();
    let (median_s, samples_s) = report::time(args.warmup, args.repeats, &mut work)?;
    Ok(Measurement {
        part: name.to_string(),
        kernels: if nets.kernels.own { "ours" } else { "candle" },
        median_s,
        samples_s,
        peak_rss_bytes: peak_rss(),
        rss_reset,
        load_before,
    })
}

/// `fooocus bench` as a command: prints the table (or JSON) and returns the exit code.
pub fn main(args: &BenchArgs) -> ExitCode {
    match args.queue {
        Some(jobs) => {
            let tiny = args.tiny.as_deref().unwrap_or(std::path::Path::new("."));
            let rates = queue::run(jobs, tiny, args.queue_broker.as_deref());
            print(rates, args.json, |rates| queue::table(rates))
        }
        None => print(run(args), args.json, Report::table),
    }
}

/// Prints a benchmark's result as JSON or as its table.
fn print<T: serde::Serialize>(
    result: anyhow::Result<T>,
    json: bool,
    table: impl Fn(&T) -> String,
) -> ExitCode {
    let result = match result {
        Ok(result) => result,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        match serde_json::to_string_pretty(&result) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", table(&result));
    }
    ExitCode::SUCCESS
}

/// `fixtures/layouts` of the working folder when there is one, else of the repository this binary
/// was built from (the layouts `refgen` wrote; see `fixtures/README.md`).
fn default_layouts() -> PathBuf {
    let here = PathBuf::from("fixtures/layouts");
    if here.is_dir() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/layouts")
}
