//! Sigma schedules: the discrete SDXL noise table (σ ↔ timestep), the schedulers Fooocus offers
//! (karras, exponential, polyexponential, normal, simple, sgm_uniform, ddim_uniform) and Fooocus'
//! `calculate_sigmas` rules (the dpm_2 penultimate-sigma drop and partial denoise).
//!
//! Every schedule is a `Vec<f32>` ending in 0; its number of steps is always `len − 1`.

use std::fmt;
use std::str::FromStr;

use super::error::{Result, SamplingError};
use super::samplers::Sampler;

/// SDXL's β range and table length ("scaled_linear").
pub const SDXL_BETA_START: f64 = 0.00085;
/// SDXL's last β.
pub const SDXL_BETA_END: f64 = 0.012;
/// SDXL's number of discrete timesteps.
pub const SDXL_TIMESTEPS: usize = 1000;

/// ρ of the karras schedule.
pub const KARRAS_RHO: f64 = 7.0;
/// ρ of the polyexponential schedule (ComfyUI's default).
pub const POLYEXPONENTIAL_RHO: f64 = 1.0;

/// Longest schedule we agree to build (guards `steps / denoise` against absurd inputs).
const MAX_STEPS: usize = 100_000;

/// The discrete noise table of an ε-prediction model: σ_t for t = 0…N−1 (ascending), their
/// logs, and the continuous range used by karras/exponential/polyexponential.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscreteSchedule {
    sigmas: Vec<f32>,
    log_sigmas: Vec<f32>,
    sigma_min: f64,
    sigma_max: f64,
}

impl DiscreteSchedule {
    /// SDXL's table: scaled-linear β from 0.00085 to 0.012 over 1000 steps (Fooocus' float64
    /// computation, cast to f32).
    pub fn sdxl() -> Self {
        Self::build_scaled_linear(SDXL_BETA_START, SDXL_BETA_END, SDXL_TIMESTEPS)
    }

    /// A "scaled_linear" table: β = linspace(√b0, √b1, n)², ᾱ = cumprod(1 − β),
    /// σ = √((1 − ᾱ)/ᾱ), all in f64, then cast to f32; log σ is the f32 log of the f32 σ.
    pub fn scaled_linear(beta_start: f64, beta_end: f64, n: usize) -> Result<Self> {
        let valid = |b: f64| b.is_finite() && b > 0.0 && b < 1.0;
        if n < 2 || !valid(beta_start) || !valid(beta_end) {
            return Err(SamplingError::InvalidTable(format!(
                "scaled_linear needs n ≥ 2 and betas in (0, 1), got n = {n}, \
                 betas {beta_start}..{beta_end}"
            )));
        }
        Ok(Self::build_scaled_linear(beta_start, beta_end, n))
    }

    fn build_scaled_linear(beta_start: f64, beta_end: f64, n: usize) -> Self {
        let mut alphas_cumprod = 1.0f64;
        let sigmas: Vec<f32> = linspace(beta_start.sqrt(), beta_end.sqrt(), n)
            .into_iter()
            .map(|b| {
                alphas_cumprod *= 1.0 - b * b;
                ((1.0 - alphas_cumprod) / alphas_cumprod).sqrt() as f32
            })
            .collect();
        let log_sigmas = sigmas.iter().map(|s| s.ln()).collect();
        Self::with_table_range(sigmas, log_sigmas)
    }

