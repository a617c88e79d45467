//! Whole Vary (Subtle) and Upscale (2x) runs through the pipeline against the reference (final
//! latent within 1e-3 of max, the saved image close to the reference's), the parts they are made
//! of (start latents, tiled decode), and metadata → request → the same image bytes.

use std::path::{Path, PathBuf};

use base64::Engine;
use candle_core::{Device, Tensor};
use fooocus::config::Config;
use fooocus::nets::esrgan::{load_upscaler, Rrdb};
use fooocus::nets::sdxl::file::SdxlFile;
use fooocus::nets::sdxl::tiling::decode_tiled;
use fooocus::nn::Kernels;
use fooocus::pipeline::image::uov::{
    encode, from_super_resolved, prepare, super_resolve, Prepared, UovMethod,
};
use fooocus::pipeline::meta::request_from_metadata;
use fooocus::pipeline::models::Models;
use fooocus::pipeline::plan::{plan, Task};
use fooocus::pipeline::request::GenerateRequest;
use fooocus::pipeline::run::{run, sample_from, RunContext, RunControl, RunEvent, Start};
use fooocus::pipeline::styles::StyleLibrary;
use fooocus::runtime::Placement;
use fooocus::store::{read_metadata, OutputStore};
use fooocus::weights::backend::LoadMode;
use image::RgbImage;

use super::{fixture, spec, tensors};
use crate::common::{self, assert_close, fixtures};

/// The image fixtures must have been made with the SDXL fixtures the suite loads.
fn check_sdxl_fixtures() {
    let s = spec();
    for (name, digest) in s["sdxl_sha256"].as_object().unwrap() {
        let ours = fooocus::store::file_sha256(&fixtures().join(name)).unwrap();
        assert_eq!(
            ours,
            digest.as_str().unwrap(),
            "{name} differs from the one {} was made with: point FOOOCUS_FIXTURES at {}",
            common::image_fixtures().display(),
            s["sdxl_fixtures"]
        );
    }
}

/// The request of run `which` (`vary` or `upscale`) from the fixture's settings.
fn request(which: &str) -> GenerateRequest {
    let s = spec();
    let r = &s[which];
    let set = &r["settings"];
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    let input = std::fs::read(fixture(&format!("{which}_input.png"))).unwrap();
    GenerateRequest {
        prompt: s["positive"].as_str().unwrap().into(),
        negative_prompt: Some(s["negative"].as_str().unwrap().into()),
        styles: Some(vec![]),
        performance: Some(s["performance"].as_str().unwrap().into()),
        image_number: Some(1),
        seed: r["seed"].as_u64(),
        refiner_switch: Some(f(&set["refiner_switch"])),
        guidance_scale: Some(f(&set["cfg"])),
        sharpness: Some(f(&set["sharpness"])),
        adaptive_cfg: Some(f(&set["adaptive_cfg"])),
        adm_positive: Some(f(&set["adm_positive"])),
        adm_negative: Some(f(&set["adm_negative"])),
        adm_end: Some(f(&set["adm_end"])),
        sampler: Some("dpmpp_2m_sde_gpu".into()),
        scheduler: Some("karras".into()),
        steps: Some(r["steps"].as_u64().unwrap() as u32),
        input_image: Some(base64::engine::general_purpose::STANDARD.encode(input)),
        uov_method: Some(r["method"].as_str().unwrap().into()),
        ..Default::default()
    }
}

/// What a run left: the saved files and the last step's x0 (the final latent: every step of
/// dpmpp_2m_sde that ends at σ = 0 returns its x0).
struct Ran {
    saved: Vec<PathBuf>,
    last_denoised: Option<Tensor>,
    steps: usize,
}

fn generate(config: &Config, request: &GenerateRequest) -> Ran {
    generate_from(config, request, None, Placement::cpu())
}

