//! Schedules and sampler trajectories against a samplers-shaped fixture folder
//! (`FOOOCUS_SAMPLER_FIXTURES`, default the repository's `fixtures/samplers`). Every list (schedules,
//! samplers, step counts, shapes, the discrete table) comes from the folder's files.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use fooocus::sampling::{
    calculate_sigmas, Denoiser, DiscreteSchedule, ReplayNoise, SampleOutcome, Sampler,
    SamplerOptions, Scheduler, SdeSolver, StepControl, StepState,
};
use serde_json::Value;

fn fixture_dir() -> PathBuf {
    std::env::var_os("FOOOCUS_SAMPLER_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/samplers"))
}

fn settings() -> Value {
    let text = std::fs::read_to_string(fixture_dir().join("samplers.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load(file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture_dir().join(file), &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn step_counts(json: &Value) -> Vec<usize> {
    json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap() as usize)
        .collect()
}

fn table(json: &Value, schedules: &HashMap<String, Tensor>) -> DiscreteSchedule {
    let range = json["continuous_sigma_range"].as_array().unwrap();
    DiscreteSchedule::from_tables(
        values(&schedules["table.sigmas"]),
        values(&schedules["table.log_sigmas"]),
    )
    .unwrap()
    .with_sigma_range(range[0].as_f64().unwrap(), range[1].as_f64().unwrap())
    .unwrap()
}

/// max_i |a_i − b_i| / |b_i| (0 where both are 0).
fn max_rel_elementwise(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = (f64::from(x) - f64::from(y)).abs();
            if d == 0.0 {
                0.0
            } else {
                d / f64::from(y).abs()
            }
        })
        .fold(0.0, f64::max)
}

fn max_abs(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(x.abs())).fold(0.0, f64::max)
}

#[test]
fn table_matches_its_scaled_linear_definition() {
    let json = settings();
    let t = &json["table"];
    let ours = DiscreteSchedule::scaled_linear(
        t["beta_start"].as_f64().unwrap(),
        t["beta_end"].as_f64().unwrap(),
        t["n"].as_u64().unwrap() as usize,
    )
    .unwrap();
    let stored = load("schedules.safetensors");
    let sigmas = values(&stored["table.sigmas"]);
    let log_sigmas = values(&stored["table.log_sigmas"]);
    assert_eq!(ours.len(), sigmas.len());
    assert!(max_rel_elementwise(ours.sigmas(), &sigmas) <= 1e-6);
    assert!(max_rel_elementwise(ours.log_sigmas(), &log_sigmas) <= 1e-6);
    let table = table(&json, &stored);
    assert_eq!(
        table.timestep(f64::from(sigmas[sigmas.len() - 1])),
        sigmas.len() - 1
    );
}

#[test]
fn schedules_match_references() {
    let json = settings();
    let stored = load("schedules.safetensors");
    let table = table(&json, &stored);
    let mut checked = 0;
    let mut worst: f64 = 0.0;
    for name in strings(&json["schedules"]) {
        let scheduler: Scheduler = name.parse().unwrap();
        // Table lookups must match exactly; computed schedules to 1e-5 relative.
        let exact = matches!(scheduler, Scheduler::Simple | Scheduler::DdimUniform);
        for n in step_counts(&json) {
            let plain = scheduler.sigmas(&table, n).unwrap();
            let dpm2 = calculate_sigmas(&table, scheduler, n, 1.0, Sampler::Dpm2).unwrap();
            for (key, ours) in [
                (format!("{name}.n{n}"), plain),
                (format!("{name}.n{n}.dpm2"), dpm2),
            ] {
                let want = values(&stored[&key]);
                assert_eq!(ours.len(), want.len(), "{key}: length");
                let rel = max_rel_elementwise(&ours, &want);
                if exact {
                    assert_eq!(ours, want, "{key}");
                } else {
                    assert!(rel <= 1e-5, "{key}: relative error {rel:e}");
                    worst = worst.max(rel);
                }
                checked += 1;
            }
        }
    }
    eprintln!("{checked} schedules checked; computed ones within {worst:.1e} relative");
}

