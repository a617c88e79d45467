//! Branch-free `exp` and `erf` for f32 that the compiler can vectorise, and [`vectorised!`], which
//! compiles a kernel twice: for AVX2 + FMA, used when the CPU has them, and for the baseline the
//! crate is built for (x86-64: SSE2). libm's scalar `expf`/`erff` are what made softmax, SiLU and
//! GELU slow. Written by hand: the SIMD dispatch crates (pulp, multiversion) need more ceremony
//! than this one macro.

/// Whether the CPU has AVX2 and FMA (x86-64 only; cached by std).
#[inline(always)]
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU has AVX-512 F (x86-64 only; cached by std).
#[inline(always)]
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU has AVX-512 F and AVX-512 BF16 (x86-64 only; cached by std).
#[inline(always)]
pub fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines a kernel `fn name(args) { body }` whose body is compiled for AVX2 + FMA too and runs
/// that way where the CPU has both. Loops in the body, and the `#[inline(always)]` functions of
/// this module they call, are vectorised 8 lanes wide. No fused multiply-add is introduced, so
/// both builds give the same bits.
macro_rules! vectorised {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                if $crate::fastmath::has_avx2_fma() {
                    // SAFETY: the CPU has the features `avx2` is compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use vectorised;

/// e^x within 2 ulp of libm over the whole f32 range: 2^n · p(r) with n = round(x·log2 e),
/// r = x − n·ln 2 (in two parts), p Cephes' degree-6 minimax polynomial. Below −87.3 gives 0,
/// above 88.7 gives +∞, NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5·2^23: adding and subtracting rounds to an integer
    const LOW: f32 = -87.3;
    const HIGH: f32 = 88.7;
    let xc = x.clamp(LOW, HIGH);
    // Adding 1.5·2^23 rounds to an integer and leaves it in the low mantissa bits.
    let shifted = xc * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    p = p * r * r + r + 1.0;
    // 2^n built from its bits in two halves (n may be 128 near 88.7), with integer operations
    // only: a float-to-int cast would not vectorise.
    let ni = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let n1 = ni >> 1;
    let pow2 = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    let y = p * pow2(n1) * pow2(ni - n1);
    if x < LOW {
        0.0
    } else if x > HIGH {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

/// erf(x) with an absolute error below 2e-7: its Maclaurin series for |x| < 1 and Abramowitz &
/// Stegun 7.1.26, 1 − t·(a1 + t·(a2 + …))·e^(−x²) with t = 1/(1 + p·|x|), beyond (where f32
/// rounding of that difference costs up to 6e-7 for small |x|). Both are computed and one
/// selected, so the loop vectorises.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_7;
    const A4: f32 = -1.453_152_1;
    const A5: f32 = 1.061_405_4;
    // 2/√π · (−1)^n / (n!·(2n+1)), n = 0…11.
    const SERIES: [f32; 12] = [
        1.1283792e+00,
        -3.7612638e-01,
        1.1283792e-01,
        -2.6866172e-02,
        5.223978e-03,
        -8.548327e-04,
        1.20553326e-04,
        -1.492565e-05,
        1.6462114e-06,
        -1.6365844e-07,
        1.4807193e-08,
        -1.2290555e-09,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A1 + t * (A2 + t * (A3 + t * (A4 + t * A5))));
    let far = (1.0 - poly * exp(-a * a)).copysign(x);
    let x2 = x * x;
    let near = x * SERIES.iter().rev().fold(0.0, |acc, &c| acc * x2 + c);
    if a < 1.0 {
        near
    } else {
        far
    }
}

/// Exact (erf) GELU, x·½(1 + erf(x/√2)).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// SiLU, x·σ(x).
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_within_a_few_ulp_over_the_range() {
        let mut x = -87.0f32;
        while x <= 88.5 {
            let (ours, libm) = (exp(x), (x as f64).exp());
            let rel = ((ours as f64 - libm) / libm).abs();
            assert!(rel < 3e-7, "{x}: {ours} vs {libm}");
            x += 0.0137;
        }
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn erf_and_gelu_match_f64() {
        let mut x = -6.0f32;
        while x <= 6.0 {
            let want = libm_erf(x as f64);
            assert!((erf(x) as f64 - want).abs() < 2e-7, "erf({x})");
            let gelu_want = 0.5 * x as f64 * (1.0 + libm_erf(x as f64 / 2f64.sqrt()));
            assert!(
                (gelu(x) as f64 - gelu_want).abs() < 2e-7 * (1.0 + x.abs() as f64),
                "gelu({x})"
            );
            x += 0.00731;
        }
        assert_eq!(erf(0.0), 0.0);
        assert!(erf(f32::NAN).is_nan());
    }

    #[test]
    fn silu_saturates_without_nan() {
        assert_eq!(silu(-200.0), 0.0);
        assert_eq!(silu(200.0), 200.0);
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
    }

    vectorised! {
        fn gelu_all(dst: &mut [f32], src: &[f32]) {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = gelu(s);
            }
        }
    }

    /// The dispatched kernel gives the same bits as the scalar formula.
    #[test]
    fn vectorised_gives_the_same_bits() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.0191).collect();
        let plain: Vec<f32> = xs.iter().map(|&x| gelu(x)).collect();
        let mut fast = vec![0f32; xs.len()];
        gelu_all(&mut fast, &xs);
        assert_eq!(plain, fast);
    }

    /// erf in f64 by its Maclaurin series (small |x|) or continued fraction for erfc.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() < 2.5 {
            let mut term = x;
            let mut sum = x;
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let a = x.abs();
            let mut frac = 0.0;
            for n in (1..200).rev() {
                frac = (n as f64 / 2.0) / (a + frac);
            }
            let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + frac);
            (1.0 - erfc).copysign(x)
        }
    }
}
