//! k-diffusion sampling: sigma schedules, samplers written against a `Denoiser` trait, and seeded
//! noise streams. Knows nothing of UNets or Fooocus tricks.
//!
//! * [`schedule`]: the discrete SDXL table ([`DiscreteSchedule`]), σ ↔ timestep, the schedulers
//!   and Fooocus' `calculate_sigmas` rules.
//! * [`samplers`]: [`Sampler`] (by Fooocus name) run against a [`Denoiser`] and a
//!   [`NoiseSampler`], with a per-step callback that can stop the run.
//! * [`noise`]: the noise sources; [`torch_rng`]: PyTorch's CPU generator, so a seed gives
//!   Fooocus' initial noise.

mod avx_math;
mod error;
pub mod noise;
pub mod samplers;
pub mod schedule;
pub mod torch_rng;

pub use error::{Result, SamplingError};
pub use noise::{NoiseSampler, ReplayNoise, SeededNoise};
pub use samplers::{
    Denoiser, SampleOutcome, Sampler, SamplerOptions, SdeSolver, StepControl, StepState,
};
pub use schedule::{calculate_sigmas, DiscreteSchedule, Scheduler};
pub use torch_rng::TorchGenerator;
