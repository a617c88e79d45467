//! Tiled VAE decoding for images too large to decode at once (`nn::tiling`, with the VAE's
//! 8× scale).

use candle_core::{Result, Tensor};

use super::vae::{Vae, VAE_FACTOR};
use crate::nn::tiling::map_tiled;

/// Decodes a model-space latent `[B, 4, h, w]` tile by tile. `tile` and `overlap` are in latent
/// cells; a latent no larger than one tile is decoded in one piece.
pub fn decode_tiled(vae: &Vae, latent: &Tensor, tile: usize, overlap: usize) -> Result<Tensor> {
    map_tiled(latent, tile, overlap, VAE_FACTOR, |part| vae.decode(part))
}
