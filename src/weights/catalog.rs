//! Which model files are what, remembered: [`ArchitectureCache`] reads a file's safetensors
//! header once and answers again from memory until the file's size or modification time changes.
//! Listing a folder of multi-GB checkpoints thus costs one header read per new file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use super::checkpoint::{Architecture, Checkpoint};

/// What identifies one version of a file: its length and modification time.
type Stamp = (u64, Option<SystemTime>);

/// Architectures of model files, keyed by path and invalidated when a file changes.
#[derive(Debug, Default)]
pub struct ArchitectureCache {
    known: Mutex<HashMap<PathBuf, (Stamp, Architecture)>>,
}

impl ArchitectureCache {
    /// What `path` holds; [`Architecture::Unknown`] for a file that cannot be read or parsed.
    pub fn architecture(&self, path: &Path) -> Architecture {
        let Ok(meta) = std::fs::metadata(path) else {
            return Architecture::Unknown;
        };
        let stamp = (meta.len(), meta.modified().ok());
        if let Some(architecture) = self.remembered(path, stamp) {
            return architecture;
        }
        let architecture = Checkpoint::open(path)
            .map(|c| c.architecture())
            .unwrap_or(Architecture::Unknown);
        if let Ok(mut known) = self.known.lock() {
            known.insert(path.to_owned(), (stamp, architecture));
        }
        architecture
    }

    fn remembered(&self, path: &Path, stamp: Stamp) -> Option<Architecture> {
        let known = self.known.lock().ok()?;
        let (seen, architecture) = known.get(path)?;
        (*seen == stamp).then_some(*architecture)
    }

    /// Whether `path` is an SDXL base or refiner checkpoint.
    pub fn is_sdxl_checkpoint(&self, path: &Path) -> bool {
        self.architecture(path).is_sdxl()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file holding one zero tensor of each given name.
    fn write_safetensors(path: &Path, names: &[&str]) {
        let mut header = serde_json::Map::new();
        for (i, name) in names.iter().enumerate() {
            header.insert(
                (*name).to_owned(),
                serde_json::json!({"dtype": "F16", "shape": [1], "data_offsets": [2 * i, 2 * i + 2]}),
            );
        }
        let mut text = serde_json::Value::Object(header).to_string();
        while !text.len().is_multiple_of(8) {
            text.push(' ');
        }
        let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(text.as_bytes());
        bytes.resize(bytes.len() + 2 * names.len(), 0);
        std::fs::write(path, bytes).expect("write test file");
    }

    const BASE: [&str; 4] = [
        "model.diffusion_model.label_emb.0.0.weight",
        "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
        "conditioner.embedders.1.model.ln_final.weight",
        "first_stage_model.decoder.conv_out.weight",
    ];

    #[test]
    fn tells_checkpoints_from_loras_and_junk_and_notices_changes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = ArchitectureCache::default();
        let model = dir.path().join("model.safetensors");
        write_safetensors(&model, &BASE);
        assert_eq!(cache.architecture(&model), Architecture::SdxlBase);
        assert!(cache.is_sdxl_checkpoint(&model));

        let lora = dir.path().join("lora.safetensors");
        write_safetensors(&lora, &["lora_unet_out_0.lora_down.weight"]);
        assert!(!cache.is_sdxl_checkpoint(&lora));
        let junk = dir.path().join("junk.safetensors");
        std::fs::write(&junk, b"not a safetensors file").expect("write");
        assert_eq!(cache.architecture(&junk), Architecture::Unknown);
        assert_eq!(
            cache.architecture(&dir.path().join("gone.safetensors")),
            Architecture::Unknown
        );

        // Replaced by a tensor dump of another length: read again, no longer a checkpoint.
        write_safetensors(&model, &["x", "y", "z", "w", "v"]);
        assert!(!cache.is_sdxl_checkpoint(&model));
    }
}
