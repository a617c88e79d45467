//! Fooocus' guidance of one denoiser call: CFG on ε with the sharpness filter mixed into the
//! positive branch, and CFG mimicking (a blend of CFG at the mimic scale early and the real CFG
//! late) when the guidance scale exceeds the mimic value.

use candle_core::{Result, Tensor};

use super::sharpness::{anisotropic_filter, FilterShape};

/// The guidance settings of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guidance {
    /// Classifier-free guidance scale (Fooocus default 7).
    pub cfg: f64,
    /// CFG mimicking scale ("adaptive CFG", default 7): active when `cfg` exceeds it.
    pub mimic: f64,
    /// Sharpness (default 2): the filter's weight is 0.001 · sharpness · progress.
    pub sharpness: f64,
}

/// What one guided call computes (the intermediate terms are kept for previews and tests).
#[derive(Debug, Clone)]
pub struct Guided {
    /// F(e_c), when the filter ran (its weight was positive).
    pub eps_cond_filtered: Option<Tensor>,
    pub eps_final: Tensor,
    /// The guided x0 handed to the sampler.
    pub denoised: Tensor,
}

/// The last discrete timestep of SDXL's schedule.
pub const LAST_TIMESTEP: f64 = 999.0;

/// Progress of a call: 1 − t/999 for the quantized timestep t, in f32 as Fooocus computes it.
pub fn progress(t: f64) -> f32 {
    1.0 - t as f32 / LAST_TIMESTEP as f32
}

impl Guidance {
    /// Guides one call from the conditional and unconditional x0 at `x`, timestep `t`.
    pub fn apply(
        &self,
        x: &Tensor,
        t: f64,
        x0_cond: &Tensor,
        x0_uncond: &Tensor,
    ) -> Result<Guided> {
        let p = progress(t);
        let alpha = 0.001f32 * self.sharpness as f32 * p;
        let e_c = (x - x0_cond)?;
        let e_u = (x - x0_uncond)?;
        let (e_c, eps_cond_filtered) = if alpha > 0.0 {
            let filtered = anisotropic_filter(&e_c, x0_cond, FilterShape::default())?;
            let mixed = ((&filtered * alpha as f64)? + (&e_c * (1.0 - alpha) as f64)?)?;
            (mixed, Some(filtered))
        } else {
            (e_c, None)
        };
        let delta = (&e_c - &e_u)?;
        let real = (&e_u + (&delta * self.cfg)?)?;
        let eps_final = if self.cfg > self.mimic {
            let mimicked = (&e_u + (&delta * self.mimic)?)?;
            ((real * p as f64)? + (mimicked * (1.0 - p) as f64)?)?
        } else {
            real
        };
        let denoised = (x - &eps_final)?;
        Ok(Guided {
            eps_cond_filtered,
            eps_final,
            denoised,
        })
    }
}
