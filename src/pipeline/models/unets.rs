//! The UNets a run samples with, built on demand through the network cache: a [`CachedUnet`]
//! names its file and LoRAs, and each model call takes it from the cache, which builds it (after
//! dropping the other UNet, unless `--vram high` keeps both) when it is not resident.

use std::cell::RefCell;
use std::rc::Rc;

use candle_core::Device;

use super::cache::{NetCache, NetKey};
use crate::nets::sdxl::file::SdxlWithLoras;
use crate::nets::sdxl::unet::UNet;
use crate::weights::backend::LoadMode;
use crate::weights::ModelError;

/// A swappable UNet: where the cache finds or builds it.
#[derive(Clone, Copy)]
pub struct CachedUnet<'a> {
    pub cache: &'a RefCell<NetCache>,
    pub key: &'a NetKey,
    /// Its parameters (what the residency counts).
    pub cost: u64,
    pub source: &'a SdxlWithLoras,
    pub device: &'a Device,
}

impl CachedUnet<'_> {
    /// The UNet, built first if it is not resident.
    pub fn get(&self) -> Result<Rc<UNet>, ModelError> {
        let mut cache = self
            .cache
            .try_borrow_mut()
            .map_err(|_| ModelError::Internal("the network cache is in use".into()))?;
        cache.get_or_build(self.key, self.cost, false, || {
            self.source
                .unet(LoadMode::Real, self.device)
                .map(|(unet, _)| unet)
        })
    }
}
