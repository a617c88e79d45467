//! Stride-1 3×3 convolution on the CPU in f32 by Winograd's F(4×4, 3×3) (Lavin & Gray, 2015):
//! each 4×4 block of output pixels comes from a 6×6 patch of input, and in the transformed
//! domain the 3×3 kernel becomes 36 pointwise weights, so the convolution is 36 independent
//! products (transformed tiles × input channels by input channels × output channels) with 36
//! multiplies per block and channel pair instead of 144: 4× fewer flops than im2col or shifted
//! products (F(2×2, 3×3), used before, saves 2.25×). The transforms' coefficients are small
//! (interpolation points 0, ±1, ±2), so the result stays close to the direct sum (it is checked
//! against candle's conv2d at 1e-3 relative, like the others).
//!
//! Tiles (of all images together) go in bands whose transformed inputs and products stay in the
//! last-level cache; each band's input rows are copied channels last (as the shifted products do,
//! a folded upsample included), so every transform works on runs of consecutive channels. The
//! weights are transformed per call straight into the packed panels of `kernels::matmul`, in
//! groups of output channels that bound that buffer.

use std::cell::Cell;

use crate::{fail, Result};
use rayon::prelude::*;

use super::lines::fill_line;
use super::Geometry;
use crate::fastmath;
use crate::matmul::{multiply, packed_len, with_panel_buffer};
use crate::microkernel::{SharedMut, NR};

/// Output pixels along each side of a tile.
const TILE: usize = 4;
/// Input pixels along each side of a tile's patch (TILE + 2).
const PATCH: usize = 6;
/// Values of a transformed 6×6 patch: the 36 independent products.
const POINTS: usize = PATCH * PATCH;
/// Channels transformed together, as one block of SIMD lanes.
const LANES: usize = 8;
/// Bytes of one group's transformed weights (they are rebuilt for each group of output channels,
/// and the inputs transformed again, so groups are few: three for 1280 → 1280 channels).
const WEIGHT_GROUP_BYTES: usize = 112 << 20;
/// Bytes of the output rows one tile row writes channels last before they go to the NCHW
/// output: a chunk of channels at a time, so that they stay in the L2 cache.
const OUTPUT_LINES_BYTES: usize = 512 << 10;
/// Bytes of one band's transformed inputs and products together.
const BAND_BYTES: usize = 24 << 20;
/// Fewest tiles per band: fewer would stream the transformed weights from memory once per
/// handful of tiles.
const MIN_BAND_TILES: usize = 512;

type Lanes = [f32; LANES];

