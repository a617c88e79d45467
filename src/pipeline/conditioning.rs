//! The conditioning stages of one image as Fooocus builds them: the base model's time ids
//! (emphasized by the ADM scalers, or consistent), the refiner's ids with the aesthetic score, the
//! refiner's context derived from the base's, and from them the base and refiner
//! [`Stage`]s the denoiser runs.

use candle_core::{Device, Result, Tensor, D};

use super::denoiser::{pair_contexts, Adm, Stage, UnetRef};
use super::models::unets::CachedUnet;
use super::plan::AdmScalers;
use crate::nets::sdxl::text::TextConditioning;
use crate::nets::sdxl::unet::adm_vector;

/// Aesthetic score of the refiner's positive conditioning.
pub const REFINER_POSITIVE_AESTHETIC: f64 = 6.0;
/// Aesthetic score of the refiner's negative conditioning.
pub const REFINER_NEGATIVE_AESTHETIC: f64 = 2.5;

/// round_half_even(v / 64) · 64.
pub fn round64(v: f64) -> f64 {
    (v / 64.0).round_ties_even() * 64.0
}

/// Base time ids `(orig_h, orig_w, crop_top, crop_left, target_h, target_w)` for an image of
/// `h × w` pixels whose original size is scaled by `scale` (1.5 / 0.8 for Fooocus' emphasized
/// positive / negative rows): `int()` truncates the scaled size.
pub fn base_time_ids(h: usize, w: usize, scale: f64) -> [f64; 6] {
    let (h, w) = (h as f64, w as f64);
    [
        (h * scale).trunc(),
        (w * scale).trunc(),
        0.0,
        0.0,
        round64(h),
        round64(w),
    ]
}

/// The consistent (unscaled, rounded) base time ids used late in sampling.
pub fn consistent_time_ids(h: usize, w: usize) -> [f64; 6] {
    let (h, w) = (round64(h as f64), round64(w as f64));
    [h, w, 0.0, 0.0, h, w]
}

/// Refiner time ids `(orig_h, orig_w, crop_top, crop_left, aesthetic)`.
pub fn refiner_time_ids(h: usize, w: usize, aesthetic: f64) -> [f64; 5] {
    [h as f64, w as f64, 0.0, 0.0, aesthetic]
}

/// `[rows, n]` f32 tensor of id rows.
pub fn id_rows<const N: usize>(rows: &[[f64; N]], device: &Device) -> Result<Tensor> {
    let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    Tensor::from_vec(flat, (rows.len(), N), device)
}

/// The refiner's context: the CLIP-G part (last `clip_g_width` features) of the base context.
pub fn refiner_context(base_context: &Tensor, clip_g_width: usize) -> Result<Tensor> {
    let width = base_context.dim(D::Minus1)?;
    let Some(start) = width.checked_sub(clip_g_width) else {
        candle_core::bail!(
            "the refiner reads {clip_g_width} CLIP-G features but the base gives {width}: \
             base and refiner do not belong together"
        );
    };
    base_context.narrow(D::Minus1, start, clip_g_width)
}

/// One image's prompts, encoded, as the UNets read them: `context` `[2, T, C]` (positive and
/// negative, padded to the same length) and `pooled` `[2, P]`, on the UNets' device.
pub struct PairedText {
    pub context: Tensor,
    pub pooled: Tensor,
}

impl PairedText {
    /// Pairs the positive and negative conditioning (the text encoders may have run on the CPU,
    /// `--vram low`) and moves them to `device`.
    pub fn new(pos: &TextConditioning, neg: &TextConditioning, device: &Device) -> Result<Self> {
        Ok(Self {
            context: pair_contexts(&pos.context, &neg.context)?.to_device(device)?,
            pooled: Tensor::cat(&[&pos.pooled, &neg.pooled], 0)?.to_device(device)?,
        })
    }
}

/// The base stage of an `h × w` image: the paired context and negative ADM guidance (emphasized
/// ids until `adm.end`, consistent ones after), `id_dim` being the base UNet's time-id width.
pub fn base_stage<'a>(
    unet: CachedUnet<'a>,
    text: &PairedText,
    (h, w): (usize, usize),
    adm: &AdmScalers,
    id_dim: usize,
) -> Result<Stage<'a>> {
    let device = text.context.device();
    let emphasized = id_rows(
        &[
            base_time_ids(h, w, adm.positive),
            base_time_ids(h, w, adm.negative),
        ],
        device,
    )?;
    let consistent = id_rows(
        &[consistent_time_ids(h, w), consistent_time_ids(h, w)],
        device,
    )?;
    Ok(Stage {
        unet: UnetRef::Cached(unet),
        context: text.context.clone(),
        adm: Adm::switched(
            adm_vector(&text.pooled, &emphasized, id_dim)?,
            adm_vector(&text.pooled, &consistent, id_dim)?,
            adm.end,
        ),
    })
}

/// The refiner stage of an `h × w` image: the CLIP-G part of the base context (`clip_g_width`
/// features) and fixed ids with the aesthetic scores, `id_dim` the refiner's time-id width.
pub fn refiner_stage<'a>(
    unet: CachedUnet<'a>,
    text: &PairedText,
    (h, w): (usize, usize),
    clip_g_width: usize,
    id_dim: usize,
) -> Result<Stage<'a>> {
    let ids = id_rows(
        &[
            refiner_time_ids(h, w, REFINER_POSITIVE_AESTHETIC),
            refiner_time_ids(h, w, REFINER_NEGATIVE_AESTHETIC),
        ],
        text.context.device(),
    )?;
    Ok(Stage {
        unet: UnetRef::Cached(unet),
        context: refiner_context(&text.context, clip_g_width)?,
        adm: Adm::Fixed(adm_vector(&text.pooled, &ids, id_dim)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_truncate_and_round() {
        assert_eq!(
            base_time_ids(128, 192, 1.5),
            [192.0, 288.0, 0.0, 0.0, 128.0, 192.0]
        );
        assert_eq!(
            base_time_ids(128, 192, 0.8),
            [102.0, 153.0, 0.0, 0.0, 128.0, 192.0]
        );
        assert_eq!(round64(96.0), 128.0);
        assert_eq!(round64(160.0), 128.0);
        assert_eq!(
            consistent_time_ids(1152, 896),
            [1152.0, 896.0, 0.0, 0.0, 1152.0, 896.0]
        );
    }
}
