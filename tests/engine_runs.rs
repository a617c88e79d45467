//! Whole sampling runs with the tiny UNet in the loop (`$FOOOCUS_FIXTURES/reference`):
//! `sample_dpmpp_2m` and `sample_dpmpp_2m_sde` (replayed noise) with plain CFG, each call within
//! 1e-4 of the step's max|x| and the final latent and image within 1e-3; the same with the UNet
//! in f16 (the GPU path) within our stated half-precision tolerances, 1e-2 per call and 2e-2 for
//! the final latent and image (bf16, and the CPU with the UNet's linear layers in bf16: 5e-2 and
//! 1e-1).

mod common;

use candle_core::{Device, Tensor};
use common::{computes, fixtures, json, max_abs, rel_err, Compute, Tensors};
use fooocus::nets::sdxl::file::SdxlFile;
use fooocus::pipeline::denoiser::{pair_contexts, Adm, FooocusDenoiser, Stage};
use fooocus::pipeline::guidance::Guidance;
use fooocus::sampling::{
    DiscreteSchedule, ReplayNoise, SampleOutcome, Sampler, SamplerOptions, StepControl,
};
use fooocus::weights::backend::LoadMode;

fn table() -> DiscreteSchedule {
    let s = Tensors::open("reference/schedule.safetensors");
    DiscreteSchedule::from_tables(
        s.get("sigmas").to_vec1().unwrap(),
        s.get("log_sigmas").to_vec1().unwrap(),
    )
    .unwrap()
}

/// Tolerances of a whole run with the UNet in f16 and in bf16: per call, and final.
const F16_TOLS: (f32, f32) = (1e-2, 2e-2);
const BF16_TOLS: (f32, f32) = (5e-2, 1e-1);

fn run(name: &str, sampler: Sampler) {
    for c in computes() {
        run_in(name, sampler, &c);
    }
}

fn run_in(name: &str, sampler: Sampler, c: &Compute) {
    let (call_tol, final_tol) = match c.dtype() {
        candle_core::DType::F16 => F16_TOLS,
        candle_core::DType::BF16 => BF16_TOLS,
        _ if c.bf16_products => BF16_TOLS,
        _ => (1e-4, 1e-3),
    };
    let name = &format!("{name} ({})", c.label());
    let reference_name = name.split(' ').next().unwrap_or_default();
    let r = Tensors::open(&format!("reference/{reference_name}.safetensors"));
    let put = |key: &str| c.put(r.get(key));
    let cfg = json("reference/reference.json")["sampling"]["cfg"]
        .as_f64()
        .unwrap();
    let file = c.file(
        SdxlFile::open(
            fixtures().join("sdxl_base.safetensors"),
            common::tiny_heads("base_unet_sgm"),
        )
        .unwrap(),
    );
    let (unet, _) = file.unet(LoadMode::Real, &c.device).unwrap();
    let (vae, _) = file.vae(LoadMode::Real, &c.device).unwrap();
    let table = table();
    let stage = Stage {
        unet: (&unet).into(),
        context: pair_contexts(&put("context_cond"), &put("context_uncond")).unwrap(),
        adm: Adm::Fixed(Tensor::cat(&[put("y_cond"), put("y_uncond")], 0).unwrap()),
    };
    // Plain CFG: no sharpness, and mimicking off (it acts only when cfg exceeds it).
    let guidance = Guidance {
        cfg,
        mimic: cfg,
        sharpness: 0.0,
    };
    let mut denoiser = FooocusDenoiser::new(stage, &table, guidance);
    denoiser.record = true;
    let sigmas: Vec<f32> = r.get("sigmas").to_vec1().unwrap();
    let x_init = put("x_init");
    let stack = if r.has("sde_noise") {
        put("sde_noise")
    } else {
        Tensor::zeros(
            [&[0usize][..], x_init.dims()].concat(),
            candle_core::DType::F32,
            &c.device,
        )
        .unwrap()
    };
    let mut noise = ReplayNoise::new(stack);
    let outcome = sampler
        .sample(
            SamplerOptions::default(),
            &mut denoiser,
            &mut noise,
            x_init,
            &sigmas,
            &mut |_| StepControl::Continue,
        )
        .unwrap();
    let SampleOutcome::Finished(latent) = outcome else {
        panic!("the run stopped")
    };

    let timesteps = json("reference/reference.json")["sampling"]["timesteps"].clone();
    assert_eq!(denoiser.calls.len(), sigmas.len() - 1);
    for (i, call) in denoiser.calls.iter().enumerate() {
        assert_eq!(
            call.t,
            timesteps[i].as_f64().unwrap(),
            "{name} call {i} timestep"
        );
        let scale = max_abs(&r.get(&format!("step{i}.x")));
        for (what, ours) in [
            ("x0_cond", &call.x0_cond),
            ("x0_uncond", &call.x0_uncond),
            ("denoised", &call.denoised),
        ] {
            let ours = ours.to_device(&Device::Cpu).unwrap();
            let err = max_abs(&(ours - r.get(&format!("step{i}.{what}"))).unwrap()) / scale;
            println!("{name} call {i} {what}: {err:.3e}");
            assert!(err <= call_tol, "{name} call {i} {what}: {err:.3e}");
        }
    }
    let err = rel_err(&latent, &r.get("final_latent"));
    println!("{name} final latent: {err:.3e}");
    assert!(err <= final_tol, "{name} final latent: {err:.3e}");
    let image = vae.decode(&latent).unwrap();
    let err = rel_err(&image, &r.get("image"));
    println!("{name} image: {err:.3e}");
    assert!(err <= final_tol, "{name} image: {err:.3e}");
}

#[test]
fn dpmpp_2m_run_matches() {
    run("sample_dpmpp_2m", Sampler::Dpmpp2m);
}

#[test]
fn dpmpp_2m_sde_run_matches() {
    run("sample_dpmpp_2m_sde", "dpmpp_2m_sde_gpu".parse().unwrap());
}
