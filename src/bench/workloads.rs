//! The timed work of each benchmark part, with its networks built and inputs drawn beforehand:
//! single layers (convolution, norm, linear, attention), text encoders on a CFG pair of 77-token prompts, one UNet evaluation at batch 2 with the CFG
//! combination, a VAE decode (tiled above `--vae-tile`), a tiled VAE encode, Fooocus' upscaler,
//! and a whole generation (text encoders,
//! `dpmpp_2m_sde` on a Karras schedule with Fooocus guidance, the refiner below the switch σ when
//! there is one, VAE decode).

use candle_core::{DType, Device, Module, Tensor};

use super::{BenchArgs, Networks, Part};
use crate::nets::sdxl::clip::ClipTextModel;
use crate::nets::sdxl::shapes::SdxlConfig;
use crate::nets::sdxl::tiling::{decode_tiled, encode_tiled};
use crate::nets::sdxl::unet::{adm_vector, UNet};
use crate::nets::sdxl::vae::{Vae, VAE_FACTOR};
use crate::nn::{Builder, Kernels};
use crate::pipeline::conditioning::{
    consistent_time_ids, id_rows, refiner_context, refiner_time_ids, REFINER_NEGATIVE_AESTHETIC,
    REFINER_POSITIVE_AESTHETIC,
};
use crate::pipeline::denoiser::{Adm, FooocusDenoiser, Stage};
use crate::pipeline::guidance::Guidance;
use crate::pipeline::image::uov::{ENCODE_TILE, UPSCALER_TILES};
use crate::sampling::{
    DiscreteSchedule, SampleOutcome, Sampler, SamplerOptions, Scheduler, SdeSolver, SeededNoise,
    StepControl,
};
use crate::weights::checkpoint::Architecture;

/// A prepared part: each call runs it once.
pub type Work = Box<dyn FnMut() -> anyhow::Result<()>>;

const CFG: f64 = 7.0;
const CLIP_SKIP: usize = 2;

/// Builds what `part` needs and returns its timed work.
/// Each call ends when the device has finished (GPU kernels run asynchronously).
pub fn prepare(part: Part, nets: &Networks, args: &BenchArgs) -> anyhow::Result<Work> {
    let dev = nets.device().clone();
    let side = |px: usize| px / VAE_FACTOR;
    let mut work: Work = match part {
        Part::Conv512 | Part::Norm512 | Part::Linear | Part::Attention => {
            let kernels = Kernels {
                bf16_products: false,
                ..nets.kernels()
            };
            op(part, &dev, kernels)?
        }
        Part::Text => {
            let (l, g) = nets.clips()?;
            let ids = prompt_ids(&dev)?;
            Box::new(move || {
                encode(l.as_ref(), &g, &ids)?;
                Ok(())
            })
        }
        Part::Unet(px) => {
            let unet = nets.unet()?;
            let c = &nets.config().unet;
            let x = Tensor::randn(0f32, 1.0, (2, c.in_channels, side(px), side(px)), &dev)?;
            let t = Tensor::new(&[500f32, 500.0], &dev)?;
            let context = Tensor::randn(0f32, 1.0, (2, 77, c.context_dim), &dev)?;
            let y = Tensor::randn(0f32, 1.0, (2, c.adm_in_channels), &dev)?;
            Box::new(move || {
                let eps = unet.forward(&x, &t, &context, &y)?;
                let (cond, uncond) = (eps.narrow(0, 0, 1)?, eps.narrow(0, 1, 1)?);
                let _guided = (&uncond + ((cond - &uncond)? * CFG)?)?;
                Ok(())
            })
        }
        Part::Vae(px) => {
            let vae = nets.vae()?;
            let z = nets.config().vae.embed_dim;
            let latent = Tensor::randn(0f32, 1.0, (1, z, side(px), side(px)), &dev)?;
            let tile = args.vae_tile;
            Box::new(move || {
                decode(&vae, &latent, tile)?;
                Ok(())
            })
        }
        Part::Generate(px) => generate(nets, args, side(px))?,
        Part::Upscaler(px) => {
            let upscaler = nets.upscaler()?;
            let image = Tensor::rand(0f32, 1.0, (1, 3, px, px), &dev)?;
            Box::new(move || {
                upscaler.upscale_tiled(&image, UPSCALER_TILES)?;
                Ok(())
            })
        }
        Part::Encode(px) => {
            let vae = nets.vae()?;
            let image = Tensor::rand(-1f32, 1.0, (1, 3, px, px), &dev)?;
            Box::new(move || {
                encode_tiled(&vae, &image, ENCODE_TILE)?;
                Ok(())
            })
        }
    };
    Ok(Box::new(move || {
        work()?;
        dev.synchronize()?;
        Ok(())
    }))
}

/// Single layers of the kinds the networks spend most time in: a 3×3 convolution and GroupNorm +
/// SiLU at the VAE's last level of a 512² decode, the UNet's widest linear layer and its
/// self-attention at 1024².
fn op(part: Part, dev: &Device, kernels: Kernels) -> anyhow::Result<Work> {
    let vars = candle_nn::VarBuilder::from_backend(
        Box::new(super::random::RandomBackend { seed: 1 }),
        DType::F32,
        dev.clone(),
    );
    let vb = Builder::new(vars, kernels);
    // The VAE's last level has 128 channels.
    let image = || Tensor::randn(0f32, 1.0, (1, 128, 512, 512), dev);
    Ok(match part {
        Part::Conv512 => {
            let (layer, x) = (crate::nn::conv::conv(vb, 128, 128, 3, 1, 1)?, image()?);
            Box::new(move || {
                layer.forward(&x)?;
                Ok(())
            })
        }
        Part::Norm512 => {
            let (layer, x) = (crate::nn::norm::group_norm(32, 128, 1e-6, vb)?, image()?);
            Box::new(move || {
                layer.forward_act(&x, true)?;
                Ok(())
            })
        }
        Part::Linear => {
            let layer = crate::nn::linear::linear(640, 5120, vb)?;
            let x = Tensor::randn(0f32, 1.0, (2, 4096, 640), dev)?;
            Box::new(move || {
                layer.forward(&x)?;
                Ok(())
            })
        }
        _ => {
            let qkv = || Tensor::randn(0f32, 1.0, (2, 4096, 640), dev);
            let (q, k, v) = (qkv()?, qkv()?, qkv()?);
            Box::new(move || {
                crate::nn::attention::multi_head(kernels, &q, &k, &v, 10, false)?;
                Ok(())
            })
        }
    })
}

