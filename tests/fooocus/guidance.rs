//! The sharpness filter cases, the guidance function on every call's stored inputs, and the
//! whole base + refiner run.

use crate::common::{self, json, max_abs, Tensors};
use fooocus::pipeline::guidance::{progress, Guidance};
use fooocus::pipeline::sharpness::{anisotropic_filter, FilterShape};

fn scalar(t: &candle_core::Tensor) -> f64 {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] as f64
}

#[test]
fn sharpness_filter_cases() {
    let spec = &json("fooocus/fooocus.json")["sharpness_filter"];
    let shape = FilterShape {
        kernel: spec["kernel"].as_u64().unwrap() as usize,
        sigma_space: spec["sigma_space"].as_f64().unwrap(),
        sigma_color: spec["sigma_color"].as_f64().unwrap(),
    };
    let cases = Tensors::open("fooocus/sharpness.safetensors");
    let count = spec["shapes"].as_array().unwrap().len();
    assert!(count > 0);
    for i in 0..count {
        let out = anisotropic_filter(
            &cases.get(&format!("case{i}.eps")),
            &cases.get(&format!("case{i}.guide")),
            shape,
        )
        .unwrap();
        common::assert_close(
            &format!("sharpness case {i}"),
            &out,
            &cases.get(&format!("case{i}.out")),
            1e-5,
        );
    }
}

#[test]
fn guidance_function_on_every_call() {
    let sampling = &json("fooocus/fooocus.json")["sampling"];
    let settings = &sampling["settings"];
    let guidance = Guidance {
        cfg: settings["cfg"].as_f64().unwrap(),
        mimic: settings["adaptive_cfg"].as_f64().unwrap(),
        sharpness: settings["sharpness"].as_f64().unwrap(),
    };
    let run = Tensors::open("fooocus/fooocus_sample.safetensors");
    let calls = sampling["timesteps"].as_array().unwrap().len();
    let mut filtered_checked = 0;
    for i in 0..calls {
        let key = |k: &str| run.get(&format!("step{i}.{k}"));
        let x = key("x");
        let t = scalar(&key("t"));
        assert_eq!(
            progress(t) as f64,
            scalar(&key("progress")),
            "progress of call {i}"
        );
        let out = guidance
            .apply(&x, t, &key("x0_cond"), &key("x0_uncond"))
            .unwrap();
        let scale = max_abs(&x);
        let rel =
            |a: &candle_core::Tensor, b: &candle_core::Tensor| max_abs(&(a - b).unwrap()) / scale;
        if let Some(f) = &out.eps_cond_filtered {
            let err = rel(f, &key("eps_cond_filtered"));
            assert!(err <= 1e-5, "call {i} eps_cond_filtered: {err:.3e}");
            filtered_checked += 1;
        } else {
            assert_eq!(
                scalar(&key("alpha")),
                0.0,
                "call {i}: the filter was skipped with a positive weight"
            );
        }
        let err = rel(&out.eps_final, &key("eps_final"));
        assert!(err <= 1e-5, "call {i} eps_final: {err:.3e}");
        let err = rel(&out.denoised, &key("denoised"));
        assert!(err <= 1e-5, "call {i} denoised: {err:.3e}");
    }
    assert!(filtered_checked > 0);
}