    /// A table given as data (e.g. read from a file). `log_sigmas` is kept as given, so that
    /// σ ↔ t matches the producer bit for bit.
    pub fn from_tables(sigmas: Vec<f32>, log_sigmas: Vec<f32>) -> Result<Self> {
        if sigmas.len() < 2 || sigmas.len() != log_sigmas.len() {
            return Err(SamplingError::InvalidTable(format!(
                "need at least 2 sigmas and as many log sigmas, got {} and {}",
                sigmas.len(),
                log_sigmas.len()
            )));
        }
        if let Some(bad) = sigmas.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(SamplingError::InvalidTable(format!(
                "every sigma must be finite and positive, found {bad}"
            )));
        }
        if let Some(bad) = log_sigmas.iter().find(|s| !s.is_finite()) {
            return Err(SamplingError::InvalidTable(format!(
                "every log sigma must be finite, found {bad}"
            )));
        }
        Ok(Self::with_table_range(sigmas, log_sigmas))
    }

    fn with_table_range(sigmas: Vec<f32>, log_sigmas: Vec<f32>) -> Self {
        let sigma_min = f64::from(sigmas.first().copied().unwrap_or_default());
        let sigma_max = f64::from(sigmas.last().copied().unwrap_or_default());
        Self {
            sigmas,
            log_sigmas,
            sigma_min,
            sigma_max,
        }
    }

    /// Replaces the continuous range used by karras, exponential and polyexponential (by
    /// default the table's ends, as Fooocus passes them).
    pub fn with_sigma_range(mut self, sigma_min: f64, sigma_max: f64) -> Result<Self> {
        if !(sigma_min.is_finite() && sigma_min > 0.0 && sigma_max.is_finite())
            || sigma_max < sigma_min
        {
            return Err(SamplingError::InvalidTable(format!(
                "sigma range must satisfy 0 < min ≤ max, got {sigma_min}..{sigma_max}"
            )));
        }
        self.sigma_min = sigma_min;
        self.sigma_max = sigma_max;
        Ok(self)
    }

    /// σ_t for t = 0…N−1.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// log σ_t for t = 0…N−1.
    pub fn log_sigmas(&self) -> &[f32] {
        &self.log_sigmas
    }

    /// N, the number of discrete timesteps.
    pub fn len(&self) -> usize {
        self.sigmas.len()
    }

    /// Always false: a table has at least two entries.
    pub fn is_empty(&self) -> bool {
        self.sigmas.is_empty()
    }

    /// Lower end of the continuous range.
    pub fn sigma_min(&self) -> f64 {
        self.sigma_min
    }

    /// Upper end of the continuous range.
    pub fn sigma_max(&self) -> f64 {
        self.sigma_max
    }

    /// The timestep the model sees for σ: the nearest table index in log space (first one on a
    /// tie), computed in f32 as Fooocus does.
    pub fn timestep(&self, sigma: f64) -> usize {
        let log_sigma = (sigma as f32).ln();
        let mut best = (0, f32::INFINITY);
        for (i, ls) in self.log_sigmas.iter().enumerate() {
            let dist = (log_sigma - ls).abs();
            if dist < best.1 {
                best = (i, dist);
            }
        }
        best.0
    }

    /// σ at a fractional timestep: t is clamped to [0, N−1], then
    /// log σ = (1 − w)·log σ_⌊t⌋ + w·log σ_⌈t⌉ with w = frac(t), all in f32.
    pub fn sigma_at(&self, t: f32) -> f32 {
        let last = self.log_sigmas.len() - 1;
        let t = t.clamp(0.0, last as f32);
        let w = t.fract();
        let low = (t.floor() as usize).min(last);
        let high = (t.ceil() as usize).min(last);
        let log_sigma = (1.0 - w) * self.log_sigmas[low] + w * self.log_sigmas[high];
        log_sigma.exp()
    }
}

/// The schedulers, by their Fooocus names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheduler {
    /// Karras et al. (ρ = 7) over the continuous range.
    Karras,
    /// Log-linear over the continuous range.
    Exponential,
    /// Polynomial in log σ (ρ = 1) over the continuous range.
    Polyexponential,
    /// Evenly spaced fractional timesteps from N−1 to 0.
    Normal,
    /// Every (N/n)-th table entry from the top.
    Simple,
    /// As `Normal` on n + 1 timesteps, the last dropped.
    SgmUniform,
    /// Every (N div n)-th table entry from index 1 (the count may differ from n).
    DdimUniform,
}

