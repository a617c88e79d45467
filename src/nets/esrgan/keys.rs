//! The upscaler's weights: a flat state dict read from a PyTorch pickle (what Fooocus downloads)
//! or a safetensors file, its names brought to ESRGAN's "old" layout, and the shapes inferred.
//!
//! Old layout: `model.0` first conv, `model.1.sub.<i>.RDB<j>.conv<k>.0` the dense blocks,
//! `model.1.sub.<nb>` the trunk conv, then per 2× stage `model.<3u>` (u = 1, 2, …), the HR conv
//! and the last conv two and four indices after the last stage. Fooocus' file spells `RDB<j>` as
//! `residual_block_<j>`; the "new" layout (`conv_first`, `RRDB_trunk.<i>.RDB<j>.conv<k>`,
//! `trunk_conv`, `upconv<u>`, `HRconv`, `conv_last`; Real-ESRGAN's `body.<i>.rdb<j>`,
//! `conv_body`, `conv_up<u>`, `conv_hr`) is renamed to the old one.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::weights::ModelError;

/// Fooocus' upscaler (`fooocus_upscaler_s409985e5.bin`), as its loader infers it.
pub const FOOOCUS_UPSCALER: RrdbConfig = RrdbConfig {
    in_channels: 3,
    out_channels: 3,
    features: 64,
    growth: 32,
    blocks: 23,
    scale: 4,
};

/// The shapes of an RRDBNet, read from its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RrdbConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Feature channels (`nf`).
    pub features: usize,
    /// Growth channels of the dense blocks (`gc`).
    pub growth: usize,
    /// RRDB blocks (`nb`).
    pub blocks: usize,
    /// Output / input size: 2 to the number of upsampling stages.
    pub scale: usize,
}

/// A state dict in the old layout and its configuration.
pub struct UpscalerWeights {
    pub tensors: HashMap<String, Tensor>,
    pub config: RrdbConfig,
}

/// Reads `path` (`.pth`/`.bin`/`.pt` pickle, or `.safetensors`) to f32 tensors in the old layout.
pub fn load_upscaler(path: &Path) -> Result<UpscalerWeights, ModelError> {
    let corrupt = |reason: String| ModelError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let raw: Vec<(String, Tensor)> = if is_safetensors(path) {
        candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| corrupt(e.to_string()))?
            .into_iter()
            .collect()
    } else {
        candle_core::pickle::read_all(path).map_err(|e| {
            corrupt(format!(
                "{e} (an upscaler is a PyTorch state dict, .pth/.bin, or .safetensors)"
            ))
        })?
    };
    let mut tensors = HashMap::with_capacity(raw.len());
    for (name, t) in raw {
        let t = t.to_dtype(DType::F32).map_err(ModelError::Candle)?;
        tensors.insert(strip_wrappers(&name).to_string(), t);
    }
    let tensors = to_old_layout(tensors);
    let config = infer(&tensors).map_err(|reason| ModelError::WrongRole {
        path: path.to_path_buf(),
        found: "file without ESRGAN (RRDBNet) weights".into(),
        wanted: "an ESRGAN upscaler".into(),
        hint: reason,
    })?;
    Ok(UpscalerWeights { tensors, config })
}

