//! Shared helpers of the integration tests: fixture folders, tensor files, tolerances.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use fooocus::engine::config::HeadDims;

/// The tiny-sdxl fixture folder: `FOOOCUS_FIXTURES`, or `../shared/fixtures/tiny-sdxl`.
pub fn fixtures() -> PathBuf {
    match std::env::var_os("FOOOCUS_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/tiny-sdxl"),
    }
}

/// The full-size layout folder (fixed: SDXL 1.0 does not vary).
pub fn layouts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/layouts")
}

pub fn json(relative: &str) -> serde_json::Value {
    let path = fixtures().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub struct Tensors {
    name: String,
    map: HashMap<String, Tensor>,
}

impl Tensors {
    pub fn open(relative: &str) -> Self {
        let path = fixtures().join(relative);
        let map = candle_core::safetensors::load(&path, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self {
            name: relative.to_string(),
            map,
        }
    }

    pub fn get(&self, key: &str) -> Tensor {
        self.map
            .get(key)
            .unwrap_or_else(|| panic!("{} has no tensor {key}", self.name))
            .clone()
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub fn ids(&self, key: &str) -> Tensor {
        self.get(key).to_dtype(DType::U32).unwrap()
    }
}

pub fn max_abs(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// max|actual − expected| / max|expected|.
pub fn rel_err(actual: &Tensor, expected: &Tensor) -> f32 {
    assert_eq!(actual.dims(), expected.dims(), "shapes differ");
    let diff = (actual.to_dtype(DType::F32).unwrap() - expected).unwrap();
    max_abs(&diff) / max_abs(expected)
}

/// Asserts `rel_err ≤ tol` and prints the figure.
pub fn assert_close(what: &str, actual: &Tensor, expected: &Tensor, tol: f32) {
    let err = rel_err(actual, expected);
    println!("{what}: relative error {err:.3e} (tolerance {tol:.0e})");
    assert!(
        err <= tol,
        "{what}: relative error {err:.3e} exceeds {tol:.0e}"
    );
}

/// Head widths of the tiny networks from `tiny_configs.json` (they are not visible in the
/// weights); `unet_key` is `base_unet_sgm` or `refiner_unet_sgm`.
pub fn tiny_heads(unet_key: &str) -> HeadDims {
    let cfg = json("tiny_configs.json");
    let n = |v: &serde_json::Value| v.as_u64().expect("a count") as usize;
    let clip = |k: &str| n(&cfg[k]["hidden_size"]) / n(&cfg[k]["num_attention_heads"]);
    HeadDims {
        clip_l: clip("clip_l"),
        clip_g: clip("clip_g"),
        unet: n(&cfg[unet_key]["num_head_channels"]),
    }
}

/// A configuration over the tiny fixtures with its writable folders (wildcards, an extra LoRA
/// folder, outputs) in `dir`: the repository's styles, the fixture tokenizer, the tiny head sizes.
pub fn tiny_config(dir: &std::path::Path) -> fooocus::config::Config {
    use fooocus::config::{Config, HeadDimsConfig};
    let fixtures = fixtures();
    let mut config = Config::default();
    config.paths.checkpoints = vec![fixtures.clone()];
    config.paths.loras = vec![fixtures.join("lora"), dir.join("loras")];
    config.paths.tokenizer = fixtures.join("tokenizer/clip-tokenizer.json");
    config.paths.styles = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("styles");
    config.paths.wildcards = dir.join("wildcards");
    config.paths.outputs = dir.join("outputs");
    std::fs::create_dir_all(&config.paths.wildcards).unwrap();
    std::fs::create_dir_all(dir.join("loras")).unwrap();
    for (file, key) in [
        ("sdxl_base.safetensors", "base_unet_sgm"),
        ("sdxl_refiner.safetensors", "refiner_unet_sgm"),
    ] {
        let h = tiny_heads(key);
        let heads = HeadDimsConfig {
            clip_l: h.clip_l,
            clip_g: h.clip_g,
            unet: h.unet,
        };
        config.head_dims.insert(file.into(), heads);
    }
    config
}
