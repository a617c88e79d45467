//! The two SDXL text encoders: CLIP-L (Hugging Face names, quick-GELU) and OpenCLIP-G (open_clip
//! names with a fused `in_proj`, exact GELU, and a `text_projection` applied as `x @ P`). Both
//! return the hidden state `clip_skip` layers from the end (2 = penultimate), without the final
//! norm; CLIP-G also returns the pooled, projected vector at the first end-of-text token.

use candle_core::DType;
use candle_core::{Module, Result, Tensor};
use candle_nn::{embedding, Embedding, LayerNorm};

use crate::nets::sdxl::shapes::{infer_clip, ClipConfig, ClipFlavor};
use crate::nn::activation::{gelu, quick_gelu};
use crate::nn::attention::multi_head;
use crate::nn::linear::{linear, Linear};
use crate::nn::norm::layer_norm;
use crate::nn::{Builder, Kernels};
use crate::weights::checkpoint::Checkpoint;
use crate::weights::network::Network;
use crate::weights::ModelError;

/// End-of-text token id; its first occurrence marks where the pooled vector is read.
pub const EOS_TOKEN: u32 = 49407;
const LAYER_NORM_EPS: f64 = 1e-5;

struct EncoderLayer {
    norm1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    kernels: Kernels,
}

impl EncoderLayer {
    fn load(vb: Builder, cfg: &ClipConfig, dtype: DType) -> Result<Self> {
        let c = cfg.hidden;
        let norm = |name: &str| layer_norm(c, LAYER_NORM_EPS, vb.pp(name), dtype);
        Ok(match cfg.flavor {
            ClipFlavor::HuggingFace => Self {
                norm1: norm("layer_norm1")?,
                q: linear(c, c, vb.pp("self_attn.q_proj"))?,
                k: linear(c, c, vb.pp("self_attn.k_proj"))?,
                v: linear(c, c, vb.pp("self_attn.v_proj"))?,
                out: linear(c, c, vb.pp("self_attn.out_proj"))?,
                norm2: norm("layer_norm2")?,
                fc1: linear(c, cfg.mlp, vb.pp("mlp.fc1"))?,
                fc2: linear(cfg.mlp, c, vb.pp("mlp.fc2"))?,
                kernels: vb.kernels(),
            },
            ClipFlavor::OpenClip => {
                let w = vb.get((3 * c, c), "attn.in_proj_weight")?;
                let b = vb.get(3 * c, "attn.in_proj_bias")?;
                let part = |i: usize| -> Result<Linear> {
                    Linear::new(
                        w.narrow(0, i * c, c)?,
                        Some(b.narrow(0, i * c, c)?),
                        vb.kernels(),
                    )
                };
                Self {
                    norm1: norm("ln_1")?,
                    q: part(0)?,
                    k: part(1)?,
                    v: part(2)?,
                    out: linear(c, c, vb.pp("attn.out_proj"))?,
                    norm2: norm("ln_2")?,
                    fc1: linear(c, cfg.mlp, vb.pp("mlp.c_fc"))?,
                    fc2: linear(cfg.mlp, c, vb.pp("mlp.c_proj"))?,
                    kernels: vb.kernels(),
                }
            }
        })
    }

    fn forward(&self, x: &Tensor, heads: usize, flavor: ClipFlavor) -> Result<Tensor> {
        let h = self.norm1.forward(x)?;
        let attn = multi_head(
            self.kernels,
            &self.q.forward(&h)?,
            &self.k.forward(&h)?,
            &self.v.forward(&h)?,
            heads,
            true,
        )?;
        let x = (x + self.out.forward(&attn)?)?;
        let h = self.fc1.forward(&self.norm2.forward(&x)?)?;
        let h = match flavor {
            ClipFlavor::HuggingFace => quick_gelu(self.kernels, &h)?,
            ClipFlavor::OpenClip => gelu(self.kernels, &h)?,
        };
        x + self.fc2.forward(&h)?
    }
}

/// What one forward pass gives.
#[derive(Debug, Clone)]
pub struct ClipOutput {
    /// `[B, T, C]`: the hidden state `clip_skip` layers from the end, without the final norm.
    pub hidden: Tensor,
    /// `[B, P]`: final norm at the first end-of-text token, projected (CLIP-G only).
    pub pooled: Option<Tensor>,
}

/// A CLIP text transformer as stored in an SDXL single file.
pub struct ClipTextModel {
    config: ClipConfig,
    token_embedding: Embedding,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_norm: LayerNorm,
    projection: Option<Tensor>,
}

