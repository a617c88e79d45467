//! Scalar restatements of the single-precision `log` and `sincos` that PyTorch's AVX2 kernels
//! use for `randn` (`avx_mathfun.h`: Cephes polynomials, after Julien Pommier's sse_mathfun and
//! Giovanni Garberoglio's AVX port, zlib licence), so our Box–Muller output matches torch's
//! bit for bit.
//!
//! torch's x86-64 builds compile that header with FMA enabled and floating-point contraction
//! on, so a product feeding a single addition becomes one fused multiply-add. The fused forms
//! below are the ones that reproduce torch's stored output exactly (checked against 15 360
//! reference values); a product that is exact either way is left unfused.

/// The smallest normal f32.
const MIN_NORM_POS: u32 = 0x0080_0000;
/// The exponent bits of an f32.
const EXPONENT_MASK: u32 = 0x7f80_0000;
/// The bits of 0.5f32.
const HALF_BITS: u32 = 0x3f00_0000;

// The constants of the original source: double literals (shortened where clippy asks, same
// f64 value) rounded to f32.
const SQRT_HALF: f32 = std::f64::consts::FRAC_1_SQRT_2 as f32;
const LOG_P: [f32; 9] = [
    7.0376836292E-2_f64 as f32,
    -1.1514610310E-1_f64 as f32,
    1.1676998740E-1_f64 as f32,
    -1.2420140846E-1_f64 as f32,
    1.4249322787E-1_f64 as f32,
    -1.6668057665E-1_f64 as f32,
    2.0000714765E-1_f64 as f32,
    -2.4999993993E-1_f64 as f32,
    3.3333331174E-1_f64 as f32,
];
const LOG_Q1: f32 = -2.12194440e-4_f64 as f32;
const LOG_Q2: f32 = 0.693359375_f64 as f32;

const FOUR_OVER_PI: f32 = 1.27323954473516_f64 as f32;
const MINUS_DP: [f32; 3] = [
    -0.78515625_f64 as f32,
    -2.418_756_484_985_351_6e-4_f64 as f32,
    -3.774_894_977_445_941e-8_f64 as f32,
];
const SIN_P: [f32; 3] = [
    -1.9515295891E-4_f64 as f32,
    8.3321608736E-3_f64 as f32,
    -1.6666654611E-1_f64 as f32,
];
const COS_P: [f32; 3] = [
    2.443315711809948E-005_f64 as f32,
    -1.388731625493765E-003_f64 as f32,
    4.166664568298827E-002_f64 as f32,
];

/// Natural logarithm of a positive f32, as torch's `log256_ps`.
pub(super) fn log(x: f32) -> f32 {
    let bits = x.max(f32::from_bits(MIN_NORM_POS)).to_bits();
    let exponent = (bits >> 23) as i32 - 0x7f;
    // Mantissa scaled into [0.5, 1).
    let mut m = f32::from_bits((bits & !EXPONENT_MASK) | HALF_BITS);
    let mut e = exponent as f32 + 1.0;
    let below = m < SQRT_HALF;
    let tmp = if below { m } else { 0.0 };
    m -= 1.0;
    if below {
        e -= 1.0;
    }
    m += tmp;
    let z = m * m;
    let mut y = LOG_P[0];
    for p in &LOG_P[1..] {
        y = y.mul_add(m, *p);
    }
    y *= m;
    y = y.mul_add(z, e * LOG_Q1);
    y -= z * 0.5;
    m += y;
    e.mul_add(LOG_Q2, m)
}

/// (sin x, cos x) of an f32, as torch's `sincos256_ps`.
pub(super) fn sincos(x: f32) -> (f32, f32) {
    let sin_negative = x.is_sign_negative();
    let mut x = x.abs();
    // j = (⌊x·4/π⌋ + 1) & !1: the octant, rounded to even.
    let j = ((x * FOUR_OVER_PI) as i32 + 1) & !1;
    let y = j as f32;
    for dp in MINUS_DP {
        x = y.mul_add(dp, x);
    }
    let sin_negative = sin_negative ^ (j & 4 != 0);
    let cos_negative = (!(j - 2)) & 4 != 0;
    let z = x * x;

    let mut cos_poly = COS_P[0];
    cos_poly = cos_poly.mul_add(z, COS_P[1]);
    cos_poly = cos_poly.mul_add(z, COS_P[2]);
    cos_poly *= z;
    cos_poly = cos_poly.mul_add(z, -(z * 0.5));
    cos_poly += 1.0;

    let mut sin_poly = SIN_P[0];
    sin_poly = sin_poly.mul_add(z, SIN_P[1]);
    sin_poly = sin_poly.mul_add(z, SIN_P[2]);
    sin_poly *= z;
    sin_poly = sin_poly.mul_add(x, x);

    let (s, c) = if j & 2 == 0 {
        (sin_poly, cos_poly)
    } else {
        (cos_poly, sin_poly)
    };
    (
        if sin_negative { -s } else { s },
        if cos_negative { -c } else { c },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_to_libm() {
        for i in 1..=1000 {
            let u = i as f32 / 1000.0;
            assert!(
                (log(u) - u.ln()).abs() <= 2e-7 * (1.0 + u.ln().abs()),
                "log {u}"
            );
            let theta = u * std::f32::consts::TAU;
            let (s, c) = sincos(theta);
            assert!((s - theta.sin()).abs() < 3e-7 && (c - theta.cos()).abs() < 3e-7);
        }
        assert_eq!(log(1.0), 0.0);
    }
}
