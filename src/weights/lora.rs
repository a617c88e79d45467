//! kohya LoRAs: reading, key matching against a checkpoint, and merging into weights at load.
//!
//! A LoRA file holds modules `<name>.lora_down.weight` `[r, in, …]`, `<name>.lora_up.weight`
//! `[out, r, …]` and an optional scalar `<name>.alpha`. [`Patches::new`] matches the module names
//! against one checkpoint through its family's naming table ([`Targets`]; SDXL's is
//! `nets::sdxl::lora_names`) and reports what matched nothing. [`Patches::merged`] then gives one weight with every matching update added,
//! `W + f32(strength·alpha/rank)·(up·down)` in f32 (alpha = rank when absent; conv updates by the
//! same rule on flattened shapes); the weight loader calls it tensor by tensor, so a model never
//! exists twice in memory.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::weights::checkpoint::{Architecture, Checkpoint};
use crate::weights::ModelError;

const DOWN: &str = ".lora_down.weight";
const UP: &str = ".lora_up.weight";
const ALPHA: &str = ".alpha";

/// Fooocus leaves a LoRA out of a model when more of its tensors than this match nothing there
/// (`modules/core.py`, `refresh_loras`): the LoRA was made for another model.
const MAX_UNMATCHED: usize = 12;

/// One low-rank update `ΔW = (alpha/rank)·up·down`, with `up·down` of shape `[rows, cols]`.
#[derive(Debug)]
struct Module {
    name: String,
    down: String,
    up: String,
    rank: usize,
    alpha: f64,
    rows: usize,
    cols: usize,
    /// Every tensor of the module, for the unmatched report.
    keys: Vec<String>,
}

/// An opened kohya LoRA: its memory-mapped file and the modules it holds.
#[derive(Debug)]
pub struct LoraFile {
    file: Checkpoint,
    modules: Vec<Module>,
    /// Tensors that form no usable module (unknown parts, missing halves, bad shapes).
    unusable: Vec<String>,
}

