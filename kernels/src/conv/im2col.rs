//! im2col convolution: for a chunk of output rows, every tap (input channel × kernel offset) of
//! every output pixel written straight in the packed panel layout of `matmul` (parallel over its
//! panels of 16 pixels), then one product per chunk into the NCHW output. Stride, padding and a
//! nearest 2× upsample are handled while copying, so the upsampled input is never built.

use rayon::prelude::*;

use super::Geometry;
use crate::matmul::{accumulate as product, packed_len, with_packed};
use crate::microkernel::NR;
use crate::Result;

/// Largest im2col chunk, in f32 elements (4 MiB: measured faster than 16 MiB for both the tiny
/// and the full-size VAE), unless `MIN_CHUNK_PIXELS` asks for more (up to 94 MB for the UNet's
/// 2560-channel 3×3 convolutions).
const CHUNK_ELEMENTS: usize = 1 << 20;

/// Fewest output pixels per chunk, whatever the chunk's size: with thousands of input channels
/// (the UNet's 16×16 levels) the 4 MiB bound left 32-pixel products that streamed the whole
/// weight once per two output rows.
const MIN_CHUNK_PIXELS: usize = 1024;

/// Adds the convolution of `x` with `weight` (shapes as in [`super::convolve`]) to `out`, by
/// im2col in bounded chunks of output rows and one product per chunk (a pointwise convolution:
/// one product on the input as it is, a chunk of pixels at a time).
pub fn accumulate(
    x: &[f32],
    weight: &[f32],
    b: usize,
    cout: usize,
    g: &Geometry,
    out: &mut [f32],
) -> Result<()> {
    let taps = g.cin * g.k * g.k;
    let plane = g.out_h * g.out_w;
    let (src_h, src_w) = if g.upsample {
        (g.h / 2, g.w / 2)
    } else {
        (g.h, g.w)
    };
    let rows_per_chunk = (CHUNK_ELEMENTS / (taps * g.out_w).max(1))
        .max(MIN_CHUNK_PIXELS.div_ceil(g.out_w.max(1)))
        .clamp(1, g.out_h);
    let pointwise = g.k == 1 && g.stride == 1 && g.pad == 0 && !g.upsample;
    let mut cols = if pointwise {
        Vec::new()
    } else {
        vec![0f32; packed_len(taps, rows_per_chunk * g.out_w)]
    };
    for batch in 0..b {
        let input = &x[batch * g.cin * src_h * src_w..(batch + 1) * g.cin * src_h * src_w];
        let output = &mut out[batch * cout * plane..(batch + 1) * cout * plane];
        if pointwise {
            // A pointwise convolution is a product with the input as it is (`cin` rows of the
            // output's plane), packed a chunk of pixels at a time: packing the whole plane at
            // once kept a copy of the input (1 GB for the VAE's last shortcut at 1024²) in the
            // thread's reusable buffer.
            let chunk = (CHUNK_ELEMENTS / g.cin.max(1))
                .max(MIN_CHUNK_PIXELS)
                .next_multiple_of(NR);
            for j0 in (0..plane).step_by(chunk) {
                let n = chunk.min(plane - j0);
                with_packed(&input[j0..], (g.cin, n), (plane, 1), |panels| {
                    product(&mut output[j0..], plane, weight, (cout, g.cin, n), panels)
                })?;
            }
            continue;
        }
        let mut y0 = 0;
        while y0 < g.out_h {
            let rows = rows_per_chunk.min(g.out_h - y0);
            let n = rows * g.out_w;
            let cols = &mut cols[..packed_len(taps, n)];
            cols.par_chunks_mut(taps * NR)
                .enumerate()
                .for_each(|(p, panel)| fill_panel(input, src_h * src_w, g, y0, n, p * NR, panel));
            product(
                &mut output[y0 * g.out_w..],
                plane,
                weight,
                (cout, taps, n),
                cols,
            )?;
            y0 += rows;
        }
    }
    Ok(())
}

/// Fills one panel of the im2col, written in `matmul`'s packed layout: output pixels
/// `j0..j0 + NR` of the chunk that starts at output row `y0` (those past `n` zero), for every
/// tap (input channel × kernel offset), `NR` values per tap.
fn fill_panel(
    input: &[f32],
    src_plane: usize,
    g: &Geometry,
    y0: usize,
    n: usize,
    j0: usize,
    panel: &mut [f32],
) {
    // The panel's pixels as runs within output rows: (row, first column, offset, length).
    let mut runs = [(0, 0, 0, 0); NR];
    let mut count = 0;
    let mut j = 0;
    let cols = NR.min(n - j0);
    while j < cols {
        let (line, ox) = ((j0 + j) / g.out_w, (j0 + j) % g.out_w);
        let len = (g.out_w - ox).min(cols - j);
        runs[count] = (y0 + line, ox, j, len);
        count += 1;
        j += len;
    }
    let mut taps = panel.chunks_exact_mut(NR);
    for channel in input.chunks_exact(src_plane).take(g.cin) {
        for ky in 0..g.k {
            for kx in 0..g.k {
                let Some(dst) = taps.next() else { return };
                for &(oy, ox, at, len) in &runs[..count] {
                    fill_run(channel, g, oy, ox, ky, kx, &mut dst[at..at + len]);
                }
                dst[cols..].fill(0.0);
            }
        }
    }
}

/// Fills `dst` with the input values that kernel offset (`ky`, `kx`) meets for the output pixels
/// (`oy`, `ox..ox + dst.len()`) of one channel: zero outside the (virtually upsampled) image.
fn fill_run(
    channel: &[f32],
    g: &Geometry,
    oy: usize,
    ox: usize,
    ky: usize,
    kx: usize,
    dst: &mut [f32],
) {
    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
    if iy < 0 || iy >= g.h as isize || dst.is_empty() {
        dst.fill(0.0);
        return;
    }
    let (up, s) = (usize::from(g.upsample), g.stride);
    let src_w = g.w >> up;
    let row = &channel[(iy as usize >> up) * src_w..][..src_w];
    let first = (ox * s + kx) as isize - g.pad as isize;
    let last = first + ((dst.len() - 1) * s) as isize;
    if first < 0 || last >= g.w as isize {
        for (j, v) in dst.iter_mut().enumerate() {
            let ix = first + (j * s) as isize;
            *v = if ix < 0 || ix >= g.w as isize {
                0.0
            } else {
                row[ix as usize >> up]
            };
        }
        return;
    }
    let first = first as usize;
    match (g.upsample, s) {
        (false, 1) => match <&mut [f32; NR]>::try_from(&mut *dst) {
            // A whole panel row: a fixed-size copy the compiler inlines (a memmove call per 16
            // values cost a tenth of a VAE decode).
            Ok(whole) => whole.copy_from_slice(&row[first..first + NR]),
            Err(_) => dst.copy_from_slice(&row[first..first + dst.len()]),
        },
        _ => {
            for (j, v) in dst.iter_mut().enumerate() {
                *v = row[(first + j * s) >> up];
            }
        }
    }
}