/// `[2, 77]` token ids: a short prompt and an empty one, each BOS … EOS, padded with EOS.
fn prompt_ids(dev: &Device) -> anyhow::Result<Tensor> {
    const BOS: u32 = 49406;
    const EOS: u32 = 49407;
    let row = |words: u32| -> Vec<u32> {
        let mut r = vec![BOS];
        r.extend((0..words).map(|i| 320 + 37 * i));
        r.resize(77, EOS);
        r
    };
    Ok(Tensor::from_vec([row(20), row(0)].concat(), (2, 77), dev)?)
}

/// Context `[2, 77, L+G]` and pooled `[2, P]` of the CFG pair.
fn encode(
    l: Option<&ClipTextModel>,
    g: &ClipTextModel,
    ids: &Tensor,
) -> anyhow::Result<(Tensor, Tensor)> {
    let g_out = g.forward(ids, CLIP_SKIP)?;
    let pooled = g_out
        .pooled
        .ok_or_else(|| anyhow::anyhow!("CLIP-G gave no pooled vector"))?;
    let context = match l {
        Some(l) => Tensor::cat(&[&l.forward(ids, CLIP_SKIP)?.hidden, &g_out.hidden], 2)?,
        None => g_out.hidden,
    };
    Ok((context, pooled))
}

fn decode(vae: &Vae, latent: &Tensor, tile: usize) -> anyhow::Result<Tensor> {
    let (_, _, h, w) = latent.dims4()?;
    Ok(if tile > 0 && (h > tile || w > tile) {
        decode_tiled(vae, latent, tile)?
    } else {
        vae.decode(latent)?
    })
}

/// The ADM vector `[2, adm]` of a CFG pair for a `px`² image, with the pipeline's time ids: the
/// base's consistent ids, or the refiner's with its positive and negative aesthetic scores.
fn adm(pooled: &Tensor, config: &SdxlConfig, px: usize) -> anyhow::Result<Tensor> {
    let rows = match config.architecture {
        Architecture::SdxlRefiner => id_rows(
            &[
                refiner_time_ids(px, px, REFINER_POSITIVE_AESTHETIC),
                refiner_time_ids(px, px, REFINER_NEGATIVE_AESTHETIC),
            ],
            pooled.device(),
        )?,
        _ => id_rows(&[consistent_time_ids(px, px); 2], pooled.device())?,
    };
    Ok(adm_vector(pooled, &rows, config.time_id_dim)?)
}

fn generate(nets: &Networks, args: &BenchArgs, side: usize) -> anyhow::Result<Work> {
    let dev = nets.device().clone();
    let (l, g) = nets.clips()?;
    let unet: UNet = nets.unet()?;
    let refiner = match args.refiner_switch {
        Some(switch) => nets.refiner()?.map(|r| (r, switch)),
        None => None,
    };
    let vae = nets.vae()?;
    let cfg = nets.config().clone();
    let ids = prompt_ids(&dev)?;
    let schedule = DiscreteSchedule::sdxl();
    let (steps, tile) = (args.steps.max(1), args.vae_tile);
    let px = side * VAE_FACTOR;
    Ok(Box::new(move || {
        let (context, pooled) = encode(l.as_ref(), &g, &ids)?;
        let stage_context = context.clone();
        let stage = Stage {
            unet: (&unet).into(),
            context,
            adm: Adm::Fixed(adm(&pooled, &cfg, px)?),
        };
        let guidance = Guidance {
            cfg: CFG,
            mimic: CFG,
            sharpness: 2.0,
        };
        let mut denoiser = FooocusDenoiser::new(stage, &schedule, guidance);
        let sigmas = Scheduler::Karras.sigmas(&schedule, steps)?;
        if let Some(((refiner_cfg, refiner_unet), fraction)) = &refiner {
            let g_context = refiner_context(&stage_context, refiner_cfg.clip_g.hidden)?;
            let switch = ((steps as f64 * fraction).round() as usize).min(steps - 1);
            let stage = Stage {
                unet: refiner_unet.into(),
                context: g_context,
                adm: Adm::Fixed(adm(&pooled, refiner_cfg, px)?),
            };
            denoiser = denoiser.with_refiner(stage, f64::from(sigmas[switch]));
        }
        let shape = (1, cfg.unet.in_channels, side, side);
        let first = f64::from(sigmas.first().copied().unwrap_or(1.0));
        let x = (Tensor::randn(0f32, 1.0, shape, &dev)? * first)?.to_dtype(DType::F32)?;
        let mut noise = SeededNoise::new(0, shape, &dev);
        let outcome = Sampler::Dpmpp2mSde(SdeSolver::Midpoint).sample(
            SamplerOptions::default(),
            &mut denoiser,
            &mut noise,
            x,
            &sigmas,
            &mut |_| StepControl::Continue,
        )?;
        let SampleOutcome::Finished(latent) = outcome else {
            anyhow::bail!("the sampler stopped early");
        };
        decode(&vae, &latent, tile)?;
        Ok(())
    }))
}
