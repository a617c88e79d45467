//! The k-diffusion samplers Fooocus offers, written against a [`Denoiser`] (x, σ → x0) and a
//! [`NoiseSampler`], with a per-step callback that sees every step and can stop the run.
//!
//! Every sampler starts each step with one denoiser call at σ_i; the driver here makes that
//! call, reports it to the callback, and hands the result to the sampler's update rule
//! (`first_order`, `dpmpp`, `lms`), which may call the denoiser again. The update rules
//! follow k-diffusion 0.1.1's formulas. Latents are f32 tensors; the scalar coefficients
//! (step sizes, intermediate sigmas) are computed in f64 from the f32 schedule. k-diffusion
//! computes them on f32 0-dim tensors, where some cancel badly (σ_down of an ancestral step
//! when σ_from ≫ σ_to loses most of its digits); f64 gives the exact values, which sit
//! within the references' own float32 noise.

mod dpmpp;
mod first_order;
mod lms;

use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;

use super::error::{Result, SamplingError};
use super::noise::NoiseSampler;

/// The model as the sampler sees it: the denoised estimate x0 = D(x, σ).
pub trait Denoiser {
    /// x0 for the noisy latent `x` at noise level `sigma`.
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> candle_core::Result<Tensor>;
}

/// What the callback wants after a step's first model call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepControl {
    /// Go on with the step.
    Continue,
    /// End the run now (Stop, Skip): the step's update is not applied.
    Stop,
}

/// What the callback sees, after the first model call of a step and before its update.
#[derive(Debug, Clone, Copy)]
pub struct StepState<'a> {
    /// Step index, 0-based.
    pub step: usize,
    /// Number of steps of the run (`sigmas.len() − 1`).
    pub steps: usize,
    /// σ of this step.
    pub sigma: f64,
    /// σ this step goes to.
    pub sigma_next: f64,
    /// The latent entering the step.
    pub x: &'a Tensor,
    /// The denoiser's x0 for `x` at `sigma`.
    pub denoised: &'a Tensor,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub enum SampleOutcome {
    /// All steps ran; the final latent.
    Finished(Tensor),
    /// The callback stopped the run at `step` (before its update).
    Stopped {
        /// The step whose callback asked to stop.
        step: usize,
        /// The latent entering that step.
        x: Tensor,
        /// The denoiser's x0 at that step.
        denoised: Tensor,
    },
}

/// How `dpmpp_2m_sde` applies its second-order correction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SdeSolver {
    /// k-diffusion's default (Fooocus' `dpmpp_2m_sde`).
    Midpoint,
    /// The Heun-style correction.
    Heun,
}

/// Tunables k-diffusion exposes, with its defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerOptions {
    /// Ancestral / SDE noise amount (0 makes the ancestral and SDE samplers deterministic).
    pub eta: f64,
    /// Scale of the injected noise.
    pub s_noise: f64,
    /// `dpmpp_sde`: position of the intermediate step in log σ.
    pub r: f64,
    /// `lms`: number of past derivatives.
    pub lms_order: usize,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        Self {
            eta: 1.0,
            s_noise: 1.0,
            r: 0.5,
            lms_order: 4,
        }
    }
}

/// The samplers, by Fooocus' names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sampler {
    /// `sample_euler` (no churn).
    Euler,
    /// `sample_euler_ancestral`.
    EulerAncestral,
    /// `sample_heun` (no churn).
    Heun,
    /// `sample_dpm_2` (no churn).
    Dpm2,
    /// `sample_dpm_2_ancestral`.
    Dpm2Ancestral,
    /// `sample_lms`.
    Lms,
    /// `sample_dpmpp_2s_ancestral`.
    Dpmpp2sAncestral,
    /// `sample_dpmpp_sde` (Fooocus also lists it as `dpmpp_sde_gpu`).
    DpmppSde,
    /// `sample_dpmpp_2m`.
    Dpmpp2m,
    /// `sample_dpmpp_2m_sde` with the given solver (`dpmpp_2m_sde[_gpu]` is the midpoint one).
    Dpmpp2mSde(SdeSolver),
    /// `sample_dpmpp_3m_sde` (also `dpmpp_3m_sde_gpu`).
    Dpmpp3mSde,
    /// ComfyUI's `ddim`: Euler (the caller picks the schedule, usually `ddim_uniform`).
    Ddim,
    /// `sample_lcm`: x = x0, then fresh noise at σ_next.
    Lcm,
}

