//! An opened SDXL single file: its checkpoint, inferred configuration and the builders of each
//! network (text encoders, UNet, VAE), in the dtype the device policy chooses.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device};

use super::checkpoint::{Architecture, Checkpoint, UNET_PREFIX, VAE_PREFIX};
use super::clip::ClipTextModel;
use super::config::{ClipConfig, HeadDims, SdxlConfig};
use super::unet::UNet;
use super::vae::Vae;
use super::weights::{build, LoadMode, Usage};
use super::{compute_dtype, EngineError};

/// An SDXL checkpoint ready to build networks from.
#[derive(Debug, Clone)]
pub struct SdxlFile {
    pub checkpoint: Arc<Checkpoint>,
    pub config: SdxlConfig,
}

impl SdxlFile {
    /// Opens `path` and infers its configuration; refuses anything that is not SDXL.
    /// Extra tensors that no network reads are listed at DEBUG.
    pub fn open(path: impl AsRef<Path>, heads: HeadDims) -> Result<Self, EngineError> {
        let checkpoint = Arc::new(Checkpoint::open(path)?);
        let config = SdxlConfig::infer(&checkpoint, heads)?;
        let file = Self { checkpoint, config };
        if tracing::enabled!(tracing::Level::DEBUG) {
            let usage: Vec<Usage> = file
                .usage()
                .into_iter()
                .filter_map(|(_, u)| u.ok())
                .collect();
            for name in file.unused(&usage) {
                tracing::debug!(file = %file.checkpoint.path().display(), tensor = %name, "unused tensor");
            }
        }
        Ok(file)
    }

    /// What each network would read, built on paper (no tensor data is read).
    pub fn usage(&self) -> Vec<(&'static str, Result<Usage, EngineError>)> {
        let device = Device::Cpu;
        let mut parts = Vec::with_capacity(4);
        if let Some(clip_l) = self.clip_l(LoadMode::Meta, &device).transpose() {
            parts.push(("CLIP-L", clip_l.map(|(_, u)| u)));
        }
        parts.push((
            "CLIP-G",
            self.clip_g(LoadMode::Meta, &device).map(|(_, u)| u),
        ));
        parts.push(("UNet", self.unet(LoadMode::Meta, &device).map(|(_, u)| u)));
        parts.push(("VAE", self.vae(LoadMode::Meta, &device).map(|(_, u)| u)));
        parts
    }

    /// Tensors of the file that none of `usage` reads (e.g. `position_ids`, `logit_scale`).
    pub fn unused(&self, usage: &[Usage]) -> Vec<String> {
        self.checkpoint
            .tensors()
            .keys()
            .filter(|k| !usage.iter().any(|u| u.used.contains(*k)))
            .cloned()
            .collect()
    }

    /// Fails unless the file is the `wanted` kind (base or refiner), saying how to fix it.
    pub fn require(&self, wanted: Architecture) -> Result<(), EngineError> {
        let found = self.config.architecture;
        if found == wanted {
            return Ok(());
        }
        let hint = match wanted {
            Architecture::SdxlBase => {
                "a refiner cannot generate on its own; choose it as the refiner and pick an SDXL \
                 base model (e.g. sd_xl_base_1.0_0.9vae.safetensors) as the base"
            }
            _ => "choose an SDXL refiner (e.g. sd_xl_refiner_1.0_0.9vae.safetensors) or no refiner",
        };
        Err(EngineError::WrongRole {
            path: self.checkpoint.path().to_path_buf(),
            found: found.describe().to_string(),
            wanted: format!("an {}", wanted.describe()),
            hint: hint.to_string(),
        })
    }

    fn clip(
        &self,
        config: &ClipConfig,
        mode: LoadMode,
        device: &Device,
    ) -> Result<(ClipTextModel, Usage), EngineError> {
        build(
            &self.checkpoint,
            &config.prefix,
            mode,
            compute_dtype(device),
            device,
            |vb| ClipTextModel::load(vb, config),
        )
    }

    /// CLIP-L (base files only).
    pub fn clip_l(
        &self,
        mode: LoadMode,
        device: &Device,
    ) -> Result<Option<(ClipTextModel, Usage)>, EngineError> {
        self.config
            .clip_l
            .as_ref()
            .map(|c| self.clip(c, mode, device))
            .transpose()
    }

    /// OpenCLIP-G (base and refiner files).
    pub fn clip_g(
        &self,
        mode: LoadMode,
        device: &Device,
    ) -> Result<(ClipTextModel, Usage), EngineError> {
        self.clip(&self.config.clip_g, mode, device)
    }

    pub fn unet(&self, mode: LoadMode, device: &Device) -> Result<(UNet, Usage), EngineError> {
        build(
            &self.checkpoint,
            UNET_PREFIX,
            mode,
            compute_dtype(device),
            device,
            |vb| UNet::load(vb, &self.config.unet),
        )
    }

    /// The VAE, always in f32 (the SDXL VAE overflows in f16).
    pub fn vae(&self, mode: LoadMode, device: &Device) -> Result<(Vae, Usage), EngineError> {
        build(
            &self.checkpoint,
            VAE_PREFIX,
            mode,
            DType::F32,
            device,
            |vb| Vae::load(vb, &self.config.vae),
        )
    }
}
