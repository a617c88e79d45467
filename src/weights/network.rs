//! What a network must say to be loaded from a single file: how its family infers its shapes
//! from the file's tensors, where its tensors live, and how it is built from them. A new network
//! implements this beside its code under `nets/` and is loaded by [`build_network`], not by a
//! loader of its own.

use std::sync::Arc;

use candle_core::{DType, Device};

use crate::nn::{Builder, Kernels};
use crate::weights::backend::{build, LoadMode, Usage};
use crate::weights::checkpoint::Checkpoint;
use crate::weights::lora::Patches;
use crate::weights::ModelError;

/// A network built from a checkpoint's tensors.
pub trait Network: Sized {
    /// The shapes it is built with.
    type Config;
    /// What the weights do not say (head sizes, which flavour of a layout).
    type Hints;
    /// Reads the configuration from the shapes of `ckpt`'s tensors.
    fn infer(ckpt: &Checkpoint, hints: &Self::Hints) -> Result<Self::Config, ModelError>;
    /// The prefix of its tensors' names in the file.
    fn prefix(config: &Self::Config) -> &str;
    /// Builds it from `vb` (at its prefix) to compute in `compute`.
    fn build(vb: Builder, config: &Self::Config, compute: DType) -> candle_core::Result<Self>;
}

/// How to build one network from a file.
#[derive(Debug, Clone, Copy)]
pub struct BuildOptions<'a> {
    pub mode: LoadMode,
    /// The dtype it computes in.
    pub compute: DType,
    /// Keep f16/bf16 weights as stored (widened per layer as it runs).
    pub keep_half: bool,
    pub device: &'a Device,
    pub kernels: Kernels,
}

/// Builds `N` of `config` from `ckpt` with `patches` merged, returning it with what it read.
pub fn build_network<N: Network>(
    ckpt: &Arc<Checkpoint>,
    patches: &Arc<Patches>,
    config: &N::Config,
    options: BuildOptions<'_>,
) -> Result<(N, Usage), ModelError> {
    build(
        ckpt,
        patches,
        N::prefix(config),
        options.mode,
        (options.compute, options.keep_half),
        options.device,
        |vb| N::build(Builder::new(vb, options.kernels), config, options.compute),
    )
}