/// A run of `request`; with `sr`, an Upscale run from that upscaler output instead of running
/// the upscaler (the run's sampling half: `run::sample_from` on the encoded pixels).
fn generate_from(
    config: &Config,
    request: &GenerateRequest,
    sr: Option<&RgbImage>,
    placement: Placement,
) -> Ran {
    let styles = StyleLibrary::load(&config.paths.styles).unwrap();
    let p = plan(request, &common::tiny_preset(), config, &styles).unwrap();
    let store = OutputStore::new(&config.paths.outputs);
    let control = RunControl::default();
    let ctx = RunContext {
        config,
        styles: &styles,
        store: &store,
        control: &control,
        hub: None,
        first_image: 0,
    };
    let mut models = Models::new(placement);
    let mut last = None;
    let mut steps = 0;
    let mut on_event = |e: RunEvent<'_>| {
        if let RunEvent::Step { denoised, .. } = e {
            last = denoised.cloned();
            steps += 1;
        }
    };
    let outcome = match (sr, &p.task) {
        (Some(sr), Task::Uov { method, input, .. }) => {
            models.prepare(&p, config, &mut |_| {}).unwrap();
            let hw = (input.pixels.height(), input.pixels.width());
            let Prepared::Sample(pixels) = from_super_resolved(*method, sr, hw) else {
                panic!("the run samples")
            };
            let vae = models.loaded().unwrap().vae;
            let latent = encode(&vae, &pixels, true, &Device::Cpu).unwrap();
            let start = Start {
                latent,
                tiled: true,
            };
            sample_from(&p, &mut models, Some(&start), &ctx, &mut on_event)
        }
        _ => run(&p, &mut models, &ctx, &mut on_event),
    }
    .unwrap();
    Ran {
        saved: outcome.images.into_iter().map(|i| i.saved.path).collect(),
        last_denoised: last,
        steps,
    }
}

/// The crop of a saved image the fixture keeps, as `[S, S, 3]` u8 values.
fn saved_crop(path: &Path) -> Vec<u8> {
    let s = spec();
    let (y, x, n) = (
        s["crop"]["y"].as_u64().unwrap() as u32,
        s["crop"]["x"].as_u64().unwrap() as u32,
        s["crop"]["size"].as_u64().unwrap() as u32,
    );
    let image = image::open(path).unwrap().to_rgb8();
    image::imageops::crop_imm(&image, x, y, n, n)
        .to_image()
        .into_raw()
}

/// Saved pixels against the reference's: how many differ and by how much at most.
fn compare_pixels(what: &str, ours: &[u8], reference: &Tensor) {
    let reference: Vec<u8> = reference.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(ours.len(), reference.len());
    let diffs: Vec<u8> = ours
        .iter()
        .zip(&reference)
        .map(|(a, b)| a.abs_diff(*b))
        .collect();
    let max = diffs.iter().copied().max().unwrap_or(0);
    let differing = diffs.iter().filter(|d| **d > 0).count();
    println!(
        "{what}: {differing} of {} values differ, at most by {max}",
        diffs.len()
    );
    assert!(max <= 2, "{what}: a value differs by {max}");
}

/// Run `which` against the reference: the final latent within 1e-3 of max, the saved image's
/// crop within 2 levels, the size. `sr`: from this upscaler output (see [`generate_from`]).
fn whole_run(which: &str, sr: Option<&RgbImage>) -> Ran {
    check_sdxl_fixtures();
    let s = spec();
    let r = &s[which];
    let t = tensors();
    let dir = tempfile::tempdir().unwrap();
    let config = common::tiny_config(dir.path());
    let ran = generate_from(&config, &request(which), sr, Placement::cpu());
    assert_eq!(ran.steps, r["steps"].as_u64().unwrap() as usize);
    assert_eq!(ran.saved.len(), 1);
    let latent = ran.last_denoised.clone().unwrap();
    assert_close(
        &format!("{which} final latent"),
        &latent,
        &t.get(&format!("{which}.final_latent")),
        1e-3,
    );
    compare_pixels(
        &format!("{which} saved image"),
        &saved_crop(&ran.saved[0]),
        &t.get(&format!("{which}.png_crop")),
    );
    let image = image::open(&ran.saved[0]).unwrap();
    let hw = &r["resized_hw"];
    assert_eq!(
        (image.height(), image.width()),
        (
            hw[0].as_u64().unwrap() as u32,
            hw[1].as_u64().unwrap() as u32
        )
    );
    ran
}

#[test]
fn vary_subtle_matches_the_reference() {
    whole_run("vary", None);
}

/// Run `which` with the text encoders and UNets in f16 (a GPU's path, here on the CPU; `sr` as
/// in [`generate_from`]): the final latent within the project's f16 tolerance for whole runs
/// (2e-2 of max, as `engine_runs`).
fn f16_run(which: &str, sr: Option<&RgbImage>) {
    check_sdxl_fixtures();
    let t = tensors();
    let dir = tempfile::tempdir().unwrap();
    let config = common::tiny_config(dir.path());
    let placement = Placement {
        precision: fooocus::runtime::Precision::F16,
        ..Placement::cpu()
    };
    let ran = generate_from(&config, &request(which), sr, placement);
    assert_close(
        &format!("{which} final latent (f16)"),
        &ran.last_denoised.unwrap(),
        &t.get(&format!("{which}.final_latent")),
        2e-2,
    );
}

#[test]
fn vary_subtle_in_f16_stays_within_the_f16_tolerance() {
    f16_run("vary", None);
}

