//! The whole pipeline on the tiny checkpoints: requests validated into plans, images generated,
//! saved and read back; determinism, seeds, the refiner swap's evaluation counts, Stop and Skip,
//! every kind of bad request, the `--vram` residency modes, and a non-finite latent refused.

mod common;

use std::path::{Path, PathBuf};

use fooocus::config::{Config, LoraChoice};
use fooocus::pipeline::meta::{request_from_metadata, request_of_plan};
use fooocus::pipeline::models::Models;
use fooocus::pipeline::plan::{plan, Plan};
use fooocus::pipeline::request::GenerateRequest;
use fooocus::pipeline::run::{run, RunContext, RunControl, RunEvent, RunOutcome};
use fooocus::pipeline::styles::StyleLibrary;
use fooocus::runtime::{Placement, Vram};
use fooocus::store::{read_metadata, OutputStore};

struct Setup {
    config: Config,
    styles: StyleLibrary,
    _dir: tempfile::TempDir,
    out: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = common::tiny_config(dir.path());
    let styles = StyleLibrary::load(&config.paths.styles).unwrap();
    let out = config.paths.outputs.clone();
    Setup {
        config,
        styles,
        _dir: dir,
        out,
    }
}

fn request(prompt: &str) -> GenerateRequest {
    GenerateRequest {
        prompt: prompt.into(),
        width: Some(512),
        height: Some(512),
        steps: Some(6),
        refiner_switch: Some(0.1),
        image_number: Some(2),
        seed: Some(1234),
        ..Default::default()
    }
}

fn planned(s: &Setup, r: &GenerateRequest) -> Plan {
    plan(r, &common::tiny_preset(), &s.config, &s.styles).unwrap()
}

/// What a run of `s` reads, saving into `store`, from image `first_image`.
fn context<'a>(
    s: &'a Setup,
    store: &'a OutputStore,
    control: &'a RunControl,
    first_image: usize,
) -> RunContext<'a> {
    RunContext {
        config: &s.config,
        styles: &s.styles,
        store,
        control,
        hub: None,
        first_image,
    }
}

fn generate(
    s: &Setup,
    p: &Plan,
    control: &RunControl,
    on_step: &mut dyn FnMut(usize, usize),
) -> RunOutcome {
    generate_placed(s, p, control, on_step, Placement::cpu()).0
}

/// A run with `placement`; also how many times each UNet was built.
fn generate_placed(
    s: &Setup,
    p: &Plan,
    control: &RunControl,
    on_step: &mut dyn FnMut(usize, usize),
    placement: Placement,
) -> (RunOutcome, [usize; 2]) {
    let store = OutputStore::new(&s.out);
    let ctx = context(s, &store, control, 0);
    let mut models = Models::new(placement);
    let outcome = run(p, &mut models, &ctx, &mut |e| {
        if let RunEvent::Step { image, step, .. } = e {
            on_step(image, step)
        }
    })
    .unwrap();
    (outcome, models.unet_builds())
}

/// `--vram high` builds each UNet once; `normal` and `low` keep one UNet at a time, so with two
/// images the refiner's is built at each switch and the base's again for the second image. Every
/// mode makes the same images.
#[test]
fn vram_modes_keep_one_unet_or_both_and_make_the_same_images() {
    let s = setup();
    let p = planned(&s, &request("a fox in the snow"));
    assert_eq!(p.seeds.len(), 2);
    assert!(p.refiner.is_some());
    let mut reference: Option<Vec<Vec<u8>>> = None;
    for (vram, builds) in [
        (Vram::High, [1, 1]),
        (Vram::Normal, [2, 2]),
        (Vram::Low, [2, 2]),
    ] {
        let placement = Placement {
            vram,
            ..Placement::cpu()
        };
        let (outcome, built) =
            generate_placed(&s, &p, &RunControl::default(), &mut |_, _| {}, placement);
        assert_eq!(built, builds, "UNet builds with --vram {vram}");
        let images: Vec<Vec<u8>> = outcome
            .images
            .iter()
            .map(|i| std::fs::read(&i.saved.path).unwrap())
            .collect();
        match &reference {
            None => reference = Some(images),
            Some(first) => assert!(first == &images, "--vram {vram} changed the images"),
        }
    }
}

/// Image i of a batch uses seed + i; its metadata gives back the request that makes exactly it,
/// and running that request again gives the same bytes (the same request and seed, twice).
#[test]
fn images_are_seeded_deterministic_and_reproducible_from_their_metadata() {
    let s = setup();
    let p = planned(&s, &request("a lighthouse on a cliff, (stormy sea:1.2)"));
    let refiner = p.refiner.clone().expect("the refiner runs");
    let first = generate(&s, &p, &RunControl::default(), &mut |_, _| {});
    assert_eq!(first.images.len(), 2);
    for (i, image) in first.images.iter().enumerate() {
        assert_eq!(image.seed, 1234 + i as u64, "image {i} uses seed + i");
        assert_eq!(image.evaluations.base, refiner.switch_step + 1);
        assert_eq!(image.evaluations.refiner, p.steps - refiner.switch_step - 1);
    }
    let bytes = |path: &Path| std::fs::read(path).unwrap();
    assert_ne!(
        bytes(&first.images[0].saved.path),
        bytes(&first.images[1].saved.path)
    );

    let meta = read_metadata(&first.images[1].saved.path)
        .unwrap()
        .expect("metadata");
    assert_eq!(meta.seed, 1235);
    let again = planned(&s, &request_from_metadata(&meta));
    assert_eq!(
        again,
        Plan {
            seeds: vec![1235],
            ..p.clone()
        }
    );
    let second = generate(&s, &again, &RunControl::default(), &mut |_, _| {});
    assert_ne!(second.images[0].saved.path, first.images[1].saved.path);
    assert_eq!(
        bytes(&second.images[0].saved.path),
        bytes(&first.images[1].saved.path)
    );
}