thread_local! {
    /// A band's transformed inputs and products, reused from call to call.
    static BAND: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// The six padded input lines one row of tiles reads, or the output rows it writes.
    static LINES: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Whether `g` runs this way: a 3×3 kernel at stride 1, any padding.
pub fn applies(g: &Geometry) -> bool {
    g.k == 3 && g.stride == 1
}

/// Adds the convolution of the `b` images `input` (`[b, cin, h, w]`, or `[b, cin, h/2, w/2]`
/// upsampled virtually when `g.upsample`) with `weight` (`[cout, cin, 3, 3]`) to `output`
/// (`[b, cout, out_h, out_w]`, e.g. pre-filled with the bias).
pub fn accumulate(
    input: &[f32],
    weight: &[f32],
    b: usize,
    cout: usize,
    g: &Geometry,
    output: &mut [f32],
) -> Result<()> {
    let (cin, pad) = (g.cin, g.pad);
    let up = usize::from(g.upsample);
    let plane = g.out_h * g.out_w;
    if !applies(g)
        || g.out_h + 2 != g.h + 2 * pad
        || g.out_w + 2 != g.w + 2 * pad
        || input.len() < b * cin * (g.h >> up) * (g.w >> up)
        || weight.len() < cout * cin * 9
        || output.len() < b * cout * plane
    {
        fail!(
            "conv2d: Winograd F(4, 3) does not fit {cin}→{cout}, {}×{} k{} s{} p{pad}",
            g.h,
            g.w,
            g.k,
            g.stride
        );
    }
    if b == 0 || plane == 0 || cout == 0 || cin == 0 {
        return Ok(());
    }
    let tiles = Tiles {
        across: g.out_w.div_ceil(TILE),
        down: g.out_h.div_ceil(TILE),
    };
    let group = output_group(cin, cout);
    let rows_total = b * tiles.down;
    let band_rows = (BAND_BYTES / (4 * POINTS * tiles.across * (cin + group)))
        .max(MIN_BAND_TILES.div_ceil(tiles.across))
        .clamp(1, rows_total);
    let band_tiles = band_rows * tiles.across;
    let mut band = BAND.take();
    band.resize(POINTS * band_tiles * (cin + group), 0.0);
    let result = with_panel_buffer((POINTS * cin, group), |transformed| {
        let out = SharedMut(output.as_mut_ptr());
        for o0 in (0..cout).step_by(group) {
            let n = group.min(cout - o0);
            let panels = packed_len(cin, n);
            let weights = &mut transformed[..POINTS * panels];
            transform_weights(weight, cin, o0..o0 + n, weights);
            for r0 in (0..rows_total).step_by(band_rows) {
                let rows = r0..rows_total.min(r0 + band_rows);
                let count = rows.len() * tiles.across;
                let (inputs, products) = band.split_at_mut(POINTS * band_tiles * cin);
                let (inputs, products) = (
                    &mut inputs[..POINTS * count * cin],
                    &mut products[..POINTS * count * n],
                );
                transform_inputs(input, g, &tiles, rows.clone(), inputs);
                // Point after point (each product runs in parallel), into rows interleaved
                // tile by tile: the output transform then reads each tile's values in one run.
                for (point, (a, u)) in inputs
                    .chunks_exact(count * cin)
                    .zip(weights.chunks_exact(panels))
                    .enumerate()
                {
                    multiply(
                        &mut products[point * n..],
                        POINTS * n,
                        a,
                        (count, cin, n),
                        u,
                    )?;
                }
                let block = OutputBlock {
                    products,
                    channels: o0..o0 + n,
                    first_row: rows.start,
                };
                rows.into_par_iter()
                    .for_each(|row| block.add_row(g, &tiles, cout, row, out));
            }
        }
        Ok(())
    });
    BAND.set(band);
    result
}

/// Output channels whose transformed weights are built at once: all of them when they fit
/// `WEIGHT_GROUP_BYTES`, else equal groups of whole panels.
fn output_group(cin: usize, cout: usize) -> usize {
    let fit = (WEIGHT_GROUP_BYTES / (4 * POINTS * cin)).max(NR);
    let groups = cout.div_ceil(fit);
    cout.div_ceil(groups).next_multiple_of(NR).min(cout)
}

/// How the output splits into 4×4 tiles (the last row and column may be partly outside).
struct Tiles {
    across: usize,
    down: usize,
}

/// Writes, for output channels `channels`, the transformed kernel U = G·g·Gᵀ of each
/// (output, input) channel pair into `dst`: `POINTS` packed right operands (`cin` ×
/// `channels.len()`, of `packed_len` values each), point ξ's value in the ξ-th.
fn transform_weights(
    weight: &[f32],
    cin: usize,
    channels: std::ops::Range<usize>,
    dst: &mut [f32],
) {
    let panels = channels.len().div_ceil(NR);
    let dst = SharedMut(dst.as_mut_ptr());
    (0..panels)
        .into_par_iter()
        .for_each(|p| weight_panel(weight, cin, &channels, p, dst));
}

fastmath::vectorised! {
    /// Panel `p` (output channels `channels.start + p·NR..`) of every point's operand.
    fn weight_panel(
        weight: &[f32],
        cin: usize,
        channels: &std::ops::Range<usize>,
        p: usize,
        dst: SharedMut,
    ) {
        let size = packed_len(cin, channels.len());
        for c in 0..cin {
            for j0 in (0..NR).step_by(LANES) {
                let first = channels.start + p * NR + j0;
                // Plain loops: `array::from_fn`'s closures here were not inlined either.
                let mut g = [[0f32; LANES]; 9];
                for (l, o) in (first..channels.end.min(first + LANES)).enumerate() {
                    let taps = &weight[(o * cin + c) * 9..][..9];
                    for (t, tap) in taps.iter().enumerate() {
                        g[t][l] = *tap;
                    }
                }
                let u = separable::<3, 6, 9, 36>(&g, kernel_1d);
                for (point, value) in u.iter().enumerate() {
                    // SAFETY: point ξ's operand is `size` values from ξ·size; panel p's values
                    // (c, j0..j0 + LANES) lie inside it. Tasks write disjoint panels.
                    unsafe { store(value, dst.get().add(point * size + (p * cin + c) * NR + j0), LANES) };
                }
            }
        }
    }
}

/// Writes Bᵀ·d·B of every tile of tile rows `rows` (numbered across all images) into `dst`:
/// `POINTS` matrices of tiles × `cin`, in tile order.
fn transform_inputs(
    input: &[f32],
    g: &Geometry,
    tiles: &Tiles,
    rows: std::ops::Range<usize>,
    dst: &mut [f32],
) {
    let count = rows.len() * tiles.across;
    let first = rows.start;
    let dst = SharedMut(dst.as_mut_ptr());
    rows.into_par_iter().for_each(|row| {
        let mut lines = LINES.take();
        input_row(input, g, tiles, row, row - first, count, &mut lines, dst);
        LINES.set(lines);
    });
}

fastmath::vectorised! {
    /// Tile row `row`, the `local`-th of its band of `count` tiles: its six padded input lines
    /// go channels last into `lines`, then each tile's transform into `dst`.
    #[allow(clippy::too_many_arguments)]
    fn input_row(
        input: &[f32],
        g: &Geometry,
        tiles: &Tiles,
        row: usize,
        local: usize,
        count: usize,
        lines: &mut Vec<f32>,
        dst: SharedMut,
    ) {
        let up = usize::from(g.upsample);
        let image_len = g.cin * (g.h >> up) * (g.w >> up);
        let cin = g.cin;
        let line_len = (TILE * tiles.across + 2) * cin;
        let (image, ty) = (row / tiles.down, row % tiles.down);
        let image = &input[image * image_len..(image + 1) * image_len];
        lines.resize(PATCH * line_len, 0.0);
        for (i, line) in lines.chunks_exact_mut(line_len).enumerate() {
            fill_line(image, g, TILE * ty + i, line);
        }
        for tx in 0..tiles.across {
            let tile = local * tiles.across + tx;
            for c0 in (0..cin).step_by(LANES) {
                let width = LANES.min(cin - c0);
                // A plain loop: `array::from_fn`'s closure here was not inlined, so it ran
                // without the kernel's target features (a fifth of a decode, in scalar code).
                let mut d = [[0f32; LANES]; POINTS];
                for (point, value) in d.iter_mut().enumerate() {
                    let (y, x) = (point / PATCH, point % PATCH);
                    let at = y * line_len + (TILE * tx + x) * cin + c0;
                    load_into(value, &lines[at..at + width]);
                }
                let v = separable::<6, 6, 36, 36>(&d, input_1d);
                for (point, value) in v.iter().enumerate() {
                    // SAFETY: point ξ's matrix is `count · cin` values from ξ·count·cin; this
                    // tile's row holds channels c0..c0 + width. Tasks write disjoint tile rows.
                    unsafe { store(value, dst.get().add((point * count + tile) * cin + c0), width) };
                }
            }
        }
    }
}

/// One band's products, for output channels `channels`: for each of `count` tiles, `POINTS` runs
/// of `channels.len()` values.
struct OutputBlock<'a> {
    products: &'a [f32],
    channels: std::ops::Range<usize>,
    first_row: usize,
}

