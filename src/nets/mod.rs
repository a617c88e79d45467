//! The networks, one folder per family, each reading like its paper: `sdxl` (CLIP-L/G, the UNet,
//! the VAE, the tokenizer and text conditioning, shapes inferred from the checkpoint). New
//! families (upscaler, prompt expansion, preview decoder, inpaint head) land as siblings.
//!
//! Knows nothing of files beyond the weights handed in, of Fooocus semantics or of HTTP.

pub mod sdxl;
