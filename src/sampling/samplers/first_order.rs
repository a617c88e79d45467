//! Update rules in σ-space: euler (and ddim), euler_ancestral, heun, dpm_2, dpm_2_ancestral and
//! lcm.

use candle_core::Tensor;

use super::{ancestral_step, euler_step, to_d, Cx, Step, UpdateRule};
use crate::sampling::error::Result;

/// The midpoint of a and b in log space, exp((ln a + ln b)/2).
fn log_midpoint(a: f64, b: f64) -> f64 {
    ((a.ln() + b.ln()) * 0.5).exp()
}

/// The DPM-Solver-2 step from σ to `target` through the log-midpoint: one extra model call.
fn dpm2_step(cx: &mut Cx<'_>, x: &Tensor, d: &Tensor, sigma: f64, target: f64) -> Result<Tensor> {
    let sigma_mid = log_midpoint(sigma, target);
    let x_2 = euler_step(x, d, sigma_mid - sigma)?;
    let denoised_2 = cx.denoise(&x_2, sigma_mid)?;
    let d_2 = to_d(&x_2, sigma_mid, &denoised_2)?;
    euler_step(x, &d_2, target - sigma)
}

/// Euler: x ← x + (x − x0)/σ · (σ_next − σ).
pub(super) struct Euler;

impl UpdateRule for Euler {
    fn update(&mut self, _: &mut Cx<'_>, s: &Step<'_>, x: Tensor, den: Tensor) -> Result<Tensor> {
        let d = to_d(&x, s.sigma, &den)?;
        euler_step(&x, &d, s.sigma_next - s.sigma)
    }
}

/// Euler to σ_down, then noise of size σ_up.
pub(super) struct EulerAncestral;

impl UpdateRule for EulerAncestral {
    fn update(&mut self, cx: &mut Cx<'_>, s: &Step<'_>, x: Tensor, den: Tensor) -> Result<Tensor> {
        let (down, up) = ancestral_step(s.sigma, s.sigma_next, cx.options.eta);
        let d = to_d(&x, s.sigma, &den)?;
        let x = euler_step(&x, &d, down - s.sigma)?;
        if s.sigma_next > 0.0 {
            let scale = cx.options.s_noise * up;
            return Ok((x + cx.noise(s.sigma, s.sigma_next, scale)?)?);
        }
        Ok(x)
    }
}

/// Heun: Euler predictor, trapezoidal corrector (plain Euler on the step to 0).
pub(super) struct Heun;

impl UpdateRule for Heun {
    fn update(&mut self, cx: &mut Cx<'_>, s: &Step<'_>, x: Tensor, den: Tensor) -> Result<Tensor> {
        let d = to_d(&x, s.sigma, &den)?;
        let dt = s.sigma_next - s.sigma;
        if s.sigma_next == 0.0 {
            return euler_step(&x, &d, dt);
        }
        let x_2 = euler_step(&x, &d, dt)?;
        let denoised_2 = cx.denoise(&x_2, s.sigma_next)?;
        let d_2 = to_d(&x_2, s.sigma_next, &denoised_2)?;
        let d_prime = ((d + d_2)? / 2.0)?;
        euler_step(&x, &d_prime, dt)
    }
}

/// DPM-Solver-2 (plain Euler on the step to 0).
pub(super) struct Dpm2;

impl UpdateRule for Dpm2 {
    fn update(&mut self, cx: &mut Cx<'_>, s: &Step<'_>, x: Tensor, den: Tensor) -> Result<Tensor> {
        let d = to_d(&x, s.sigma, &den)?;
        if s.sigma_next == 0.0 {
            return euler_step(&x, &d, s.sigma_next - s.sigma);
        }
        dpm2_step(cx, &x, &d, s.sigma, s.sigma_next)
    }
}

/// DPM-Solver-2 to σ_down, then noise of size σ_up (Euler and no noise when σ_down is 0).
pub(super) struct Dpm2Ancestral;

impl UpdateRule for Dpm2Ancestral {
    fn update(&mut self, cx: &mut Cx<'_>, s: &Step<'_>, x: Tensor, den: Tensor) -> Result<Tensor> {
        let (down, up) = ancestral_step(s.sigma, s.sigma_next, cx.options.eta);
        let d = to_d(&x, s.sigma, &den)?;
        if down == 0.0 {
            return euler_step(&x, &d, down - s.sigma);
        }
        let x = dpm2_step(cx, &x, &d, s.sigma, down)?;
        let scale = cx.options.s_noise * up;
        Ok((x + cx.noise(s.sigma, s.sigma_next, scale)?)?)
    }
}

/// LCM: x ← x0, plus fresh noise scaled to σ_next when σ_next > 0.
pub(super) struct Lcm;

impl UpdateRule for Lcm {
    fn update(&mut self, cx: &mut Cx<'_>, s: &Step<'_>, _: Tensor, den: Tensor) -> Result<Tensor> {
        if s.sigma_next > 0.0 {
            return Ok((den + cx.noise(s.sigma, s.sigma_next, s.sigma_next)?)?);
        }
        Ok(den)
    }
}
