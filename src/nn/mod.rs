//! The layers every network imports (`Linear`, `Conv2d`, `GroupNorm`, attention, activations),
//! each choosing our CPU kernel from `kernels/` or candle's op for the tensor it is given.
//!
//! Knows nothing of SIMD details (that is `kernels/`) nor of which network uses a layer.

pub mod activation;
pub mod attention;
pub mod conv;
pub mod cpu;
pub mod linear;
pub mod norm;
pub mod panels;
pub mod tiling;

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::VarBuilder;

/// Which kernels the layers built with a [`Builder`] run. Chosen once, where a network is built,
/// and kept by each layer: nothing is read from a global or a thread-local when a layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernels {
    /// Our CPU kernels (for f32 on the CPU); `false`: candle's ops everywhere
    /// (`fooocus bench --compare-candle`).
    pub own: bool,
    /// Linear layers multiply in bf16, summing in f32 (`--cpu-bf16`): their weights rounded to
    /// bf16 pairs at load, each input as it comes.
    pub bf16_products: bool,
}

impl Default for Kernels {
    fn default() -> Self {
        Self {
            own: true,
            bf16_products: false,
        }
    }
}

impl Kernels {
    /// Whether our kernel runs for `x`: ours are chosen and `x` is f32 on the CPU.
    pub fn own_for(&self, x: &Tensor) -> bool {
        self.own && x.device().is_cpu() && x.dtype() == DType::F32
    }
}

/// A candle `VarBuilder` and the kernel choice, handed down through a network's builders so that
/// every layer learns both.
#[derive(Clone)]
pub struct Builder<'a> {
    vars: VarBuilder<'a>,
    kernels: Kernels,
}

impl<'a> Builder<'a> {
    pub fn new(vars: VarBuilder<'a>, kernels: Kernels) -> Self {
        Self { vars, kernels }
    }

    /// The builder of the tensors under `prefix.`.
    pub fn pp(&self, prefix: impl ToString) -> Self {
        Self {
            vars: self.vars.pp(prefix),
            kernels: self.kernels,
        }
    }

    /// Tensor `name` of shape `shape`.
    pub fn get(&self, shape: impl Into<Shape>, name: &str) -> Result<Tensor> {
        self.vars.get(shape, name)
    }

    /// The candle builder, for candle_nn's own constructors.
    pub fn vars(&self) -> VarBuilder<'a> {
        self.vars.clone()
    }

    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    pub fn device(&self) -> &Device {
        self.vars.device()
    }

    /// The same tensors with other kernels (e.g. bf16 products for one network only).
    pub fn with_kernels(&self, kernels: Kernels) -> Self {
        Self {
            vars: self.vars.clone(),
            kernels,
        }
    }
}