fn is_safetensors(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

/// Drops the `params_ema.` / `module.` wrappers some trainers save under.
fn strip_wrappers(name: &str) -> &str {
    let name = name.strip_prefix("params_ema.").unwrap_or(name);
    name.strip_prefix("module.").unwrap_or(name)
}

/// Renames every spelling to the old layout (names already in it pass unchanged).
fn to_old_layout(tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    let blocks = tensors
        .keys()
        .filter_map(|k| trunk_block(k).map(|(i, _)| i + 1))
        .max()
        .unwrap_or(0);
    let stages = tensors
        .keys()
        .filter_map(|k| upconv_stage(k))
        .max()
        .unwrap_or(0);
    tensors
        .into_iter()
        .map(|(k, v)| (old_name(&k, blocks, stages), v))
        .collect()
}

/// `(block, rest)` of a dense-block tensor in the new layouts: `RRDB_trunk.3.RDB1.conv2.weight`
/// → (3, "RDB1.conv2.weight").
fn trunk_block(name: &str) -> Option<(usize, String)> {
    let rest = name
        .strip_prefix("RRDB_trunk.")
        .or_else(|| name.strip_prefix("body."))?;
    let (index, rest) = rest.split_once('.')?;
    let index = index.parse().ok()?;
    Some((index, rest.replacen("rdb", "RDB", 1)))
}

fn upconv_stage(name: &str) -> Option<usize> {
    let rest = name
        .strip_prefix("upconv")
        .or_else(|| name.strip_prefix("conv_up"))?;
    rest.split_once('.')?.0.parse().ok()
}

fn old_name(name: &str, blocks: usize, stages: usize) -> String {
    let name = name.replace(".residual_block_", ".RDB");
    let (stem, kind) = match name.rsplit_once('.') {
        Some(parts) => parts,
        None => return name,
    };
    if let Some((i, rest)) = trunk_block(&name) {
        // `RDB1.conv2.weight` → `model.1.sub.<i>.RDB1.conv2.0.weight`
        if let Some((conv, kind)) = rest.rsplit_once('.') {
            return format!("model.1.sub.{i}.{conv}.0.{kind}");
        }
    }
    if let Some(u) = upconv_stage(&name) {
        return format!("model.{}.{kind}", 3 * u);
    }
    let last_stage = 3 * stages;
    match stem {
        "conv_first" => format!("model.0.{kind}"),
        "trunk_conv" | "conv_body" => format!("model.1.sub.{blocks}.{kind}"),
        "HRconv" | "conv_hr" => format!("model.{}.{kind}", last_stage + 2),
        "conv_last" => format!("model.{}.{kind}", last_stage + 4),
        _ => name,
    }
}

/// The configuration of an old-layout state dict, or why it is not an RRDBNet.
fn infer(t: &HashMap<String, Tensor>) -> Result<RrdbConfig, String> {
    let dims = |name: &str| -> Result<Vec<usize>, String> {
        t.get(name)
            .map(|v| v.dims().to_vec())
            .ok_or_else(|| format!("it has no `{name}`"))
    };
    let first = dims("model.0.weight")?;
    let growth = dims("model.1.sub.0.RDB1.conv1.0.weight")?;
    let blocks = (0..)
        .take_while(|i| t.contains_key(&format!("model.1.sub.{i}.RDB1.conv1.0.weight")))
        .count();
    let stages = (1..)
        .take_while(|u| t.contains_key(&format!("model.{}.weight", 3 * u)))
        .count();
    let last = dims(&format!("model.{}.weight", 3 * stages + 4))?;
    if first.len() != 4 || growth.len() != 4 || last.len() != 4 {
        return Err("its convolutions are not 4-D".into());
    }
    Ok(RrdbConfig {
        in_channels: first[1],
        out_channels: last[0],
        features: first[0],
        growth: growth[0],
        blocks,
        scale: 1 << stages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_maps_to_the_old_layout() {
        let cases = [
            (
                "model.1.sub.4.residual_block_2.conv3.0.bias",
                "model.1.sub.4.RDB2.conv3.0.bias",
            ),
            (
                "RRDB_trunk.4.RDB2.conv3.bias",
                "model.1.sub.4.RDB2.conv3.0.bias",
            ),
            (
                "body.4.rdb2.conv3.weight",
                "model.1.sub.4.RDB2.conv3.0.weight",
            ),
            ("conv_first.weight", "model.0.weight"),
            ("trunk_conv.bias", "model.1.sub.23.bias"),
            ("conv_body.weight", "model.1.sub.23.weight"),
            ("upconv2.weight", "model.6.weight"),
            ("conv_up1.bias", "model.3.bias"),
            ("HRconv.weight", "model.8.weight"),
            ("conv_last.bias", "model.10.bias"),
            ("model.8.weight", "model.8.weight"),
        ];
        for (new, old) in cases {
            assert_eq!(old_name(new, 23, 2), old, "{new}");
        }
    }
}
