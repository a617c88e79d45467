//! The networks, one folder per family, each reading like its paper: `sdxl` (CLIP-L/G, the UNet,
//! the VAE, the tokenizer and text conditioning, shapes inferred from the checkpoint), `esrgan`
//! (the upscaler, RRDBNet). New families (prompt expansion, preview decoder, inpaint head) land
//! as siblings.
//!
//! Knows nothing of files beyond the weights handed in, of Fooocus semantics or of HTTP.

pub mod esrgan;
pub mod sdxl;
