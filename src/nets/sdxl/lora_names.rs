//! How kohya LoRAs name SDXL's weights: `lora_unet_*` through a table built from the file's own
//! UNet keys, in their SGM spelling and the diffusers spelling some trainers write; `lora_te1_*`
//! to CLIP-L and `lora_te2_*` to CLIP-G (two-encoder base files only, as in Fooocus), q/k/v as
//! row blocks of CLIP-G's fused `in_proj`.

use std::collections::HashMap;

use crate::nets::sdxl::shapes::{ClipConfig, ClipFlavor, SdxlConfig, UnetConfig, UnetLayer};
use crate::weights::checkpoint::{Checkpoint, UNET_PREFIX};
use crate::weights::lora::{Target, Targets};

/// Text-encoder modules: kohya suffix, Hugging Face weight, open_clip weight, and for q/k/v the
/// row block of the fused open_clip `in_proj_weight`.
const TEXT_MODULES: [(&str, &str, &str, Option<usize>); 6] = [
    (
        "self_attn_q_proj",
        "self_attn.q_proj.weight",
        "attn.in_proj_weight",
        Some(0),
    ),
    (
        "self_attn_k_proj",
        "self_attn.k_proj.weight",
        "attn.in_proj_weight",
        Some(1),
    ),
    (
        "self_attn_v_proj",
        "self_attn.v_proj.weight",
        "attn.in_proj_weight",
        Some(2),
    ),
    (
        "self_attn_out_proj",
        "self_attn.out_proj.weight",
        "attn.out_proj.weight",
        None,
    ),
    ("mlp_fc1", "mlp.fc1.weight", "mlp.c_fc.weight", None),
    ("mlp_fc2", "mlp.fc2.weight", "mlp.c_proj.weight", None),
];

/// kohya module name → target, for every weight of `ckpt` a LoRA can name.
pub fn targets(ckpt: &Checkpoint, config: &SdxlConfig) -> Targets {
    let mut out = HashMap::new();
    let blocks = diffusers_blocks(&config.unet);
    for key in ckpt.names_under(UNET_PREFIX) {
        let Some(path) = key
            .strip_prefix(UNET_PREFIX)
            .and_then(|k| k.strip_prefix('.'))
            .and_then(|k| k.strip_suffix(".weight"))
        else {
            continue;
        };
        let target = Target {
            key: key.to_string(),
            rows: None,
        };
        if let Some(diffusers) = diffusers_path(path, &blocks) {
            let name = format!("lora_unet_{}", diffusers.replace('.', "_"));
            out.insert(name, target.clone());
        }
        out.insert(format!("lora_unet_{}", path.replace('.', "_")), target);
    }
    if let Some(clip_l) = &config.clip_l {
        text_targets(ckpt, clip_l, "lora_te1", &mut out);
        // te2 names the second encoder of the two-encoder (base) layout; Fooocus does not apply
        // it to a refiner's lone CLIP-G either.
        text_targets(ckpt, &config.clip_g, "lora_te2", &mut out);
    }
    out
}

/// Targets of one text encoder's layers, under kohya prefix `lora_prefix`.
fn text_targets(ckpt: &Checkpoint, cfg: &ClipConfig, lora_prefix: &str, out: &mut Targets) {
    let c = cfg.hidden;
    for i in 0..cfg.layers {
        for (module, hf, open_clip, block) in TEXT_MODULES {
            let target = match cfg.flavor {
                ClipFlavor::HuggingFace => Target {
                    key: format!("{}.encoder.layers.{i}.{hf}", cfg.prefix),
                    rows: None,
                },
                ClipFlavor::OpenClip => Target {
                    key: format!("{}.transformer.resblocks.{i}.{open_clip}", cfg.prefix),
                    rows: block.map(|b| (b * c, (b + 1) * c)),
                },
            };
            if ckpt.contains(&target.key) {
                let name = format!("{lora_prefix}_text_model_encoder_layers_{i}_{module}");
                out.insert(name, target);
            }
        }
    }
}

/// How the inside of an SGM layer is spelled in diffusers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inside {
    /// Same names (attention layers, upsamplers, single layers).
    Same,
    /// A ResBlock: `in_layers.0` → `norm1`, `skip_connection` → `conv_shortcut`, ….
    Res,
    /// A downsampler: `op` → `conv`.
    Down,
}