#[test]
fn stop_keeps_finished_images_and_skip_moves_on() {
    let s = setup();
    let mut r = request("a red fox");
    r.image_number = Some(3);
    r.steps = Some(4);
    let p = planned(&s, &r);
    let control = RunControl::default();
    let outcome = generate(&s, &p, &control, &mut |image, step| {
        if image == 0 && step == 1 {
            control.skip();
        }
        if image == 2 && step == 1 {
            control.stop();
        }
    });
    assert_eq!(outcome.skipped, vec![0]);
    assert_eq!(
        outcome.images.iter().map(|i| i.index).collect::<Vec<_>>(),
        vec![1]
    );
    assert!(outcome.stopped);
    assert!(outcome.images[0].saved.path.exists());
}

fn rejected(s: &Setup, r: GenerateRequest) -> String {
    let err = plan(&r, &common::tiny_preset(), &s.config, &s.styles).expect_err("must be rejected");
    err.to_string()
}

#[test]
fn bad_requests_name_their_field() {
    let s = setup();
    let base = request("x");
    let with = |f: &dyn Fn(&mut GenerateRequest)| {
        let mut r = base.clone();
        f(&mut r);
        r
    };
    let cases: Vec<(&str, GenerateRequest)> = vec![
        (
            "styles",
            with(&|r| r.styles = Some(vec!["No Such Style".into()])),
        ),
        (
            "base_model",
            with(&|r| r.base_model = Some("missing.safetensors".into())),
        ),
        (
            "base_model",
            with(&|r| r.base_model = Some("sdxl_refiner.safetensors".into())),
        ),
        (
            "refiner_model",
            with(&|r| r.refiner_model = Some("nothing-here".into())),
        ),
        (
            "loras",
            with(&|r| {
                r.loras = Some(vec![LoraChoice {
                    name: "absent".into(),
                    weight: 1.0,
                }])
            }),
        ),
        (
            "loras",
            with(&|r| {
                r.loras = Some(vec![LoraChoice {
                    name: "sdxl_lora_kohya.safetensors".into(),
                    weight: 2.5,
                }])
            }),
        ),
        ("width", with(&|r| r.width = Some(500))),
        ("height", with(&|r| r.height = Some(4096))),
        (
            "aspect_ratio",
            with(&|r| {
                r.width = None;
                r.height = None;
                r.aspect_ratio = Some("1000×1000".into());
            }),
        ),
        ("steps", with(&|r| r.steps = Some(0))),
        ("steps", with(&|r| r.steps = Some(201))),
        ("image_number", with(&|r| r.image_number = Some(0))),
        ("image_number", with(&|r| r.image_number = Some(33))),
        (
            "guidance_scale",
            with(&|r| r.guidance_scale = Some(f64::NAN)),
        ),
        ("guidance_scale", with(&|r| r.guidance_scale = Some(-1.0))),
        ("sampler", with(&|r| r.sampler = Some("warp_drive".into()))),
        (
            "performance",
            with(&|r| r.performance = Some("Turbo".into())),
        ),
        (
            "performance",
            with(&|r| r.performance = Some("Lightning".into())),
        ),
    ];
    for (field, r) in cases {
        let msg = rejected(&s, r);
        assert!(
            msg.starts_with(&format!("`{field}`")),
            "expected a `{field}` error, got: {msg}"
        );
    }
    // A checkpoint passed as a LoRA.
    std::fs::copy(
        common::fixtures().join("sdxl_refiner.safetensors"),
        s.config.paths.loras[1].join("not-a-lora.safetensors"),
    )
    .unwrap();
    let msg = rejected(
        &s,
        with(&|r| {
            r.loras = Some(vec![LoraChoice {
                name: "not-a-lora.safetensors".into(),
                weight: 1.0,
            }])
        }),
    );
    assert!(
        msg.starts_with("`loras`") && msg.contains("not a LoRA"),
        "{msg}"
    );
    // A wildcard file that is not UTF-8.
    std::fs::write(
        s.config.paths.wildcards.join("broken.txt"),
        [0xff, 0xfe, 0xfa],
    )
    .unwrap();
    let msg = rejected(&s, with(&|r| r.prompt = "a __broken__ cat".into()));
    assert!(
        msg.starts_with("`prompt`") && msg.contains("UTF-8"),
        "{msg}"
    );
    // An empty prompt is fine.
    assert!(plan(
        &with(&|r| r.prompt = String::new()),
        &common::tiny_preset(),
        &s.config,
        &s.styles
    )
    .is_ok());
}

