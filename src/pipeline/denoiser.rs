//! The model function Fooocus hands the sampler: σ → quantized timestep, ε-prediction UNet run on
//! the conditional and unconditional rows in one batch, x0 = x − σ·ε, then [`Guidance`]. The base
//! model's ADM vector switches from the emphasized to the consistent sizes late in sampling
//! (negative ADM guidance), and the refiner takes over below the switch σ with its own
//! conditioning while the sampler keeps its history (the joint swap).

use candle_core::{Result, Tensor};

use super::guidance::{Guidance, LAST_TIMESTEP};
use super::models::unets::CachedUnet;
use crate::nets::sdxl::unet::UNet;
use crate::sampling::{Denoiser, DiscreteSchedule};

/// The ADM (`y`) rows of one model, `[2, adm]` (row 0 positive, row 1 negative).
#[derive(Debug, Clone)]
pub enum Adm {
    /// The same vector at every step.
    Fixed(Tensor),
    /// Negative ADM guidance: `emphasized` while t > `threshold`, `consistent` after.
    Switched {
        emphasized: Tensor,
        consistent: Tensor,
        threshold: f64,
    },
}

impl Adm {
    /// Fooocus' switch: emphasized sizes while t > 999·(1 − end).
    pub fn switched(emphasized: Tensor, consistent: Tensor, end: f64) -> Self {
        Adm::Switched {
            emphasized,
            consistent,
            threshold: LAST_TIMESTEP * (1.0 - end),
        }
    }

    fn at(&self, t: f64) -> &Tensor {
        match self {
            Adm::Fixed(y) => y,
            Adm::Switched {
                emphasized,
                consistent,
                threshold,
            } => {
                if t > *threshold {
                    emphasized
                } else {
                    consistent
                }
            }
        }
    }
}

/// The UNet a stage evaluates.
pub enum UnetRef<'a> {
    /// Built for the whole run.
    Resident(&'a UNet),
    /// Taken from the network cache at each call, built there when it is not resident.
    Cached(CachedUnet<'a>),
}

impl<'a> From<&'a UNet> for UnetRef<'a> {
    fn from(unet: &'a UNet) -> Self {
        UnetRef::Resident(unet)
    }
}

impl UnetRef<'_> {
    fn forward(&self, x: &Tensor, t: &Tensor, context: &Tensor, y: &Tensor) -> Result<Tensor> {
        match self {
            UnetRef::Resident(unet) => unet.forward(x, t, context, y),
            UnetRef::Cached(unet) => unet
                .get()
                .map_err(candle_core::Error::wrap)?
                .forward(x, t, context, y),
        }
    }
}

/// One model with its conditioning.
pub struct Stage<'a> {
    pub unet: UnetRef<'a>,
    /// `[2, T, C]`: positive and negative context, padded to the same length.
    pub context: Tensor,
    pub adm: Adm,
}

/// What one call computed, for previews and tests.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub sigma: f64,
    pub t: f64,
    /// 0 for the base, 1 for the refiner.
    pub model: usize,
    pub x0_cond: Tensor,
    pub x0_uncond: Tensor,
    pub denoised: Tensor,
}

/// Fooocus' guided denoiser over a base and an optional refiner.
pub struct FooocusDenoiser<'a> {
    pub base: Stage<'a>,
    /// The refiner and the σ below which it replaces the base.
    pub refiner: Option<(Stage<'a>, f64)>,
    pub schedule: &'a DiscreteSchedule,
    pub guidance: Guidance,
    /// Model evaluations so far: [base, refiner].
    pub evaluations: [usize; 2],
    /// Every call's record, when `record` is set (tests and debugging).
    pub calls: Vec<CallRecord>,
    pub record: bool,
}

impl<'a> FooocusDenoiser<'a> {
    pub fn new(base: Stage<'a>, schedule: &'a DiscreteSchedule, guidance: Guidance) -> Self {
        Self {
            base,
            refiner: None,
            schedule,
            guidance,
            evaluations: [0, 0],
            calls: Vec::new(),
            record: false,
        }
    }

    /// Hands over to `refiner` for every call whose σ is below `switch_sigma` (the σ of the
    /// switch step: the base still evaluates that step).
    pub fn with_refiner(mut self, refiner: Stage<'a>, switch_sigma: f64) -> Self {
        self.refiner = Some((refiner, switch_sigma));
        self
    }

    fn stage(&self, sigma: f64) -> (&Stage<'a>, usize) {
        match &self.refiner {
            Some((refiner, switch)) if sigma < *switch => (refiner, 1),
            _ => (&self.base, 0),
        }
    }
}

impl Denoiser for FooocusDenoiser<'_> {
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let t = self.schedule.timestep(sigma) as f64;
        let (stage, model) = self.stage(sigma);
        let b = x.dim(0)?;
        let x_in = (x / (sigma * sigma + 1.0).sqrt())?;
        let y = stage.adm.at(t);
        let skip_uncond = self.guidance.cfg == 1.0;
        let rows = if skip_uncond { 1 } else { 2 };
        let pick = |t: &Tensor| -> Result<Tensor> {
            let kept = t.narrow(0, 0, rows)?;
            // Each conditioning row serves the whole latent batch: [c, c, …, u, u, …].
            let (_, rest) = kept.dims().split_at(1);
            let mut shape = vec![rows, b];
            shape.extend_from_slice(rest);
            let mut flat = vec![rows * b];
            flat.extend_from_slice(rest);
            kept.unsqueeze(1)?.broadcast_as(shape)?.reshape(flat)
        };
        let x_batch = Tensor::cat(&vec![&x_in; rows], 0)?;
        let timesteps = Tensor::full(t as f32, rows * b, x.device())?;
        let eps = stage
            .unet
            .forward(&x_batch, &timesteps, &pick(&stage.context)?, &pick(y)?)?
            .to_dtype(x.dtype())?;
        let x_rows = Tensor::cat(&vec![x; rows], 0)?;
        let x0 = (x_rows - (eps * sigma)?)?;
        let x0_cond = x0.narrow(0, 0, b)?;
        let x0_uncond = if skip_uncond {
            x0_cond.clone()
        } else {
            x0.narrow(0, b, b)?
        };
        let guided = self.guidance.apply(x, t, &x0_cond, &x0_uncond)?;
        self.evaluations[model] += 1;
        if self.record {
            self.calls.push(CallRecord {
                sigma,
                t,
                model,
                x0_cond,
                x0_uncond,
                denoised: guided.denoised.clone(),
            });
        }
        Ok(guided.denoised)
    }
}

/// Stacks positive and negative contexts `[1, T_c, C]`, `[1, T_u, C]` into `[2, T, C]`,
/// repeating each to the least common multiple of their lengths (repeating all keys of an
/// attention uniformly leaves its result unchanged).
pub fn pair_contexts(cond: &Tensor, uncond: &Tensor) -> Result<Tensor> {
    let (tc, tu) = (cond.dim(1)?, uncond.dim(1)?);
    let lcm = tc / gcd(tc, tu) * tu;
    let cond = cond.repeat((1, lcm / tc, 1))?;
    let uncond = uncond.repeat((1, lcm / tu, 1))?;
    Tensor::cat(&[cond, uncond], 0)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a.max(1)
    } else {
        gcd(b, a % b)
    }
}