const RES_RENAMES: [(&str, &str); 6] = [
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("emb_layers.1", "time_emb_proj"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("skip_connection", "conv_shortcut"),
];

/// SGM layer path → diffusers module path, for every layer of `unet`, read from its block
/// layout (levels end at a downsampler on the way down and an upsampler on the way up).
fn diffusers_blocks(unet: &UnetConfig) -> Vec<(String, String, Inside)> {
    let fixed = [
        ("time_embed.0", "time_embedding.linear_1"),
        ("time_embed.2", "time_embedding.linear_2"),
        ("label_emb.0.0", "add_embedding.linear_1"),
        ("label_emb.0.2", "add_embedding.linear_2"),
        ("input_blocks.0.0", "conv_in"),
        ("out.0", "conv_norm_out"),
        ("out.2", "conv_out"),
    ];
    let mut out: Vec<_> = fixed
        .iter()
        .map(|(s, d)| (s.to_string(), d.to_string(), Inside::Same))
        .collect();
    walk_level_blocks(&unet.input_blocks, "input_blocks", "down_blocks", &mut out);
    walk_level_blocks(&unet.output_blocks, "output_blocks", "up_blocks", &mut out);
    let (mut res, mut attn) = (0, 0);
    for (j, layer) in unet.middle_block.iter().enumerate() {
        let sgm = format!("middle_block.{j}");
        match layer {
            UnetLayer::Res { .. } => {
                out.push((sgm, format!("mid_block.resnets.{res}"), Inside::Res));
                res += 1;
            }
            UnetLayer::Attn { .. } => {
                out.push((sgm, format!("mid_block.attentions.{attn}"), Inside::Same));
                attn += 1;
            }
            _ => {}
        }
    }
    out
}

/// The down or up path: block `b` is the `k`-th of its level; a block holding a down- or
/// upsampler ends the level.
fn walk_level_blocks(
    blocks: &[Vec<UnetLayer>],
    sgm: &str,
    diffusers: &str,
    out: &mut Vec<(String, String, Inside)>,
) {
    let (mut level, mut k) = (0, 0);
    for (b, block) in blocks.iter().enumerate() {
        let mut ends_level = false;
        let mut counts = false;
        for (j, layer) in block.iter().enumerate() {
            let (part, inside) = match layer {
                UnetLayer::Res { .. } => (format!("resnets.{k}"), Inside::Res),
                UnetLayer::Attn { .. } => (format!("attentions.{k}"), Inside::Same),
                UnetLayer::Down { .. } => ("downsamplers.0".to_string(), Inside::Down),
                UnetLayer::Up { .. } => ("upsamplers.0".to_string(), Inside::Same),
                UnetLayer::ConvIn { .. } => continue,
            };
            ends_level |= matches!(layer, UnetLayer::Down { .. } | UnetLayer::Up { .. });
            counts |= matches!(layer, UnetLayer::Res { .. });
            let path = format!("{diffusers}.{level}.{part}");
            out.push((format!("{sgm}.{b}.{j}"), path, inside));
        }
        if ends_level {
            (level, k) = (level + 1, 0);
        } else if counts {
            k += 1;
        }
    }
}

/// The diffusers spelling of SGM module path `path` (no `.weight`), if it has one.
fn diffusers_path(path: &str, blocks: &[(String, String, Inside)]) -> Option<String> {
    blocks.iter().find_map(|(sgm, diffusers, inside)| {
        let rest = path.strip_prefix(sgm.as_str())?;
        if !(rest.is_empty() || rest.starts_with('.')) {
            return None;
        }
        let rest = match inside {
            Inside::Same => rest.to_string(),
            Inside::Down => rest.replacen(".op", ".conv", 1),
            Inside::Res => RES_RENAMES
                .iter()
                .find_map(|(from, to)| {
                    let tail = rest.strip_prefix('.')?.strip_prefix(from)?;
                    Some(format!(".{to}{tail}"))
                })
                .unwrap_or_else(|| rest.to_string()),
        };
        Some(format!("{diffusers}{rest}"))
    })
}
