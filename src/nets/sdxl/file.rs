//! An opened SDXL single file: its checkpoint, inferred configuration and the builders of each
//! network (text encoders, UNet, VAE), in the dtype the device policy chooses; and the same file
//! with LoRAs, whose text encoders and UNet are built with the LoRAs merged into their weights.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::nets::sdxl::clip::ClipTextModel;
use crate::nets::sdxl::lora_names::targets;
use crate::nets::sdxl::shapes::{ClipConfig, HeadDims, SdxlConfig};
use crate::nets::sdxl::unet::UNet;
use crate::nets::sdxl::vae::Vae;
use crate::nn::Kernels;
use crate::runtime::Precision;
use crate::weights::backend::{LoadMode, Usage};
use crate::weights::checkpoint::{Architecture, Checkpoint};
use crate::weights::lora::{LoraFile, LoraReport, Patches};
use crate::weights::network::{build_network, BuildOptions};
use crate::weights::ModelError;

/// An SDXL checkpoint ready to build networks from.
#[derive(Debug, Clone)]
pub struct SdxlFile {
    pub checkpoint: Arc<Checkpoint>,
    pub config: SdxlConfig,
    /// The dtype the text encoders and UNet are built in (per device; the VAE is always f32).
    pub precision: Precision,
    /// Keep the text encoders' and UNet's weights in the file's f16/bf16 and widen them layer by
    /// layer when they compute in f32 on the CPU (`Placement::lean_weights`).
    pub lean_weights: bool,
    /// Multiply the UNet's linear layers in bf16 when it computes in f32 on the CPU
    /// (`Placement::bf16_products`).
    pub bf16_products: bool,
    /// Run our CPU kernels (false: candle's ops, `fooocus bench --compare-candle`).
    pub own_kernels: bool,
}

impl SdxlFile {
    /// Opens `path` and infers its configuration; refuses anything that is not SDXL.
    /// Extra tensors that no network reads are listed at DEBUG.
    pub fn open(path: impl AsRef<Path>, heads: HeadDims) -> Result<Self, ModelError> {
        let checkpoint = Arc::new(Checkpoint::open(path)?);
        let config = SdxlConfig::infer(&checkpoint, heads)?;
        let file = Self {
            checkpoint,
            config,
            precision: Precision::Auto,
            lean_weights: false,
            bf16_products: false,
            own_kernels: true,
        };
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
    pub fn usage(&self) -> Vec<(&'static str, Result<Usage, ModelError>)> {
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
    pub fn require(&self, wanted: Architecture) -> Result<(), ModelError> {
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
        Err(ModelError::WrongRole {
            path: self.checkpoint.path().to_path_buf(),
            found: found.describe().to_string(),
            wanted: format!("an {}", wanted.describe()),
            hint: hint.to_string(),
        })
    }

    /// This file with `loras` (each with its strength; they add up) merged into the weights of
    /// the networks built from it, and what each LoRA matched here. LoRAs that match nothing of
    /// this file are left out with a warning; nothing is read until a network is built.
    pub fn with_loras(&self, loras: &[(Arc<LoraFile>, f64)]) -> (SdxlWithLoras, Vec<LoraReport>) {
        let table = targets(&self.checkpoint, &self.config);
        let (patches, reports) = Patches::new(&self.checkpoint, &table, loras);
        let file = SdxlWithLoras {
            file: self.clone(),
            patches: Arc::new(patches),
        };
        (file, reports)
    }

    fn clip(
        &self,
        config: &ClipConfig,
        patches: &Arc<Patches>,
        mode: LoadMode,
        device: &Device,
    ) -> Result<(ClipTextModel, Usage), ModelError> {
        let options = self.options(mode, device, false);
        build_network(&self.checkpoint, patches, config, options)
    }

    /// CLIP-L (base files only).
    pub fn clip_l(
        &self,
        mode: LoadMode,
        device: &Device,
    ) -> Result<Option<(ClipTextModel, Usage)>, ModelError> {
        self.clip_l_with(&Arc::default(), mode, device)
    }

    fn clip_l_with(
        &self,
        patches: &Arc<Patches>,
        mode: LoadMode,
        device: &Device,
    ) -> Result<Option<(ClipTextModel, Usage)>, ModelError> {
        self.config
            .clip_l
            .as_ref()
            .map(|c| self.clip(c, patches, mode, device))
            .transpose()
    }

    /// OpenCLIP-G (base and refiner files).
    pub fn clip_g(
        &self,
        mode: LoadMode,
        device: &Device,
    ) -> Result<(ClipTextModel, Usage), ModelError> {
        self.clip(&self.config.clip_g, &Arc::default(), mode, device)
    }

    pub fn unet(&self, mode: LoadMode, device: &Device) -> Result<(UNet, Usage), ModelError> {
        self.unet_with(&Arc::default(), mode, device)
    }

    fn unet_with(
        &self,
        patches: &Arc<Patches>,
        mode: LoadMode,
        device: &Device,
    ) -> Result<(UNet, Usage), ModelError> {
        let options = self.options(mode, device, self.bf16_products);
        build_network(&self.checkpoint, patches, &self.config.unet, options)
    }

    /// How the text encoders and UNets are built on `device`: in the precision's dtype, lean
    /// where asked, with our kernels or candle's, and bf16 products (`bf16`) only where they
    /// compute in f32 on the CPU.
    fn options<'a>(&self, mode: LoadMode, device: &'a Device, bf16: bool) -> BuildOptions<'a> {
        let compute = self.precision.dtype_on(device);
        BuildOptions {
            mode,
            compute,
            keep_half: self.keeps_half(compute, device),
            device,
            kernels: Kernels {
                own: self.own_kernels,
                bf16_products: bf16 && device.is_cpu() && compute == DType::F32,
            },
        }
    }

