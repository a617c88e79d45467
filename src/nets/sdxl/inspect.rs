//! `fooocus inspect`: what a model file is (architecture, dtype, parameters per component,
//! inferred configuration, missing and unused tensors), built "on paper" without reading weights.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::nets::sdxl::file::SdxlFile;
use crate::nets::sdxl::shapes::{HeadDims, SdxlConfig};
use crate::weights::checkpoint::{Architecture, Checkpoint};
use crate::weights::ModelError;

/// Parameters and tensors one network takes from the file.
#[derive(Debug, Clone)]
pub struct ComponentReport {
    pub name: &'static str,
    pub parameters: u64,
    pub tensors: usize,
}

/// Everything `fooocus inspect` prints.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub path: PathBuf,
    pub file_bytes: usize,
    pub tensor_count: usize,
    pub architecture: Architecture,
    pub weight_dtype: Option<String>,
    pub config: Option<SdxlConfig>,
    pub components: Vec<ComponentReport>,
    /// Tensors no network reads (e.g. `position_ids`, `logit_scale`).
    pub unused: Vec<String>,
    /// Why the file cannot be used, if it cannot.
    pub problems: Vec<String>,
}

/// Inspects `path`. Fails only when the file cannot be read as safetensors at all.
pub fn inspect(path: impl AsRef<Path>, heads: HeadDims) -> Result<Inspection, ModelError> {
    let checkpoint = Arc::new(Checkpoint::open(path)?);
    let architecture = checkpoint.architecture();
    let mut report = Inspection {
        path: checkpoint.path().to_path_buf(),
        file_bytes: checkpoint.file_len(),
        tensor_count: checkpoint.tensors().len(),
        architecture,
        weight_dtype: checkpoint.weight_dtype().map(|d| format!("{d:?}")),
        config: None,
        components: Vec::new(),
        unused: Vec::new(),
        problems: Vec::new(),
    };
    if !architecture.is_sdxl() {
        report.problems.push(format!(
            "this is a {}: fooocus-rs runs SDXL base and refiner checkpoints only",
            architecture.describe()
        ));
        return Ok(report);
    }
    let config = match SdxlConfig::infer(&checkpoint, heads) {
        Ok(c) => c,
        Err(e) => {
            report.problems.push(e.to_string());
            return Ok(report);
        }
    };
    let file = SdxlFile {
        checkpoint: checkpoint.clone(),
        config: config.clone(),
        precision: Default::default(),
        lean_weights: false,
        bf16_products: false,
        own_kernels: true,
    };
    let mut usages = Vec::new();
    for (name, usage) in file.usage() {
        match usage {
            Ok(u) => {
                report.components.push(ComponentReport {
                    name,
                    parameters: u.parameters(&checkpoint),
                    tensors: u.used.len(),
                });
                usages.push(u);
            }
            Err(e) => report.problems.push(format!("{name}: {e}")),
        }
    }
    report.unused = file.unused(&usages);
    report.config = Some(config);
    Ok(report)
}

impl Inspection {
    /// Parameters of the named component, if it was built.
    pub fn parameters(&self, name: &str) -> Option<u64> {
        self.components
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.parameters)
    }
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "file:         {}", self.path.display())?;
        writeln!(
            f,
            "size:         {} bytes, {} tensors",
            self.file_bytes, self.tensor_count
        )?;
        writeln!(f, "architecture: {}", self.architecture.describe())?;
        if let Some(d) = &self.weight_dtype {
            writeln!(f, "weights:      {d}")?;
        }
        if let Some(c) = &self.config {
            let u = &c.unet;
            writeln!(
                f,
                "UNet:         channels {:?}, transformer depth {:?}, middle {}, context {}, ADM {}",
                u.level_channels(),
                u.transformer_depths(),
                u.middle_depth(),
                u.context_dim,
                u.adm_in_channels
            )?;
            for clip in c.clip_l.iter().chain(std::iter::once(&c.clip_g)) {
                writeln!(
                    f,
                    "text encoder: {} wide, {} layers, {} heads, MLP {}{}",
                    clip.hidden,
                    clip.layers,
                    clip.heads,
                    clip.mlp,
                    clip.projection
                        .map(|p| format!(", projection {p}"))
                        .unwrap_or_default()
                )?;
            }
            writeln!(f, "VAE:          channels {:?}", c.vae.channels)?;
        }
        for c in &self.components {
            writeln!(
                f,
                "  {:<7} {:>15} parameters in {} tensors",
                c.name,
                group_thousands(c.parameters),
                c.tensors
            )?;
        }
        if !self.unused.is_empty() {
            writeln!(f, "unused tensors ({}):", self.unused.len())?;
            for name in self.unused.iter().take(20) {
                writeln!(f, "  {name}")?;
            }
            if self.unused.len() > 20 {
                writeln!(f, "  … and {} more", self.unused.len() - 20)?;
            }
        }
        if self.problems.is_empty() {
            writeln!(f, "status:       loads")?;
        } else {
            for p in &self.problems {
                writeln!(f, "problem:      {p}")?;
            }
        }
        Ok(())
    }
}

/// `2567463684` → `2,567,463,684`.
fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands() {
        assert_eq!(super::group_thousands(2_567_463_684), "2,567,463,684");
        assert_eq!(super::group_thousands(999), "999");
        assert_eq!(super::group_thousands(1000), "1,000");
    }
}
