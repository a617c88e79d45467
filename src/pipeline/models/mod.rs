//! The models a run needs, loaded once and kept until a request needs others: the tokenizer, the
//! base and refiner files with their LoRAs, and their networks in the [`NetCache`]: the base's
//! text encoders (on the device, or the CPU with `--vram low`) and VAE pinned, the UNets
//! swapped as the [`Placement`] says. Changing the base or its LoRAs clears the prompt-encoding
//! cache.
//!
//! * [`cache`]: built networks keyed by file, LoRAs and role, under the `--vram` residency;
//! * [`unets`]: a UNet the cache builds on demand, which the denoiser takes at each call;
//! * [`upscaler`]: the upscaler network, fetched and loaded on first use.

pub mod cache;
pub mod unets;
pub mod upscaler;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use candle_core::Device;

use super::encode::EncodeCache;
use super::plan::Plan;
use crate::config::Config;
use crate::hub::HubClient;
use crate::nets::esrgan::Rrdb;
use crate::nets::sdxl::clip::ClipTextModel;
use crate::nets::sdxl::file::{SdxlFile, SdxlWithLoras};
use crate::nets::sdxl::shapes::HeadDims;
use crate::nets::sdxl::tokenizer::ClipTokenizer;
use crate::nets::sdxl::vae::Vae;
use crate::pipeline::PipelineError;
use crate::runtime::Placement;
use crate::weights::backend::LoadMode;
use crate::weights::checkpoint::Architecture;
use crate::weights::lora::LoraFile;
use crate::weights::ModelError;
use cache::{NetCache, NetKey, Residency, Role};
use unets::CachedUnet;
use upscaler::UpscalerSlot;

/// Which file with which LoRAs (strengths as bit patterns, so keys compare exactly).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelKey {
    path: PathBuf,
    loras: Vec<(PathBuf, u64)>,
}

impl ModelKey {
    /// The key of this model's network in `role`.
    fn net(&self, role: Role) -> NetKey {
        NetKey {
            file: self.path.clone(),
            loras: self.loras.clone(),
            role,
        }
    }

    /// Whether `net` was built from this model.
    fn owns(&self, net: &NetKey) -> bool {
        net.file == self.path && net.loras == self.loras
    }
}

/// An opened model: its file, the same with its LoRAs, and its UNet's key and size.
pub struct Model {
    key: ModelKey,
    pub file: SdxlFile,
    patched: SdxlWithLoras,
    unet: NetKey,
    unet_parameters: u64,
}

impl Model {
    /// Opens `key`'s file as `architecture`, its LoRAs matched; the UNet is checked (built on
    /// paper, nothing read) so that a broken one is refused now, not half-way through sampling.
    fn open(
        placement: &Placement,
        key: ModelKey,
        architecture: Architecture,
        config: &Config,
    ) -> Result<Self, ModelError> {
        let file = open_file(placement, &key.path, config)?;
        file.require(architecture)?;
        // What each LoRA matched is logged as it is matched.
        let (patched, _) = file.with_loras(&lora_files(&key.loras)?);
        let (_, usage) = patched.unet(LoadMode::Meta, &placement.device)?;
        Ok(Self {
            unet: key.net(Role::Unet),
            unet_parameters: usage.parameters(&file.checkpoint),
            key,
            file,
            patched,
        })
    }

    /// Its UNet, from `cache` on `device`.
    fn unet<'a>(&'a self, cache: &'a RefCell<NetCache>, device: &'a Device) -> CachedUnet<'a> {
        CachedUnet {
            cache,
            key: &self.unet,
            cost: self.unet_parameters,
            source: &self.patched,
            device,
        }
    }
}

/// What a run reads from [`Models`].
pub struct Loaded<'a> {
    pub tokenizer: &'a ClipTokenizer,
    pub base: &'a Model,
    pub refiner: Option<&'a Model>,
    /// The base's text encoders, on [`Placement::text_device`], and its VAE.
    pub clip_l: Rc<ClipTextModel>,
    pub clip_g: Rc<ClipTextModel>,
    pub vae: Rc<Vae>,
    pub base_unet: CachedUnet<'a>,
    pub refiner_unet: Option<CachedUnet<'a>>,
    pub cache: &'a mut EncodeCache,
}

/// Everything loaded so far, reused across runs.
pub struct Models {
    placement: Placement,
    tokenizer: Option<(PathBuf, ClipTokenizer)>,
    base: Option<Model>,
    refiner: Option<Model>,
    nets: RefCell<NetCache>,
    /// Prompt encodings for the loaded base.
    pub cache: EncodeCache,
    upscaler: UpscalerSlot,
}

