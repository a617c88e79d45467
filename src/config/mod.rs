//! `config.toml`: the paths of model folders and outputs (more sections join as the server and
//! presets arrive). A missing file means the documented defaults.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub paths: Paths,
}

/// Where models are looked for and images saved.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Paths {
    pub checkpoints: Vec<PathBuf>,
    pub loras: Vec<PathBuf>,
    pub outputs: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            checkpoints: vec![PathBuf::from("models/checkpoints")],
            loras: vec![PathBuf::from("models/loras")],
            outputs: PathBuf::from("outputs"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid: {message}(fix the key, or delete the file to use the defaults)")]
    Invalid { path: PathBuf, message: String },
    #[error("{name} not found: looked for it as given and in {searched} (put the file in a checkpoint folder, or add its folder to [paths] checkpoints in config.toml)")]
    NotFound { name: PathBuf, searched: String },
}

impl Config {
    /// Reads `path`; a file that does not exist gives the defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(ConfigError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Resolves a checkpoint argument: an existing path as given, else the first checkpoint
    /// folder holding a file of that name.
    pub fn find_checkpoint(&self, name: &Path) -> Result<PathBuf, ConfigError> {
        if name.exists() {
            return Ok(name.to_path_buf());
        }
        let dirs = &self.paths.checkpoints;
        dirs.iter()
            .map(|dir| dir.join(name))
            .find(|p| p.exists())
            .ok_or_else(|| ConfigError::NotFound {
                name: name.to_path_buf(),
                searched: dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_is_the_defaults() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        assert_eq!(Config::load(&shipped).unwrap(), Config::default());
    }

    #[test]
    fn missing_file_gives_defaults_and_bad_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Config::load(&dir.path().join("none.toml")).unwrap(),
            Config::default()
        );
        let err = Config::default()
            .find_checkpoint(Path::new("absent.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("models/checkpoints"), "{err}");
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[paths]\ncheckpoint = [\"x\"]\n").unwrap();
        let err = Config::load(&bad).unwrap_err().to_string();
        assert!(
            err.contains("checkpoint") && err.contains("bad.toml"),
            "{err}"
        );
    }
}