    /// Whether the text encoders and UNet keep their f16/bf16 weights as stored (each widened
    /// to f32 as a layer runs): lean weights, on the CPU in f32.
    pub fn keeps_half(&self, compute: DType, device: &Device) -> bool {
        self.lean_weights && device.is_cpu() && compute == DType::F32
    }

    /// The VAE, always in f32 (the SDXL VAE overflows in f16).
    pub fn vae(&self, mode: LoadMode, device: &Device) -> Result<(Vae, Usage), ModelError> {
        let options = BuildOptions {
            mode,
            compute: DType::F32,
            keep_half: false,
            device,
            kernels: Kernels {
                own: self.own_kernels,
                bf16_products: false,
            },
        };
        build_network::<Vae>(&self.checkpoint, &Arc::default(), &self.config.vae, options)
    }
}

/// An SDXL file whose text encoders and UNet are built with LoRAs merged into their weights,
/// tensor by tensor as they load (made by [`SdxlFile::with_loras`]). The VAE has no LoRA weights:
/// build it from [`SdxlWithLoras::file`].
#[derive(Debug, Clone)]
pub struct SdxlWithLoras {
    file: SdxlFile,
    patches: Arc<Patches>,
}

impl SdxlWithLoras {
    /// The file without its LoRAs.
    pub fn file(&self) -> &SdxlFile {
        &self.file
    }

    /// The same file and LoRAs, its text encoders and UNet built in `precision`.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.file.precision = precision;
        self
    }

    /// Whether any LoRA changes a weight of this file.
    pub fn has_patches(&self) -> bool {
        !self.patches.is_empty()
    }

    /// One weight of the file on `device`, as the networks get it: with the LoRA updates added,
    /// in f32 (unchanged weights in their stored precision, converted to f32).
    pub fn weight(&self, name: &str, device: &Device) -> Result<Tensor, ModelError> {
        match self.patches.merged(&self.file.checkpoint, name, device)? {
            Some(merged) => Ok(merged),
            None => self.file.checkpoint.load(name, DType::F32, device),
        }
    }

    /// CLIP-L with the LoRAs (base files only).
    pub fn clip_l(
        &self,
        mode: LoadMode,
        device: &Device,
    ) -> Result<Option<(ClipTextModel, Usage)>, ModelError> {
        self.file.clip_l_with(&self.patches, mode, device)
    }

    /// OpenCLIP-G with the LoRAs.
    pub fn clip_g(
        &self,
        mode: LoadMode,
        device: &Device,
    ) -> Result<(ClipTextModel, Usage), ModelError> {
        let config = &self.file.config.clip_g;
        self.file.clip(config, &self.patches, mode, device)
    }

    /// The UNet with the LoRAs.
    pub fn unet(&self, mode: LoadMode, device: &Device) -> Result<(UNet, Usage), ModelError> {
        self.file.unet_with(&self.patches, mode, device)
    }
}
