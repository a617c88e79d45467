//! Fooocus' sharpness filter: a joint bilateral filter on the positive ε, guided by the
//! normalised positive x0 (13×13 window, σ_space = σ_colour = 3, reflect padding, an L1 colour
//! distance over channels, the same weights for every channel).

use candle_core::{DType, Result, Tensor};

/// Window and widths of the filter Fooocus uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilterShape {
    pub kernel: usize,
    pub sigma_space: f64,
    pub sigma_color: f64,
}

impl Default for FilterShape {
    fn default() -> Self {
        Self {
            kernel: 13,
            sigma_space: 3.0,
            sigma_color: 3.0,
        }
    }
}

/// Filters `eps` `[B, C, H, W]` with weights from `guide` (same shape). H and W must exceed the
/// window radius.
pub fn anisotropic_filter(eps: &Tensor, guide: &Tensor, shape: FilterShape) -> Result<Tensor> {
    let (_, _, h, w) = eps.dims4()?;
    let r = shape.kernel / 2;
    if h <= r || w <= r {
        candle_core::bail!(
            "the sharpness filter needs a latent of at least {}×{}, got {h}×{w}",
            r + 1,
            r + 1
        );
    }
    let eps = eps.to_dtype(DType::F32)?;
    let g = normalise(&guide.to_dtype(DType::F32)?)?;
    let eps_p = reflect_pad(&eps, r)?;
    let g_p = reflect_pad(&g, r)?;
    let spatial: Vec<f64> = {
        let raw: Vec<f64> = (0..shape.kernel)
            .map(|i| {
                let o = i as f64 - r as f64;
                (-o * o / (2.0 * shape.sigma_space * shape.sigma_space)).exp()
            })
            .collect();
        let sum: f64 = raw.iter().sum();
        raw.into_iter().map(|k| k / sum).collect()
    };
    let color = -0.5 / (shape.sigma_color * shape.sigma_color);
    let mut num: Option<Tensor> = None;
    let mut den: Option<Tensor> = None;
    for (dy, ky) in spatial.iter().enumerate() {
        let g_row = g_p.narrow(2, dy, h)?;
        let e_row = eps_p.narrow(2, dy, h)?;
        for (dx, kx) in spatial.iter().enumerate() {
            let g_s = g_row.narrow(3, dx, w)?;
            let dist = (g_s - &g)?.abs()?.sum_keepdim(1)?;
            let weight = ((dist.sqr()? * color)?.exp()? * (ky * kx))?;
            let term = e_row.narrow(3, dx, w)?.broadcast_mul(&weight)?;
            num = Some(match num {
                Some(n) => (n + term)?,
                None => term,
            });
            den = Some(match den {
                Some(d) => (d + weight)?,
                None => weight,
            });
        }
    }
    match (num, den) {
        (Some(n), Some(d)) => n.broadcast_div(&d),
        _ => candle_core::bail!("the sharpness filter window is empty"),
    }
}

/// (g − mean) / (std + 1e-5) per sample over (C, H, W), std with Bessel's correction.
fn normalise(g: &Tensor) -> Result<Tensor> {
    let b = g.dim(0)?;
    let flat = g.reshape((b, ()))?;
    let n = flat.dim(1)? as f64;
    let mean = flat.mean_keepdim(1)?;
    let centred = flat.broadcast_sub(&mean)?;
    let std = (centred.sqr()?.sum_keepdim(1)? / (n - 1.0))?.sqrt()?;
    centred.broadcast_div(&(std + 1e-5)?)?.reshape(g.shape())
}

/// Mirror padding by `r` on both spatial axes, without repeating the edge.
fn reflect_pad(t: &Tensor, r: usize) -> Result<Tensor> {
    let (_, _, h, w) = t.dims4()?;
    let t = t.index_select(&reflect_indices(h, r, t.device())?, 2)?;
    t.index_select(&reflect_indices(w, r, t.device())?, 3)
}

fn reflect_indices(len: usize, r: usize, device: &candle_core::Device) -> Result<Tensor> {
    let last = len as i64 - 1;
    let idx: Vec<u32> = (0..len + 2 * r)
        .map(|i| {
            let j = i as i64 - r as i64;
            let j = if j < 0 {
                -j
            } else if j > last {
                2 * last - j
            } else {
                j
            };
            j as u32
        })
        .collect();
    Tensor::from_vec(idx, len + 2 * r, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn reflect_does_not_repeat_the_edge() -> Result<()> {
        let idx = reflect_indices(4, 2, &Device::Cpu)?.to_vec1::<u32>()?;
        assert_eq!(idx, vec![2, 1, 0, 1, 2, 3, 2, 1]);
        Ok(())
    }

    #[test]
    fn a_flat_guide_gives_a_gaussian_blur_that_keeps_constants() -> Result<()> {
        let eps = Tensor::full(0.7f32, (1, 4, 9, 11), &Device::Cpu)?;
        let guide = Tensor::zeros((1, 4, 9, 11), DType::F32, &Device::Cpu)?;
        let out = anisotropic_filter(&eps, &guide, FilterShape::default())?;
        let err = (out - 0.7)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(err < 1e-6);
        Ok(())
    }

    #[test]
    fn too_small_latents_are_an_error() {
        let t = Tensor::zeros((1, 4, 6, 20), DType::F32, &Device::Cpu).unwrap();
        assert!(anisotropic_filter(&t, &t, FilterShape::default()).is_err());
    }
}