/// A UNet whose output is not finite (broken weights here; half precision overflowing on some
/// GPUs) fails the run with a message naming the fix, instead of saving a black image.
#[test]
fn a_non_finite_latent_fails_the_run_naming_the_fix() {
    use candle_core::{Device, Tensor};
    let mut s = setup();
    let dir = s.out.with_file_name("broken");
    std::fs::create_dir_all(&dir).unwrap();
    let source = common::fixtures().join("sdxl_base.safetensors");
    let mut tensors = candle_core::safetensors::load(source, &Device::Cpu).unwrap();
    let key = "model.diffusion_model.out.2.bias";
    let bias = &tensors[key];
    let nan = Tensor::full(f32::NAN, bias.dims(), &Device::Cpu)
        .unwrap()
        .to_dtype(bias.dtype())
        .unwrap();
    tensors.insert(key.into(), nan);
    candle_core::safetensors::save(&tensors, dir.join("broken_base.safetensors")).unwrap();
    s.config.paths.checkpoints.push(dir);
    let heads = s.config.head_dims["sdxl_base.safetensors"];
    s.config
        .head_dims
        .insert("broken_base.safetensors".into(), heads);
    let r = GenerateRequest {
        base_model: Some("broken_base.safetensors".into()),
        image_number: Some(1),
        ..request("a lighthouse")
    };
    let p = planned(&s, &r);
    let store = OutputStore::new(&s.out);
    let control = RunControl::default();
    let ctx = context(&s, &store, &control, 0);
    let error = match run(&p, &mut Models::new(Placement::cpu()), &ctx, &mut |_| {}) {
        Ok(_) => panic!("a run with NaN weights succeeded"),
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains("sampled latent came out as NaN or infinity in f32")
            && error.contains("weights may be broken"),
        "{error}"
    );
    assert!(!s.out.exists() || std::fs::read_dir(&s.out).unwrap().next().is_none());
}

/// What a durable queue records of a job (`request_of_plan`) plans the same job again, whatever
/// the preset says: every performance, sizes, LoRAs, refiner on and off, forced steps.
#[test]
fn the_recorded_request_plans_the_same_job_again() {
    let s = setup();
    let lora = LoraChoice {
        name: "sdxl_lora_kohya.safetensors".into(),
        weight: 0.7,
    };
    let mut requests = vec![
        request("a castle, [[red|blue]] flags"),
        GenerateRequest {
            prompt: "no seed, preset sizes".into(),
            ..Default::default()
        },
        GenerateRequest {
            aspect_ratio: Some("1152×896".into()),
            refiner_model: Some("None".into()),
            loras: Some(vec![lora]),
            styles: Some(vec!["Fooocus Sharp".into()]),
            ..request("with a LoRA and a style")
        },
    ];
    for performance in ["Quality", "Extreme Speed", "Lightning"] {
        requests.push(GenerateRequest {
            performance: Some(performance.into()),
            steps: None,
            ..request(performance)
        });
    }
    for asked in requests {
        let Ok(first) = plan(&asked, &common::tiny_preset(), &s.config, &s.styles) else {
            // A fast mode whose LoRA the fixtures lack cannot be planned at all.
            assert!(asked.performance.is_some(), "{asked:?}");
            continue;
        };
        let recorded = request_of_plan(&first);
        let mut other_preset = common::tiny_preset();
        other_preset.image_number = 5;
        other_preset.steps = Some(11);
        other_preset.styles = vec![];
        let again = plan(&recorded, &other_preset, &s.config, &s.styles).unwrap();
        assert_eq!(again, first, "{recorded:?}");
    }
}

/// A run resumed at image k (`first_image`) makes exactly the images k.. of the whole run.
#[test]
fn a_resumed_run_makes_the_same_remaining_images() {
    let s = setup();
    let mut r = request("a lighthouse");
    r.image_number = Some(3);
    r.steps = Some(2);
    let p = planned(&s, &r);
    let whole = generate(&s, &p, &RunControl::default(), &mut |_, _| {});
    let store = OutputStore::new(&s.out);
    let control = RunControl::default();
    let ctx = context(&s, &store, &control, 1);
    let mut models = Models::new(Placement::cpu());
    let mut named = Vec::new();
    let resumed = run(&p, &mut models, &ctx, &mut |e| {
        if let RunEvent::Saving { index, relative } = e {
            named.push((index, relative.to_owned()));
        }
    })
    .unwrap();
    let indices: Vec<usize> = resumed.images.iter().map(|i| i.index).collect();
    assert_eq!(indices, [1, 2]);
    for (image, (index, relative)) in resumed.images.iter().zip(&named) {
        assert_eq!((image.index, &image.saved.relative), (*index, relative));
        let before = &whole.images[image.index];
        assert_eq!(image.seed, before.seed);
        let pixels = |p: &Path| image::open(p).unwrap().to_rgb8().into_raw();
        assert!(pixels(&image.saved.path) == pixels(&before.saved.path));
    }
}
