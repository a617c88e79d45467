//! SDXL, named after the original single-file (SGM/LDM) layout: shapes inferred from a checkpoint
//! (`shapes`), the tokenizer with prompt weights, CLIP-L and OpenCLIP-G (`clip`), text
//! conditioning (`text`), the UNet, the VAE and its tiled decode, `SdxlFile` (an opened checkpoint
//! that builds each network), `inspect` and the latent → RGB step previews.

pub mod clip;
pub mod file;
pub mod inspect;
pub mod lora_names;
pub mod preview;
pub mod shapes;
pub mod text;
pub mod tiling;
pub mod tokenizer;
pub mod unet;
pub mod vae;
