//! GELU (erf), quick-GELU and GEGLU in f32: one vectorised pass each (`fastmath`), parallel over
//! slices; GEGLU reads both halves of a row and writes the product in the same pass.

use rayon::prelude::*;

use crate::fastmath;

/// Values per parallel task.
const TASK: usize = 1 << 14;

/// Exact (erf) GELU of every value.
pub fn gelu(src: &[f32]) -> Vec<f32> {
    map(src, gelu_values)
}

/// `x · sigmoid(1.702 x)` of every value (CLIP-L's activation).
pub fn quick_gelu(src: &[f32]) -> Vec<f32> {
    map(src, quick_gelu_values)
}

/// GEGLU of `rows` rows of `2·half` values (value, gate): `rows` rows of `value · gelu(gate)`.
pub fn geglu(src: &[f32], rows: usize, half: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * half];
    if half == 0 {
        return out;
    }
    let rows_per_task = (TASK / half).max(1);
    out.par_chunks_mut(rows_per_task * half)
        .zip(src.par_chunks(rows_per_task * 2 * half))
        .for_each(|(dst, src)| geglu_rows(dst, src, half));
    out
}

/// `kernel` over `src` in parallel slices.
fn map(src: &[f32], kernel: fn(&mut [f32], &[f32])) -> Vec<f32> {
    let mut out = vec![0f32; src.len()];
    out.par_chunks_mut(TASK)
        .zip(src.par_chunks(TASK))
        .for_each(|(d, s)| kernel(d, s));
    out
}

fastmath::vectorised! {
    /// GEGLU of whole rows: `src` holds rows of `2·half` values, `dst` rows of `half`.
    fn geglu_rows(dst: &mut [f32], src: &[f32], half: usize) {
        for (d, s) in dst.chunks_exact_mut(half).zip(src.chunks_exact(2 * half)) {
            let (value, gate) = s.split_at(half);
            for ((o, &v), &g) in d.iter_mut().zip(value).zip(gate) {
                *o = v * fastmath::gelu(g);
            }
        }
    }
}

fastmath::vectorised! {
    fn gelu_values(dst: &mut [f32], src: &[f32]) {
        for (o, &v) in dst.iter_mut().zip(src) {
            *o = fastmath::gelu(v);
        }
    }
}

fastmath::vectorised! {
    fn quick_gelu_values(dst: &mut [f32], src: &[f32]) {
        for (o, &v) in dst.iter_mut().zip(src) {
            *o = v / (1.0 + fastmath::exp(-1.702 * v));
        }
    }
}