impl Models {
    pub fn new(placement: Placement) -> Self {
        let residency = if placement.keeps_both_unets() {
            Residency::All
        } else {
            Residency::Largest
        };
        Self {
            placement,
            tokenizer: None,
            base: None,
            refiner: None,
            nets: RefCell::new(NetCache::new(residency)),
            cache: EncodeCache::default(),
            upscaler: UpscalerSlot::default(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.placement.device
    }

    /// The upscaler at `path`, fetched by `hub` and loaded on first use.
    pub fn upscaler(
        &mut self,
        path: &Path,
        hub: Option<&HubClient>,
        on_stage: &mut dyn FnMut(String),
    ) -> Result<&Rrdb, PipelineError> {
        self.upscaler
            .get(path, &self.placement.device, hub, on_stage)
    }

    /// How many times each UNet of the loaded models was built: `[base, refiner]`.
    pub fn unet_builds(&self) -> [usize; 2] {
        let nets = self.nets.borrow();
        let builds = |m: &Option<Model>| m.as_ref().map_or(0, |m| nets.builds(&m.unet));
        [builds(&self.base), builds(&self.refiner)]
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
        if self.base.as_ref().map(|b| &b.key) != Some(&base_key) {
            on_stage(format!("Loading {}", plan.base_model.name));
            self.drop_model(Which::Base);
            self.cache.clear();
            let base = Model::open(&self.placement, base_key, Architecture::SdxlBase, config)?;
            self.base = Some(base);
            // Text encoders and VAE now, pinned: every image needs them.
            self.pinned_networks()?;
        }
        match &plan.refiner {
            None => self.drop_model(Which::Refiner),
            Some(r) => {
                let refiner_key = key(&r.model.path, &loras);
                if self.refiner.as_ref().map(|x| &x.key) != Some(&refiner_key) {
                    on_stage(format!("Loading {}", r.model.name));
                    self.drop_model(Which::Refiner);
                    let refiner = Model::open(
                        &self.placement,
                        refiner_key,
                        Architecture::SdxlRefiner,
                        config,
                    )?;
                    if self.placement.keeps_both_unets() {
                        refiner.unet(&self.nets, &self.placement.device).get()?;
                    }
                    self.refiner = Some(refiner);
                }
            }
        }
        // The base samples first: build it now (the refiner may hold the memory after a run).
        if let Some(base) = &self.base {
            base.unet(&self.nets, &self.placement.device).get()?;
        }
        Ok(())
    }

    /// Forgets the base or the refiner and drops its networks.
    fn drop_model(&mut self, which: Which) {
        let slot = match which {
            Which::Base => &mut self.base,
            Which::Refiner => &mut self.refiner,
        };
        if let Some(model) = slot.take() {
            self.nets.get_mut().retain(|net| !model.key.owns(net));
        }
    }

    /// The base's text encoders and VAE, built first where they are not resident.
    fn pinned_networks(&self) -> Result<Pinned, ModelError> {
        let base = self
            .base
            .as_ref()
            .ok_or_else(|| ModelError::Internal("no base model is loaded".into()))?;
        let mut nets = self
            .nets
            .try_borrow_mut()
            .map_err(|_| ModelError::Internal("the network cache is in use".into()))?;
        let text = base
            .patched
            .clone()
            .with_precision(self.placement.text_precision());
        let text_device = self.placement.text_device();
        let clip_l = nets.get_or_build(&base.key.net(Role::ClipL), 0, true, || {
            match text.clip_l(LoadMode::Real, &text_device)? {
                Some((clip_l, _)) => Ok(clip_l),
                None => Err(ModelError::Internal("an SDXL base without CLIP-L".into())),
            }
        })?;
        let clip_g = nets.get_or_build(&base.key.net(Role::ClipG), 0, true, || {
            text.clip_g(LoadMode::Real, &text_device).map(|(m, _)| m)
        })?;
        let vae = nets.get_or_build(&base.key.net(Role::Vae), 0, true, || {
            base.file
                .vae(LoadMode::Real, &self.placement.device)
                .map(|(m, _)| m)
        })?;
        Ok(Pinned {
            clip_l,
            clip_g,
            vae,
        })
    }

    /// What a run reads (after [`Models::prepare`]).
    pub fn loaded(&mut self) -> Result<Loaded<'_>, ModelError> {
        let Pinned {
            clip_l,
            clip_g,
            vae,
        } = self.pinned_networks()?;
        let not_loaded = || ModelError::Internal("the models are not loaded".into());
        let (_, tokenizer) = self.tokenizer.as_ref().ok_or_else(not_loaded)?;
        let base = self.base.as_ref().ok_or_else(not_loaded)?;
        let device = &self.placement.device;
        Ok(Loaded {
            tokenizer,
            base,
            refiner: self.refiner.as_ref(),
            clip_l,
            clip_g,
            vae,
            base_unet: base.unet(&self.nets, device),
            refiner_unet: self.refiner.as_ref().map(|r| r.unet(&self.nets, device)),
            cache: &mut self.cache,
        })
    }
}

/// The networks every image of the loaded base needs.
struct Pinned {
    clip_l: Rc<ClipTextModel>,
    clip_g: Rc<ClipTextModel>,
    vae: Rc<Vae>,
}

/// One of the two models.
#[derive(Clone, Copy)]
enum Which {
    Base,
    Refiner,
}

fn lora_files(loras: &[(PathBuf, u64)]) -> Result<Vec<(Arc<LoraFile>, f64)>, ModelError> {
    loras
        .iter()
        .map(|(p, w)| Ok((Arc::new(LoraFile::open(p)?), f64::from_bits(*w))))
        .collect()
}

fn open_file(placement: &Placement, path: &Path, config: &Config) -> Result<SdxlFile, ModelError> {
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

fn key(path: &Path, loras: &[(PathBuf, f64)]) -> ModelKey {
    ModelKey {
        path: path.to_path_buf(),
        loras: loras
            .iter()
            .map(|(p, w)| (p.clone(), w.to_bits()))
            .collect(),
    }
}