impl OutputBlock<'_> {
    /// Adds Aᵀ·m·A of the tiles of tile row `row` to the NCHW `output` of `cout` channels.
    fn add_row(&self, g: &Geometry, tiles: &Tiles, cout: usize, row: usize, output: SharedMut) {
        let mut lines = LINES.take();
        output_row(self, g, tiles, cout, row, &mut lines, output);
        LINES.set(lines);
    }
}

fastmath::vectorised! {
    /// [`OutputBlock::add_row`]: a chunk of channels at a time, the tile row's four output rows
    /// of each channel go into `lines` first, which are then added to the output row by row.
    fn output_row(
        block: &OutputBlock,
        g: &Geometry,
        tiles: &Tiles,
        cout: usize,
        row: usize,
        lines: &mut Vec<f32>,
        output: SharedMut,
    ) {
        let n = block.channels.len();
        let (image, ty) = (row / tiles.down, row % tiles.down);
        let plane = g.out_h * g.out_w;
        let (y0, rows) = (TILE * ty, TILE.min(g.out_h - TILE * ty));
        let span = TILE * tiles.across;
        // One cache line more than the four rows, so that channels do not fall on the same
        // cache sets when the width is a power of two.
        let pitch = TILE * span + 16;
        let chunk = (OUTPUT_LINES_BYTES / (4 * pitch) / LANES * LANES).max(LANES);
        lines.resize(chunk.min(n.next_multiple_of(LANES)) * pitch, 0.0);
        for first in (0..n).step_by(chunk) {
            let last = n.min(first + chunk);
            // Tile by tile, then channel block by channel block: a tile's products are one run
            // (channel-block-outer order, or one matrix per point, read tens of strided streams
            // and missed the cache on nearly every load).
            for tx in 0..tiles.across {
                let tile = (row - block.first_row) * tiles.across + tx;
                for c0 in (first..last).step_by(LANES) {
                    let mut m = [[0f32; LANES]; POINTS];
                    for (point, value) in m.iter_mut().enumerate() {
                        let at = (tile * POINTS + point) * n + c0;
                        load_into(value, &block.products[at..(at + LANES).min(at + last - c0)]);
                    }
                    let y = separable::<6, 4, 36, 16>(&m, output_1d);
                    let at = (c0 - first) * pitch + TILE * tx;
                    scatter_tile(&y, &mut lines[at..], pitch, span);
                }
            }
            for (l, o) in block.channels.clone().enumerate().take(last).skip(first) {
                for i in 0..rows {
                    let src = &lines[(l - first) * pitch + i * span..][..g.out_w];
                    // SAFETY: row y0 + i of channel o of this image lies inside the output;
                    // tasks own disjoint tile rows.
                    let dst = unsafe {
                        let at = (image * cout + o) * plane + (y0 + i) * g.out_w;
                        std::slice::from_raw_parts_mut(output.get().add(at), g.out_w)
                    };
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d += s;
                    }
                }
            }
        }
    }
}

