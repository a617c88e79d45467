//! Models from the hub: the catalog of files a preset needs (repository, revision, file, folder,
//! size and sha256 where known offline), what is missing locally, and downloads with resume and
//! verification ([`client`]).

pub mod background;
pub mod client;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Config, ModelKind, Preset};

pub use client::{DownloadProgress, HubClient};

/// Where a catalog file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Folder {
    Checkpoints,
    Loras,
    /// The CLIP tokenizer's path in the config.
    Tokenizer,
    /// The upscaler's folder (fetched on first use, not at start).
    UpscaleModels,
}

/// One downloadable file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// The name requests and presets use (the local file name).
    pub name: String,
    pub repo: String,
    #[serde(default = "main_revision")]
    pub revision: String,
    /// The file's path in the repository.
    pub file: String,
    pub folder: Folder,
    /// Size in bytes, when known offline (else the hub's metadata is used).
    #[serde(default)]
    pub size: Option<u64>,
    /// sha256, when known offline (else the hub's `X-Linked-Etag`/`ETag` is used).
    #[serde(default)]
    pub sha256: Option<String>,
}

impl CatalogEntry {
    /// The address of the file on the hub at `endpoint` (e.g. `https://huggingface.co`).
    pub fn url(&self, endpoint: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            endpoint.trim_end_matches('/'),
            self.repo,
            self.revision,
            self.file
        )
    }
}

fn main_revision() -> String {
    "main".into()
}

/// The files the default presets use, by name. Sizes and hashes of the real files are not
/// known offline: the hub's metadata (LFS sha256 in `X-Linked-Etag`) is used.
pub fn builtin_catalog() -> Vec<CatalogEntry> {
    let entry = |name: &str, repo: &str, file: &str, folder| CatalogEntry {
        name: name.into(),
        repo: repo.into(),
        revision: main_revision(),
        file: file.into(),
        folder,
        size: None,
        sha256: None,
    };
    vec![
        entry(
            "sd_xl_base_1.0_0.9vae.safetensors",
            "stabilityai/stable-diffusion-xl-base-1.0",
            "sd_xl_base_1.0_0.9vae.safetensors",
            Folder::Checkpoints,
        ),
        entry(
            "sd_xl_refiner_1.0_0.9vae.safetensors",
            "stabilityai/stable-diffusion-xl-refiner-1.0",
            "sd_xl_refiner_1.0_0.9vae.safetensors",
            Folder::Checkpoints,
        ),
        entry(
            "sd_xl_offset_example-lora_1.0.safetensors",
            "stabilityai/stable-diffusion-xl-base-1.0",
            "sd_xl_offset_example-lora_1.0.safetensors",
            Folder::Loras,
        ),
        entry(
            "tokenizer.json",
            "openai/clip-vit-large-patch14",
            "tokenizer.json",
            Folder::Tokenizer,
        ),
        upscaler_entry(),
    ]
}

/// The file name of Fooocus' upscaler (ESRGAN 4×, a PyTorch state dict).
pub const UPSCALER_FILE: &str = "fooocus_upscaler_s409985e5.bin";

/// Fooocus' upscaler, with its published size and sha256 (the hub's LFS pointer at commit
/// b3da241 of lllyasviel/misc). Its licence is not stated on the repository page: it is
/// downloaded on first use, never shipped.
pub fn upscaler_entry() -> CatalogEntry {
    CatalogEntry {
        name: UPSCALER_FILE.into(),
        repo: "lllyasviel/misc".into(),
        revision: main_revision(),
        file: UPSCALER_FILE.into(),
        folder: Folder::UpscaleModels,
        size: Some(33_636_613),
        sha256: Some("b2a66d21d2e44d2b59c53414419279763a423a61f05bc43d7c24e0489aeca5a3".into()),
    }
}

/// A file a preset needs and where it belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    pub name: String,
    pub dest: PathBuf,
    /// How to fetch it, when the catalog knows.
    pub entry: Option<CatalogEntry>,
}

