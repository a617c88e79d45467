//! Builds candle modules from a checkpoint: a `VarBuilder` backend that reads tensors by their
//! single-file names, records which ones a network used, collects every missing or mis-shaped
//! tensor (so one error can name them all), and can build a network "on paper" (stride-0 zero
//! tensors, no data read) to count parameters of a 7 GB file without touching its weights.
//! Weights that LoRAs update are merged as they are read (see `weights::lora`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::weights::checkpoint::Checkpoint;
use crate::weights::lora::Patches;
use crate::weights::ModelError;

/// Whether tensors are read from the file or only described.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// Read and convert every tensor.
    Real,
    /// Hand out stride-0 zeros of the right shape; nothing is read.
    Meta,
}

#[derive(Default)]
struct Record {
    used: BTreeSet<String>,
    missing: Vec<String>,
    mismatched: Vec<String>,
    failed: Vec<ModelError>,
}

struct RecordingBackend {
    ckpt: Arc<Checkpoint>,
    patches: Arc<Patches>,
    mode: LoadMode,
    keep_half: bool,
    record: Arc<Mutex<Record>>,
}

impl RecordingBackend {
    /// The dtype `name` is kept in: as stored when it is f16/bf16 and `keep_half` (lean weights),
    /// else `dtype`.
    fn storage_dtype(&self, name: &str, dtype: DType) -> DType {
        if !self.keep_half {
            return dtype;
        }
        match self.ckpt.tensors().get(name).map(|info| info.dtype) {
            Some(safetensors::Dtype::F16) => DType::F16,
            Some(safetensors::Dtype::BF16) => DType::BF16,
            _ => dtype,
        }
    }

    fn placeholder(shape: &Shape, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        Tensor::zeros((), dtype, dev)?.broadcast_as(shape)
    }

    /// Reads `name`, with its LoRA updates merged (in f32, cast to `dtype` off the CPU) when it
    /// has any.
    /// A tensor-library failure is reported against the checkpoint and the tensor.
    fn read(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor, ModelError> {
        let read = match self.patches.merged(&self.ckpt, name, dev) {
            // On the CPU LoRA-merged weights stay in f32 (our kernels widen narrower weights
            // anyway): rounding them to the file's f16 would change the image.
            Ok(Some(merged)) if dev.is_cpu() => Ok(merged),
            Ok(Some(merged)) => merged.to_dtype(dtype).map_err(ModelError::from),
            Ok(None) => self.ckpt.load(name, self.storage_dtype(name, dtype), dev),
            Err(e) => Err(e),
        };
        read.map_err(|e| match e {
            ModelError::Candle(e) => ModelError::Corrupt {
                path: self.ckpt.path().to_path_buf(),
                reason: format!("tensor `{name}`: {e}"),
            },
            other => other,
        })
    }

    fn note(&self, f: impl FnOnce(&mut Record)) {
        if let Ok(mut r) = self.record.lock() {
            f(&mut r);
        }
    }
}

impl SimpleBackend for RecordingBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let Some(found) = self.ckpt.shape(name) else {
            self.note(|r| r.missing.push(name.to_string()));
            return Self::placeholder(&shape, dtype, dev);
        };
        if found != shape.dims() {
            let msg = format!("{name}: expected {:?}, found {:?}", shape.dims(), found);
            self.note(|r| r.mismatched.push(msg));
            return Self::placeholder(&shape, dtype, dev);
        }
        self.note(|r| {
            r.used.insert(name.to_string());
        });
        match self.mode {
            LoadMode::Meta => Self::placeholder(&shape, dtype, dev),
            LoadMode::Real => match self.read(name, dtype, dev) {
                Ok(t) => Ok(t),
                Err(e) => {
                    self.note(|r| r.failed.push(e));
                    Self::placeholder(&shape, dtype, dev)
                }
            },
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let shape = match self.ckpt.shape(name) {
            Some(s) => Shape::from(s.to_vec()),
            None => {
                self.note(|r| r.missing.push(name.to_string()));
                return Tensor::zeros((), dtype, dev);
            }
        };
        self.get(shape, name, candle_nn::Init::Const(0.), dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.ckpt.contains(name)
    }
}

/// What building a network consumed from the file.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Full names of the tensors the network read.
    pub used: BTreeSet<String>,
}

impl Usage {
    /// Number of scalar parameters in the used tensors.
    pub fn parameters(&self, ckpt: &Checkpoint) -> u64 {
        self.used
            .iter()
            .filter_map(|n| ckpt.shape(n))
            .map(|s| s.iter().map(|&d| d as u64).product::<u64>())
            .sum()
    }
}

/// Builds a network from the tensors under `prefix`, with `patches` merged into the weights they
/// update, returning it with what it read. Every missing or mis-shaped tensor is reported at once
/// in one error.
pub fn build<T>(
    ckpt: &Arc<Checkpoint>,
    patches: &Arc<Patches>,
    prefix: &str,
    mode: LoadMode,
    (dtype, keep_half): (DType, bool),
    device: &Device,
    f: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
) -> Result<(T, Usage), ModelError> {
    let record = Arc::new(Mutex::new(Record::default()));
    let backend = RecordingBackend {
        ckpt: ckpt.clone(),
        patches: patches.clone(),
        mode,
        keep_half,
        record: record.clone(),
    };
    let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
    let vb = if prefix.is_empty() { vb } else { vb.pp(prefix) };
    let built = f(vb)?;
    // The dense weights that layers let go of once packed would stay resident in the heap.
    crate::kernels::memory::release_freed();
    let record = std::mem::take(
        &mut *record
            .lock()
            .map_err(|_| ModelError::Internal("weight record lock poisoned".into()))?,
    );
    let path = ckpt.path().to_path_buf();
    if !record.missing.is_empty() {
        return Err(ModelError::MissingTensors {
            path,
            names: record.missing,
        });
    }
    if !record.mismatched.is_empty() {
        return Err(ModelError::ShapeMismatch {
            path,
            details: record.mismatched,
        });
    }
    if let Some(first) = record.failed.into_iter().next() {
        return Err(first);
    }
    Ok((built, Usage { used: record.used }))
}