/// D(x, σ) = (x·s2 + mu·σ²)/(s2 + σ²) in f32, recording every σ it is called with.
struct Analytic {
    mu: Tensor,
    s2: f32,
    calls: Vec<f64>,
}

impl Denoiser for Analytic {
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
        self.calls.push(sigma);
        let sigma = sigma as f32;
        let sigma2 = sigma * sigma;
        let num = (x.affine(f64::from(self.s2), 0.0)? + self.mu.affine(f64::from(sigma2), 0.0)?)?;
        num.broadcast_div(&Tensor::new(self.s2 + sigma2, x.device())?)
    }
}

fn options(name: &str, sampler: Sampler, kwargs: &Value) -> SamplerOptions {
    let mut o = SamplerOptions::default();
    for (key, v) in kwargs.as_object().unwrap() {
        match key.as_str() {
            "eta" => o.eta = v.as_f64().unwrap(),
            "s_noise" => o.s_noise = v.as_f64().unwrap(),
            "r" => o.r = v.as_f64().unwrap(),
            "order" => o.lms_order = v.as_u64().unwrap() as usize,
            "solver_type" => {
                let solver = match v.as_str().unwrap() {
                    "midpoint" => SdeSolver::Midpoint,
                    "heun" => SdeSolver::Heun,
                    other => panic!("{name}: unknown solver {other}"),
                };
                assert_eq!(sampler, Sampler::Dpmpp2mSde(solver), "{name}: solver");
            }
            other => panic!("{name}: unsupported k-diffusion argument {other}"),
        }
    }
    o
}

/// Worst errors of one sampler over all its runs.
#[derive(Default)]
struct Worst {
    xs: f64,
    call_sigmas: f64,
    noise_sigmas: f64,
}

/// One sampler file and its settings.
struct Case<'a> {
    name: &'a str,
    sampler: Sampler,
    opts: SamplerOptions,
    file: &'a HashMap<String, Tensor>,
    s2: f32,
    tol: f64,
}

/// Max |a_i − b_i| / scale.
fn max_scaled_diff(a: &[f32], b: &[f32], scale: f64) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).abs() / scale)
        .fold(0.0, f64::max)
}