/// Writes a tile's 4×4 outputs `y` (row-major, a lane per channel) as runs of four pixels:
/// channel l's row r at `dst[l·pitch + r·span..][..4]`. The lanes of channels past the last
/// one are written too (`dst` has room for all eight).
#[inline(always)]
fn scatter_tile(y: &[Lanes; TILE * TILE], dst: &mut [f32], pitch: usize, span: usize) {
    let needed = (LANES - 1) * pitch + (TILE - 1) * span + TILE;
    let dst = &mut dst[..needed];
    #[cfg(target_arch = "x86_64")]
    if fastmath::has_avx2_fma() {
        // SAFETY: `dst` holds every place written (checked by the slice above), and the CPU
        // has AVX2.
        unsafe { transpose::rows_of_four(y, dst.as_mut_ptr(), pitch, span) };
        return;
    }
    for (point, value) in y.iter().enumerate() {
        let (r, c) = (point / TILE, point % TILE);
        for (l, v) in value.iter().enumerate() {
            dst[l * pitch + r * span + c] = *v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod transpose {
    use std::arch::x86_64::*;

    use super::{Lanes, TILE};

    /// [`super::scatter_tile`]: each output row's four pixel vectors transposed to eight runs of
    /// four in registers.
    ///
    /// # Safety
    /// `dst[l·pitch + r·span..][..4]` must be writable for `l < 8`, `r < 4`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn rows_of_four(y: &[Lanes; TILE * TILE], dst: *mut f32, pitch: usize, span: usize) {
        // SAFETY: the caller upholds the contract in this function's `# Safety` section.
        unsafe {
            for r in 0..TILE {
                let a: [__m256; TILE] =
                    std::array::from_fn(|c| _mm256_loadu_ps(y[r * TILE + c].as_ptr()));
                // Pairs, then quads: lanes 0–3 and 4–7 of u_k hold channels k and k + 4.
                let t0 = _mm256_unpacklo_ps(a[0], a[1]);
                let t1 = _mm256_unpackhi_ps(a[0], a[1]);
                let t2 = _mm256_unpacklo_ps(a[2], a[3]);
                let t3 = _mm256_unpackhi_ps(a[2], a[3]);
                let u = [
                    _mm256_shuffle_ps::<0x44>(t0, t2),
                    _mm256_shuffle_ps::<0xEE>(t0, t2),
                    _mm256_shuffle_ps::<0x44>(t1, t3),
                    _mm256_shuffle_ps::<0xEE>(t1, t3),
                ];
                for (k, v) in u.into_iter().enumerate() {
                    _mm_storeu_ps(dst.add(k * pitch + r * span), _mm256_castps256_ps128(v));
                    _mm_storeu_ps(
                        dst.add((k + 4) * pitch + r * span),
                        _mm256_extractf128_ps::<1>(v),
                    );
                }
            }
        }
    }
}

/// Writes the first `width` values of `value` at `dst` (a fixed-size copy when all are).
///
/// # Safety
/// `dst` must be writable for `width` ≤ `LANES` values.
#[inline(always)]
unsafe fn store(value: &Lanes, dst: *mut f32, width: usize) {
    // SAFETY: the caller upholds the contract in this function's `# Safety` section.
    unsafe {
        if width == LANES {
            (dst as *mut Lanes).write_unaligned(*value);
        } else {
            std::ptr::copy_nonoverlapping(value.as_ptr(), dst, width);
        }
    }
}

/// Copies up to `LANES` values into `dst`, the rest zero. A slice copy: returning the lanes by
/// value was compiled into eight scalar loads and stores.
#[inline(always)]
fn load_into(dst: &mut Lanes, src: &[f32]) {
    if src.len() >= LANES {
        dst.copy_from_slice(&src[..LANES]);
    } else {
        dst[..src.len()].copy_from_slice(src);
        dst[src.len()..].fill(0.0);
    }
}

/// Applies the 1-D transform `f` (`IN` vectors to `OUT`) down the columns, then along the rows,
/// of an `IN`×`IN` grid of lane vectors (row-major, `AREA_IN` = IN², `AREA_OUT` = OUT²).
#[inline(always)]
fn separable<const IN: usize, const OUT: usize, const AREA_IN: usize, const AREA_OUT: usize>(
    grid: &[Lanes; AREA_IN],
    f: impl Fn([Lanes; IN]) -> [Lanes; OUT] + Copy,
) -> [Lanes; AREA_OUT] {
    let mut half = [[[0f32; LANES]; IN]; OUT];
    for j in 0..IN {
        let column = f(std::array::from_fn(|i| grid[i * IN + j]));
        for (i, v) in column.into_iter().enumerate() {
            half[i][j] = v;
        }
    }
    let mut out = [[0f32; LANES]; AREA_OUT];
    for (i, row) in half.iter().enumerate() {
        for (j, v) in f(*row).into_iter().enumerate() {
            out[i * OUT + j] = v;
        }
    }
    out
}

#[inline(always)]
fn add(a: Lanes, b: Lanes) -> Lanes {
    std::array::from_fn(|l| a[l] + b[l])
}

#[inline(always)]
fn sub(a: Lanes, b: Lanes) -> Lanes {
    std::array::from_fn(|l| a[l] - b[l])
}

#[inline(always)]
fn scale(k: f32, a: Lanes) -> Lanes {
    std::array::from_fn(|l| k * a[l])
}

/// Bᵀ of F(4, 3): a 6-value input run to its 6 transformed values.
#[inline(always)]
fn input_1d([a0, a1, a2, a3, a4, a5]: [Lanes; 6]) -> [Lanes; 6] {
    let even = sub(a4, scale(4.0, a2));
    let odd = sub(scale(4.0, a1), a3);
    let even2 = sub(a4, a2);
    let odd2 = scale(2.0, sub(a1, a3));
    [
        add(sub(scale(4.0, a0), scale(5.0, a2)), a4),
        sub(even, odd),
        add(even, odd),
        sub(even2, odd2),
        add(even2, odd2),
        add(sub(scale(4.0, a1), scale(5.0, a3)), a5),
    ]
}

/// G of F(4, 3): 3 kernel taps to 6 transformed values.
#[inline(always)]
fn kernel_1d([g0, g1, g2]: [Lanes; 3]) -> [Lanes; 6] {
    let outer = add(g0, g2);
    let wide = add(scale(1.0 / 24.0, g0), scale(1.0 / 6.0, g2));
    let middle = scale(1.0 / 12.0, g1);
    [
        scale(0.25, g0),
        scale(-1.0 / 6.0, add(outer, g1)),
        scale(-1.0 / 6.0, sub(outer, g1)),
        add(wide, middle),
        sub(wide, middle),
        g2,
    ]
}

/// Aᵀ of F(4, 3): 6 transformed products to 4 outputs.
#[inline(always)]
fn output_1d([m0, m1, m2, m3, m4, m5]: [Lanes; 6]) -> [Lanes; 4] {
    let (sum12, diff12) = (add(m1, m2), sub(m1, m2));
    let (sum34, diff34) = (add(m3, m4), sub(m3, m4));
    [
        add(add(m0, sum12), sum34),
        add(diff12, scale(2.0, diff34)),
        add(sum12, scale(4.0, sum34)),
        add(add(diff12, scale(8.0, diff34)), m5),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::shifted::tests::check_against_candle;
    use candle_core::Result;

    /// F(2, 3) matches candle's conv2d for two images: odd sizes (half tiles), padding 0 and 1,
    /// a folded upsample, several k passes, several output groups and bands.
    #[test]
    fn matches_candle_conv2d() -> Result<()> {
        for (cin, cout, h, w, pad, up) in [
            (3, 5, 7, 9, 1, false),
            (4, 3, 5, 6, 1, true),
            (300, 20, 3, 33, 1, false),
            (2, 7, 6, 41, 0, false),
            (13, 150, 17, 11, 1, false),
            (1200, 17, 9, 8, 1, false),
            (2000, 1000, 2, 3, 1, false),
            (16, 16, 70, 66, 1, false),
        ] {
            check_against_candle(accumulate, applies, (cin, cout), (h, w), 3, pad, up)?;
        }
        Ok(())
    }

    /// Wide layers split their output channels into groups of whole panels, at most
    /// `WEIGHT_GROUP_BYTES` of transformed weights each.
    #[test]
    fn output_groups_are_whole_panels_within_the_bound() {
        assert_eq!(output_group(320, 320), 320);
        // 36 transformed values per weight: 1280 → 1280 takes three groups of 27 panels.
        assert_eq!(output_group(1280, 1280), 432);
        for (cin, cout) in [(2560, 1280), (2000, 1000), (5000, 37)] {
            let group = output_group(cin, cout);
            assert!(
                group.is_multiple_of(NR) || group == cout,
                "{cin}→{cout}: {group}"
            );
            assert!(4 * POINTS * cin * group <= WEIGHT_GROUP_BYTES.max(4 * POINTS * cin * NR));
        }
    }

    /// Operands that do not fit the geometry are refused, not read past.
    #[test]
    fn refuses_short_operands() {
        let g = Geometry {
            cin: 2,
            h: 4,
            w: 5,
            k: 3,
            stride: 1,
            pad: 1,
            out_h: 4,
            out_w: 5,
            upsample: false,
        };
        let mut out = vec![0f32; 3 * 20];
        assert!(accumulate(&[0.0; 39], &[0.0; 54], 1, 3, &g, &mut out).is_err());
        assert!(accumulate(&[0.0; 40], &[0.0; 53], 1, 3, &g, &mut out).is_err());
        assert!(accumulate(&[0.0; 40], &[0.0; 54], 1, 3, &g, &mut out[1..]).is_err());
        assert!(accumulate(&[0.0; 40], &[0.0; 54], 1, 3, &g, &mut out).is_ok());
    }
}