/// Fooocus' sampler names we implement, in Fooocus' order, with the sampler each selects.
const FOOOCUS_NAMES: [(&str, Sampler); 16] = [
    ("euler", Sampler::Euler),
    ("euler_ancestral", Sampler::EulerAncestral),
    ("heun", Sampler::Heun),
    ("dpm_2", Sampler::Dpm2),
    ("dpm_2_ancestral", Sampler::Dpm2Ancestral),
    ("lms", Sampler::Lms),
    ("dpmpp_2s_ancestral", Sampler::Dpmpp2sAncestral),
    ("dpmpp_sde", Sampler::DpmppSde),
    ("dpmpp_sde_gpu", Sampler::DpmppSde),
    ("dpmpp_2m", Sampler::Dpmpp2m),
    ("dpmpp_2m_sde", Sampler::Dpmpp2mSde(SdeSolver::Midpoint)),
    ("dpmpp_2m_sde_gpu", Sampler::Dpmpp2mSde(SdeSolver::Midpoint)),
    ("dpmpp_3m_sde", Sampler::Dpmpp3mSde),
    ("dpmpp_3m_sde_gpu", Sampler::Dpmpp3mSde),
    ("lcm", Sampler::Lcm),
    ("ddim", Sampler::Ddim),
];

/// Further accepted spellings (explicit solver names, as ComfyUI spells them).
const EXTRA_NAMES: [(&str, Sampler); 3] = [
    (
        "dpmpp_2m_sde_midpoint",
        Sampler::Dpmpp2mSde(SdeSolver::Midpoint),
    ),
    ("dpmpp_2m_sde_heun", Sampler::Dpmpp2mSde(SdeSolver::Heun)),
    (
        "dpmpp_2m_sde_heun_gpu",
        Sampler::Dpmpp2mSde(SdeSolver::Heun),
    ),
];

impl Sampler {
    /// The canonical name (`dpmpp_2m_sde` for the midpoint solver, `dpmpp_2m_sde_heun` for
    /// Heun's).
    pub fn name(self) -> &'static str {
        match self {
            Sampler::Euler => "euler",
            Sampler::EulerAncestral => "euler_ancestral",
            Sampler::Heun => "heun",
            Sampler::Dpm2 => "dpm_2",
            Sampler::Dpm2Ancestral => "dpm_2_ancestral",
            Sampler::Lms => "lms",
            Sampler::Dpmpp2sAncestral => "dpmpp_2s_ancestral",
            Sampler::DpmppSde => "dpmpp_sde",
            Sampler::Dpmpp2m => "dpmpp_2m",
            Sampler::Dpmpp2mSde(SdeSolver::Midpoint) => "dpmpp_2m_sde",
            Sampler::Dpmpp2mSde(SdeSolver::Heun) => "dpmpp_2m_sde_heun",
            Sampler::Dpmpp3mSde => "dpmpp_3m_sde",
            Sampler::Ddim => "ddim",
            Sampler::Lcm => "lcm",
        }
    }

    /// The names to offer in the UI: Fooocus' names for the samplers implemented here, in
    /// Fooocus' order (`_gpu` variants included; they select the same sampler).
    pub fn names() -> Vec<&'static str> {
        FOOOCUS_NAMES.iter().map(|(name, _)| *name).collect()
    }

    /// dpm_2 and dpm_2_ancestral get a schedule for one step more with the second-to-last
    /// sigma dropped (see [`super::schedule::calculate_sigmas`]).
    pub fn discards_penultimate_sigma(self) -> bool {
        matches!(self, Sampler::Dpm2 | Sampler::Dpm2Ancestral)
    }

    /// Whether the sampler draws noise (with η > 0 for the ancestral and SDE ones).
    pub fn is_stochastic(self) -> bool {
        matches!(
            self,
            Sampler::EulerAncestral
                | Sampler::Dpm2Ancestral
                | Sampler::Dpmpp2sAncestral
                | Sampler::DpmppSde
                | Sampler::Dpmpp2mSde(_)
                | Sampler::Dpmpp3mSde
                | Sampler::Lcm
        )
    }

    /// Runs the sampler from `x` (already scaled to `sigmas[0]`) down the schedule `sigmas`
    /// (ending in 0). `callback` runs after the first model call of every step and may stop
    /// the run.
    pub fn sample(
        self,
        options: SamplerOptions,
        model: &mut dyn Denoiser,
        noise: &mut dyn NoiseSampler,
        x: Tensor,
        sigmas: &[f32],
        callback: &mut dyn FnMut(&StepState<'_>) -> StepControl,
    ) -> Result<SampleOutcome> {
        if let Some(bad) = sigmas.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
            return Err(SamplingError::InvalidSchedule(format!(
                "sigmas must be finite and non-negative, found {bad}"
            )));
        }
        let steps = sigmas.len().saturating_sub(1);
        let mut rule = self.update_rule(options);
        let mut cx = Cx {
            model,
            noise,
            options,
        };
        let mut x = x;
        for i in 0..steps {
            let (sigma, sigma_next) = (f64::from(sigmas[i]), f64::from(sigmas[i + 1]));
            let denoised = cx.denoise(&x, sigma)?;
            let state = StepState {
                step: i,
                steps,
                sigma,
                sigma_next,
                x: &x,
                denoised: &denoised,
            };
            if callback(&state) == StepControl::Stop {
                return Ok(SampleOutcome::Stopped {
                    step: i,
                    x,
                    denoised,
                });
            }
            let step = Step {
                index: i,
                sigmas,
                sigma,
                sigma_next,
            };
            x = rule.update(&mut cx, &step, x, denoised)?;
        }
        Ok(SampleOutcome::Finished(x))
    }

    fn update_rule(self, options: SamplerOptions) -> Box<dyn UpdateRule> {
        match self {
            Sampler::Euler | Sampler::Ddim => Box::new(first_order::Euler),
            Sampler::EulerAncestral => Box::new(first_order::EulerAncestral),
            Sampler::Heun => Box::new(first_order::Heun),
            Sampler::Dpm2 => Box::new(first_order::Dpm2),
            Sampler::Dpm2Ancestral => Box::new(first_order::Dpm2Ancestral),
            Sampler::Lcm => Box::new(first_order::Lcm),
            Sampler::Lms => Box::new(lms::Lms::new(options.lms_order)),
            Sampler::Dpmpp2sAncestral => Box::new(dpmpp::Dpmpp2sAncestral),
            Sampler::DpmppSde => Box::new(dpmpp::DpmppSde),
            Sampler::Dpmpp2m => Box::new(dpmpp::Dpmpp2m::default()),
            Sampler::Dpmpp2mSde(solver) => Box::new(dpmpp::Dpmpp2mSde::new(solver)),
            Sampler::Dpmpp3mSde => Box::new(dpmpp::Dpmpp3mSde::default()),
        }
    }
}