impl LoraFile {
    /// Opens `path` and reads its module list (and alphas; up/down stay mapped until merged).
    /// A file that is not a LoRA is refused with what it is.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let file = Checkpoint::open(path)?;
        let found = file.architecture();
        if found != Architecture::Lora {
            return Err(ModelError::NotLora {
                path: file.path().to_path_buf(),
                found: found.describe().to_string(),
            });
        }
        let mut modules = Vec::new();
        let mut unusable = Vec::new();
        for (name, keys) in group_by_module(&file) {
            match read_module(&file, name, &keys) {
                Ok(module) => modules.push(module),
                Err(reason) => {
                    tracing::warn!(file = %file.path().display(), module = name, "{reason}; its tensors are ignored");
                    unusable.extend(keys);
                }
            }
        }
        Ok(Self {
            file,
            modules,
            unusable,
        })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

/// Tensor names grouped by module (the text before the first `.`), in name order.
fn group_by_module(file: &Checkpoint) -> BTreeMap<&str, Vec<String>> {
    let mut groups: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for key in file.tensors().keys() {
        let name = key.split_once('.').map_or(key.as_str(), |(n, _)| n);
        groups.entry(name).or_default().push(key.clone());
    }
    groups
}

/// Reads one module, or says why it cannot be used.
fn read_module(file: &Checkpoint, name: &str, keys: &[String]) -> Result<Module, String> {
    let (down, up, alpha) = (
        format!("{name}{DOWN}"),
        format!("{name}{UP}"),
        format!("{name}{ALPHA}"),
    );
    if let Some(other) = keys.iter().find(|k| ![&down, &up, &alpha].contains(k)) {
        return Err(format!(
            "`{other}` is not a plain LoRA part (LyCORIS/LoCon/DoRA parts are not supported)"
        ));
    }
    let (Some(down_shape), Some(up_shape)) = (file.shape(&down), file.shape(&up)) else {
        return Err("it lacks its lora_down or lora_up weight".to_string());
    };
    let rank = down_shape.first().copied().unwrap_or(0);
    let rows = up_shape.first().copied().unwrap_or(0);
    let up_inner: usize = up_shape.iter().skip(1).product();
    let cols: usize = down_shape.iter().skip(1).product();
    if down_shape.len() < 2 || up_shape.len() < 2 || rank == 0 || up_inner != rank {
        return Err(format!(
            "lora_down {down_shape:?} and lora_up {up_shape:?} do not multiply"
        ));
    }
    let alpha = if file.contains(&alpha) {
        read_scalar(file, &alpha)?
    } else {
        rank as f64
    };
    Ok(Module {
        name: name.to_string(),
        down,
        up,
        rank,
        alpha,
        rows,
        cols,
        keys: keys.to_vec(),
    })
}

/// A one-element tensor's value.
fn read_scalar(file: &Checkpoint, key: &str) -> Result<f64, String> {
    let values = file
        .load(key, DType::F64, &Device::Cpu)
        .and_then(|t| Ok(t.flatten_all()?.to_vec1::<f64>()?))
        .map_err(|e| e.to_string())?;
    match values.as_slice() {
        [v] if v.is_finite() => Ok(*v),
        _ => Err(format!("`{key}` is not one finite number")),
    }
}

/// Where a module's update goes: a weight of the checkpoint, or a row block of it.
#[derive(Debug, Clone)]
pub struct Target {
    pub key: String,
    pub rows: Option<(usize, usize)>,
}

/// kohya module name → target: the naming table of one network family (for SDXL,
/// `nets::sdxl::lora_names`).
pub type Targets = HashMap<String, Target>;

/// Whether `module`'s update has the shape of `target` in `ckpt` (rows × flattened rest).
fn fits(ckpt: &Checkpoint, module: &Module, target: &Target) -> bool {
    let Some(shape) = ckpt.shape(&target.key) else {
        return false;
    };
    let rows = match (target.rows, shape.first()) {
        (Some((a, b)), Some(&all)) if a < b && b <= all => b - a,
        (None, Some(&all)) => all,
        _ => return false,
    };
    let cols: usize = shape.iter().skip(1).product();
    shape.len() >= 2 && rows == module.rows && cols == module.cols
}

/// One update to add to one weight.
#[derive(Debug, Clone)]
struct Patch {
    lora: Arc<LoraFile>,
    module: usize,
    /// `strength·alpha/rank`, computed in f64 and applied in f32.
    scale: f32,
    rows: Option<(usize, usize)>,
}

impl Patch {
    /// `weight` (f32) with this update added. Failures name the LoRA file and the module.
    fn add_to(&self, weight: Tensor) -> Result<Tensor, ModelError> {
        let module = self.lora.modules.get(self.module).ok_or_else(|| {
            ModelError::Internal(format!("LoRA module {} out of range", self.module))
        })?;
        self.update(module, weight).map_err(|e| match e {
            ModelError::Candle(e) => ModelError::Corrupt {
                path: self.lora.path().to_path_buf(),
                reason: format!("module `{}` cannot be merged: {e}", module.name),
            },
            other => other,
        })
    }

    fn update(&self, module: &Module, weight: Tensor) -> Result<Tensor, ModelError> {
        let device = weight.device();
        let load = |key: &str| -> Result<Tensor, ModelError> {
            Ok(self
                .lora
                .file
                .load(key, DType::F32, device)?
                .flatten_from(1)?)
        };
        let delta = load(&module.up)?
            .matmul(&load(&module.down)?)?
            .affine(f64::from(self.scale), 0.0)?;
        let mut dims = weight.dims().to_vec();
        let delta = match (self.rows, dims.first_mut()) {
            (Some((a, b)), Some(first)) => {
                let after = first.saturating_sub(b);
                *first = b.saturating_sub(a);
                delta.reshape(dims)?.pad_with_zeros(0, a, after)?
            }
            _ => delta.reshape(dims)?,
        };
        Ok((weight + delta)?)
    }
}

/// What happened to one LoRA for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraReport {
    pub path: PathBuf,
    pub strength: f64,
    /// Modules merged into this model's weights.
    pub merged: usize,
    /// Tensors of the file that match no weight of this model, sorted.
    pub unmatched: Vec<String>,
    /// Whether the LoRA is left out of this model: nothing matched, or more than 12 tensors did
    /// not (Fooocus's rule for a LoRA made for another model).
    pub skipped: bool,
}

