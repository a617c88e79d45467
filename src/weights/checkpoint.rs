//! Single-file checkpoints: opens a `.safetensors` file memory-mapped, validates its header with
//! errors a user can act on, tells what architecture it holds (SDXL base or refiner; SD1.x, SD2.x,
//! LoRAs and other files are recognised and refused), and hands out tensors by name.
//!
//! Nothing here reads tensor data until a tensor is asked for, so opening a 7 GB file is cheap.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;
use safetensors::tensor::{Dtype as StDtype, SafeTensorError, TensorInfo};
use safetensors::SafeTensors;

use crate::kernels::memory::{drop_pages, map_read_only};
use crate::weights::ModelError;

/// Single-file prefixes of the SDXL components (SGM layout).
pub const UNET_PREFIX: &str = "model.diffusion_model";
pub const VAE_PREFIX: &str = "first_stage_model";
pub const CLIP_L_PREFIX: &str = "conditioner.embedders.0.transformer.text_model";
pub const CLIP_G_BASE_PREFIX: &str = "conditioner.embedders.1.model";
pub const CLIP_G_REFINER_PREFIX: &str = "conditioner.embedders.0.model";

/// What a checkpoint file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    SdxlBase,
    SdxlRefiner,
    Sd1,
    Sd2,
    Lora,
    UnetOnly,
    Diffusers,
    Unknown,
}

impl Architecture {
    /// Whether the engine can run this file.
    pub fn is_sdxl(self) -> bool {
        matches!(self, Architecture::SdxlBase | Architecture::SdxlRefiner)
    }

    /// A short human description, used in errors and by `fooocus inspect`.
    pub fn describe(self) -> &'static str {
        match self {
            Architecture::SdxlBase => "SDXL base checkpoint",
            Architecture::SdxlRefiner => "SDXL refiner checkpoint",
            Architecture::Sd1 => {
                "Stable Diffusion 1.x checkpoint (CLIP-L only, no SDXL conditioning)"
            }
            Architecture::Sd2 => "Stable Diffusion 2.x checkpoint (OpenCLIP-H text encoder)",
            Architecture::Lora => "LoRA (kohya `lora_unet_*`/`lora_te*` keys), not a checkpoint",
            Architecture::UnetOnly => "UNet-only file without text encoders or VAE",
            Architecture::Diffusers => {
                "single diffusers-format component (e.g. a `unet/` folder file)"
            }
            Architecture::Unknown => "file of unknown layout",
        }
    }
}

/// A memory-mapped safetensors file with its validated header.
pub struct Checkpoint {
    path: PathBuf,
    mmap: Mmap,
    data_start: usize,
    tensors: BTreeMap<String, TensorInfo>,
    file_metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Checkpoint {
    /// Opens and validates `path`. Only the header is parsed; the data stays mapped.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| ModelError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        let mmap = map_read_only(&file).map_err(io)?;
        let (header_len, metadata) =
            SafeTensors::read_metadata(&mmap).map_err(|e| explain_header_error(&path, &mmap, e))?;
        let tensors = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| (name, info.clone()))
            .collect();
        let file_metadata = metadata
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(Self {
            path,
            mmap,
            data_start: 8 + header_len,
            tensors,
            file_metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All tensor names with their header entries, sorted by name.
    pub fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }

    /// The free-form `__metadata__` of the file.
    pub fn file_metadata(&self) -> &BTreeMap<String, String> {
        &self.file_metadata
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice())
    }

    /// The file's size in bytes.
    pub fn file_len(&self) -> usize {
        self.mmap.len()
    }

