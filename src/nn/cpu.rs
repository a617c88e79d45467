//! Where the layers meet our kernels: a tensor's f32 data as a slice, and half-precision weights
//! widened to f32 (`kernels::widen`). Kernel errors become candle errors by `Error::wrap`.

use candle_core::{CpuStorage, Result, Storage, Tensor};
use half::slice::HalfFloatSliceExt;

use crate::kernels::widen::widen;

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

/// Calls `f` with the values of the contiguous CPU tensor `t` as f32: borrowed when `t` is f32,
/// else (f16, bf16) converted into this thread's reusable buffer (a nested call gets a buffer of
/// its own).
pub fn with_f32<R>(t: &Tensor, what: &str, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{what} expects a contiguous tensor");
    };
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("{what} expects a CPU tensor");
    };
    match cpu {
        CpuStorage::F32(data) => f(&data[start..end]),
        CpuStorage::F16(data) => widen(&data[start..end], f, |s, d| s.convert_to_f32_slice(d)),
        CpuStorage::BF16(data) => widen(&data[start..end], f, |s, d| s.convert_to_f32_slice(d)),
        _ => candle_core::bail!("{what} expects f32, f16 or bf16 weights"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// f16 and bf16 tensors widen to exactly their f32 values; f32 passes through.
    #[test]
    fn widens_half_precision_exactly() -> Result<()> {
        let x = Tensor::randn(0f32, 3.0, (3, 70_000), &Device::Cpu)?;
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let stored = x.to_dtype(dtype)?;
            let want = stored
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let got = with_f32(&stored, "test", |v| Ok(v.to_vec()))?;
            assert_eq!(got, want, "{dtype:?}");
        }
        Ok(())
    }
}