impl fmt::Display for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Sampler {
    type Err = SamplingError;

    fn from_str(s: &str) -> Result<Self> {
        FOOOCUS_NAMES
            .iter()
            .chain(EXTRA_NAMES.iter())
            .find(|(name, _)| *name == s)
            .map(|(_, sampler)| *sampler)
            .ok_or_else(|| SamplingError::UnknownSampler {
                name: s.to_owned(),
                known: Self::names().join(", "),
            })
    }
}

/// What an update rule may use besides its own state: the model for extra calls, the noise and
/// the options.
struct Cx<'a> {
    model: &'a mut dyn Denoiser,
    noise: &'a mut dyn NoiseSampler,
    options: SamplerOptions,
}

impl Cx<'_> {
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        Ok(self.model.denoise(x, sigma)?)
    }

    /// `noise_sampler(sigma, sigma_next) * scale`.
    fn noise(&mut self, sigma: f64, sigma_next: f64, scale: f64) -> Result<Tensor> {
        Ok(self.noise.sample(sigma, sigma_next)?.affine(scale, 0.0)?)
    }
}

/// The step being taken.
struct Step<'a> {
    index: usize,
    sigmas: &'a [f32],
    sigma: f64,
    sigma_next: f64,
}

/// One sampler's update: from x and the step's first x0 to the next x.
trait UpdateRule {
    fn update(
        &mut self,
        cx: &mut Cx<'_>,
        step: &Step<'_>,
        x: Tensor,
        denoised: Tensor,
    ) -> Result<Tensor>;
}

/// a·x + b·y.
fn lin2(x: &Tensor, a: f64, y: &Tensor, b: f64) -> Result<Tensor> {
    Ok((x.affine(a, 0.0)? + y.affine(b, 0.0)?)?)
}

/// x + d·dt (d a derivative).
fn euler_step(x: &Tensor, d: &Tensor, dt: f64) -> Result<Tensor> {
    Ok((x + d.affine(dt, 0.0)?)?)
}

/// k-diffusion's `to_d`: (x − x0)/σ.
fn to_d(x: &Tensor, sigma: f64, denoised: &Tensor) -> Result<Tensor> {
    Ok(((x - denoised)? / sigma)?)
}

