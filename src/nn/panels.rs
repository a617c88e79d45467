//! A linear layer's weight packed once at load as the right operand of `kernels::matmul`, in the
//! dtype it is kept in (f16/bf16 panels are widened per call, in one pass), or rounded to bf16
//! pairs for products in bf16 (`--cpu-bf16`).

use std::sync::Arc;

use candle_core::{CpuStorage, DType, Device, Result, Storage, Tensor};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::kernels::matmul::{
    accumulate, accumulate_bf16, pack_pairs, pack_rows, unpack_pairs, unpack_rows,
};
use crate::kernels::widen::widen;

/// The transpose of a `[n, k]` weight packed once as the `k × n` right operand, in the dtype the
/// weight is kept in (f16/bf16 panels are widened per call, in one pass), or rounded to bf16
/// pairs for products in bf16.
#[derive(Debug, Clone)]
pub struct Panels {
    values: PanelValues,
    k: usize,
    n: usize,
}

#[derive(Debug, Clone)]
enum PanelValues {
    F32(Arc<[f32]>),
    F16(Arc<[f16]>),
    BF16(Arc<[bf16]>),
    /// bf16 pairs along k: per panel, `⌈k/2⌉` rows of `NR` words (see `kernels::microkernel_bf16`).
    Bf16Pairs(Arc<[u32]>),
}

