//! RRDBNet (ESRGAN): a first convolution, `blocks` residual-in-residual dense blocks and a trunk
//! convolution added back to the first features, then per 2× stage a nearest upsample and a
//! convolution, an HR convolution and the last one; LeakyReLU(0.2) after every convolution but
//! the dense blocks' fifth, the trunk and the first and last. A dense block convolves the
//! concatenation of its input and every earlier output (growth `gc` channels each) and returns
//! `0.2·conv5 + x`; an RRDB chains three and returns `0.2·out + x`.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

use super::keys::{RrdbConfig, UpscalerWeights};
use crate::nn::conv::{conv, Conv};
use crate::nn::tiling::{tiled_scale, Tiles};
use crate::nn::{Builder, Kernels};

const SLOPE: f64 = 0.2;
const RESIDUAL: f64 = 0.2;

fn leaky_relu(x: &Tensor) -> Result<Tensor> {
    x.maximum(&(x * SLOPE)?)
}

fn conv3(vb: Builder, cin: usize, cout: usize) -> Result<Conv> {
    conv(vb, cin, cout, 3, 1, 1)
}

struct DenseBlock {
    convs: Vec<Conv>,
}

impl DenseBlock {
    fn load(vb: Builder, c: &RrdbConfig) -> Result<Self> {
        let convs = (0..5)
            .map(|k| {
                let cout = if k == 4 { c.features } else { c.growth };
                conv3(
                    vb.pp(format!("conv{}.0", k + 1)),
                    c.features + k * c.growth,
                    cout,
                )
            })
            .collect::<Result<_>>()?;
        Ok(Self { convs })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut features = vec![x.clone()];
        for (k, conv) in self.convs.iter().enumerate() {
            let input = Tensor::cat(&features, 1)?;
            let out = conv.forward(&input)?;
            if k == 4 {
                return (out * RESIDUAL)? + x;
            }
            features.push(leaky_relu(&out)?);
        }
        candle_core::bail!("a dense block has five convolutions")
    }
}

struct ResidualInResidual {
    dense: Vec<DenseBlock>,
}

impl ResidualInResidual {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for d in &self.dense {
            h = d.forward(&h)?;
        }
        (h * RESIDUAL)? + x
    }
}

/// The network; see the module documentation.
pub struct Rrdb {
    config: RrdbConfig,
    first: Conv,
    blocks: Vec<ResidualInResidual>,
    trunk: Conv,
    stages: Vec<Conv>,
    hr: Conv,
    last: Conv,
}

impl Rrdb {
    /// Builds the network from old-layout weights on `device`, in f32.
    pub fn new(weights: UpscalerWeights, device: &Device, kernels: Kernels) -> Result<Self> {
        let tensors: HashMap<String, Tensor> = weights
            .tensors
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_device(device)?)))
            .collect::<Result<_>>()?;
        let vb = Builder::new(
            VarBuilder::from_tensors(tensors, DType::F32, device),
            kernels,
        );
        Self::load(vb, weights.config)
    }

    /// Builds the network of `c` from `vb`, which holds the old-layout names.
    pub fn load(vb: Builder, c: RrdbConfig) -> Result<Self> {
        let body = vb.pp("model.1.sub");
        let blocks = (0..c.blocks)
            .map(|i| {
                let dense = (1..=3)
                    .map(|j| DenseBlock::load(body.pp(format!("{i}.RDB{j}")), &c))
                    .collect::<Result<_>>()?;
                Ok(ResidualInResidual { dense })
            })
            .collect::<Result<_>>()?;
        let stage_count = c.scale.trailing_zeros() as usize;
        let nf = c.features;
        Ok(Self {
            first: conv3(vb.pp("model.0"), c.in_channels, nf)?,
            blocks,
            trunk: conv3(body.pp(c.blocks), nf, nf)?,
            stages: (1..=stage_count)
                .map(|u| conv3(vb.pp(format!("model.{}", 3 * u)), nf, nf))
                .collect::<Result<_>>()?,
            hr: conv3(vb.pp(format!("model.{}", 3 * stage_count + 2)), nf, nf)?,
            last: conv3(
                vb.pp(format!("model.{}", 3 * stage_count + 4)),
                nf,
                c.out_channels,
            )?,
            config: c,
        })
    }

    pub fn config(&self) -> &RrdbConfig {
        &self.config
    }

    /// `[B, in, H, W]` → `[B, out, scale·H, scale·W]`, not clamped.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let features = self.first.forward(&x.to_dtype(DType::F32)?)?;
        let mut h = features.clone();
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        h = (self.trunk.forward(&h)? + features)?;
        for stage in &self.stages {
            h = leaky_relu(&stage.forward_upsampled(&h)?)?;
        }
        h = leaky_relu(&self.hr.forward(&h)?)?;
        self.last.forward(&h)
    }

    /// [`Rrdb::forward`] over `tiles` (Fooocus: 512-pixel squares overlapping by 32), blended
    /// by `nn::tiling`.
    pub fn upscale_tiled(&self, x: &Tensor, tiles: Tiles) -> Result<Tensor> {
        tiled_scale(x, tiles, self.config.scale as f64, |t| self.forward(t))
    }
}
