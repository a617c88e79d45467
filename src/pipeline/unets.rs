//! The UNets of the loaded models and which of them are built: both at once (`--vram high`), or
//! one at a time, the other dropped before it is built and built again from its file (with its
//! LoRAs) when the sampler needs it, which keeps a single UNet's weights in memory.

use candle_core::Device;

use crate::nets::sdxl::file::SdxlWithLoras;
use crate::nets::sdxl::unet::UNet;
use crate::weights::backend::LoadMode;
use crate::weights::ModelError;

/// Index of the base model's UNet.
pub const BASE: usize = 0;
/// Index of the refiner's UNet.
pub const REFINER: usize = 1;

#[derive(Default)]
struct Slot {
    source: Option<SdxlWithLoras>,
    built: Option<UNet>,
}

/// The base and refiner UNets and their residency.
pub struct UnetSwap {
    device: Device,
    keep_both: bool,
    slots: [Slot; 2],
    builds: [usize; 2],
}

impl UnetSwap {
    pub fn new(device: Device, keep_both: bool) -> Self {
        Self {
            device,
            keep_both,
            slots: Default::default(),
            builds: [0, 0],
        }
    }

    /// Sets the file `model`'s UNet is built from (`None`: no such model); drops what was built
    /// from the previous one.
    pub fn set(&mut self, model: usize, source: Option<SdxlWithLoras>) {
        if let Some(slot) = self.slots.get_mut(model) {
            *slot = Slot {
                source,
                built: None,
            };
        }
    }

    /// Checks that `model`'s UNet can be built, without reading its weights.
    pub fn check(&self, model: usize) -> Result<(), ModelError> {
        match self.slots.get(model).and_then(|s| s.source.as_ref()) {
            Some(source) => source.unet(LoadMode::Meta, &self.device).map(|_| ()),
            None => Err(missing(model)),
        }
    }

    /// `model`'s UNet, built first if needed (after dropping the other one, unless both stay).
    pub fn get(&mut self, model: usize) -> Result<&UNet, ModelError> {
        if model >= self.slots.len() {
            return Err(missing(model));
        }
        if self.slots[model].built.is_none() {
            if !self.keep_both {
                for (i, slot) in self.slots.iter_mut().enumerate() {
                    if i != model {
                        slot.built = None;
                    }
                }
                crate::kernels::memory::release_freed();
            }
            let Some(source) = &self.slots[model].source else {
                return Err(missing(model));
            };
            let (unet, _) = source.unet(LoadMode::Real, &self.device)?;
            self.slots[model].built = Some(unet);
            self.builds[model] += 1;
        }
        self.slots[model]
            .built
            .as_ref()
            .ok_or_else(|| missing(model))
    }

    /// How many times each UNet was built: `[base, refiner]`.
    pub fn builds(&self) -> [usize; 2] {
        self.builds
    }
}

fn missing(model: usize) -> ModelError {
    let name = if model == BASE { "base" } else { "refiner" };
    ModelError::Internal(format!("no {name} model is loaded"))
}