impl Panels {
    /// Packs the transpose of `weight` `[n, k]` when it is a contiguous f32, f16 or bf16 CPU
    /// tensor; `None` otherwise (other devices, and stride-0 placeholders that must stay
    /// unmaterialised).
    pub fn of_transposed(weight: &Tensor) -> Result<Option<Self>> {
        let (n, k) = weight.dims2()?;
        if !weight.device().is_cpu() || !weight.is_contiguous() {
            return Ok(None);
        }
        let (storage, layout) = weight.storage_and_layout();
        let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets())
        else {
            return Ok(None);
        };
        let values = match cpu {
            CpuStorage::F32(w) => PanelValues::F32(pack_rows(&w[start..end], n, k, 0.0)),
            CpuStorage::F16(w) => PanelValues::F16(pack_rows(&w[start..end], n, k, f16::ZERO)),
            CpuStorage::BF16(w) => PanelValues::BF16(pack_rows(&w[start..end], n, k, bf16::ZERO)),
            _ => return Ok(None),
        };
        Ok(Some(Self { values, k, n }))
    }

    /// [`Panels::of_transposed`], rounded to bf16 pairs for products in bf16 (any float dtype).
    pub fn pairs_of_transposed(weight: &Tensor) -> Result<Option<Self>> {
        let (n, k) = weight.dims2()?;
        if !weight.device().is_cpu() || !weight.is_contiguous() {
            return Ok(None);
        }
        let w = weight
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Some(Self {
            values: PanelValues::Bf16Pairs(pack_pairs(&w, n, k).into()),
            k,
            n,
        }))
    }

    /// `(k, n)`: the inputs and outputs of the layer.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// The dtype the panels are kept in.
    pub fn dtype(&self) -> DType {
        match self.values {
            PanelValues::F32(_) => DType::F32,
            PanelValues::F16(_) => DType::F16,
            PanelValues::BF16(_) | PanelValues::Bf16Pairs(_) => DType::BF16,
        }
    }

    /// `out[i] += x[i]·B` for the `m` rows of `x` (`m × k`, row-major; rows of `out` `ldc`
    /// apart): in f32 with the panels as they are or widened, or with pair panels in bf16, `x`
    /// rounded to pairs first.
    pub fn accumulate(&self, out: &mut [f32], ldc: usize, x: &[f32], m: usize) -> Result<()> {
        let dims = (m, self.k, self.n);
        let done = match &self.values {
            PanelValues::F32(v) => accumulate(out, ldc, x, dims, v),
            PanelValues::F16(v) => {
                let convert = |s: &[f16], d: &mut [f32]| s.convert_to_f32_slice(d);
                widen(v, |wt| accumulate(out, ldc, x, dims, wt), convert)
            }
            PanelValues::BF16(v) => {
                let convert = |s: &[bf16], d: &mut [f32]| s.convert_to_f32_slice(d);
                widen(v, |wt| accumulate(out, ldc, x, dims, wt), convert)
            }
            PanelValues::Bf16Pairs(b) => accumulate_bf16(out, ldc, x, dims, b),
        };
        done.map_err(candle_core::Error::wrap)
    }

    /// The weight `[n, k]` again, in the dtype it is kept in (for candle's ops).
    pub fn dense(&self, device: &Device) -> Result<Tensor> {
        let (k, n) = (self.k, self.n);
        match &self.values {
            PanelValues::F32(v) => Tensor::from_vec(unpack_rows(v, n, k, 0.0), (n, k), device),
            PanelValues::F16(v) => {
                Tensor::from_vec(unpack_rows(v, n, k, f16::ZERO), (n, k), device)
            }
            PanelValues::BF16(v) => {
                Tensor::from_vec(unpack_rows(v, n, k, bf16::ZERO), (n, k), device)
            }
            PanelValues::Bf16Pairs(v) => {
                let rows = unpack_pairs(v, n, k).into_iter().map(bf16::from_bits);
                Tensor::from_vec(rows.collect::<Vec<_>>(), (n, k), device)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pair panels keep the weight rounded to bf16 (their products are checked in
    /// `kernels::matmul`).
    #[test]
    fn pair_panels_keep_the_weight_in_bf16() -> Result<()> {
        let dev = Device::Cpu;
        for (k, n) in [(7, 5), (601, 40)] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            let Some(panels) = Panels::pairs_of_transposed(&w)? else {
                panic!("{n}×{k} not packed");
            };
            assert_eq!((panels.dims(), panels.dtype()), ((k, n), DType::BF16));
            let dense = panels.dense(&dev)?.to_dtype(DType::F32)?;
            let want_dense = w.to_dtype(DType::BF16)?.to_dtype(DType::F32)?;
            assert_eq!(dense.to_vec2::<f32>()?, want_dense.to_vec2::<f32>()?);
        }
        Ok(())
    }

    /// Packed weights come back exactly as they were, in each dtype they are kept in, and
    /// multiply as the f32 weight would; a stride-0 placeholder is not packed.
    #[test]
    fn panels_round_trip() -> Result<()> {
        let dev = Device::Cpu;
        for (n, k) in [(1, 1), (7, 5), (33, 300)] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                let w = w.to_dtype(dtype)?;
                let Some(panels) = Panels::of_transposed(&w)? else {
                    panic!("{n}×{k} {dtype:?} not packed");
                };
                assert_eq!((panels.dims(), panels.dtype()), ((k, n), dtype));
                let back = panels.dense(&dev)?;
                let diff = (back.to_dtype(DType::F32)? - w.to_dtype(DType::F32)?)?
                    .abs()?
                    .max_all()?
                    .to_scalar::<f32>()?;
                assert_eq!(diff, 0.0, "{n}×{k} {dtype:?}");
                // Products with half-precision panels are those of the weight widened first.
                let x = Tensor::randn(0f32, 1.0, (3, k), &dev)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let Some(f32_panels) = Panels::of_transposed(&w.to_dtype(DType::F32)?)? else {
                    panic!("{n}×{k} f32 not packed");
                };
                let (mut got, mut want) = (vec![0f32; 3 * n], vec![0f32; 3 * n]);
                panels.accumulate(&mut got, n, &x, 3)?;
                f32_panels.accumulate(&mut want, n, &x, 3)?;
                assert_eq!(got, want, "{n}×{k} {dtype:?} products");
            }
        }
        let placeholder = Tensor::zeros(1, DType::F32, &dev)?.broadcast_as((4, 3))?;
        assert!(Panels::of_transposed(&placeholder)?.is_none());
        Ok(())
    }
}