impl Scheduler {
    /// Every scheduler, in Fooocus' listing order (polyexponential last: Fooocus does not list
    /// it).
    pub const ALL: [Scheduler; 7] = [
        Scheduler::Normal,
        Scheduler::Karras,
        Scheduler::Exponential,
        Scheduler::SgmUniform,
        Scheduler::Simple,
        Scheduler::DdimUniform,
        Scheduler::Polyexponential,
    ];

    /// The Fooocus/ComfyUI name.
    pub fn name(self) -> &'static str {
        match self {
            Scheduler::Karras => "karras",
            Scheduler::Exponential => "exponential",
            Scheduler::Polyexponential => "polyexponential",
            Scheduler::Normal => "normal",
            Scheduler::Simple => "simple",
            Scheduler::SgmUniform => "sgm_uniform",
            Scheduler::DdimUniform => "ddim_uniform",
        }
    }

    /// The names of [`Scheduler::ALL`], for menus.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|s| s.name()).collect()
    }

    /// The schedule for `steps` requested steps, ending in 0.
    pub fn sigmas(self, table: &DiscreteSchedule, steps: usize) -> Result<Vec<f32>> {
        if steps == 0 || steps > MAX_STEPS {
            return Err(SamplingError::InvalidSchedule(format!(
                "the step count must be between 1 and {MAX_STEPS}, got {steps}"
            )));
        }
        let (lo, hi) = (table.sigma_min(), table.sigma_max());
        Ok(match self {
            Scheduler::Karras => karras(steps, lo, hi, KARRAS_RHO),
            Scheduler::Exponential => exponential(steps, lo, hi),
            Scheduler::Polyexponential => polyexponential(steps, lo, hi, POLYEXPONENTIAL_RHO),
            Scheduler::Normal => uniform_timesteps(table, steps, false),
            Scheduler::SgmUniform => uniform_timesteps(table, steps, true),
            Scheduler::Simple => simple(table, steps),
            Scheduler::DdimUniform => ddim_uniform(table, steps),
        })
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheduler {
    type Err = SamplingError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|sched| sched.name() == s)
            .ok_or_else(|| SamplingError::UnknownScheduler {
                name: s.to_owned(),
                known: Self::names().join(", "),
            })
    }
}

/// Fooocus' `calculate_sigmas`: the schedule for `steps` steps as `sampler` will run it.
///
/// * dpm_2 and dpm_2_ancestral get the schedule for `steps + 1` with the second-to-last sigma
///   dropped, so their last step jumps to 0.
/// * `denoise` ≤ 0.9999 (img2img, vary, upscale) computes ⌊steps/denoise⌋ steps and keeps the
///   last `steps + 1` sigmas.
pub fn calculate_sigmas(
    table: &DiscreteSchedule,
    scheduler: Scheduler,
    steps: usize,
    denoise: f64,
    sampler: Sampler,
) -> Result<Vec<f32>> {
    if !(denoise.is_finite() && denoise > 0.0) {
        return Err(SamplingError::InvalidSchedule(format!(
            "denoise must be a positive number, got {denoise}"
        )));
    }
    if denoise > 0.9999 {
        return all_sigmas(table, scheduler, steps, sampler);
    }
    let total = steps as f64 / denoise;
    if total > MAX_STEPS as f64 {
        return Err(SamplingError::InvalidSchedule(format!(
            "{steps} steps at denoise {denoise} would need {total:.0} steps"
        )));
    }
    let sigmas = all_sigmas(table, scheduler, total as usize, sampler)?;
    let skip = sigmas.len().saturating_sub(steps + 1);
    Ok(sigmas[skip..].to_vec())
}

fn all_sigmas(
    table: &DiscreteSchedule,
    scheduler: Scheduler,
    steps: usize,
    sampler: Sampler,
) -> Result<Vec<f32>> {
    if !sampler.discards_penultimate_sigma() {
        return scheduler.sigmas(table, steps);
    }
    let mut sigmas = scheduler.sigmas(table, steps + 1)?;
    // Python's `cat([s[:-2], s[-1:]])`: drop the second-to-last entry.
    let last = sigmas.pop().unwrap_or_default();
    sigmas.pop();
    sigmas.push(last);
    Ok(sigmas)
}