    /// Whether any tensor name starts with `prefix.`.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        let dotted = format!("{prefix}.");
        self.tensors
            .range(dotted.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&dotted))
    }

    /// Tensor names under `prefix.` (full names).
    pub fn names_under<'a>(&'a self, prefix: &str) -> impl Iterator<Item = &'a str> + 'a {
        let dotted = format!("{prefix}.");
        self.tensors
            .range(dotted.clone()..)
            .take_while(move |(k, _)| k.starts_with(&dotted))
            .map(|(k, _)| k.as_str())
    }

    /// Number of `<prefix>.<i>.` indices present (the largest index + 1).
    pub fn count_indexed(&self, prefix: &str) -> usize {
        let cut = prefix.len() + 1;
        self.names_under(prefix)
            .filter_map(|k| k[cut..].split('.').next()?.parse::<usize>().ok())
            .max()
            .map_or(0, |m| m + 1)
    }

    /// What the file holds, judged from its tensor names.
    pub fn architecture(&self) -> Architecture {
        let has = |p: &str| self.has_prefix(p);
        let unet = has(UNET_PREFIX);
        let label_emb = self.contains(&format!("{UNET_PREFIX}.label_emb.0.0.weight"));
        if has("cond_stage_model.transformer") {
            return Architecture::Sd1;
        }
        if has("cond_stage_model.model") {
            return Architecture::Sd2;
        }
        if unet && label_emb && has(CLIP_G_BASE_PREFIX) && has(CLIP_L_PREFIX) {
            return Architecture::SdxlBase;
        }
        if unet && label_emb && has(CLIP_G_REFINER_PREFIX) && !has("conditioner.embedders.1") {
            return Architecture::SdxlRefiner;
        }
        let any = |p: &str| self.tensors.keys().any(|k| k.starts_with(p));
        if any("lora_unet_") || any("lora_te") {
            return Architecture::Lora;
        }
        if unet {
            return Architecture::UnetOnly;
        }
        if any("down_blocks.") || any("text_model.") || any("encoder.down_blocks.") {
            return Architecture::Diffusers;
        }
        Architecture::Unknown
    }

    /// The storage dtype of the floating-point weights (the most common float dtype).
    pub fn weight_dtype(&self) -> Option<StDtype> {
        let mut counts: BTreeMap<String, (StDtype, usize)> = BTreeMap::new();
        for info in self.tensors.values() {
            if matches!(info.dtype, StDtype::F16 | StDtype::BF16 | StDtype::F32) {
                counts
                    .entry(format!("{:?}", info.dtype))
                    .or_insert((info.dtype, 0))
                    .1 += 1;
            }
        }
        counts.into_values().max_by_key(|(_, n)| *n).map(|(d, _)| d)
    }

    /// Reads one tensor, converted to `dtype` on `device`.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor, ModelError> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensors {
                path: self.path.clone(),
                names: vec![name.to_string()],
            })?;
        let stored = candle_dtype(info.dtype).ok_or_else(|| ModelError::UnsupportedDtype {
            path: self.path.clone(),
            name: name.to_string(),
            dtype: format!("{:?}", info.dtype),
        })?;
        let (begin, end) = info.data_offsets;
        let bytes = self
            .mmap
            .get(self.data_start + begin..self.data_start + end)
            .ok_or_else(|| ModelError::Corrupt {
                path: self.path.clone(),
                reason: format!("tensor `{name}` points outside the file"),
            })?;
        let tensor = Tensor::from_raw_buffer(bytes, stored, &info.shape, &Device::Cpu)?;
        self.release(self.data_start + begin, end - begin);
        let tensor = if stored == dtype {
            tensor
        } else {
            tensor.to_dtype(dtype)?
        };
        Ok(tensor.to_device(device)?)
    }
}

impl Checkpoint {
    /// Tells the kernel that this process no longer needs the file's pages in `offset..+len`
    /// (their data was just copied into a tensor), so they stop counting towards its memory:
    /// without it a 7 GB checkpoint, once read, stays in the resident set next to its copy.
    fn release(&self, offset: usize, len: usize) {
        if let Err(e) = drop_pages(&self.mmap, offset, len) {
            tracing::debug!(file = %self.path.display(), "madvise(DONTNEED) failed: {e}");
        }
    }
}

/// The candle dtype of a safetensors dtype, where the engine can read it.
fn candle_dtype(dtype: StDtype) -> Option<DType> {
    Some(match dtype {
        StDtype::F16 => DType::F16,
        StDtype::BF16 => DType::BF16,
        StDtype::F32 => DType::F32,
        StDtype::F64 => DType::F64,
        StDtype::I64 => DType::I64,
        StDtype::U8 => DType::U8,
        StDtype::U32 => DType::U32,
        _ => return None,
    })
}

/// Turns the safetensors crate's header errors into messages that say what is wrong with the
/// file and what to do about it.
fn explain_header_error(path: &Path, bytes: &[u8], error: SafeTensorError) -> ModelError {
    let len = bytes.len();
    let declared = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes);
    let reason = match error {
        SafeTensorError::HeaderTooSmall => format!(
            "it is only {len} bytes long, too short for a safetensors file: \
             the download is incomplete or this is not a model file"
        ),
        SafeTensorError::HeaderTooLarge | SafeTensorError::InvalidHeaderLength => match declared {
            Some(n) if n.saturating_add(8) > len as u64 => format!(
                "its header claims {n} bytes but the file has only {len}: it is truncated, \
                     or not a safetensors file at all (a .ckpt/.pt pickle cannot be read; \
                     convert it to .safetensors)"
            ),
            _ => "its header length is invalid: not a safetensors file".to_string(),
        },
        SafeTensorError::InvalidHeader(_) | SafeTensorError::InvalidHeaderDeserialization(_) => {
            "its header is not valid JSON: this is not a safetensors file (a .ckpt/.pt pickle \
             cannot be read; convert it to .safetensors)"
                .to_string()
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            let expected = declared.and_then(|n| expected_file_len(bytes, n));
            match expected {
                Some(e) if e > len as u64 => format!(
                    "its header describes {e} bytes but the file has only {len}: the file is \
                     truncated (an interrupted download?); delete it and download it again"
                ),
                Some(e) => format!(
                    "its header describes {e} bytes but the file has {len}: the tensor offsets \
                     do not match the file; it is damaged"
                ),
                None => "its tensor offsets do not cover the file: it is damaged".to_string(),
            }
        }
        other => format!("its header is invalid ({other}): the file is damaged"),
    };
    ModelError::Corrupt {
        path: path.to_path_buf(),
        reason,
    }
}

/// The file length a header implies (8 + header + largest end offset), when the header parses.
fn expected_file_len(bytes: &[u8], header_len: u64) -> Option<u64> {
    let header = bytes.get(8..8usize.checked_add(usize::try_from(header_len).ok()?)?)?;
    let json: serde_json::Value = serde_json::from_slice(header).ok()?;
    let end = json
        .as_object()?
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    Some(8 + header_len + end)
}
