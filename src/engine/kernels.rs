//! The switch between our hand-written CPU kernels (`engine::conv`, `engine::norm`) and candle's
//! own ops, process-wide. On by default; `fooocus bench --compare-candle` turns it off to time the
//! candle path in the same run.

use std::sync::atomic::{AtomicBool, Ordering};

static OWN_KERNELS: AtomicBool = AtomicBool::new(true);

/// Whether f32 CPU convolutions and group norms use our kernels.
pub fn own_kernels() -> bool {
    OWN_KERNELS.load(Ordering::Relaxed)
}

/// Turns our kernels on or off (candle's ops then run instead).
pub fn set_own_kernels(on: bool) {
    OWN_KERNELS.store(on, Ordering::Relaxed);
}

/// The contiguous f32 data of a CPU tensor's storage, for our kernels; `what` names the kernel in
/// the error.
pub fn cpu_f32<'a>(
    storage: &'a candle_core::Storage,
    layout: &candle_core::Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(data)) = storage else {
        candle_core::bail!("{what} expects an f32 CPU tensor");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what} expects a contiguous tensor"),
    }
}
