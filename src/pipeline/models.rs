//! The models a run needs, loaded once and kept until a request needs others: the tokenizer, the
//! base checkpoint's text encoders, UNet and VAE with the LoRAs merged, and the refiner's UNet.
//! Changing the base or its LoRAs clears the prompt-encoding cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;

use super::encode::EncodeCache;
use super::plan::Plan;
use crate::config::Config;
use crate::engine::checkpoint::Architecture;
use crate::engine::clip::ClipTextModel;
use crate::engine::device::Precision;
use crate::engine::lora::{LoraFile, LoraReport};
use crate::engine::model::SdxlFile;
use crate::engine::tokenizer::ClipTokenizer;
use crate::engine::unet::UNet;
use crate::engine::vae::Vae;
use crate::engine::weights::LoadMode;
use crate::engine::EngineError;

/// Which file with which LoRAs (strengths as bit patterns, so keys compare exactly).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelKey {
    path: PathBuf,
    loras: Vec<(PathBuf, u64)>,
}

/// The loaded base model.
pub struct Base {
    key: ModelKey,
    pub file: SdxlFile,
    pub clip_l: ClipTextModel,
    pub clip_g: ClipTextModel,
    pub unet: UNet,
    pub vae: Vae,
    pub lora_reports: Vec<LoraReport>,
}

/// The loaded refiner (only its UNet runs; its conditioning comes from the base's encoders).
pub struct Refiner {
    key: ModelKey,
    pub file: SdxlFile,
    pub unet: UNet,
}

/// Everything loaded so far, reused across runs.
pub struct Models {
    device: Device,
    precision: Precision,
    tokenizer: Option<(PathBuf, ClipTokenizer)>,
    base: Option<Base>,
    refiner: Option<Refiner>,
    /// Prompt encodings for the loaded base.
    pub cache: EncodeCache,
}

impl Models {
    pub fn new(device: Device, precision: Precision) -> Self {
        Self {
            device,
            precision,
            tokenizer: None,
            base: None,
            refiner: None,
            cache: EncodeCache::default(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Loads what `plan` needs that is not loaded yet; `on_stage` hears what is being loaded.
    pub fn prepare(
        &mut self,
        plan: &Plan,
        config: &Config,
        on_stage: &mut dyn FnMut(String),
    ) -> Result<(), EngineError> {
        let tokenizer_path = &config.paths.tokenizer;
        if self.tokenizer.as_ref().map(|(p, _)| p) != Some(tokenizer_path) {
            self.tokenizer = Some((
                tokenizer_path.clone(),
                ClipTokenizer::from_file(tokenizer_path)?,
            ));
        }
        let loras: Vec<(PathBuf, f64)> = plan
            .loras
            .iter()
            .map(|(m, w)| (m.path.clone(), *w))
            .collect();
        let base_key = key(&plan.base_model.path, &loras);
        if self.base.as_ref().map(|b| &b.key) != Some(&base_key) {
            on_stage(format!("Loading {}", plan.base_model.name));
            self.base = None;
            self.cache.clear();
            self.base = Some(self.load_base(base_key, config)?);
        }
        match &plan.refiner {
            None => self.refiner = None,
            Some(r) => {
                let refiner_key = key(&r.model.path, &loras);
                if self.refiner.as_ref().map(|x| &x.key) != Some(&refiner_key) {
                    on_stage(format!("Loading {}", r.model.name));
                    self.refiner = None;
                    self.refiner = Some(self.load_refiner(refiner_key, config)?);
                }
            }
        }
        Ok(())
    }

    fn lora_files(loras: &[(PathBuf, u64)]) -> Result<Vec<(Arc<LoraFile>, f64)>, EngineError> {
        loras
            .iter()
            .map(|(p, w)| Ok((Arc::new(LoraFile::open(p)?), f64::from_bits(*w))))
            .collect()
    }

    fn open(&self, path: &Path, config: &Config) -> Result<SdxlFile, EngineError> {
        let mut file = SdxlFile::open(path, config.head_dims(path))?;
        file.precision = self.precision;
        Ok(file)
    }

    fn load_base(&self, key: ModelKey, config: &Config) -> Result<Base, EngineError> {
        let file = self.open(&key.path, config)?;
        file.require(Architecture::SdxlBase)?;
        let (patched, lora_reports) = file.with_loras(&Self::lora_files(&key.loras)?);
        let dev = &self.device;
        let Some((clip_l, _)) = patched.clip_l(LoadMode::Real, dev)? else {
            return Err(EngineError::Internal("an SDXL base without CLIP-L".into()));
        };
        let (clip_g, _) = patched.clip_g(LoadMode::Real, dev)?;
        let (unet, _) = patched.unet(LoadMode::Real, dev)?;
        let (vae, _) = file.vae(LoadMode::Real, dev)?;
        Ok(Base {
            key,
            file,
            clip_l,
            clip_g,
            unet,
            vae,
            lora_reports,
        })
    }

    fn load_refiner(&self, key: ModelKey, config: &Config) -> Result<Refiner, EngineError> {
        let file = self.open(&key.path, config)?;
        file.require(Architecture::SdxlRefiner)?;
        let (patched, _) = file.with_loras(&Self::lora_files(&key.loras)?);
        let (unet, _) = patched.unet(LoadMode::Real, &self.device)?;
        Ok(Refiner { key, file, unet })
    }

    /// The loaded tokenizer, base and refiner (after [`Models::prepare`]).
    pub fn parts(&mut self) -> Option<(&ClipTokenizer, &Base, Option<&Refiner>, &mut EncodeCache)> {
        let (_, tokenizer) = self.tokenizer.as_ref()?;
        let base = self.base.as_ref()?;
        Some((tokenizer, base, self.refiner.as_ref(), &mut self.cache))
    }
}

fn key(path: &Path, loras: &[(PathBuf, f64)]) -> ModelKey {
    ModelKey {
        path: path.to_path_buf(),
        loras: loras
            .iter()
            .map(|(p, w)| (p.clone(), w.to_bits()))
            .collect(),
    }
}
