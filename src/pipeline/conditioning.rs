//! SDXL size conditioning as Fooocus builds it: the base model's time ids (emphasized by the ADM
//! scalers, or consistent), the refiner's ids with the aesthetic score, and the refiner's context
//! and switch step derived from the base's.

use candle_core::{Result, Tensor, D};

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
pub fn id_rows<const N: usize>(rows: &[[f64; N]], device: &candle_core::Device) -> Result<Tensor> {
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

/// The step after whose model call the refiner takes over: round_half_even(steps · switch).
pub fn switch_step(steps: usize, refiner_switch: f64) -> usize {
    (steps as f64 * refiner_switch).round_ties_even().max(0.0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_rounds_half_to_even() {
        assert_eq!(switch_step(30, 0.75), 22);
        assert_eq!(switch_step(30, 2.0 / 3.0), 20);
        assert_eq!(switch_step(60, 2.0 / 3.0), 40);
        assert_eq!(switch_step(10, 0.5), 5);
        assert_eq!(switch_step(5, 0.5), 2);
    }

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
