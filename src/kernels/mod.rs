//! Raw-slice CPU compute: the product tiles and their blocked driver, convolutions, fused
//! attention, softmax, norms, activations, vectorised math and the allocator policy. All of the
//! crate's `unsafe` code lives here, each block with its SAFETY argument.
//!
//! Knows nothing of candle's tensors, of networks or of files: callers in `nn/` hand in slices and
//! shapes and get slices back.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

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
        return Err($crate::kernels::KernelError(format!($($arg)*)))
    };
}
pub(crate) use fail;
