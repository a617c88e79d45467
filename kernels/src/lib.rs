//! Raw-slice CPU compute: the product tiles and their blocked driver, convolutions, fused
//! attention, softmax, norms, activations, vectorised math and the allocator policy. All of
//! fooocus-rs' `unsafe` code lives here, each block with its SAFETY argument (the crate denies
//! `unsafe_op_in_unsafe_fn`, `clippy::undocumented_unsafe_blocks` and `missing_safety_doc`).
//!
//! Knows nothing of candle's tensors (candle is only the tests' reference), of networks or of
//! checkpoints: the app's `nn` layers hand in slices and shapes and get slices back. A crate of
//! its own so that it builds optimised in test builds and is not rebuilt when the app changes.

pub mod activation;
pub mod attention;
pub mod conv;
pub mod fastmath;
pub mod matmul;
pub mod memory;
pub mod microkernel;
pub mod microkernel_bf16;
pub mod norm;
pub mod softmax;
pub mod widen;

/// A kernel called with operands that do not fit the shapes it was given: a bug in the caller,
/// reported instead of reading out of bounds.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KernelError(pub String);

/// What a kernel returns.
pub type Result<T> = std::result::Result<T, KernelError>;

/// Returns a [`KernelError`] from the enclosing function, formatted as `format!` does.
macro_rules! fail {
    ($($arg:tt)*) => {
        return Err($crate::KernelError(format!($($arg)*)))
    };
}
pub(crate) use fail;

/// In the tests, kernel errors pass through `?` in functions that check against candle.
#[cfg(test)]
impl From<KernelError> for candle_core::Error {
    fn from(e: KernelError) -> Self {
        candle_core::Error::wrap(e)
    }
}
