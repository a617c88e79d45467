//! Weight files and how networks are built from them: memory-mapped safetensors checkpoints with
//! architecture detection and clear refusals (`checkpoint`) remembered per file (`catalog`), the candle `VarBuilder` backend that
//! reports every missing tensor at once and can build "on paper" without reading data
//! (`backend`), kohya LoRA patches merged as weights are read (`lora`), and the trait by which
//! a network says how it is inferred and built (`network`).
//!
//! Knows nothing of what the networks compute, of Fooocus or of HTTP: a network family under
//! `nets/` names its tensors and shapes, this room finds and reads them.

pub mod backend;
pub mod catalog;
pub mod checkpoint;
mod error;
pub mod lora;
pub mod network;

pub use error::ModelError;
