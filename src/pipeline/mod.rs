//! Fooocus semantics on top of the engine and the samplers: the guided denoiser (CFG with the
//! sharpness filter and CFG mimicking) and, as the pipeline grows, prompts, styles, the refiner
//! swap and saving.

pub mod conditioning;
pub mod denoiser;
pub mod guidance;
pub mod sharpness;
pub mod styles;
