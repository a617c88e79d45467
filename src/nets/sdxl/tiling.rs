//! Tiled VAE encode and decode for images too large to run at once, as Fooocus does them: three
//! tilings of different shapes (square, wide, tall) over `nn::tiling::tiled_scale`, averaged, so
//! that no seam sits at the same place in all three.

use candle_core::{Result, Tensor};

use super::vae::{Vae, VAE_FACTOR};
use crate::nn::tiling::{tiled_scale, Tiles};

/// The three tile shapes around a `side` × `side` tile: square, twice as wide and half as high,
/// half as wide and twice as high, in the order `order`.
fn shapes(side: usize, overlap: usize, order: [usize; 3]) -> [Tiles; 3] {
    let all = [
        Tiles::square(side, overlap),
        Tiles {
            width: side * 2,
            height: (side / 2).max(1),
            overlap,
        },
        Tiles {
            width: (side / 2).max(1),
            height: side * 2,
            overlap,
        },
    ];
    order.map(|i| all[i])
}

fn averaged(
    input: &Tensor,
    tilings: [Tiles; 3],
    scale: f64,
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let mut sum: Option<Tensor> = None;
    for tiles in tilings {
        let part = tiled_scale(input, tiles, scale, &f)?;
        sum = Some(match sum {
            Some(s) => (s + part)?,
            None => part,
        });
    }
    match sum {
        Some(s) => s / 3.0,
        None => candle_core::bail!("no tiling"),
    }
}

/// Decodes a model-space latent `[B, 4, h, w]` in tiles of `tile` latent cells (Fooocus: 64,
/// overlap 16): 32 wide × 128 high, 128 × 32 and 64 × 64, averaged. Output as `Vae::decode`.
pub fn decode_tiled(vae: &Vae, latent: &Tensor, tile: usize) -> Result<Tensor> {
    let tilings = shapes(tile, tile / 4, [2, 1, 0]);
    averaged(latent, tilings, VAE_FACTOR as f64, |part| vae.decode(part))
}

/// Encodes `[B, 3, H, W]` pixels in [−1, 1] (H, W multiples of 8) to the model-space latent
/// (posterior mean × the scale) in tiles of `tile` pixels (Fooocus: 512, overlap 64): 512 ×
/// 512, 1024 wide × 256 high and 256 × 1024, averaged.
pub fn encode_tiled(vae: &Vae, image: &Tensor, tile: usize) -> Result<Tensor> {
    let tilings = shapes(tile, tile / 8, [0, 1, 2]);
    averaged(image, tilings, 1.0 / VAE_FACTOR as f64, |part| {
        vae.encode(part)
    })
}