/// k-diffusion's `get_ancestral_step`: (σ_down, σ_up) for the step σ_from → σ_to, with
/// σ_up = min(σ_to, η·√(σ_to²(σ_from² − σ_to²)/σ_from²)) and σ_down = √(σ_to² − σ_up²).
fn ancestral_step(sigma_from: f64, sigma_to: f64, eta: f64) -> (f64, f64) {
    if eta == 0.0 {
        return (sigma_to, 0.0);
    }
    let (from2, to2) = (sigma_from * sigma_from, sigma_to * sigma_to);
    let up = sigma_to.min(eta * (to2 * (from2 - to2) / from2).sqrt());
    ((to2 - up * up).sqrt(), up)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::noise::SeededNoise;
    use candle_core::Device;

    /// D(x, σ) = x·s²/(s² + σ²): the exact denoiser of N(0, s²) data.
    struct Gaussian {
        s2: f64,
    }

    impl Denoiser for Gaussian {
        fn denoise(&mut self, x: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
            x.affine(self.s2 / (self.s2 + sigma * sigma), 0.0)
        }
    }

    fn run(sampler: Sampler, sigmas: &[f32], stop_at: Option<usize>) -> (SampleOutcome, usize) {
        let dev = Device::Cpu;
        let mut noise = SeededNoise::new(1, (1, 4, 2, 2), &dev);
        let x = noise
            .randn()
            .unwrap()
            .affine(f64::from(sigmas[0]), 0.0)
            .unwrap();
        let mut model = Gaussian { s2: 0.25 };
        let mut seen = 0;
        let mut cb = |s: &StepState<'_>| {
            seen += 1;
            if Some(s.step) == stop_at {
                StepControl::Stop
            } else {
                StepControl::Continue
            }
        };
        let out = sampler
            .sample(
                SamplerOptions::default(),
                &mut model,
                &mut noise,
                x,
                sigmas,
                &mut cb,
            )
            .unwrap();
        (out, seen)
    }

    #[test]
    fn names_and_aliases() {
        assert_eq!(
            "dpmpp_2m_sde_gpu".parse::<Sampler>().unwrap(),
            Sampler::Dpmpp2mSde(SdeSolver::Midpoint)
        );
        assert_eq!(
            "dpmpp_sde_gpu".parse::<Sampler>().unwrap(),
            Sampler::DpmppSde
        );
        assert_eq!(
            "dpmpp_2m_sde_heun".parse::<Sampler>().unwrap().name(),
            "dpmpp_2m_sde_heun"
        );
        for name in Sampler::names() {
            let s: Sampler = name.parse().unwrap();
            assert_eq!(s.name().parse::<Sampler>().unwrap(), s);
        }
        assert!("uni_pc".parse::<Sampler>().is_err());
        assert!(Sampler::Dpm2Ancestral.discards_penultimate_sigma());
    }

    #[test]
    fn ddim_is_euler() {
        let sigmas = [10.0, 3.0, 1.0, 0.2, 0.0];
        let (SampleOutcome::Finished(a), _) = run(Sampler::Ddim, &sigmas, None) else {
            panic!("stopped")
        };
        let (SampleOutcome::Finished(b), _) = run(Sampler::Euler, &sigmas, None) else {
            panic!("stopped")
        };
        let diff = (a - b).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn lcm_is_x0_plus_fresh_noise() {
        let sigmas = [10.0, 1.0, 0.0];
        let (SampleOutcome::Finished(x), steps) = run(Sampler::Lcm, &sigmas, None) else {
            panic!("stopped")
        };
        assert_eq!(steps, 2);
        // x1 = D(x0, 10) + 1·n1, result = D(x1, 1), from the same noise stream.
        let mut noise = SeededNoise::new(1, (1, 4, 2, 2), &Device::Cpu);
        let x0 = noise.randn().unwrap().affine(10.0, 0.0).unwrap();
        let x1 = (x0.affine(0.25 / 100.25, 0.0).unwrap() + noise.randn().unwrap()).unwrap();
        let want = x1.affine(0.25 / 1.25, 0.0).unwrap();
        let diff = (x - want).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn callback_can_stop() {
        let sigmas = [10.0, 3.0, 1.0, 0.0];
        let (out, seen) = run(Sampler::Dpmpp2mSde(SdeSolver::Midpoint), &sigmas, Some(1));
        assert_eq!(seen, 2);
        assert!(matches!(out, SampleOutcome::Stopped { step: 1, .. }));
    }

    #[test]
    fn ancestral_step_without_eta_is_deterministic() {
        assert_eq!(ancestral_step(2.0, 1.0, 0.0), (1.0, 0.0));
        let (down, up) = ancestral_step(2.0, 1.0, 1.0);
        assert!((down * down + up * up - 1.0).abs() < 1e-6);
        assert!((down - 0.5).abs() < 1e-6);
    }
}