/// The files `preset` needs that are not on disk: its base, refiner and LoRAs (looked up in the
/// model folders) and the tokenizer, with where each one goes.
pub fn missing(config: &Config, preset: &Preset, catalog: &[CatalogEntry]) -> Vec<Needed> {
    let mut wanted: Vec<(String, ModelKind)> =
        vec![(preset.base_model.clone(), ModelKind::Checkpoint)];
    if let Some(r) = preset
        .refiner_model
        .as_ref()
        .filter(|r| !r.is_empty() && *r != "None")
    {
        wanted.push((r.clone(), ModelKind::Checkpoint));
    }
    wanted.extend(
        preset
            .loras
            .iter()
            .map(|l| (l.name.clone(), ModelKind::Lora)),
    );
    let mut out: Vec<Needed> = wanted
        .into_iter()
        .filter(|(name, kind)| config.find_model(*kind, name).is_err())
        .map(|(name, kind)| {
            let dir = first_dir(config.model_dirs(kind));
            Needed {
                dest: dir.join(&name),
                entry: catalog.iter().find(|e| e.name == name).cloned(),
                name,
            }
        })
        .collect();
    if !config.paths.tokenizer.is_file() {
        out.push(Needed {
            name: "tokenizer.json".into(),
            dest: config.paths.tokenizer.clone(),
            entry: catalog
                .iter()
                .find(|e| e.folder == Folder::Tokenizer)
                .cloned(),
        });
    }
    out
}

fn first_dir(dirs: &[PathBuf]) -> &Path {
    dirs.first().map_or(Path::new("."), PathBuf::as_path)
}

/// Why a download failed, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{repo}/{file} was not found on {endpoint}: check the repository and file name (or HF_ENDPOINT / --hf-mirror)")]
    NotFound {
        repo: String,
        file: String,
        endpoint: String,
    },
    #[error("{repo}/{file} needs an access token: set HF_TOKEN")]
    Unauthorized { repo: String, file: String },
    #[error(
        "cannot reach {endpoint} for {file} ({reason}): without network, put the file at {dest}"
    )]
    Offline {
        endpoint: String,
        file: String,
        dest: PathBuf,
        reason: String,
    },
    #[error("downloading {file} failed: {reason}")]
    Transfer { file: String, reason: String },
    #[error("{file} arrived damaged ({reason}); the partial file was deleted: download it again")]
    Mismatch { file: String, reason: String },
    #[error("the hub's answer for {file} is not understood: {reason}")]
    Protocol { file: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl HubError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        HubError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn offline(entry: &CatalogEntry, endpoint: &str, dest: &Path, e: ureq::Error) -> Self {
        HubError::Offline {
            endpoint: endpoint.to_string(),
            file: entry.file.clone(),
            dest: dest.to_path_buf(),
            reason: e.to_string(),
        }
    }

    /// Whether another attempt may succeed (a dropped or failed transfer).
    pub fn is_retryable(&self) -> bool {
        matches!(self, HubError::Transfer { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LoraChoice;

    #[test]
    fn missing_lists_what_a_preset_lacks_and_where_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.paths.checkpoints = vec![dir.path().join("ckpt")];
        config.paths.loras = vec![dir.path().join("loras")];
        config.paths.tokenizer = dir.path().join("clip/tokenizer.json");
        std::fs::create_dir_all(dir.path().join("ckpt")).unwrap();
        std::fs::write(
            dir.path().join("ckpt/sd_xl_base_1.0_0.9vae.safetensors"),
            b"",
        )
        .unwrap();
        let preset = Preset {
            loras: vec![LoraChoice {
                name: "sd_xl_offset_example-lora_1.0.safetensors".into(),
                weight: 0.5,
            }],
            ..Preset::default()
        };
        let needed = missing(&config, &preset, &builtin_catalog());
        let names: Vec<&str> = needed.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "sd_xl_refiner_1.0_0.9vae.safetensors",
                "sd_xl_offset_example-lora_1.0.safetensors",
                "tokenizer.json"
            ]
        );
        assert_eq!(
            needed[1].dest,
            dir.path()
                .join("loras/sd_xl_offset_example-lora_1.0.safetensors")
        );
        assert!(needed.iter().all(|n| n.entry.is_some()));
        assert_eq!(needed[2].dest, config.paths.tokenizer);
    }

    #[test]
    fn part_files_sit_beside_the_destination() {
        assert_eq!(
            client::part_path(Path::new("/m/a.safetensors")),
            PathBuf::from("/m/a.safetensors.part")
        );
    }
}
