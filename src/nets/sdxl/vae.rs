//! The SDXL VAE in LDM names (`encoder.down.N.block.M`, `decoder.up.N`, `mid.attn_1` with 1×1-conv
//! attention weights): decode and encode, with the SDXL latent scale 0.13025.

use candle_core::{DType, Module, Result, Tensor};

use crate::nets::sdxl::shapes::{infer_vae, VaeConfig};
use crate::nn::attention::heads_attention;
use crate::nn::conv::{conv, Conv};
use crate::nn::norm::{group_norm, GroupNorm};
use crate::nn::{Builder, Kernels};
use crate::weights::checkpoint::{Checkpoint, VAE_PREFIX};
use crate::weights::network::Network;
use crate::weights::ModelError;

/// SDXL's latent scale factor: model latents are `encoder mean · 0.13025`.
pub const SDXL_SCALE_FACTOR: f64 = 0.13025;
/// Pixels per latent cell along each axis.
pub const VAE_FACTOR: usize = 8;

const GROUPS: usize = 32;
const NORM_EPS: f64 = 1e-6;

struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv,
    norm2: GroupNorm,
    conv2: Conv,
    shortcut: Option<Conv>,
}

impl ResnetBlock {
    fn load(vb: Builder, cin: usize, cout: usize) -> Result<Self> {
        let shortcut = if cin != cout {
            Some(conv(vb.pp("nin_shortcut"), cin, cout, 1, 1, 0)?)
        } else {
            None
        };
        Ok(Self {
            norm1: group_norm(GROUPS, cin, NORM_EPS, vb.pp("norm1"))?,
            conv1: conv(vb.pp("conv1"), cin, cout, 3, 1, 1)?,
            norm2: group_norm(GROUPS, cout, NORM_EPS, vb.pp("norm2"))?,
            conv2: conv(vb.pp("conv2"), cout, cout, 3, 1, 1)?,
            shortcut,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_act(x, true)?)?;
        let h = self.conv2.forward(&self.norm2.forward_act(&h, true)?)?;
        match &self.shortcut {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

/// Single-head self-attention over all pixels; q/k/v/proj_out are 1×1 convolutions.
struct AttnBlock {
    norm: GroupNorm,
    q: Conv,
    k: Conv,
    v: Conv,
    proj_out: Conv,
    kernels: Kernels,
}

impl AttnBlock {
    fn load(vb: Builder, c: usize) -> Result<Self> {
        Ok(Self {
            norm: group_norm(GROUPS, c, NORM_EPS, vb.pp("norm"))?,
            q: conv(vb.pp("q"), c, c, 1, 1, 0)?,
            k: conv(vb.pp("k"), c, c, 1, 1, 0)?,
            v: conv(vb.pp("v"), c, c, 1, 1, 0)?,
            proj_out: conv(vb.pp("proj_out"), c, c, 1, 1, 0)?,
            kernels: vb.kernels(),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let n = self.norm.forward(x)?;
        let tokens = |t: Tensor| -> Result<Tensor> { t.reshape((b, 1, c, h * w))?.transpose(2, 3) };
        let q = tokens(self.q.forward(&n)?)?;
        let k = tokens(self.k.forward(&n)?)?;
        let v = tokens(self.v.forward(&n)?)?;
        let out = heads_attention(self.kernels, &q, &k, &v, false)?;
        let out = out.transpose(2, 3)?.reshape((b, c, h, w))?;
        x + self.proj_out.forward(&out)?
    }
}

struct Mid {
    block_1: ResnetBlock,
    attn_1: AttnBlock,
    block_2: ResnetBlock,
}

impl Mid {
    fn load(vb: Builder, c: usize) -> Result<Self> {
        Ok(Self {
            block_1: ResnetBlock::load(vb.pp("block_1"), c, c)?,
            attn_1: AttnBlock::load(vb.pp("attn_1"), c)?,
            block_2: ResnetBlock::load(vb.pp("block_2"), c, c)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.block_2
            .forward(&self.attn_1.forward(&self.block_1.forward(x)?)?)
    }
}

struct Level {
    blocks: Vec<ResnetBlock>,
    resample: Option<Conv>,
}

struct Encoder {
    conv_in: Conv,
    levels: Vec<Level>,
    mid: Mid,
    norm_out: GroupNorm,
    conv_out: Conv,
}

impl Encoder {
    fn load(vb: Builder, cfg: &VaeConfig) -> Result<Self> {
        let first = cfg.channels.first().copied().unwrap_or(0);
        let last = cfg.channels.last().copied().unwrap_or(0);
        let mut cin = first;
        let mut levels = Vec::with_capacity(cfg.channels.len());
        for (i, &cout) in cfg.channels.iter().enumerate() {
            let vb_level = vb.pp("down").pp(i);
            let blocks = (0..cfg.encoder_res_blocks)
                .map(|j| {
                    let block_in = if j == 0 { cin } else { cout };
                    ResnetBlock::load(vb_level.pp("block").pp(j), block_in, cout)
                })
                .collect::<Result<Vec<_>>>()?;
            let resample = if i + 1 < cfg.channels.len() {
                Some(conv(vb_level.pp("downsample.conv"), cout, cout, 3, 2, 0)?)
            } else {
                None
            };
            levels.push(Level { blocks, resample });
            cin = cout;
        }
        Ok(Self {
            conv_in: conv(vb.pp("conv_in"), cfg.in_channels, first, 3, 1, 1)?,
            levels,
            mid: Mid::load(vb.pp("mid"), last)?,
            norm_out: group_norm(GROUPS, last, NORM_EPS, vb.pp("norm_out"))?,
            conv_out: conv(vb.pp("conv_out"), last, 2 * cfg.z_channels, 3, 1, 1)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for level in &self.levels {
            for block in &level.blocks {
                h = block.forward(&h)?;
            }
            if let Some(down) = &level.resample {
                // LDM pads right and bottom by one before the stride-2 convolution.
                h = down.forward(&h.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?)?;
            }
        }
        let h = self.mid.forward(&h)?;
        self.conv_out.forward(&self.norm_out.forward_act(&h, true)?)
    }
}

struct Decoder {
    conv_in: Conv,
    mid: Mid,
    /// Levels from the deepest (`up.{n-1}`) to the shallowest (`up.0`).
    levels: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv,
}

impl Decoder {
    fn load(vb: Builder, cfg: &VaeConfig) -> Result<Self> {
        let first = cfg.channels.first().copied().unwrap_or(0);
        let last = cfg.channels.last().copied().unwrap_or(0);
        let mut cin = last;
        let mut levels = Vec::with_capacity(cfg.channels.len());
        for (i, &cout) in cfg.channels.iter().enumerate().rev() {
            let vb_level = vb.pp("up").pp(i);
            let blocks = (0..cfg.decoder_res_blocks)
                .map(|j| {
                    let block_in = if j == 0 { cin } else { cout };
                    ResnetBlock::load(vb_level.pp("block").pp(j), block_in, cout)
                })
                .collect::<Result<Vec<_>>>()?;
            let resample = if i > 0 {
                Some(conv(vb_level.pp("upsample.conv"), cout, cout, 3, 1, 1)?)
            } else {
                None
            };
            levels.push(Level { blocks, resample });
            cin = cout;
        }
        Ok(Self {
            conv_in: conv(vb.pp("conv_in"), cfg.z_channels, last, 3, 1, 1)?,
            mid: Mid::load(vb.pp("mid"), last)?,
            levels,
            norm_out: group_norm(GROUPS, first, NORM_EPS, vb.pp("norm_out"))?,
            conv_out: conv(vb.pp("conv_out"), first, cfg.in_channels, 3, 1, 1)?,
        })
    }

    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let mut h = self.mid.forward(&self.conv_in.forward(z)?)?;
        for level in &self.levels {
            for block in &level.blocks {
                h = block.forward(&h)?;
            }
            if let Some(up) = &level.resample {
                h = up.forward_upsampled(&h)?;
            }
        }
        self.conv_out.forward(&self.norm_out.forward_act(&h, true)?)
    }
}

/// The posterior of an encoded image.
#[derive(Debug, Clone)]
pub struct Posterior {
    pub mean: Tensor,
    /// Log-variance, clamped to [−30, 20] as in LDM.
    pub logvar: Tensor,
}

/// The autoencoder of an SDXL single file.
pub struct Vae {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Conv,
    post_quant_conv: Conv,
    embed_dim: usize,
}

impl Vae {
    /// Builds the VAE from `vb`, which must point at `first_stage_model`.
    pub fn load(vb: Builder, cfg: &VaeConfig) -> Result<Self> {
        let z2 = 2 * cfg.z_channels;
        let e2 = 2 * cfg.embed_dim;
        Ok(Self {
            encoder: Encoder::load(vb.pp("encoder"), cfg)?,
            decoder: Decoder::load(vb.pp("decoder"), cfg)?,
            quant_conv: conv(vb.pp("quant_conv"), z2, e2, 1, 1, 0)?,
            post_quant_conv: conv(
                vb.pp("post_quant_conv"),
                cfg.embed_dim,
                cfg.z_channels,
                1,
                1,
                0,
            )?,
            embed_dim: cfg.embed_dim,
        })
    }

    /// Decodes a decoder-space latent (model latent / scale) to an image in about [−1, 1],
    /// not clamped, computed in the VAE's dtype and returned as f32.
    pub fn decode_raw(&self, z: &Tensor) -> Result<Tensor> {
        let dtype = self.post_quant_conv.weight().dtype();
        let z = self.post_quant_conv.forward(&z.to_dtype(dtype)?)?;
        self.decoder.forward(&z)?.to_dtype(DType::F32)
    }

    /// Decodes a model-space latent (as the sampler produces it).
    pub fn decode(&self, latent: &Tensor) -> Result<Tensor> {
        self.decode_raw(&(latent / SDXL_SCALE_FACTOR)?)
    }

    /// Encodes an image in [−1, 1] `[B, 3, H, W]` to its posterior.
    pub fn encode_posterior(&self, image: &Tensor) -> Result<Posterior> {
        let dtype = self.post_quant_conv.weight().dtype();
        let moments = self
            .quant_conv
            .forward(&self.encoder.forward(&image.to_dtype(dtype)?)?)?
            .to_dtype(DType::F32)?;
        let mean = moments.narrow(1, 0, self.embed_dim)?;
        let logvar = moments
            .narrow(1, self.embed_dim, self.embed_dim)?
            .clamp(-30f32, 20f32)?;
        Ok(Posterior { mean, logvar })
    }

    /// Encodes an image to a model-space latent (the posterior mean · scale).
    pub fn encode(&self, image: &Tensor) -> Result<Tensor> {
        self.encode_posterior(image)?.mean * SDXL_SCALE_FACTOR
    }
}
impl Network for Vae {
    type Config = VaeConfig;
    type Hints = ();

    fn infer(ckpt: &Checkpoint, _: &()) -> std::result::Result<VaeConfig, ModelError> {
        infer_vae(ckpt)
    }

    fn prefix(_: &VaeConfig) -> &str {
        VAE_PREFIX
    }

    /// Always in f32, whatever `compute` (the SDXL VAE overflows in f16).
    fn build(vb: Builder, config: &VaeConfig, _compute: DType) -> Result<Self> {
        Self::load(vb, config)
    }
}