impl ClipTextModel {
    /// Builds the encoder from `vb`, which must point at the encoder's prefix in the file, to
    /// compute in `compute` (f32 on the CPU with weights kept in f16; otherwise the weights'
    /// dtype).
    pub fn load(vb: Builder, config: &ClipConfig, compute: DType) -> Result<Self> {
        let c = config.hidden;
        let norm = |name: &str| layer_norm(c, LAYER_NORM_EPS, vb.pp(name), compute);
        let (token_embedding, position_embedding, layers_vb, final_norm) = match config.flavor {
            ClipFlavor::HuggingFace => (
                embedding(config.vocab, c, vb.pp("embeddings.token_embedding").vars())?,
                vb.get(
                    (config.positions, c),
                    "embeddings.position_embedding.weight",
                )?,
                vb.pp("encoder.layers"),
                norm("final_layer_norm")?,
            ),
            ClipFlavor::OpenClip => (
                embedding(config.vocab, c, vb.pp("token_embedding").vars())?,
                vb.get((config.positions, c), "positional_embedding")?,
                vb.pp("transformer.resblocks"),
                norm("ln_final")?,
            ),
        };
        let layers = (0..config.layers)
            .map(|i| EncoderLayer::load(layers_vb.pp(i), config, compute))
            .collect::<Result<Vec<_>>>()?;
        let projection = match config.projection {
            Some(p) => Some(vb.get((c, p), "text_projection")?.to_dtype(compute)?),
            None => None,
        };
        Ok(Self {
            config: config.clone(),
            token_embedding,
            position_embedding: position_embedding.to_dtype(compute)?,
            layers,
            final_norm,
            projection,
        })
    }

    /// The device the weights live on.
    pub fn device(&self) -> &candle_core::Device {
        self.position_embedding.device()
    }

    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// The dtype its linear weights are kept in (narrower than the compute dtype when lean).
    pub fn weight_dtype(&self) -> Option<DType> {
        self.layers.first().map(|l| l.fc1.weight_dtype())
    }

    /// Encodes `[B, T]` token ids (u32). `clip_skip` ≥ 1 picks the hidden state
    /// (`hidden_states[-clip_skip]` in Hugging Face terms; 1 = the last layer's output).
    pub fn forward(&self, ids: &Tensor, clip_skip: usize) -> Result<ClipOutput> {
        let depth = self.layers.len();
        if clip_skip == 0 || clip_skip > depth + 1 {
            candle_core::bail!(
                "CLIP skip {clip_skip} is out of range for a {depth}-layer text encoder (1..={})",
                depth + 1
            );
        }
        let wanted = depth + 1 - clip_skip;
        let (_, t) = ids.dims2()?;
        let positions = self.position_embedding.narrow(0, 0, t)?;
        let mut x = self
            .token_embedding
            .forward(ids)?
            .to_dtype(positions.dtype())?
            .broadcast_add(&positions)?;
        let last = if self.projection.is_some() {
            depth
        } else {
            wanted
        };
        let mut hidden = if wanted == 0 { Some(x.clone()) } else { None };
        for (i, layer) in self.layers.iter().take(last).enumerate() {
            x = layer.forward(&x, self.config.heads, self.config.flavor)?;
            if i + 1 == wanted {
                hidden = Some(x.clone());
            }
        }
        let hidden = match hidden {
            Some(h) => h,
            None => candle_core::bail!("CLIP hidden state {wanted} was not computed"),
        };
        let pooled = match &self.projection {
            Some(p) => {
                let normed = self.final_norm.forward(&x)?;
                let rows = eos_positions(ids)?
                    .into_iter()
                    .enumerate()
                    .map(|(b, pos)| normed.get(b)?.get(pos))
                    .collect::<Result<Vec<_>>>()?;
                Some(Tensor::stack(&rows, 0)?.matmul(p)?)
            }
            None => None,
        };
        Ok(ClipOutput { hidden, pooled })
    }

    /// The last layer's output after the final norm (`last_hidden_state`).
    pub fn last_hidden_state(&self, ids: &Tensor) -> Result<Tensor> {
        let out = self.forward(ids, 1)?;
        self.final_norm.forward(&out.hidden)
    }
}

/// Index of the first end-of-text token in each row (the last position when there is none).
fn eos_positions(ids: &Tensor) -> Result<Vec<usize>> {
    let rows = ids.to_dtype(candle_core::DType::U32)?.to_vec2::<u32>()?;
    Ok(rows
        .iter()
        .map(|r| {
            r.iter()
                .position(|&id| id == EOS_TOKEN)
                .unwrap_or(r.len().saturating_sub(1))
        })
        .collect())
}
/// Which CLIP of a file: its naming flavour, its prefix and its head size.
#[derive(Debug, Clone, Copy)]
pub struct ClipLayout {
    pub flavor: ClipFlavor,
    pub prefix: &'static str,
    pub head_dim: usize,
}

impl Network for ClipTextModel {
    type Config = ClipConfig;
    type Hints = ClipLayout;

    fn infer(ckpt: &Checkpoint, at: &ClipLayout) -> std::result::Result<ClipConfig, ModelError> {
        infer_clip(ckpt, at.flavor, at.prefix, at.head_dim)
    }

    fn prefix(config: &ClipConfig) -> &str {
        &config.prefix
    }

    fn build(vb: Builder, config: &ClipConfig, compute: DType) -> Result<Self> {
        Self::load(vb, config, compute)
    }
}
