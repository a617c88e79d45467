//! Fooocus semantics against `$FOOOCUS_FIXTURES/fooocus`: the sharpness filter cases and the
//! guidance function on every call's stored inputs.

mod common;

use common::{json, max_abs, Tensors};
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
