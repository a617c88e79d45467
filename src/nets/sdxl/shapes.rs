//! Network configurations inferred from tensor shapes: the text encoders, the UNet (any number
//! of levels, depths and widths, read block by block from the keys) and the VAE. Head sizes are
//! not visible in the weights: they default to SDXL's 64 and can be overridden.

use crate::weights::checkpoint::{
    Architecture, Checkpoint, CLIP_G_BASE_PREFIX, CLIP_G_REFINER_PREFIX, CLIP_L_PREFIX,
    UNET_PREFIX, VAE_PREFIX,
};
use crate::weights::ModelError;

/// Attention head widths (channels per head) of each network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadDims {
    pub clip_l: usize,
    pub clip_g: usize,
    pub unet: usize,
}

impl Default for HeadDims {
    fn default() -> Self {
        Self {
            clip_l: 64,
            clip_g: 64,
            unet: 64,
        }
    }
}

/// Which naming scheme a text encoder uses in the single file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipFlavor {
    /// Hugging Face `CLIPTextModel` names (SDXL's CLIP-L), quick-GELU.
    HuggingFace,
    /// open_clip names with a fused `in_proj` and `text_projection` (SDXL's CLIP-G), exact GELU.
    OpenClip,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipConfig {
    pub flavor: ClipFlavor,
    pub prefix: String,
    pub vocab: usize,
    pub positions: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub mlp: usize,
    /// Width of the pooled projection (open_clip only).
    pub projection: Option<usize>,
}

/// One layer inside a UNet block (`TimestepEmbedSequential` in SGM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnetLayer {
    /// `input_blocks.0.0`: the input convolution.
    ConvIn {
        out_ch: usize,
    },
    Res {
        in_ch: usize,
        out_ch: usize,
    },
    Attn {
        channels: usize,
        depth: usize,
    },
    Down {
        channels: usize,
    },
    Up {
        channels: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub model_channels: usize,
    pub time_embed_dim: usize,
    pub adm_in_channels: usize,
    pub context_dim: usize,
    pub head_dim: usize,
    pub input_blocks: Vec<Vec<UnetLayer>>,
    pub middle_block: Vec<UnetLayer>,
    pub output_blocks: Vec<Vec<UnetLayer>>,
}

impl UnetConfig {
    /// Channel width of each level, in order (SGM `model_channels · channel_mult`).
    pub fn level_channels(&self) -> Vec<usize> {
        self.levels().into_iter().map(|(c, _)| c).collect()
    }

    /// Transformer depth of each level (0 where the level has no attention).
    pub fn transformer_depths(&self) -> Vec<usize> {
        self.levels().into_iter().map(|(_, d)| d).collect()
    }

