//! Everything loading and running a network can fail at, each naming the file and what to do.

use std::path::PathBuf;

/// Everything the engine can fail at, each naming the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
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
