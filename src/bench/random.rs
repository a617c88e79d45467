//! Full-size networks without a checkpoint: the SDXL 1.0 layout (tensor names and shapes from
//! `fixtures/layouts`) written as a sparse safetensors header so the configuration is
//! inferred exactly as for a real file, and a `VarBuilder` backend that fills every weight with
//! seeded uniform noise (±1/√fan_in; 1-D `weight`s are 1, other 1-D tensors small).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

/// A sparse copy of a layout's header in a temporary folder, removed on drop.
pub struct SparseLayout {
    dir: PathBuf,
    pub path: PathBuf,
}

impl SparseLayout {
    /// Writes layout `name` (`base` or `refiner`) from the folder `layouts`.
    pub fn write(layouts: &Path, name: &str) -> anyhow::Result<Self> {
        let read = |file: &str| -> anyhow::Result<serde_json::Value> {
            let path = layouts.join(file);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {} (pass --layouts)", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
        };
        let summary = read("layouts_summary.json")?;
        let part = &summary[name];
        let file = part["file"]
            .as_str()
            .ok_or_else(|| anyhow!("layouts_summary.json has no `{name}.file`"))?;
        let mut header = serde_json::to_vec(&read(file)?)?;
        let header_bytes = part["header_bytes"].as_u64().unwrap_or(0) as usize;
        let file_bytes = part["file_bytes"].as_u64().unwrap_or(0);
        if header.len() > header_bytes {
            return Err(anyhow!("layout `{name}`: header larger than header_bytes"));
        }
        header.resize(header_bytes, b' ');
        let dir = std::env::temp_dir().join(format!("fooocus-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("sd_xl_{name}_1.0.safetensors"));
        let mut out = File::create(&path)?;
        out.write_all(&(header_bytes as u64).to_le_bytes())?;
        out.write_all(&header)?;
        out.set_len(file_bytes)?;
        Ok(Self { dir, path })
    }
}

impl Drop for SparseLayout {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Hands out seeded random weights of whatever shape a network asks for.
pub struct RandomBackend {
    pub seed: u64,
}

const CHUNK: usize = 1 << 20;

impl SimpleBackend for RandomBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let dims = shape.dims();
        let n = shape.elem_count();
        let data: Vec<f32> = if dims.len() <= 1 {
            let fill = if name.ends_with("weight") { 1.0 } else { 0.0 };
            vec![fill; n]
        } else {
            let fan_in: usize = dims[1..].iter().product();
            let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
            let salt = name
                .bytes()
                .fold(self.seed, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
            let mut data = vec![0f32; n];
            data.par_chunks_mut(CHUNK).enumerate().for_each(|(i, c)| {
                let mut rng = rand::rngs::StdRng::seed_from_u64(salt ^ ((i as u64) << 32));
                c.iter_mut()
                    .for_each(|v| *v = rng.random_range(-bound..bound));
            });
            data
        };
        Tensor::from_vec(data, shape, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights need a shape (asked for `{name}` without one)")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}
