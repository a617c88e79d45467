//! PyTorch's CPU random generator, reimplemented: MT19937 seeded like
//! `torch.Generator().manual_seed(seed)`, and `torch.randn` for contiguous float32 tensors.
//!
//! * Uniform float: the low 24 bits of one 32-bit draw, times 2⁻²⁴.
//! * `randn` with at least 16 elements (torch's `normal_fill`): fill the whole buffer with
//!   uniforms, then for each block of 16 apply Box–Muller to the pairs (j, j + 8):
//!   r = √(−2 ln(1 − u_j)), θ = 2π·u_{j+8}, out_j = r cos θ, out_{j+8} = r sin θ. When the
//!   length is not a multiple of 16 the last 16 values are redrawn and recomputed.
//! * `randn` with fewer than 16 elements (torch's scalar path): each value comes from
//!   `normal_distribution<double>` with two 53-bit uniforms u1, u2:
//!   r = √(−2 log1p(−u2)), θ = 2π·u1, value r cos θ; r sin θ is cached in the generator and
//!   returned by the next scalar draw.
//!
//! The block path uses the f32 log/sincos of torch's AVX2 kernel (module `avx_math`), the one
//! torch runs on x86-64 (Fooocus' usual platform, and where the reference fixtures were made):
//! the output is bit-identical to it. Where torch takes its plain C++ kernel instead (no AVX2,
//! e.g. ARM), it uses libm and its values differ from these in the last bits (~1e-6). The
//! scalar path uses f64 libm functions, as torch does.

use super::avx_math;

/// MT19937 (32-bit Mersenne Twister), as `at::mt19937`.
#[derive(Debug, Clone)]
struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    fn new(seed: u64) -> Self {
        let mut state = [0u32; 624];
        // torch keeps the low 32 bits of the seed.
        state[0] = seed as u32;
        for j in 1..624 {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        Self { state, index: 624 }
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        for i in 0..624 {
            let y = (self.state[i] & UPPER) | (self.state[(i + 1) % 624] & LOWER);
            let mut next = self.state[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                next ^= 0x9908_b0df;
            }
            self.state[i] = next;
        }
        self.index = 0;
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }
}

/// `torch.Generator()` on the CPU, after `manual_seed(seed)`.
#[derive(Debug, Clone)]
pub struct TorchGenerator {
    engine: Mt19937,
    next_double_normal: Option<f64>,
}

impl TorchGenerator {
    /// A generator in the state `torch.Generator().manual_seed(seed)` leaves it in (only the
    /// low 32 bits of the seed matter, as in torch).
    pub fn new(seed: u64) -> Self {
        Self {
            engine: Mt19937::new(seed),
            next_double_normal: None,
        }
    }

    /// The next raw 32-bit draw.
    pub fn next_u32(&mut self) -> u32 {
        self.engine.next_u32()
    }

    /// `uniform_real_distribution<float>(0, 1)`: 24 random bits over 2²⁴.
    fn uniform_f32(&mut self) -> f32 {
        (self.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    /// `uniform_real_distribution<double>(0, 1)`: 53 bits of two draws (first draw high).
    fn uniform_f64(&mut self) -> f64 {
        let hi = u64::from(self.next_u32());
        let lo = u64::from(self.next_u32());
        (((hi << 32) | lo) & ((1u64 << 53) - 1)) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `normal_distribution<double>(0, 1)` with torch's cached second value.
    fn normal_f64(&mut self) -> f64 {
        if let Some(cached) = self.next_double_normal.take() {
            return cached;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_double_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// `torch.randn(n)` (float32, contiguous), as the generator's next draw.
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.normal_f64() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for block in data.chunks_exact_mut(16) {
            box_muller_16(block);
        }
        if !n.is_multiple_of(16) {
            let tail = &mut data[n - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform_f32();
            }
            box_muller_16(tail);
        }
        data
    }
}

/// torch's `normal_fill_16_AVX2`: Box–Muller on the pairs (j, j + 8) of 16 uniforms, in f32
/// with torch's AVX2 log and sincos.
fn box_muller_16(block: &mut [f32]) {
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    for j in 0..8 {
        let radius = (-2.0 * avx_math::log(1.0 - block[j])).sqrt();
        let (sin, cos) = avx_math::sincos(two_pi * block[j + 8]);
        block[j] = radius * cos;
        block[j + 8] = radius * sin;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_reference_values() {
        // std::mt19937 with the default seed 5489: first and 10000th outputs.
        let mut mt = Mt19937::new(5489);
        assert_eq!(mt.next_u32(), 3_499_211_612);
        for _ in 1..9999 {
            mt.next_u32();
        }
        assert_eq!(mt.next_u32(), 4_123_659_995);
    }

    #[test]
    fn torch_seed_zero_values() {
        // torch.manual_seed(0); torch.rand(1) -> 0.4963 (first uniform).
        let mut g = TorchGenerator::new(0);
        assert!((g.uniform_f32() - 0.496_256_6).abs() < 1e-6);
        // torch.manual_seed(0); torch.randn(4) -> [1.5410, -0.2934, -2.1788, 0.5684]
        let v = TorchGenerator::new(0).randn(4);
        let want = [1.5410f32, -0.2934, -2.1788, 0.5684];
        for (a, b) in v.iter().zip(want) {
            assert!((a - b).abs() < 1e-4, "{v:?}");
        }
    }

    #[test]
    fn scalar_path_caches_the_second_value() {
        let mut a = TorchGenerator::new(7);
        let one: Vec<f32> = (0..3).flat_map(|_| a.randn(1)).collect();
        assert_eq!(one, TorchGenerator::new(7).randn(3));
    }

    #[test]
    fn block_path_redraws_the_tail() {
        let v = TorchGenerator::new(3).randn(20);
        let head = TorchGenerator::new(3).randn(16);
        assert_eq!(&v[..4], &head[..4]);
        assert_ne!(&v[4..16], &head[4..16]);
        assert!(v.iter().all(|x| x.is_finite()));
    }
}
