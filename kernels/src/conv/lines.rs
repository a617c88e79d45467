//! Channels-last line copies of a convolution's (virtually upsampled, padded) input, shared by
//! the shifted and Winograd paths: eight channels at a time, transposed in AVX2 registers where
//! the CPU has them.

use super::Geometry;

/// Fills `line` with padded row `y` of the (virtually upsampled) input, channels last: value
/// (x, c) at `x·cin + c`, zero in the padding.
pub fn fill_line(input: &[f32], g: &Geometry, y: usize, line: &mut [f32]) {
    let iy = y as isize - g.pad as isize;
    if iy < 0 || iy >= g.h as isize {
        line.fill(0.0);
        return;
    }
    let up = usize::from(g.upsample);
    let (src_h, src_w) = (g.h >> up, g.w >> up);
    let (cin, pad) = (g.cin, g.pad);
    line[..pad * cin].fill(0.0);
    line[(pad + g.w) * cin..].fill(0.0);
    let inner = &mut line[pad * cin..(pad + g.w) * cin];
    let row = (iy as usize >> up) * src_w;
    // Eight channels at a time, so that each pixel gets a run of eight values rather than one
    // scattered store per channel.
    for c0 in (0..cin).step_by(8) {
        let width = 8.min(cin - c0);
        #[cfg(target_arch = "x86_64")]
        if width == 8 && up == 0 && crate::fastmath::has_avx2_fma() {
            let plane = src_h * src_w;
            // SAFETY: channels c0..c0 + 8 of row `row` hold `src_w` = g.w values each, and
            // `inner` holds g.w pixels of `cin` values.
            unsafe {
                transpose::channels_last(
                    &input[c0 * plane + row..],
                    plane,
                    src_w,
                    &mut inner[c0..],
                    cin,
                )
            };
            continue;
        }
        let sources: [&[f32]; 8] = std::array::from_fn(|l| {
            let c = c0 + l.min(width - 1);
            &input[c * src_h * src_w + row..][..src_w]
        });
        for (x, pixel) in inner.chunks_exact_mut(cin).enumerate() {
            let values: [f32; 8] = std::array::from_fn(|l| sources[l][x >> up]);
            match <&mut [f32; 8]>::try_from(&mut pixel[c0..c0 + width]) {
                Ok(run) => *run = values,
                Err(_) => pixel[c0..].copy_from_slice(&values[..width]),
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod transpose {
    use std::arch::x86_64::*;

    /// Writes pixels `0..w` of eight channel rows (row `l` at `src + l·stride`) as runs of eight
    /// values, pixel `x`'s at `dst + x·pitch`: 8×8 blocks transposed in registers, the last
    /// pixels one by one.
    ///
    /// # Safety
    /// `src[l·stride + x]` must be readable and `dst[x·pitch..+8]` writable for `l < 8`, `x < w`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn channels_last(
        src: &[f32],
        stride: usize,
        w: usize,
        dst: &mut [f32],
        pitch: usize,
    ) {
        // SAFETY: the caller upholds the contract in this function's `# Safety` section.
        unsafe {
            let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
            let blocks = w / 8;
            for b in 0..blocks {
                let x = 8 * b;
                let r: [__m256; 8] =
                    std::array::from_fn(|l| _mm256_loadu_ps(s.add(l * stride + x)));
                // Pairs, then quads, then halves: the standard 8×8 transpose.
                let t0 = _mm256_unpacklo_ps(r[0], r[1]);
                let t1 = _mm256_unpackhi_ps(r[0], r[1]);
                let t2 = _mm256_unpacklo_ps(r[2], r[3]);
                let t3 = _mm256_unpackhi_ps(r[2], r[3]);
                let t4 = _mm256_unpacklo_ps(r[4], r[5]);
                let t5 = _mm256_unpackhi_ps(r[4], r[5]);
                let t6 = _mm256_unpacklo_ps(r[6], r[7]);
                let t7 = _mm256_unpackhi_ps(r[6], r[7]);
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let out = [
                    _mm256_permute2f128_ps::<0x20>(u0, u4),
                    _mm256_permute2f128_ps::<0x20>(u1, u5),
                    _mm256_permute2f128_ps::<0x20>(u2, u6),
                    _mm256_permute2f128_ps::<0x20>(u3, u7),
                    _mm256_permute2f128_ps::<0x31>(u0, u4),
                    _mm256_permute2f128_ps::<0x31>(u1, u5),
                    _mm256_permute2f128_ps::<0x31>(u2, u6),
                    _mm256_permute2f128_ps::<0x31>(u3, u7),
                ];
                for (i, v) in out.into_iter().enumerate() {
                    _mm256_storeu_ps(d.add((x + i) * pitch), v);
                }
            }
            for x in 8 * blocks..w {
                for l in 0..8 {
                    *d.add(x * pitch + l) = *s.add(l * stride + x);
                }
            }
        }
    }
}
