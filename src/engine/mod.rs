//! The SDXL engine: checkpoint loading, tokenizer, CLIP text encoders, UNet and VAE, in candle,
//! named after the original single-file (SGM/LDM) layout.

pub mod activation;
pub mod attention;
pub mod attention_cpu;
pub mod checkpoint;
pub mod clip;
pub mod config;
pub mod conv;
mod conv_shifted;
mod conv_winograd;
pub mod device;
pub mod fastmath;
pub mod inspect;
pub mod kernels;
pub mod linear;
pub mod lora;
pub mod matmul;
pub mod memory;
pub mod microkernel;
pub mod microkernel_bf16;
pub mod model;
pub mod norm;
pub mod preview;
pub mod softmax;
pub mod text;
pub mod tiling;
pub mod tokenizer;
pub mod unet;
pub mod vae;
pub mod weights;

use std::path::PathBuf;

/// Everything the engine can fail at, each naming the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} cannot be loaded: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path} is a {found}, not an SDXL checkpoint: fooocus-rs runs SDXL base and refiner models only")]
    NotSdxl { path: PathBuf, found: String },
    #[error("{path} is not a LoRA ({found}): choose a kohya-format LoRA `.safetensors` (tensors named `lora_unet_*`, `lora_te1_*`, `lora_te2_*`); checkpoints belong in the checkpoints folder")]
    NotLora { path: PathBuf, found: String },
    #[error("{path} is an {found} but {wanted} is needed here: {hint}")]
    WrongRole {
        path: PathBuf,
        found: String,
        wanted: String,
        hint: String,
    },
    #[error("{path} lacks {} tensor(s) the model needs: {}{}", names.len(), names.iter().take(8).cloned().collect::<Vec<_>>().join(", "), if names.len() > 8 { ", …" } else { "" })]
    MissingTensors { path: PathBuf, names: Vec<String> },
    #[error("{path} has tensors of unexpected shape (is it a different architecture?): {}", details.join("; "))]
    ShapeMismatch { path: PathBuf, details: Vec<String> },
    #[error("{path}: tensor `{name}` is stored as {dtype}, which the engine cannot read")]
    UnsupportedDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("tokenizer {path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("internal error: {0}")]
    Internal(String),
}