/// The Upscale run's sampling half in f16.
#[test]
fn upscale_2x_in_f16_stays_within_the_f16_tolerance() {
    let sr = image::open(fixture("upscale_sr.png")).unwrap().to_rgb8();
    f16_run("upscale", Some(&sr));
}

/// The Upscale run from the reference's upscaler output: resize, tiled encode, the 0.382
/// schedule with the refiner swap, tiled decode.
#[test]
fn upscale_2x_matches_the_reference() {
    let sr = image::open(fixture("upscale_sr.png")).unwrap().to_rgb8();
    whole_run("upscale", Some(&sr));
}

/// The upscaler's 8-bit output against the reference's: its float output agrees within 1e-4
/// (`upscaler` tests), so values differ only where truncation falls on the other side of a
/// level boundary: by 1, in at most 1 of 10,000 values.
#[test]
fn upscaler_output_differs_only_at_level_boundaries() {
    let dev = Device::Cpu;
    let upscaler = Rrdb::new(
        load_upscaler(&fixture("upscaler.pth")).unwrap(),
        &dev,
        Kernels::default(),
    )
    .unwrap();
    let input = image::open(fixture("upscale_input.png")).unwrap().to_rgb8();
    let ours = super_resolve(&upscaler, &input, &dev).unwrap();
    let reference = image::open(fixture("upscale_sr.png")).unwrap().to_rgb8();
    assert_eq!(ours.dimensions(), reference.dimensions());
    let diffs: Vec<u8> = ours
        .as_raw()
        .iter()
        .zip(reference.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .collect();
    let differing = diffs.iter().filter(|d| **d > 0).count();
    println!(
        "upscaler output: {differing} of {} values differ by 1",
        diffs.len()
    );
    assert!(diffs.iter().all(|d| *d <= 1));
    assert!(
        differing * 10_000 <= diffs.len(),
        "{differing} values differ"
    );
}

/// The whole Upscale run from the input file: the size and the metadata; its final latent is
/// printed against the reference's (the upscaler's level flips above move the tiny random VAE's
/// encode, so it is not held to 1e-3; the sampling half is, above).
#[test]
fn upscale_2x_from_the_input_file() {
    check_sdxl_fixtures();
    let s = spec();
    let t = tensors();
    let dir = tempfile::tempdir().unwrap();
    let config = common::tiny_config(dir.path());
    let ran = generate(&config, &request("upscale"));
    let latent = ran.last_denoised.unwrap();
    let err = common::rel_err(&latent, &t.get("upscale.final_latent"));
    println!("upscale end to end: final latent relative error {err:.3e}");
    let image = image::open(&ran.saved[0]).unwrap();
    let hw = &s["upscale"]["resized_hw"];
    assert_eq!(image.height() as u64, hw[0].as_u64().unwrap());
    assert_eq!(image.width() as u64, hw[1].as_u64().unwrap());
    let meta = read_metadata(&ran.saved[0]).unwrap().unwrap();
    let record = meta.input_image.unwrap();
    assert_eq!(record.method, "Upscale (2x)");
    assert_eq!(record.denoise, 0.382);
    assert_eq!(meta.steps, s["upscale"]["steps"].as_u64().unwrap() as u32);
}

fn base() -> SdxlFile {
    SdxlFile::open(
        fixtures().join("sdxl_base.safetensors"),
        common::tiny_heads("base_unet_sgm"),
    )
    .unwrap()
}

/// The start latents within 1e-4 of max: Vary's whole encode of the resized input, Upscale's
/// tiled encode of the reference upscaler output brought to its size.
#[test]
fn start_latents_match() {
    check_sdxl_fixtures();
    let t = tensors();
    let dev = Device::Cpu;
    let (vae, _) = base().vae(LoadMode::Real, &dev).unwrap();
    let input = |name: &str| image::open(fixture(name)).unwrap().to_rgb8();
    let vary = input("vary_input.png");
    let Prepared::Sample(pixels) = prepare(UovMethod::VarySubtle, &vary, None, &dev).unwrap()
    else {
        panic!("Vary samples")
    };
    let latent = encode(&vae, &pixels, false, &dev).unwrap();
    assert_close(
        "vary start latent",
        &latent,
        &t.get("vary.start_latent"),
        1e-4,
    );
    let small = input("upscale_input.png");
    let hw = (small.height(), small.width());
    let Prepared::Sample(pixels) =
        from_super_resolved(UovMethod::Upscale2, &input("upscale_sr.png"), hw)
    else {
        panic!("Upscale (2x) of a small image samples")
    };
    let latent = encode(&vae, &pixels, true, &dev).unwrap();
    assert_close(
        "upscale start latent (tiled)",
        &latent,
        &t.get("upscale.start_latent"),
        1e-4,
    );
}

/// Fooocus' tiled decode of the Upscale run's final latent and the whole decode of the Vary
/// run's against the reference's, on the stored crops (within 1e-3 of max), and the tiled
/// decode's stated distance from the whole one.
#[test]
fn tiled_decode_matches_the_reference() {
    check_sdxl_fixtures();
    let s = spec();
    let t = tensors();
    let dev = Device::Cpu;
    let (vae, _) = base().vae(LoadMode::Real, &dev).unwrap();
    let latent = t.get("upscale.final_latent");
    let tiled = decode_tiled(&vae, &latent, 64).unwrap();
    let unit = |x: Tensor| {
        ((x + 1.0).unwrap() / 2.0)
            .unwrap()
            .clamp(0f32, 1f32)
            .unwrap()
    };
    let (y, x, n) = (
        s["crop"]["y"].as_u64().unwrap() as usize,
        s["crop"]["x"].as_u64().unwrap() as usize,
        s["crop"]["size"].as_u64().unwrap() as usize,
    );
    let crop = |img: &Tensor| img.narrow(2, y, n).unwrap().narrow(3, x, n).unwrap();
    let tiled = unit(tiled);
    assert_close(
        "tiled decode",
        &crop(&tiled),
        &t.get("upscale.image_crop"),
        1e-3,
    );
    let whole = unit(vae.decode(&latent).unwrap());
    let seam = common::max_abs(&(&tiled - &whole).unwrap());
    // Vary decodes whole, as Fooocus.
    let vary = unit(vae.decode(&t.get("vary.final_latent")).unwrap());
    assert_close("vary decode", &crop(&vary), &t.get("vary.image_crop"), 1e-3);
    let stated = s["upscale"]["tiled_vae"]["image_tiled_vs_untiled_max_abs"]
        .as_f64()
        .unwrap() as f32;
    println!("tiled vs whole decode: max abs {seam:.4} on [0, 1] (reference {stated:.4})");
    assert!(seam <= stated + 1e-3, "{seam} vs {stated}");
}

/// The saved Vary image's metadata names the input by hash; the request rebuilt from it finds
/// the kept input and makes the same bytes.
#[test]
fn metadata_rebuilds_the_same_vary() {
    check_sdxl_fixtures();
    let dir = tempfile::tempdir().unwrap();
    let config = common::tiny_config(dir.path());
    let first = generate(&config, &request("vary"));
    let meta = read_metadata(&first.saved[0]).unwrap().unwrap();
    let record = meta.input_image.clone().unwrap();
    assert_eq!(record.method, "Vary (Subtle)");
    assert_eq!(record.denoise, 0.5);
    let rebuilt = request_from_metadata(&meta);
    assert_eq!(
        rebuilt.input_image.as_deref(),
        Some(format!("sha256:{}", record.sha256).as_str())
    );
    let second = generate(&config, &rebuilt);
    assert_eq!(
        std::fs::read(&first.saved[0]).unwrap().len(),
        std::fs::read(&second.saved[0]).unwrap().len()
    );
    let pixels = |p: &Path| image::open(p).unwrap().to_rgb8().into_raw();
    assert!(
        pixels(&first.saved[0]) == pixels(&second.saved[0]),
        "the rebuilt request made other pixels"
    );
}

/// What a durable queue records of a job with an input image (`request_of_plan`, the input
/// named by its sha256 and kept in the store) plans the same job again, for every task.
#[test]
fn the_recorded_request_plans_every_input_task_again() {
    check_sdxl_fixtures();
    let dir = tempfile::tempdir().unwrap();
    let config = common::tiny_config(dir.path());
    let styles = StyleLibrary::load(&config.paths.styles).unwrap();
    let store = OutputStore::new(&config.paths.outputs);
    let planned = |r: &GenerateRequest| plan(r, &common::tiny_preset(), &config, &styles).unwrap();
    let image_to_image = GenerateRequest {
        uov_method: None,
        denoise: Some(0.6),
        width: Some(576),
        height: Some(448),
        image_number: Some(3),
        ..request("vary")
    };
    let resize = |upscaler| GenerateRequest {
        uov_method: None,
        resize_to: Some([200, 120]),
        resize_upscaler: Some(upscaler),
        ..request("vary")
    };
    for asked in [
        request("vary"),
        request("upscale"),
        image_to_image,
        resize(true),
        resize(false),
    ] {
        let first = planned(&asked);
        let input = first.task.input().expect("an input task");
        store
            .keep_input(&input.sha256, &input.bytes, input.extension())
            .unwrap();
        let recorded = fooocus::pipeline::meta::request_of_plan(&first);
        assert!(recorded
            .input_image
            .as_deref()
            .unwrap()
            .starts_with("sha256:"));
        assert_eq!(planned(&recorded), first, "{recorded:?}");
    }
}
