//! Noise for sampling: the [`NoiseSampler`] trait the samplers draw from, the product's seeded
//! stream ([`SeededNoise`]) and a replay source for references ([`ReplayNoise`]).
//!
//! **Generator.** One [`TorchGenerator`] per image, seeded with the image seed: PyTorch's CPU
//! generator (MT19937 + `torch.randn`) reimplemented bit for bit (see [`super::torch_rng`]).
//! Its first draw, of the latent's shape, is exactly Fooocus' initial noise for that seed
//! (`torch.randn(shape, generator=torch.Generator().manual_seed(seed))`), so the same seed
//! starts from the same latent as Fooocus. Every later draw (one latent-shaped `randn` per
//! ancestral/SDE noise request) continues the same stream. Fooocus itself takes SDE noise from
//! a torchsde Brownian tree, which cannot be reproduced outside torchsde; its increments over
//! disjoint intervals are independent unit normals, which is what this stream gives. A run is
//! thus a pure function of the seed: one sequential stream, no platform RNG, no threads. Latent
//! draws (16 values or more) use only IEEE arithmetic (no libm), so they are the same on every
//! machine.

use candle_core::{bail, Device, Result, Shape, Tensor};

use super::torch_rng::TorchGenerator;

/// Where a sampler gets its unit-normal noise: one latent-shaped tensor per request, for the
/// step from `sigma` to `sigma_next` (k-diffusion's `noise_sampler(sigma, sigma_next)`).
pub trait NoiseSampler {
    /// The next unit-normal tensor, shaped like the latent.
    fn sample(&mut self, sigma: f64, sigma_next: f64) -> Result<Tensor>;
}

/// The product's noise: one seeded torch-compatible stream per image.
#[derive(Debug, Clone)]
pub struct SeededNoise {
    rng: TorchGenerator,
    shape: Shape,
    device: Device,
}

impl SeededNoise {
    /// A stream for one image of the given latent shape, e.g. `(1, 4, h, w)`.
    pub fn new(seed: u64, shape: impl Into<Shape>, device: &Device) -> Self {
        Self {
            rng: TorchGenerator::new(seed),
            shape: shape.into(),
            device: device.clone(),
        }
    }

    /// The next latent-shaped `torch.randn` draw. The first call gives the initial noise.
    pub fn randn(&mut self) -> Result<Tensor> {
        let values = self.rng.randn(self.shape.elem_count());
        Tensor::from_vec(values, self.shape.clone(), &self.device)
    }
}

impl NoiseSampler for SeededNoise {
    fn sample(&mut self, _sigma: f64, _sigma_next: f64) -> Result<Tensor> {
        self.randn()
    }
}

/// Replays stored noise: row j of a `[k, ...]` stack answers the j-th request. The arguments of
/// every request are kept, so a test can check them against the reference's.
#[derive(Debug, Clone)]
pub struct ReplayNoise {
    stack: Tensor,
    calls: Vec<(f64, f64)>,
}

impl ReplayNoise {
    /// Replays the rows of `stack` (first dimension = draws) in order.
    pub fn new(stack: Tensor) -> Self {
        Self {
            stack,
            calls: Vec::new(),
        }
    }

    /// The (sigma, sigma_next) arguments of every request so far.
    pub fn calls(&self) -> &[(f64, f64)] {
        &self.calls
    }
}

impl NoiseSampler for ReplayNoise {
    fn sample(&mut self, sigma: f64, sigma_next: f64) -> Result<Tensor> {
        let index = self.calls.len();
        let available = self.stack.dim(0)?;
        if index >= available {
            bail!("stored noise exhausted: request {index} for σ {sigma} → {sigma_next}, but only {available} rows were stored");
        }
        self.calls.push((sigma, sigma_next));
        self.stack.get(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fooocus_dir() -> PathBuf {
        std::env::var_os("FOOOCUS_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny-sdxl"))
            .join("fooocus")
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// The fixture's `noise` = torch.randn([1,4,h,w], generator=manual_seed(seed)) and
    /// `sde_noise` = the next randn([steps,1,4,h,w]) of the same generator: reproduced bit for
    /// bit.
    #[test]
    fn reproduces_fooocus_initial_and_sde_noise() {
        let dir = fooocus_dir();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("fooocus.json")).unwrap())
                .unwrap();
        let seed = json["seed"].as_u64().unwrap();
        let steps = json["sampling"]["steps"].as_u64().unwrap() as usize;
        let tensors =
            candle_core::safetensors::load(dir.join("fooocus_sample.safetensors"), &Device::Cpu)
                .unwrap();
        let noise = &tensors["noise"];
        let sde = &tensors["sde_noise"];

        let mut stream = SeededNoise::new(seed, noise.shape().clone(), &Device::Cpu);
        assert_eq!(values(&stream.randn().unwrap()), values(noise));

        // sde_noise was drawn as one randn of [steps, ...]; its stored rows are a prefix.
        let rows = sde.dim(0).unwrap();
        let all = stream.rng.randn(steps * noise.elem_count());
        assert_eq!(all[..sde.elem_count()], values(sde)[..]);
        assert_eq!(rows * noise.elem_count(), sde.elem_count());
    }

    #[test]
    fn replay_checks_exhaustion() {
        let stack = Tensor::zeros((1, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let mut replay = ReplayNoise::new(stack);
        assert!(replay.sample(2.0, 1.0).is_ok());
        assert!(replay.sample(1.0, 0.5).is_err());
        assert_eq!(replay.calls(), &[(2.0, 1.0)]);
    }
}