    /// Transformer depth of the middle block.
    pub fn middle_depth(&self) -> usize {
        self.middle_block
            .iter()
            .find_map(|l| match l {
                UnetLayer::Attn { depth, .. } => Some(*depth),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// (width, depth) per level of the down path; a level ends at each downsampler.
    fn levels(&self) -> Vec<(usize, usize)> {
        let mut levels = vec![(0, 0)];
        for block in self.input_blocks.iter().skip(1) {
            for layer in block {
                let Some(current) = levels.last_mut() else {
                    continue;
                };
                match *layer {
                    UnetLayer::Res { out_ch, .. } => current.0 = out_ch,
                    UnetLayer::Attn { depth, .. } => current.1 = current.1.max(depth),
                    UnetLayer::Down { .. } => levels.push((0, 0)),
                    _ => {}
                }
            }
        }
        levels
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaeConfig {
    pub in_channels: usize,
    /// Encoder level widths (the decoder mirrors them).
    pub channels: Vec<usize>,
    pub encoder_res_blocks: usize,
    pub decoder_res_blocks: usize,
    pub z_channels: usize,
    pub embed_dim: usize,
}

/// Everything needed to build the networks of one SDXL single file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdxlConfig {
    pub architecture: Architecture,
    pub clip_l: Option<ClipConfig>,
    pub clip_g: ClipConfig,
    pub unet: UnetConfig,
    pub vae: VaeConfig,
    /// Width of each size/aesthetic id's sinusoid in `y` (256 in SDXL).
    pub time_id_dim: usize,
    /// Number of ids in `y`: 6 for the base, 5 for the refiner.
    pub time_ids: usize,
}

struct Shapes<'a> {
    ckpt: &'a Checkpoint,
}

impl Shapes<'_> {
    fn dim(&self, name: &str, axis: usize) -> Result<usize, ModelError> {
        self.ckpt
            .shape(name)
            .and_then(|s| s.get(axis).copied())
            .ok_or_else(|| ModelError::MissingTensors {
                path: self.ckpt.path().to_path_buf(),
                names: vec![name.to_string()],
            })
    }
}

impl SdxlConfig {
    /// Infers every network's configuration of an SDXL file. Anything that is not SDXL is refused
    /// with what it looks like.
    pub fn infer(ckpt: &Checkpoint, heads: HeadDims) -> Result<Self, ModelError> {
        let architecture = ckpt.architecture();
        let (clip_l, clip_g_prefix, time_ids) = match architecture {
            Architecture::SdxlBase => (
                Some(infer_clip(
                    ckpt,
                    ClipFlavor::HuggingFace,
                    CLIP_L_PREFIX,
                    heads.clip_l,
                )?),
                CLIP_G_BASE_PREFIX,
                6,
            ),
            Architecture::SdxlRefiner => (None, CLIP_G_REFINER_PREFIX, 5),
            other => {
                return Err(ModelError::NotSdxl {
                    path: ckpt.path().to_path_buf(),
                    found: other.describe().to_string(),
                })
            }
        };
        let clip_g = infer_clip(ckpt, ClipFlavor::OpenClip, clip_g_prefix, heads.clip_g)?;
        let unet = infer_unet(ckpt, heads.unet)?;
        let vae = infer_vae(ckpt)?;
        let pooled = clip_g.projection.unwrap_or(clip_g.hidden);
        let ids_width = unet.adm_in_channels.saturating_sub(pooled);
        if ids_width == 0
            || !ids_width.is_multiple_of(time_ids)
            || !(ids_width / time_ids).is_multiple_of(2)
        {
            return Err(ModelError::Corrupt {
                path: ckpt.path().to_path_buf(),
                reason: format!(
                    "the UNet's ADM input is {} wide, which is not the pooled width {pooled} plus \
                     {time_ids} even-width size embeddings",
                    unet.adm_in_channels
                ),
            });
        }
        Ok(Self {
            architecture,
            clip_l,
            clip_g,
            unet,
            vae,
            time_id_dim: ids_width / time_ids,
            time_ids,
        })
    }
}

/// The head count of a `width`-wide attention of network `knob` (`clip_l`, `clip_g`, `unet`).
fn heads_for(
    path: &Checkpoint,
    what: &str,
    knob: &str,
    width: usize,
    head_dim: usize,
) -> Result<usize, ModelError> {
    if head_dim == 0 || !width.is_multiple_of(head_dim) {
        return Err(ModelError::Corrupt {
            path: path.path().to_path_buf(),
            reason: format!(
                "{what} is {width} wide, not a multiple of its head size {head_dim}; set the \
                 head size this model was trained with: `{knob} = N` under \
                 [head_dims.\"<file name>\"] in config.toml, or `--head-dims {knob}=N` for \
                 `fooocus inspect`"
            ),
        });
    }
    Ok(width / head_dim)
}

pub(crate) fn infer_clip(
    ckpt: &Checkpoint,
    flavor: ClipFlavor,
    prefix: &str,
    head_dim: usize,
) -> Result<ClipConfig, ModelError> {
    let s = Shapes { ckpt };
    let (token, position, layers_prefix, fc1) = match flavor {
        ClipFlavor::HuggingFace => (
            format!("{prefix}.embeddings.token_embedding.weight"),
            format!("{prefix}.embeddings.position_embedding.weight"),
            format!("{prefix}.encoder.layers"),
            "mlp.fc1.weight",
        ),
        ClipFlavor::OpenClip => (
            format!("{prefix}.token_embedding.weight"),
            format!("{prefix}.positional_embedding"),
            format!("{prefix}.transformer.resblocks"),
            "mlp.c_fc.weight",
        ),
    };
    let vocab = s.dim(&token, 0)?;
    let hidden = s.dim(&token, 1)?;
    let positions = s.dim(&position, 0)?;
    let layers = ckpt.count_indexed(&layers_prefix);
    let mlp = s.dim(&format!("{layers_prefix}.0.{fc1}"), 0)?;
    let projection = match flavor {
        ClipFlavor::HuggingFace => None,
        ClipFlavor::OpenClip => Some(s.dim(&format!("{prefix}.text_projection"), 1)?),
    };
    Ok(ClipConfig {
        flavor,
        prefix: prefix.to_string(),
        vocab,
        positions,
        hidden,
        layers,
        heads: match flavor {
            ClipFlavor::HuggingFace => heads_for(ckpt, "CLIP-L", "clip_l", hidden, head_dim)?,
            ClipFlavor::OpenClip => heads_for(ckpt, "CLIP-G", "clip_g", hidden, head_dim)?,
        },
        mlp,
        projection,
    })
}

/// Reads the layers of one UNet block (`<prefix>.<j>.*`) from the key names and shapes.
fn infer_block(ckpt: &Checkpoint, prefix: &str) -> Result<Vec<UnetLayer>, ModelError> {
    let s = Shapes { ckpt };
    let mut layers = Vec::new();
    for j in 0..ckpt.count_indexed(prefix) {
        let p = format!("{prefix}.{j}");
        let layer = if ckpt.contains(&format!("{p}.in_layers.2.weight")) {
            UnetLayer::Res {
                in_ch: s.dim(&format!("{p}.in_layers.2.weight"), 1)?,
                out_ch: s.dim(&format!("{p}.in_layers.2.weight"), 0)?,
            }
        } else if ckpt.has_prefix(&format!("{p}.transformer_blocks")) {
            let channels = match ckpt.shape(&format!("{p}.proj_in.weight")) {
                Some(shape) => shape.get(1).copied().unwrap_or(0),
                None => s.dim(&format!("{p}.norm.weight"), 0)?,
            };
            UnetLayer::Attn {
                channels,
                depth: ckpt.count_indexed(&format!("{p}.transformer_blocks")),
            }
        } else if ckpt.contains(&format!("{p}.op.weight")) {
            UnetLayer::Down {
                channels: s.dim(&format!("{p}.op.weight"), 0)?,
            }
        } else if ckpt.contains(&format!("{p}.conv.weight")) {
            UnetLayer::Up {
                channels: s.dim(&format!("{p}.conv.weight"), 0)?,
            }
        } else if ckpt.contains(&format!("{p}.weight")) && j == 0 {
            UnetLayer::ConvIn {
                out_ch: s.dim(&format!("{p}.weight"), 0)?,
            }
        } else {
            return Err(ModelError::Corrupt {
                path: ckpt.path().to_path_buf(),
                reason: format!("UNet layer `{p}` is of no known kind"),
            });
        };
        layers.push(layer);
    }
    Ok(layers)
}

pub(crate) fn infer_unet(ckpt: &Checkpoint, head_dim: usize) -> Result<UnetConfig, ModelError> {
    let p = UNET_PREFIX;
    let s = Shapes { ckpt };
    let conv_in = format!("{p}.input_blocks.0.0.weight");
    let blocks = |name: &str| -> Result<Vec<Vec<UnetLayer>>, ModelError> {
        let prefix = format!("{p}.{name}");
        (0..ckpt.count_indexed(&prefix))
            .map(|i| infer_block(ckpt, &format!("{prefix}.{i}")))
            .collect()
    };
    let input_blocks = blocks("input_blocks")?;
    let output_blocks = blocks("output_blocks")?;
    let middle_block = infer_block(ckpt, &format!("{p}.middle_block"))?;
    let context_dim = ckpt
        .names_under(p)
        .find(|k| k.ends_with(".attn2.to_k.weight"))
        .and_then(|k| ckpt.shape(k))
        .and_then(|s| s.get(1).copied())
        .unwrap_or(0);
    let config = UnetConfig {
        in_channels: s.dim(&conv_in, 1)?,
        out_channels: s.dim(&format!("{p}.out.2.weight"), 0)?,
        model_channels: s.dim(&conv_in, 0)?,
        time_embed_dim: s.dim(&format!("{p}.time_embed.0.weight"), 0)?,
        adm_in_channels: s.dim(&format!("{p}.label_emb.0.0.weight"), 1)?,
        context_dim,
        head_dim,
        input_blocks,
        middle_block,
        output_blocks,
    };
    let attn_widths = config
        .input_blocks
        .iter()
        .chain(config.output_blocks.iter())
        .chain(std::iter::once(&config.middle_block))
        .flatten()
        .filter_map(|l| match l {
            UnetLayer::Attn { channels, .. } => Some(*channels),
            _ => None,
        });
    for width in attn_widths {
        heads_for(ckpt, "a UNet attention layer", "unet", width, head_dim)?;
    }
    Ok(config)
}

pub(crate) fn infer_vae(ckpt: &Checkpoint) -> Result<VaeConfig, ModelError> {
    let p = VAE_PREFIX;
    let s = Shapes { ckpt };
    let levels = ckpt.count_indexed(&format!("{p}.encoder.down"));
    let channels = (0..levels)
        .map(|i| s.dim(&format!("{p}.encoder.down.{i}.block.0.conv1.weight"), 0))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(VaeConfig {
        in_channels: s.dim(&format!("{p}.encoder.conv_in.weight"), 1)?,
        channels,
        encoder_res_blocks: ckpt.count_indexed(&format!("{p}.encoder.down.0.block")),
        decoder_res_blocks: ckpt.count_indexed(&format!("{p}.decoder.up.0.block")),
        z_channels: s.dim(&format!("{p}.decoder.conv_in.weight"), 1)?,
        embed_dim: s.dim(&format!("{p}.post_quant_conv.weight"), 0)?,
    })
}
