//! The models a run needs, loaded once and kept until a request needs others: the tokenizer, the
//! base checkpoint's text encoders (on the device, or the CPU with `--vram low`) and VAE, and the
//! base and refiner UNets with the LoRAs merged, built as the [`Placement`] says ([`UnetSwap`]).
//! Changing the base or its LoRAs clears the prompt-encoding cache.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;

use super::encode::EncodeCache;
use super::plan::Plan;
use super::unets::{UnetSwap, BASE, REFINER};
use crate::config::Config;
use crate::nets::sdxl::clip::ClipTextModel;
use crate::nets::sdxl::file::{SdxlFile, SdxlWithLoras};
use crate::nets::sdxl::shapes::HeadDims;
use crate::nets::sdxl::tokenizer::ClipTokenizer;
use crate::nets::sdxl::vae::Vae;
use crate::runtime::Placement;
use crate::weights::backend::LoadMode;
use crate::weights::checkpoint::Architecture;
use crate::weights::lora::{LoraFile, LoraReport};
use crate::weights::ModelError;

/// Which file with which LoRAs (strengths as bit patterns, so keys compare exactly).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelKey {
    path: PathBuf,
    loras: Vec<(PathBuf, u64)>,
}

/// The loaded base model (its UNet lives in the [`UnetSwap`]).
pub struct Base {
    key: ModelKey,
    pub file: SdxlFile,
    /// The text encoders, on [`Placement::text_device`].
    pub clip_l: ClipTextModel,
    pub clip_g: ClipTextModel,
    pub vae: Vae,
    pub lora_reports: Vec<LoraReport>,
}

/// The chosen refiner (only its UNet runs, from the [`UnetSwap`]; its conditioning comes from the
/// base's encoders).
pub struct Refiner {
    key: ModelKey,
    pub file: SdxlFile,
}

/// What a run reads from [`Models`].
pub struct Loaded<'a> {
    pub tokenizer: &'a ClipTokenizer,
    pub base: &'a Base,
    pub refiner: Option<&'a Refiner>,
    pub unets: &'a RefCell<UnetSwap>,
    pub cache: &'a mut EncodeCache,
}

/// Everything loaded so far, reused across runs.
pub struct Models {
    placement: Placement,
    tokenizer: Option<(PathBuf, ClipTokenizer)>,
    base: Option<Base>,
    refiner: Option<Refiner>,
    unets: RefCell<UnetSwap>,
    /// Prompt encodings for the loaded base.
    pub cache: EncodeCache,
}

impl Models {
    pub fn new(placement: Placement) -> Self {
        let unets = UnetSwap::new(placement.device.clone(), placement.keeps_both_unets());
        Self {
            placement,
            tokenizer: None,
            base: None,
            refiner: None,
            unets: RefCell::new(unets),
            cache: EncodeCache::default(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.placement.device
    }

    /// How many times each UNet was built so far: `[base, refiner]`.
    pub fn unet_builds(&self) -> [usize; 2] {
        self.unets.borrow().builds()
    }

    /// Loads what `plan` needs that is not loaded yet; `on_stage` hears what is being loaded.
    pub fn prepare(
        &mut self,
        plan: &Plan,
        config: &Config,
        on_stage: &mut dyn FnMut(String),
    ) -> Result<(), ModelError> {
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
        let unets = self.unets.get_mut();
        if self.base.as_ref().map(|b| &b.key) != Some(&base_key) {
            on_stage(format!("Loading {}", plan.base_model.name));
            self.base = None;
            unets.set(BASE, None);
            self.cache.clear();
            let (base, patched) = Self::load_base(&self.placement, base_key, config)?;
            unets.set(BASE, Some(patched));
            self.base = Some(base);
        }
        match &plan.refiner {
            None => {
                self.refiner = None;
                unets.set(REFINER, None);
            }
            Some(r) => {
                let refiner_key = key(&r.model.path, &loras);
                if self.refiner.as_ref().map(|x| &x.key) != Some(&refiner_key) {
                    on_stage(format!("Loading {}", r.model.name));
                    self.refiner = None;
                    unets.set(REFINER, None);
                    let (refiner, patched) =
                        Self::open_refiner(&self.placement, refiner_key, config)?;
                    unets.set(REFINER, Some(patched));
                    // Refuse a broken refiner now, not half-way through sampling.
                    unets.check(REFINER)?;
                    if self.placement.keeps_both_unets() {
                        unets.get(REFINER)?;
                    }
                    self.refiner = Some(refiner);
                }
            }
        }
        // The base samples first: build it now (the refiner may hold the memory after a run).
        unets.get(BASE)?;
        Ok(())
    }

    fn lora_files(loras: &[(PathBuf, u64)]) -> Result<Vec<(Arc<LoraFile>, f64)>, ModelError> {
        loras
            .iter()
            .map(|(p, w)| Ok((Arc::new(LoraFile::open(p)?), f64::from_bits(*w))))
            .collect()
    }

    fn open(placement: &Placement, path: &Path, config: &Config) -> Result<SdxlFile, ModelError> {
        let heads = config.head_dims(path);
        let heads = HeadDims {
            clip_l: heads.clip_l,
            clip_g: heads.clip_g,
            unet: heads.unet,
        };
        let mut file = SdxlFile::open(path, heads)?;
        file.precision = placement.precision;
        file.lean_weights = placement.lean_weights();
        file.bf16_products = placement.bf16_products();
        Ok(file)
    }

    /// The base's encoders and VAE, and the file its UNet is built from.
    fn load_base(
        placement: &Placement,
        key: ModelKey,
        config: &Config,
    ) -> Result<(Base, SdxlWithLoras), ModelError> {
        let file = Self::open(placement, &key.path, config)?;
        file.require(Architecture::SdxlBase)?;
        let (patched, lora_reports) = file.with_loras(&Self::lora_files(&key.loras)?);
        let text = patched.clone().with_precision(placement.text_precision());
        let text_device = placement.text_device();
        let Some((clip_l, _)) = text.clip_l(LoadMode::Real, &text_device)? else {
            return Err(ModelError::Internal("an SDXL base without CLIP-L".into()));
        };
        let (clip_g, _) = text.clip_g(LoadMode::Real, &text_device)?;
        let (vae, _) = file.vae(LoadMode::Real, &placement.device)?;
        let base = Base {
            key,
            file,
            clip_l,
            clip_g,
            vae,
            lora_reports,
        };
        Ok((base, patched))
    }

    fn open_refiner(
        placement: &Placement,
        key: ModelKey,
        config: &Config,
    ) -> Result<(Refiner, SdxlWithLoras), ModelError> {
        let file = Self::open(placement, &key.path, config)?;
        file.require(Architecture::SdxlRefiner)?;
        let (patched, _) = file.with_loras(&Self::lora_files(&key.loras)?);
        Ok((Refiner { key, file }, patched))
    }

    /// What a run reads (after [`Models::prepare`]).
    pub fn loaded(&mut self) -> Option<Loaded<'_>> {
        let (_, tokenizer) = self.tokenizer.as_ref()?;
        Some(Loaded {
            tokenizer,
            base: self.base.as_ref()?,
            refiner: self.refiner.as_ref(),
            unets: &self.unets,
            cache: &mut self.cache,
        })
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
