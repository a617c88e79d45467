//! Linear multistep (`lms`): x ← x + Σ_j c_j·d_{i−j}, where c_j integrates the j-th Lagrange
//! basis polynomial through the last σs over [σ_i, σ_{i+1}]. The integral is taken exactly, by
//! expanding the polynomial and integrating its monomials in f64 (k-diffusion uses numeric
//! quadrature, which is exact for these low degrees up to its tolerance).

use std::collections::VecDeque;

use candle_core::Tensor;

use super::{to_d, Cx, Step, UpdateRule};
use crate::sampling::error::Result;

pub(super) struct Lms {
    order: usize,
    /// Past derivatives, oldest first; at most `order`.
    ds: VecDeque<Tensor>,
}

impl Lms {
    /// An order below 1 is treated as 1 (Euler).
    pub(super) fn new(order: usize) -> Self {
        Self {
            order: order.max(1),
            ds: VecDeque::new(),
        }
    }
}

impl UpdateRule for Lms {
    fn update(&mut self, _: &mut Cx<'_>, s: &Step<'_>, x: Tensor, den: Tensor) -> Result<Tensor> {
        self.ds.push_back(to_d(&x, s.sigma, &den)?);
        if self.ds.len() > self.order {
            self.ds.pop_front();
        }
        let order = self.ds.len().min(s.index + 1);
        let nodes: Vec<f64> = (0..order)
            .map(|k| f64::from(s.sigmas[s.index - k]))
            .collect();
        let end = s.sigma_next;
        let mut x = x;
        for (j, d) in self.ds.iter().rev().take(order).enumerate() {
            let coeff = lagrange_integral(&nodes, j, end);
            x = (x + d.affine(coeff, 0.0)?)?;
        }
        Ok(x)
    }
}

/// ∫ from nodes[0] to `end` of the Lagrange basis polynomial that is 1 at nodes[j] and 0 at the
/// other nodes.
fn lagrange_integral(nodes: &[f64], j: usize, end: f64) -> f64 {
    // Work in u = τ − nodes[0] so the integral runs over [0, end − nodes[0]].
    let origin = nodes[0];
    let shifted: Vec<f64> = nodes.iter().map(|t| t - origin).collect();
    // poly[m] is the coefficient of u^m of Π_{k≠j} (u − a_k)/(a_j − a_k).
    let mut poly = vec![1.0f64];
    for (k, &a_k) in shifted.iter().enumerate() {
        if k == j {
            continue;
        }
        let denom = shifted[j] - a_k;
        let mut next = vec![0.0; poly.len() + 1];
        for (m, c) in poly.iter().enumerate() {
            next[m + 1] += c / denom;
            next[m] -= c * a_k / denom;
        }
        poly = next;
    }
    let b = end - origin;
    let mut b_pow = b;
    let mut integral = 0.0;
    for (m, c) in poly.iter().enumerate() {
        integral += c * b_pow / (m + 1) as f64;
        b_pow *= b;
    }
    integral
}

#[cfg(test)]
mod tests {
    use super::lagrange_integral;

    #[test]
    fn first_order_is_the_step_length() {
        assert_eq!(lagrange_integral(&[3.0], 0, 1.0), -2.0);
    }

    #[test]
    fn coefficients_integrate_polynomials_exactly() {
        // Σ_j c_j·f(t_j) = ∫ f for any f of degree < order, e.g. f(τ) = τ³.
        let nodes = [2.0, 3.5, 5.0, 9.0];
        let end = 0.5;
        let sum: f64 = (0..4)
            .map(|j| lagrange_integral(&nodes, j, end) * nodes[j].powi(3))
            .sum();
        let exact = (end.powi(4) - nodes[0].powi(4)) / 4.0;
        assert!((sum - exact).abs() < 1e-9 * exact.abs());
    }
}
