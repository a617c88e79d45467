//! DPM-Solver++ update rules in log-σ time (t = −ln σ): dpmpp_2s_ancestral, dpmpp_sde,
//! dpmpp_2m, dpmpp_2m_sde (midpoint and Heun) and dpmpp_3m_sde.
//!
//! dpmpp_2m_sde and dpmpp_3m_sde follow Fooocus' copies: their step size starts unset, so a
//! one-step run (the first step already ends at 0) returns D(x_init, σ_0) after one call and no
//! noise, where k-diffusion 0.1.1 raises.

use candle_core::Tensor;

use super::{ancestral_step, euler_step, lin2, to_d, Cx, SdeSolver, Step, UpdateRule};
use crate::sampling::error::Result;

/// t = −ln σ.
fn t_of(sigma: f64) -> f64 {
    -sigma.ln()
}

/// σ = e^(−t).
fn sigma_of(t: f64) -> f64 {
    (-t).exp()
}

/// DPM-Solver++(2S) to σ_down through the log-midpoint, then noise of size σ_up.
pub(super) struct Dpmpp2sAncestral;

impl UpdateRule for Dpmpp2sAncestral {
    fn update(&mut self, cx: &mut Cx<'_>, s: &Step<'_>, x: Tensor, den: Tensor) -> Result<Tensor> {
        let (down, up) = ancestral_step(s.sigma, s.sigma_next, cx.options.eta);
        let x = if down == 0.0 {
            let d = to_d(&x, s.sigma, &den)?;
            euler_step(&x, &d, down - s.sigma)?
        } else {
            let (t, t_next) = (t_of(s.sigma), t_of(down));
            let r = 0.5;
            let h = t_next - t;
            let s_mid = t + r * h;
            let sigma_s = sigma_of(s_mid);
            let x_2 = lin2(&x, sigma_s / s.sigma, &den, -(-h * r).exp_m1())?;
            let denoised_2 = cx.denoise(&x_2, sigma_s)?;
            lin2(&x, down / s.sigma, &denoised_2, -(-h).exp_m1())?
        };
        if s.sigma_next > 0.0 {
            let scale = cx.options.s_noise * up;
            return Ok((x + cx.noise(s.sigma, s.sigma_next, scale)?)?);
        }
        Ok(x)
    }
}

/// DPM-Solver++ SDE: an ancestral half step to the intermediate σ_s = e^(−(t + r·h)) with its
/// own noise, then the full step with the mixed x0 and fresh noise (two draws per step).
pub(super) struct DpmppSde;

impl UpdateRule for DpmppSde {
    fn update(&mut self, cx: &mut Cx<'_>, s: &Step<'_>, x: Tensor, den: Tensor) -> Result<Tensor> {
        if s.sigma_next == 0.0 {
            let d = to_d(&x, s.sigma, &den)?;
            return euler_step(&x, &d, s.sigma_next - s.sigma);
        }
        let eta = cx.options.eta;
        let s_noise = cx.options.s_noise;
        let r = cx.options.r;
        let (t, t_next) = (t_of(s.sigma), t_of(s.sigma_next));
        let h = t_next - t;
        let s_mid = t + h * r;
        let fac = 1.0 / (2.0 * r);

        let sigma_s = sigma_of(s_mid);
        let (sd, su) = ancestral_step(s.sigma, sigma_s, eta);
        let s_ = t_of(sd);
        let x_2 = lin2(&x, sd / s.sigma, &den, -(t - s_).exp_m1())?;
        let x_2 = (x_2 + cx.noise(s.sigma, sigma_s, s_noise * su)?)?;
        let denoised_2 = cx.denoise(&x_2, sigma_s)?;

        let (sd, su) = ancestral_step(s.sigma, s.sigma_next, eta);
        let t_next_ = t_of(sd);
        let denoised_d = lin2(&den, 1.0 - fac, &denoised_2, fac)?;
        let x = lin2(&x, sd / s.sigma, &denoised_d, -(t - t_next_).exp_m1())?;
        Ok((x + cx.noise(s.sigma, s.sigma_next, s_noise * su)?)?)
    }
}

/// DPM-Solver++(2M): second order from the previous x0 (first order on the first and last
/// steps).
#[derive(Default)]
pub(super) struct Dpmpp2m {
    old_denoised: Option<Tensor>,
    h_last: Option<f64>,
}

impl UpdateRule for Dpmpp2m {
    fn update(&mut self, _: &mut Cx<'_>, s: &Step<'_>, x: Tensor, den: Tensor) -> Result<Tensor> {
        let (t, t_next) = (t_of(s.sigma), t_of(s.sigma_next));
        let h = t_next - t;
        let ratio = sigma_of(t_next) / sigma_of(t);
        let x = match (&self.old_denoised, self.h_last) {
            (Some(old), Some(h_last)) if s.sigma_next != 0.0 => {
                let r = h_last / h;
                let c = 1.0 / (2.0 * r);
                let denoised_d = lin2(&den, 1.0 + c, old, -c)?;
                lin2(&x, ratio, &denoised_d, -(-h).exp_m1())?
            }
            _ => lin2(&x, ratio, &den, -(-h).exp_m1())?,
        };
        // h_last of the next step is t_{i+1} − t_i, i.e. this step's h.
        self.h_last = Some(h);
        self.old_denoised = Some(den);
        Ok(x)
    }
}