/// Karras et al.: σ_i = (σmax^(1/ρ) + r_i·(σmin^(1/ρ) − σmax^(1/ρ)))^ρ, r = linspace(0, 1, n),
/// then 0. Computed in f64 and rounded to f32 (k-diffusion computes in f32; the two agree to
/// ~1e-6 relative).
pub fn karras(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f32> {
    let min_inv_rho = sigma_min.powf(1.0 / rho);
    let max_inv_rho = sigma_max.powf(1.0 / rho);
    with_zero(
        linspace(0.0f64, 1.0, n)
            .into_iter()
            .map(|r| (max_inv_rho + r * (min_inv_rho - max_inv_rho)).powf(rho)),
    )
}

/// σ_i = exp(linspace(ln σmax, ln σmin, n)_i), then 0.
pub fn exponential(n: usize, sigma_min: f64, sigma_max: f64) -> Vec<f32> {
    with_zero(
        linspace(sigma_max.ln(), sigma_min.ln(), n)
            .into_iter()
            .map(f64::exp),
    )
}

/// σ_i = exp(r_i^ρ·(ln σmax − ln σmin) + ln σmin), r = linspace(1, 0, n), then 0.
pub fn polyexponential(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f32> {
    let (lo, hi) = (sigma_min.ln(), sigma_max.ln());
    with_zero(
        linspace(1.0f64, 0.0, n)
            .into_iter()
            .map(|r| (r.powf(rho) * (hi - lo) + lo).exp()),
    )
}

/// `normal` (sgm = false) and `sgm_uniform` (sgm = true): σ(t) at f32 timesteps evenly spaced
/// from t(table max) to t(table min).
fn uniform_timesteps(table: &DiscreteSchedule, n: usize, sgm: bool) -> Vec<f32> {
    let sigmas = table.sigmas();
    let start = table.timestep(f64::from(sigmas[sigmas.len() - 1])) as f32;
    let end = table.timestep(f64::from(sigmas[0])) as f32;
    let mut ts = linspace(start, end, if sgm { n + 1 } else { n });
    if sgm {
        ts.pop();
    }
    let mut out: Vec<f32> = ts.into_iter().map(|t| table.sigma_at(t)).collect();
    out.push(0.0);
    out
}

/// `simple`: σ_i = table[N − 1 − ⌊i·N/n⌋] with the product in f64, i = 0…n−1, then 0.
fn simple(table: &DiscreteSchedule, n: usize) -> Vec<f32> {
    let sigmas = table.sigmas();
    let len = sigmas.len();
    let step = len as f64 / n as f64;
    let mut out: Vec<f32> = (0..n)
        .map(|i| {
            let back = ((i as f64 * step) as usize).min(len - 1);
            sigmas[len - 1 - back]
        })
        .collect();
    out.push(0.0);
    out
}

/// `ddim_uniform`: table[1], table[1 + s], … (s = N div n, at least 1) while the index is
/// below N, in descending order, then 0.
fn ddim_uniform(table: &DiscreteSchedule, n: usize) -> Vec<f32> {
    let sigmas = table.sigmas();
    let step = (sigmas.len() / n).max(1);
    let mut out: Vec<f32> = sigmas.iter().skip(1).step_by(step).rev().copied().collect();
    out.push(0.0);
    out
}

fn with_zero(values: impl Iterator<Item = f64>) -> Vec<f32> {
    values
        .map(|v| v as f32)
        .chain(std::iter::once(0.0))
        .collect()
}

/// `torch.linspace` in the precision of `T` (f64 for the table and continuous schedules, f32
/// where torch computes in f32): step = (end − start)/(n − 1); the first half counts up from
/// `start`, the second half down from `end`.
fn linspace<T: num_traits::Float>(start: T, end: T, n: usize) -> Vec<T> {
    if n <= 1 {
        return vec![start; n];
    }
    let count = |k: usize| T::from(k).unwrap_or_else(T::zero);
    let step = (end - start) / count(n - 1);
    (0..n)
        .map(|i| {
            if i < n / 2 {
                start + step * count(i)
            } else {
                end - step * count(n - 1 - i)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdxl_table_ends() {
        let t = DiscreteSchedule::sdxl();
        assert_eq!(t.len(), 1000);
        assert!((t.sigmas()[0] - 0.029_167_158).abs() < 1e-9);
        assert!((t.sigmas()[999] - 14.614_641).abs() < 1e-5);
        assert_eq!(t.timestep(t.sigma_max()), 999);
        assert_eq!(t.timestep(t.sigma_min()), 0);
    }

    #[test]
    fn karras_values() {
        let s = karras(3, 0.1, 10.0, 7.0);
        let mid = ((0.1f64.powf(1.0 / 7.0) + 10.0f64.powf(1.0 / 7.0)) / 2.0).powi(7);
        assert_eq!(s.len(), 4);
        assert!((s[0] - 10.0).abs() < 1e-6 && (s[2] - 0.1).abs() < 1e-7 && s[3] == 0.0);
        assert!((f64::from(s[1]) - mid).abs() < 1e-6 * mid);
        assert_eq!(karras(1, 0.1, 10.0, 7.0), vec![10.0, 0.0]);
    }

    #[test]
    fn sigma_interpolates_in_log_space() {
        let t = DiscreteSchedule::sdxl();
        let ls = t.log_sigmas();
        assert_eq!(t.sigma_at(10.0), ls[10].exp());
        let want = (0.75 * ls[10] + 0.25 * ls[11]).exp();
        assert!((t.sigma_at(10.25) - want).abs() <= 1e-6 * want);
        assert_eq!(t.sigma_at(-3.0), ls[0].exp());
        assert_eq!(t.timestep(f64::from(t.sigma_at(500.4))), 500);
    }

    #[test]
    fn ddim_uniform_count_can_exceed_n() {
        let t = DiscreteSchedule::sdxl();
        let s = Scheduler::DdimUniform.sigmas(&t, 30).unwrap();
        assert_eq!(s.len(), 32); // 1, 34, …, 991: 31 sigmas + 0
        assert_eq!(s[0], t.sigmas()[991]);
        assert_eq!(s[30], t.sigmas()[1]);
    }

    #[test]
    fn dpm2_rule_and_partial_denoise() {
        let t = DiscreteSchedule::sdxl();
        let plain = Scheduler::Karras.sigmas(&t, 9).unwrap();
        let dpm2 = calculate_sigmas(&t, Scheduler::Karras, 8, 1.0, Sampler::Dpm2).unwrap();
        assert_eq!(dpm2.len(), 9);
        assert_eq!(&dpm2[..8], &plain[..8]);
        assert_eq!(dpm2[8], 0.0);
        let partial = calculate_sigmas(&t, Scheduler::Karras, 4, 0.5, Sampler::Euler).unwrap();
        let full = Scheduler::Karras.sigmas(&t, 8).unwrap();
        assert_eq!(partial, full[4..].to_vec());
        assert!(calculate_sigmas(&t, Scheduler::Karras, 4, 0.0, Sampler::Euler).is_err());
        assert!(Scheduler::Simple.sigmas(&t, 0).is_err());
    }

    #[test]
    fn names_round_trip() {
        for s in Scheduler::ALL {
            assert_eq!(s.name().parse::<Scheduler>().unwrap(), s);
        }
        assert!("turbo".parse::<Scheduler>().is_err());
    }

    #[test]
    fn bad_tables_are_rejected() {
        assert!(DiscreteSchedule::from_tables(vec![1.0], vec![0.0]).is_err());
        assert!(DiscreteSchedule::from_tables(vec![1.0, -1.0], vec![0.0, 0.0]).is_err());
        assert!(DiscreteSchedule::scaled_linear(0.1, 2.0, 10).is_err());
        assert!(DiscreteSchedule::sdxl().with_sigma_range(2.0, 1.0).is_err());
    }
}
