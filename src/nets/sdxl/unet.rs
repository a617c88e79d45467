//! The SDXL UNet (base and refiner, or any SGM-layout UNet with ADM conditioning), built block by
//! block from the inferred configuration and named as in the single file (`input_blocks.N.M`,
//! `middle_block`, `output_blocks`, `label_emb`). The forward takes the `y` vector directly, so
//! the pipeline decides the size conditioning (negative ADM guidance needs that).

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::LayerNorm;

use crate::nets::sdxl::shapes::{infer_unet, UnetConfig, UnetLayer};
use crate::nn::activation::geglu;
use crate::nn::attention::multi_head;
use crate::nn::conv::{conv, Conv};
use crate::nn::linear::{linear, linear_no_bias, Linear};
use crate::nn::norm::{group_norm, layer_norm, GroupNorm};
use crate::nn::{Builder, Kernels};
use crate::weights::checkpoint::{Checkpoint, UNET_PREFIX};
use crate::weights::network::Network;
use crate::weights::ModelError;

const GROUPS: usize = 32;
const RES_NORM_EPS: f64 = 1e-5;
const TRANSFORMER_NORM_EPS: f64 = 1e-6;
const LAYER_NORM_EPS: f64 = 1e-5;

/// `[B] → [B, dim]` sinusoids `[cos(v·f_k) | sin(v·f_k)]`, f_k = 10000^(−k/(dim/2)), in f32:
/// the UNet's timestep embedding and each size id of `y`.
pub fn sinusoidal_embedding(values: &Tensor, dim: usize) -> Result<Tensor> {
    let half = dim / 2;
    let device = values.device();
    let freqs: Vec<f32> = (0..half)
        .map(|k| (-(10000f32.ln()) * k as f32 / half as f32).exp())
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), device)?;
    let args = values
        .to_dtype(DType::F32)?
        .unsqueeze(1)?
        .broadcast_mul(&freqs)?;
    Tensor::cat(&[args.cos()?, args.sin()?], 1)
}

/// Builds the ADM vector `y = [pooled | emb(id_0) | … | emb(id_n)]` from `[B, P]` pooled vectors
/// and `[B, n]` size ids (6 for the base, 5 for the refiner).
pub fn adm_vector(pooled: &Tensor, time_ids: &Tensor, id_dim: usize) -> Result<Tensor> {
    let (b, n) = time_ids.dims2()?;
    let flat = time_ids.to_dtype(DType::F32)?.flatten_all()?;
    let embedded = sinusoidal_embedding(&flat, id_dim)?.reshape((b, n * id_dim))?;
    Tensor::cat(&[&pooled.to_dtype(DType::F32)?, &embedded], 1)
}

fn conv3x3(vb: Builder, cin: usize, cout: usize, stride: usize) -> Result<Conv> {
    conv(vb, cin, cout, 3, stride, 1)
}

struct ResBlock {
    in_norm: GroupNorm,
    in_conv: Conv,
    emb: Linear,
    out_norm: GroupNorm,
    out_conv: Conv,
    skip: Option<Conv>,
}

impl ResBlock {
    fn load(vb: Builder, cin: usize, cout: usize, emb_dim: usize) -> Result<Self> {
        let skip = if cin != cout {
            Some(conv(vb.pp("skip_connection"), cin, cout, 1, 1, 0)?)
        } else {
            None
        };
        Ok(Self {
            in_norm: group_norm(GROUPS, cin, RES_NORM_EPS, vb.pp("in_layers.0"))?,
            in_conv: conv3x3(vb.pp("in_layers.2"), cin, cout, 1)?,
            emb: linear(emb_dim, cout, vb.pp("emb_layers.1"))?,
            out_norm: group_norm(GROUPS, cout, RES_NORM_EPS, vb.pp("out_layers.0"))?,
            out_conv: conv3x3(vb.pp("out_layers.3"), cout, cout, 1)?,
            skip,
        })
    }

