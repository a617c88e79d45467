//! CPU convolutions over raw f32 slices, NCHW in and out: stride-1 3×3 by Winograd F(4×4, 3×3)
//! (`winograd`), other stride-1 kernels with wide enough rows by shifted products over a
//! channels-last copy (`shifted`), everything else by im2col and the blocked product (`im2col`,
//! which also takes 1×1 convolutions as one product on the input as it is). `lines` makes the
//! channels-last line copies that the first two share; [`Geometry`] is the shape they all read.

mod im2col;
mod lines;
pub mod shifted;
pub mod winograd;

use super::Result;

/// Shapes of one convolution; `h`, `w` are of the (virtually upsampled) input.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub upsample: bool,
}

/// The convolution of the `b` images `x` (`[b, cin, h, w]`, or `[b, cin, h/2, w/2]` upsampled
/// virtually when `g.upsample`) with `weight` (`[cout, cin, k, k]`) plus `bias` (`cout` values):
/// `[b, cout, out_h, out_w]`, by the fastest path that applies to `g`.
pub fn convolve(
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    b: usize,
    cout: usize,
    g: &Geometry,
) -> Result<Vec<f32>> {
    let plane = g.out_h * g.out_w;
    let mut out = vec![0f32; b * cout * plane];
    for (c, row) in out.chunks_mut(plane.max(1)).enumerate() {
        row.fill(bias[c % cout]);
    }
    if winograd::applies(g) {
        winograd::accumulate(x, weight, b, cout, g, &mut out)?;
    } else if shifted::applies(g) {
        shifted::accumulate(x, weight, b, cout, g, &mut out)?;
    } else {
        im2col::accumulate(x, weight, b, cout, g, &mut out)?;
    }
    Ok(out)
}