/// The LoRA updates of one checkpoint, by weight name. Empty by default (no LoRA).
#[derive(Debug, Clone, Default)]
pub struct Patches {
    by_key: HashMap<String, Vec<Patch>>,
}

impl Patches {
    /// Matches `loras` (each with its strength, added up in order) against the weights of
    /// `ckpt` through its family's naming `table`. What matches nothing is reported and logged,
    /// never fatal.
    pub fn new(
        ckpt: &Checkpoint,
        table: &Targets,
        loras: &[(Arc<LoraFile>, f64)],
    ) -> (Self, Vec<LoraReport>) {
        let mut patches = Self::default();
        let reports = loras
            .iter()
            .map(|(lora, strength)| patches.add(ckpt, table, lora, *strength))
            .collect();
        (patches, reports)
    }

    /// Matches one LoRA; keeps its patches unless it is skipped for this model.
    fn add(
        &mut self,
        ckpt: &Checkpoint,
        table: &Targets,
        lora: &Arc<LoraFile>,
        strength: f64,
    ) -> LoraReport {
        let mut unmatched = lora.unusable.clone();
        let mut found = Vec::new();
        for (index, module) in lora.modules.iter().enumerate() {
            match table.get(&module.name) {
                Some(target) if fits(ckpt, module, target) => {
                    let scale = (strength * (module.alpha / module.rank as f64)) as f32;
                    let patch = Patch {
                        lora: lora.clone(),
                        module: index,
                        scale,
                        rows: target.rows,
                    };
                    found.push((target.key.clone(), patch));
                }
                _ => unmatched.extend(module.keys.iter().cloned()),
            }
        }
        unmatched.sort();
        let skipped = found.is_empty() || unmatched.len() > MAX_UNMATCHED;
        let report = LoraReport {
            path: lora.path().to_path_buf(),
            strength,
            merged: if skipped { 0 } else { found.len() },
            unmatched,
            skipped,
        };
        log(ckpt, &report);
        if !skipped {
            for (key, patch) in found {
                self.by_key.entry(key).or_default().push(patch);
            }
        }
        report
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Weight `key` of `ckpt` on `device` in f32 with every update to it added, or `None` when
    /// no LoRA touches it.
    pub fn merged(
        &self,
        ckpt: &Checkpoint,
        key: &str,
        device: &Device,
    ) -> Result<Option<Tensor>, ModelError> {
        let Some(patches) = self.by_key.get(key) else {
            return Ok(None);
        };
        let weight = ckpt.load(key, DType::F32, device)?;
        patches
            .iter()
            .try_fold(weight, |w, p| p.add_to(w))
            .map(Some)
    }
}

/// Tells the user what a LoRA did to a model.
fn log(ckpt: &Checkpoint, report: &LoraReport) {
    let model = ckpt.path().display();
    let lora = report.path.display();
    let sample = report
        .unmatched
        .iter()
        .take(5)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if report.skipped {
        tracing::warn!(
            "LoRA {lora} left out of {model}: {} of its tensors match nothing there (e.g. {sample}); \
             it was made for another model, or holds parts fooocus-rs cannot merge (LyCORIS)",
            report.unmatched.len()
        );
        return;
    }
    tracing::info!(
        "LoRA {lora} at strength {}: {} modules match {model}",
        report.strength,
        report.merged
    );
    if !report.unmatched.is_empty() {
        tracing::warn!(
            "LoRA {lora}: {} tensors match no weight of {model} and are ignored: {sample}",
            report.unmatched.len()
        );
    }
}
