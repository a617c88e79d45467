//! Fooocus semantics on top of the engine and the samplers: requests and presets validated into a
//! plan, prompts (styles, wildcards, arrays, weights) into conditioning, the guided denoiser (CFG
//! with the sharpness filter, CFG mimicking, negative ADM guidance, the joint refiner swap), and
//! the run that samples, decodes and saves each image.

pub mod conditioning;
pub mod denoiser;
pub mod encode;
mod error;
pub mod guidance;
pub mod image;
pub mod meta;
pub mod models;
pub mod plan;
pub mod request;
pub mod run;
pub mod sharpness;
pub mod styles;
pub mod wildcards;

pub use error::PipelineError;