/// DPM-Solver++(2M) SDE.
pub(super) struct Dpmpp2mSde {
    solver: SdeSolver,
    old_denoised: Option<Tensor>,
    /// The last step size computed (Fooocus starts it unset).
    h: Option<f64>,
}

impl Dpmpp2mSde {
    pub(super) fn new(solver: SdeSolver) -> Self {
        Self {
            solver,
            old_denoised: None,
            h: None,
        }
    }
}

impl UpdateRule for Dpmpp2mSde {
    fn update(&mut self, cx: &mut Cx<'_>, s: &Step<'_>, x: Tensor, den: Tensor) -> Result<Tensor> {
        let h_last = self.h;
        let old_denoised = self.old_denoised.replace(den.clone());
        if s.sigma_next == 0.0 {
            return Ok(den);
        }
        let eta = cx.options.eta;
        let h = t_of(s.sigma_next) - t_of(s.sigma);
        self.h = Some(h);
        let eta_h = eta * h;
        let one_minus = -(-h - eta_h).exp_m1();
        let decay = s.sigma_next / s.sigma * (-eta_h).exp();
        let mut x = lin2(&x, decay, &den, one_minus)?;
        if let (Some(old), Some(h_last)) = (old_denoised, h_last) {
            let r = h_last / h;
            let coeff = match self.solver {
                SdeSolver::Midpoint => 0.5 * one_minus * (1.0 / r),
                SdeSolver::Heun => (one_minus / (-h - eta_h) + 1.0) * (1.0 / r),
            };
            x = (x + (den - old)?.affine(coeff, 0.0)?)?;
        }
        if eta != 0.0 {
            let scale = s.sigma_next * (-(-2.0 * eta_h).exp_m1()).sqrt() * cx.options.s_noise;
            x = (x + cx.noise(s.sigma, s.sigma_next, scale)?)?;
        }
        Ok(x)
    }
}

/// DPM-Solver++(3M) SDE.
#[derive(Default)]
pub(super) struct Dpmpp3mSde {
    denoised_1: Option<Tensor>,
    denoised_2: Option<Tensor>,
    /// The last step size computed (Fooocus starts it unset).
    h: Option<f64>,
    h_1: Option<f64>,
    h_2: Option<f64>,
}

impl Dpmpp3mSde {
    /// The multistep correction from the previous one or two x0.
    fn correction(&self, den: &Tensor, h: f64, h_eta: f64) -> Result<Option<Tensor>> {
        let phi_2 = (-h_eta).exp_m1() / h_eta + 1.0;
        match (&self.denoised_1, &self.denoised_2, self.h_1, self.h_2) {
            (Some(den_1), Some(den_2), Some(h_1), Some(h_2)) => {
                let (r0, r1) = (h_1 / h, h_2 / h);
                let d1_0 = ((den - den_1)? / r0)?;
                let d1_1 = ((den_1 - den_2)? / r1)?;
                let diff = (&d1_0 - &d1_1)?;
                let d1 = (&d1_0 + diff.affine(r0 / (r0 + r1), 0.0)?)?;
                let d2 = (diff / (r0 + r1))?;
                let phi_3 = phi_2 / h_eta - 0.5;
                Ok(Some(lin2(&d1, phi_2, &d2, -phi_3)?))
            }
            (Some(den_1), _, Some(h_1), _) => {
                let r = h_1 / h;
                let d = ((den - den_1)? / r)?;
                Ok(Some(d.affine(phi_2, 0.0)?))
            }
            _ => Ok(None),
        }
    }

    fn shift_history(&mut self, den: Tensor) {
        self.denoised_2 = self.denoised_1.replace(den);
        self.h_2 = self.h_1;
        self.h_1 = self.h;
    }
}

impl UpdateRule for Dpmpp3mSde {
    fn update(&mut self, cx: &mut Cx<'_>, s: &Step<'_>, x: Tensor, den: Tensor) -> Result<Tensor> {
        if s.sigma_next == 0.0 {
            self.shift_history(den.clone());
            return Ok(den);
        }
        let eta = cx.options.eta;
        let h = t_of(s.sigma_next) - t_of(s.sigma);
        let h_eta = h * (eta + 1.0);
        let mut x = lin2(&x, (-h_eta).exp(), &den, -(-h_eta).exp_m1())?;
        if let Some(corr) = self.correction(&den, h, h_eta)? {
            x = (x + corr)?;
        }
        if eta != 0.0 {
            let scale = s.sigma_next * (-(-2.0 * h * eta).exp_m1()).sqrt() * cx.options.s_noise;
            x = (x + cx.noise(s.sigma, s.sigma_next, scale)?)?;
        }
        self.h = Some(h);
        self.shift_history(den);
        Ok(x)
    }
}