fn check_run(case: &Case<'_>, prefix: &str, worst: &mut Worst) -> Vec<String> {
    let Case {
        name,
        sampler,
        opts,
        file,
        s2,
        tol,
    } = *case;
    // Denoiser-call and noise-request sigmas are held to the trajectory's tolerance, relative
    // to the run's largest sigma (the trajectory's convention). Elementwise they can differ
    // more: the references compute intermediate sigmas on f32 scalars, where an ancestral
    // step's σ_down = √(σ_to² − σ_up²) cancels when σ_from ≫ σ_to, leaving the stored midpoint
    // σ of dpm_2_ancestral / dpmpp_2s_ancestral ~1e-3 of itself away from its exact value.
    let mut errors = Vec::new();
    let get = |key: &str| &file[&format!("{prefix}{key}")];
    let sigmas = values(get("sigmas"));
    let sigma_scale = max_abs(&sigmas);
    let x_init = get("x_init").clone();
    let xs_ref = get("xs");
    let steps = xs_ref.dim(0).unwrap();
    let noise_count = get("noise_count").to_vec1::<i64>().unwrap()[0] as usize;
    let stack = if noise_count > 0 {
        get("noise").clone()
    } else {
        Tensor::zeros(
            [&[0usize][..], x_init.dims()].concat(),
            candle_core::DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    };

    let mut model = Analytic {
        mu: file["mu"].clone(),
        s2,
        calls: Vec::new(),
    };
    let mut noise = ReplayNoise::new(stack);
    let mut xs: Vec<Tensor> = Vec::new();
    let mut record = |s: &StepState<'_>| {
        if s.step > 0 {
            xs.push(s.x.clone());
        }
        StepControl::Continue
    };
    let out = sampler
        .sample(
            opts,
            &mut model,
            &mut noise,
            x_init.clone(),
            &sigmas,
            &mut record,
        )
        .unwrap();
    let SampleOutcome::Finished(last) = out else {
        panic!("{name} {prefix}: stopped without being asked")
    };
    xs.push(last);

    // Trajectory, step by step, relative to the run's scale.
    if xs.len() != steps {
        errors.push(format!(
            "{name} {prefix}: {} steps, reference {steps}",
            xs.len()
        ));
        return errors;
    }
    let scale = max_abs(&values(&x_init)).max(max_abs(&values(xs_ref)));
    for (i, x) in xs.iter().enumerate() {
        let want = values(&xs_ref.get(i).unwrap());
        let diff = values(x)
            .iter()
            .zip(&want)
            .map(|(a, b)| f64::from((a - b).abs()))
            .fold(0.0, f64::max);
        let rel = diff / scale;
        worst.xs = worst.xs.max(rel);
        if rel > tol {
            errors.push(format!(
                "{name} {prefix}: step {i} relative error {rel:e} > {tol:e}"
            ));
        }
    }
    let final_ref = values(get("final"));
    if values(&xs_ref.get(steps - 1).unwrap()) != final_ref {
        errors.push(format!(
            "{name} {prefix}: reference final differs from xs[-1]"
        ));
    }

    // Denoiser call sigmas.
    let calls_ref = values(get("call_sigmas"));
    let calls: Vec<f32> = model.calls.iter().map(|&s| s as f32).collect();
    if calls.len() != calls_ref.len() {
        errors.push(format!(
            "{name} {prefix}: {} denoiser calls, reference {}",
            calls.len(),
            calls_ref.len()
        ));
    } else {
        let rel = max_scaled_diff(&calls, &calls_ref, sigma_scale);
        worst.call_sigmas = worst.call_sigmas.max(rel);
        if rel > tol {
            errors.push(format!("{name} {prefix}: call sigmas off by {rel:e}"));
        }
    }

    // Noise requests and their arguments.
    if noise.calls().len() != noise_count {
        errors.push(format!(
            "{name} {prefix}: {} noise draws, reference {noise_count}",
            noise.calls().len()
        ));
    } else if noise_count > 0 {
        let ours: Vec<f32> = noise
            .calls()
            .iter()
            .flat_map(|&(a, b)| [a as f32, b as f32])
            .collect();
        let rel = max_scaled_diff(&ours, &values(get("noise_sigmas")), sigma_scale);
        worst.noise_sigmas = worst.noise_sigmas.max(rel);
        if rel > tol {
            errors.push(format!("{name} {prefix}: noise arguments off by {rel:e}"));
        }
    }
    errors
}

#[test]
fn sampler_trajectories_match_references() {
    let json = settings();
    let s = json["s"].as_f64().unwrap();
    let s2 = (s * s) as f32;
    let floors = &json["float32_noise_floor"]["per_sampler"];
    let schedules = strings(&json["schedules"]);
    let counts = step_counts(&json);
    let mut errors = Vec::new();
    let mut runs = 0;
    for (name, spec) in json["samplers"].as_object().unwrap() {
        let sampler: Sampler = name.parse().unwrap();
        assert_eq!(
            sampler.is_stochastic(),
            spec["stochastic"].as_bool().unwrap(),
            "{name}: stochastic"
        );
        let opts = options(name, sampler, &spec["kwargs"]);
        let tol = 1e-5f64.max(10.0 * floors[name.as_str()].as_f64().unwrap());
        let file = load(&format!("sampler_{name}.safetensors"));
        let case = Case {
            name,
            sampler,
            opts,
            file: &file,
            s2,
            tol,
        };
        let mut worst = Worst::default();
        for schedule in &schedules {
            for n in &counts {
                let prefix = format!("{schedule}.n{n}.");
                errors.extend(check_run(&case, &prefix, &mut worst));
                runs += 1;
            }
        }
        eprintln!(
            "{name:24} xs max rel {:.2e} (tol {tol:.2e}), call σ {:.1e}, noise σ {:.1e}",
            worst.xs, worst.call_sigmas, worst.noise_sigmas
        );
    }
    eprintln!("{runs} runs checked");
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