/// The whole Fooocus base + refiner run from the prompts and the seed: conditioning from text,
/// emphasized/consistent ADM, karras sigmas, the seeded torch-compatible noise (initial and SDE),
/// dpmpp_2m_sde with sharpness, CFG mimicking and the joint refiner swap; each call within 1e-4
/// of the step's max|x|, the final latent and image within 1e-3.
#[test]
fn fooocus_base_and_refiner_run_from_the_seed() {
    use candle_core::{Device, Tensor};
    use fooocus::nets::sdxl::file::SdxlFile;
    use fooocus::nets::sdxl::text::TextEncoders;
    use fooocus::nets::sdxl::tokenizer::ClipTokenizer;
    use fooocus::nets::sdxl::unet::adm_vector;
    use fooocus::pipeline::conditioning::*;
    use fooocus::pipeline::denoiser::{pair_contexts, Adm, FooocusDenoiser, Stage};
    use fooocus::pipeline::plan::switch_step;
    use fooocus::sampling::{
        DiscreteSchedule, ReplayNoise, SampleOutcome, Sampler, SamplerOptions, Scheduler,
        SeededNoise, StepControl,
    };
    use fooocus::weights::backend::LoadMode;

    let spec = json("fooocus/fooocus.json");
    let s = &spec["sampling"];
    let set = &s["settings"];
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    let n = |v: &serde_json::Value| v.as_u64().unwrap() as usize;
    let r = Tensors::open("fooocus/fooocus_sample.safetensors");
    let dev = Device::Cpu;
    let base = SdxlFile::open(
        common::fixtures().join("sdxl_base.safetensors"),
        common::tiny_heads("base_unet_sgm"),
    )
    .unwrap();
    let refiner = SdxlFile::open(
        common::fixtures().join("sdxl_refiner.safetensors"),
        common::tiny_heads("refiner_unet_sgm"),
    )
    .unwrap();

    // Conditioning from the prompts.
    let tok =
        ClipTokenizer::from_file(common::fixtures().join("tokenizer/clip-tokenizer.json")).unwrap();
    let (l, _) = base.clip_l(LoadMode::Real, &dev).unwrap().unwrap();
    let (g, _) = base.clip_g(LoadMode::Real, &dev).unwrap();
    let enc = TextEncoders {
        clip_l: Some(&l),
        clip_g: &g,
    };
    let pos = enc
        .encode(&tok, s["positive"].as_str().unwrap(), 2)
        .unwrap();
    let neg = enc
        .encode(&tok, s["negative"].as_str().unwrap(), 2)
        .unwrap();
    let context = pair_contexts(&pos.context, &neg.context).unwrap();
    common::assert_close("base context", &context, &r.get("base.context"), 1e-4);
    let pooled = Tensor::cat(&[&pos.pooled, &neg.pooled], 0).unwrap();
    common::assert_close("base pooled", &pooled, &r.get("base.pooled"), 1e-4);

    let (h, w) = (n(&s["height"]), n(&s["width"]));
    let emphasized = id_rows(
        &[
            base_time_ids(h, w, f(&set["adm_positive"])),
            base_time_ids(h, w, f(&set["adm_negative"])),
        ],
        &dev,
    )
    .unwrap();
    let consistent = id_rows(
        &[consistent_time_ids(h, w), consistent_time_ids(h, w)],
        &dev,
    )
    .unwrap();
    assert_eq!(
        common::rel_err(&emphasized, &r.get("base.time_ids_emphasized")),
        0.0
    );
    assert_eq!(
        common::rel_err(&consistent, &r.get("base.time_ids_consistent")),
        0.0
    );
    let dim = base.config.time_id_dim;
    let y_emph = adm_vector(&pooled, &emphasized, dim).unwrap();
    let y_cons = adm_vector(&pooled, &consistent, dim).unwrap();
    common::assert_close("y emphasized", &y_emph, &r.get("base.y_emphasized"), 1e-4);
    common::assert_close("y consistent", &y_cons, &r.get("base.y_consistent"), 1e-4);

    let (lat_h, lat_w) = (n(&s["latent_hw"][0]), n(&s["latent_hw"][1]));
    let ref_context = refiner_context(&context, refiner.config.clip_g.hidden).unwrap();
    common::assert_close(
        "refiner context",
        &ref_context,
        &r.get("refiner.context"),
        1e-4,
    );
    let ref_ids = id_rows(
        &[
            refiner_time_ids(lat_h * 8, lat_w * 8, REFINER_POSITIVE_AESTHETIC),
            refiner_time_ids(lat_h * 8, lat_w * 8, REFINER_NEGATIVE_AESTHETIC),
        ],
        &dev,
    )
    .unwrap();
    assert_eq!(common::rel_err(&ref_ids, &r.get("refiner.time_ids")), 0.0);
    let ref_y = adm_vector(&pooled, &ref_ids, refiner.config.time_id_dim).unwrap();
    common::assert_close("refiner y", &ref_y, &r.get("refiner.y"), 1e-4);

    // Schedule, switch, seed.
    let table = DiscreteSchedule::sdxl();
    let steps = n(&s["steps"]);
    let sigmas = Scheduler::Karras.sigmas(&table, steps).unwrap();
    let stored: Vec<f32> = r.get("sigmas").to_vec1().unwrap();
    for (a, b) in sigmas.iter().zip(&stored) {
        assert!(
            (a - b).abs() <= 1e-5 * b.abs().max(1e-30),
            "sigma {a} vs {b}"
        );
    }
    let switch = switch_step(steps, f(&set["refiner_switch"]));
    assert_eq!(switch, n(&s["switch"]));
    let mut noise = SeededNoise::new(spec["seed"].as_u64().unwrap(), (1, 4, lat_h, lat_w), &dev);
    let initial = noise.randn().unwrap();
    assert_eq!(common::rel_err(&initial, &r.get("noise")), 0.0);
    let x_init = (initial * (1.0 + (sigmas[0] as f64).powi(2)).sqrt()).unwrap();
    common::assert_close("x_init", &x_init, &r.get("x_init"), 1e-6);

    let (base_unet, _) = base.unet(LoadMode::Real, &dev).unwrap();
    let (ref_unet, _) = refiner.unet(LoadMode::Real, &dev).unwrap();
    let guidance = Guidance {
        cfg: f(&set["cfg"]),
        mimic: f(&set["adaptive_cfg"]),
        sharpness: f(&set["sharpness"]),
    };
    let base_stage = Stage {
        unet: (&base_unet).into(),
        context,
        adm: Adm::switched(y_emph, y_cons, f(&set["adm_end"])),
    };
    let ref_stage = Stage {
        unet: (&ref_unet).into(),
        context: ref_context,
        adm: Adm::Fixed(ref_y),
    };
    let mut denoiser = FooocusDenoiser::new(base_stage, &table, guidance)
        .with_refiner(ref_stage, sigmas[switch] as f64);
    denoiser.record = true;
    let sampler: Sampler = "dpmpp_2m_sde_gpu".parse().unwrap();
    // The SDE noise is replayed from the reference (the seeded stream reproduces it too; see
    // `sampling::noise`), and the arguments of every noise request are checked.
    let mut replay = ReplayNoise::new(r.get("sde_noise"));
    let outcome = sampler
        .sample(
            SamplerOptions::default(),
            &mut denoiser,
            &mut replay,
            x_init,
            &sigmas,
            &mut |_| StepControl::Continue,
        )
        .unwrap();
    let SampleOutcome::Finished(latent) = outcome else {
        panic!("stopped")
    };
    let asked: Vec<f32> = r
        .get("sde_noise_sigmas")
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let ours: Vec<f32> = replay
        .calls()
        .iter()
        .flat_map(|&(a, b)| [a as f32, b as f32])
        .collect();
    assert_eq!(ours.len(), asked.len(), "noise requests");
    for (a, b) in ours.iter().zip(&asked) {
        assert!(
            (a - b).abs() <= 1e-5 * b.abs().max(1e-6),
            "noise sigma {a} vs {b}"
        );
    }

    let models = s["models"].as_array().unwrap();
    assert_eq!(denoiser.calls.len(), models.len());
    for (i, call) in denoiser.calls.iter().enumerate() {
        assert_eq!(call.model, n(&models[i]), "call {i} model");
        assert_eq!(call.t, f(&s["timesteps"][i]), "call {i} timestep");
        let scale = max_abs(&r.get(&format!("step{i}.x")));
        let err = max_abs(&(&call.denoised - r.get(&format!("step{i}.denoised"))).unwrap()) / scale;
        println!(
            "fooocus call {i} (model {}): denoised {err:.3e}",
            call.model
        );
        assert!(err <= 1e-4, "call {i}: {err:.3e}");
    }
    common::assert_close(
        "fooocus final latent",
        &latent,
        &r.get("final_latent"),
        1e-3,
    );
    let (vae, _) = base.vae(LoadMode::Real, &dev).unwrap();
    common::assert_close(
        "fooocus image",
        &vae.decode(&latent).unwrap(),
        &r.get("image"),
        1e-3,
    );
}