    fn forward(&self, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let h = self.in_conv.forward(&self.in_norm.forward_act(x, true)?)?;
        let e = self.emb.forward(&emb.silu()?)?.unsqueeze(2)?.unsqueeze(3)?;
        let h = h.broadcast_add(&e)?;
        let h = self
            .out_conv
            .forward(&self.out_norm.forward_act(&h, true)?)?;
        match &self.skip {
            Some(skip) => skip.forward(x)? + h,
            None => x + h,
        }
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    kernels: Kernels,
}

impl Attention {
    fn load(vb: Builder, channels: usize, context: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            q: linear_no_bias(channels, channels, vb.pp("to_q"))?,
            k: linear_no_bias(context, channels, vb.pp("to_k"))?,
            v: linear_no_bias(context, channels, vb.pp("to_v"))?,
            out: linear(channels, channels, vb.pp("to_out.0"))?,
            heads,
            kernels: vb.kernels(),
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let q = self.q.forward(x)?;
        let k = self.k.forward(context)?;
        let v = self.v.forward(context)?;
        self.out
            .forward(&multi_head(self.kernels, &q, &k, &v, self.heads, false)?)
    }
}

struct TransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
    kernels: Kernels,
}

impl TransformerBlock {
    fn load(
        vb: Builder,
        channels: usize,
        context: usize,
        heads: usize,
        dtype: DType,
    ) -> Result<Self> {
        let inner = 4 * channels;
        let norm = |name: &str| layer_norm(channels, LAYER_NORM_EPS, vb.pp(name), dtype);
        Ok(Self {
            norm1: norm("norm1")?,
            attn1: Attention::load(vb.pp("attn1"), channels, channels, heads)?,
            norm2: norm("norm2")?,
            attn2: Attention::load(vb.pp("attn2"), channels, context, heads)?,
            norm3: norm("norm3")?,
            ff_in: linear(channels, 2 * inner, vb.pp("ff.net.0.proj"))?,
            ff_out: linear(inner, channels, vb.pp("ff.net.2"))?,
            kernels: vb.kernels(),
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let h = self.norm1.forward(x)?;
        let x = (x + self.attn1.forward(&h, &h)?)?;
        let x = (&x + self.attn2.forward(&self.norm2.forward(&x)?, context)?)?;
        let h = geglu(self.kernels, &self.ff_in.forward(&self.norm3.forward(&x)?)?)?;
        x + self.ff_out.forward(&h)?
    }
}

struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Linear,
    blocks: Vec<TransformerBlock>,
    proj_out: Linear,
}

impl SpatialTransformer {
    fn load(
        vb: Builder,
        channels: usize,
        depth: usize,
        cfg: &UnetConfig,
        dtype: DType,
    ) -> Result<Self> {
        let heads = channels / cfg.head_dim;
        let blocks = (0..depth)
            .map(|i| {
                TransformerBlock::load(
                    vb.pp("transformer_blocks").pp(i),
                    channels,
                    cfg.context_dim,
                    heads,
                    dtype,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: group_norm(GROUPS, channels, TRANSFORMER_NORM_EPS, vb.pp("norm"))?,
            proj_in: linear(channels, channels, vb.pp("proj_in"))?,
            blocks,
            proj_out: linear(channels, channels, vb.pp("proj_out"))?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let tokens = self
            .norm
            .forward(x)?
            .flatten_from(2)?
            .transpose(1, 2)?
            .contiguous()?;
        let mut t = self.proj_in.forward(&tokens)?;
        for block in &self.blocks {
            t = block.forward(&t, context)?;
        }
        let t = self.proj_out.forward(&t)?;
        let t = t.transpose(1, 2)?.reshape((b, c, h, w))?;
        x + t
    }
}

enum Layer {
    ConvIn(Conv),
    Res(Box<ResBlock>),
    Attn(SpatialTransformer),
    Down(Conv),
    Up(Conv),
}

impl Layer {
    fn load(vb: Builder, layer: &UnetLayer, cfg: &UnetConfig, dtype: DType) -> Result<Self> {
        Ok(match *layer {
            UnetLayer::ConvIn { out_ch } => Layer::ConvIn(conv3x3(vb, cfg.in_channels, out_ch, 1)?),
            UnetLayer::Res { in_ch, out_ch } => Layer::Res(Box::new(ResBlock::load(
                vb,
                in_ch,
                out_ch,
                cfg.time_embed_dim,
            )?)),
            UnetLayer::Attn { channels, depth } => {
                Layer::Attn(SpatialTransformer::load(vb, channels, depth, cfg, dtype)?)
            }
            UnetLayer::Down { channels } => {
                Layer::Down(conv3x3(vb.pp("op"), channels, channels, 2)?)
            }
            UnetLayer::Up { channels } => Layer::Up(conv3x3(vb.pp("conv"), channels, channels, 1)?),
        })
    }

    /// `up_to`: the (height, width) an upsampling layer brings `x` to (the next skip
    /// connection's size); `None` is twice `x`'s.
    fn forward(
        &self,
        x: &Tensor,
        emb: &Tensor,
        context: &Tensor,
        up_to: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        match self {
            Layer::ConvIn(conv) | Layer::Down(conv) => conv.forward(x),
            Layer::Res(res) => res.forward(x, emb),
            Layer::Attn(attn) => attn.forward(x, context),
            Layer::Up(conv) => {
                let (_, _, h, w) = x.dims4()?;
                match up_to {
                    Some(size) if size != (2 * h, 2 * w) => {
                        conv.forward(&x.upsample_nearest2d(size.0, size.1)?)
                    }
                    _ => conv.forward_upsampled(x),
                }
            }
        }
    }
}

struct Block(Vec<Layer>);

impl Block {
    fn load(vb: Builder, layers: &[UnetLayer], cfg: &UnetConfig, dtype: DType) -> Result<Self> {
        let layers = layers
            .iter()
            .enumerate()
            .map(|(j, l)| Layer::load(vb.pp(j), l, cfg, dtype))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self(layers))
    }

    fn forward(
        &self,
        x: &Tensor,
        emb: &Tensor,
        context: &Tensor,
        up_to: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        self.0
            .iter()
            .try_fold(x.clone(), |h, layer| layer.forward(&h, emb, context, up_to))
    }
}

/// An SGM-layout UNet with ADM (`label_emb`) conditioning.
pub struct UNet {
    config: UnetConfig,
    /// The dtype it computes in, which the inputs are cast to (the weights may be stored
    /// narrower and are widened layer by layer).
    dtype: DType,
    time_embed: (Linear, Linear),
    label_emb: (Linear, Linear),
    input_blocks: Vec<Block>,
    middle_block: Block,
    output_blocks: Vec<Block>,
    out_norm: GroupNorm,
    out_conv: Conv,
}

impl UNet {
    /// Builds the UNet from `vb`, which must point at `model.diffusion_model`, to compute in
    /// `compute` (f32 on the CPU with weights kept in f16; otherwise the weights' dtype).
    pub fn load(vb: Builder, config: &UnetConfig, compute: DType) -> Result<Self> {
        let mc = config.model_channels;
        let ted = config.time_embed_dim;
        let blocks = |name: &str, list: &[Vec<UnetLayer>]| -> Result<Vec<Block>> {
            list.iter()
                .enumerate()
                .map(|(i, layers)| Block::load(vb.pp(name).pp(i), layers, config, compute))
                .collect()
        };
        let last_width = config
            .output_blocks
            .last()
            .and_then(|b| {
                b.iter().find_map(|l| match l {
                    UnetLayer::Res { out_ch, .. } => Some(*out_ch),
                    _ => None,
                })
            })
            .unwrap_or(mc);
        Ok(Self {
            time_embed: (
                linear(mc, ted, vb.pp("time_embed.0"))?,
                linear(ted, ted, vb.pp("time_embed.2"))?,
            ),
            label_emb: (
                linear(config.adm_in_channels, ted, vb.pp("label_emb.0.0"))?,
                linear(ted, ted, vb.pp("label_emb.0.2"))?,
            ),
            input_blocks: blocks("input_blocks", &config.input_blocks)?,
            middle_block: Block::load(
                vb.pp("middle_block"),
                &config.middle_block,
                config,
                compute,
            )?,
            output_blocks: blocks("output_blocks", &config.output_blocks)?,
            out_norm: group_norm(GROUPS, last_width, RES_NORM_EPS, vb.pp("out.0"))?,
            out_conv: conv3x3(vb.pp("out.2"), last_width, config.out_channels, 1)?,
            config: config.clone(),
            dtype: compute,
        })
    }

    pub fn config(&self) -> &UnetConfig {
        &self.config
    }

    /// The dtype its convolution and linear weights are kept in (narrower than the compute dtype
    /// when lean).
    pub fn weight_dtype(&self) -> DType {
        self.out_conv.weight().dtype()
    }

    /// Predicts ε for `x` `[B, 4, h, w]` at (possibly fractional) timesteps `[B]`, with
    /// cross-attention `context` `[B, T, C]` and ADM vector `y` `[B, adm]`. Inputs of any float
    /// dtype are cast to the compute dtype; ε comes back in that dtype.
    pub fn forward(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        y: &Tensor,
    ) -> Result<Tensor> {
        self.forward_with_residuals(x, timesteps, context, y, &Residuals::default())
    }

    /// [`UNet::forward`] with `residuals` added inside: to the output of each input block that
    /// has one (and so to its skip connection) and to the middle block's output, as candle's
    /// `forward_with_additional_residuals` does (ControlNets; Fooocus' inpaint head adds its
    /// features to the first input block's output).
    pub fn forward_with_residuals(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        y: &Tensor,
        residuals: &Residuals<'_>,
    ) -> Result<Tensor> {
        if residuals.input.len() > self.input_blocks.len() {
            candle_core::bail!(
                "{} input residuals for a UNet of {} input blocks",
                residuals.input.len(),
                self.input_blocks.len()
            );
        }
        let dtype = self.dtype;
        let t_emb = sinusoidal_embedding(timesteps, self.config.model_channels)?.to_dtype(dtype)?;
        let emb = self
            .time_embed
            .1
            .forward(&self.time_embed.0.forward(&t_emb)?.silu()?)?;
        let label = self
            .label_emb
            .1
            .forward(&self.label_emb.0.forward(&y.to_dtype(dtype)?)?.silu()?)?;
        let emb = (emb + label)?;
        let context = context.to_dtype(dtype)?;
        let mut skips = Vec::with_capacity(self.input_blocks.len());
        let mut h = x.to_dtype(dtype)?;
        for (i, block) in self.input_blocks.iter().enumerate() {
            h = block.forward(&h, &emb, &context, None)?;
            if let Some(Some(extra)) = residuals.input.get(i) {
                h = (h + extra.to_dtype(dtype)?)?;
            }
            skips.push(h.clone());
        }
        h = self.middle_block.forward(&h, &emb, &context, None)?;
        if let Some(extra) = residuals.middle {
            h = (h + extra.to_dtype(dtype)?)?;
        }
        for block in &self.output_blocks {
            let Some(skip) = skips.pop() else {
                candle_core::bail!("UNet has more output blocks than input blocks");
            };
            // A side that is not a multiple of the downsampling factor was rounded up on the way
            // down; upsampling goes to the next skip's size (nearest, as diffusers and ComfyUI).
            let up_to = match skips.last() {
                Some(next) => Some((next.dim(2)?, next.dim(3)?)),
                None => None,
            };
            h = block.forward(&Tensor::cat(&[&h, &skip], 1)?, &emb, &context, up_to)?;
        }
        self.out_conv.forward(&self.out_norm.forward_act(&h, true)?)
    }
}

/// Residuals added inside a UNet's forward pass (see [`UNet::forward_with_residuals`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Residuals<'a> {
    /// Added to the output of input block `i` where `input[i]` is given (shaped as that output).
    pub input: &'a [Option<Tensor>],
    /// Added to the middle block's output.
    pub middle: Option<&'a Tensor>,
}

impl Network for UNet {
    type Config = UnetConfig;
    /// The head size.
    type Hints = usize;

    fn infer(ckpt: &Checkpoint, head_dim: &usize) -> std::result::Result<UnetConfig, ModelError> {
        infer_unet(ckpt, *head_dim)
    }

    fn prefix(_: &UnetConfig) -> &str {
        UNET_PREFIX
    }

    fn build(vb: Builder, config: &UnetConfig, compute: DType) -> Result<Self> {
        Self::load(vb, config, compute)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Fractional timesteps embed exactly as the formula says (the sampler may pass them).
    #[test]
    fn fractional_timesteps_embed_by_the_formula() -> Result<()> {
        let t = [0.0f32, 250.5, 999.25];
        let emb = sinusoidal_embedding(&Tensor::new(&t, &Device::Cpu)?, 8)?.to_vec2::<f32>()?;
        for (row, &v) in emb.iter().zip(&t) {
            for k in 0..4 {
                let f = (-(10000f32.ln()) * k as f32 / 4.0).exp();
                assert!((row[k] - (v * f).cos()).abs() < 1e-5);
                assert!((row[4 + k] - (v * f).sin()).abs() < 1e-5);
            }
        }
        Ok(())
    }
}
