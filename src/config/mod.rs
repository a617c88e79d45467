//! `config.toml`: model, style, wildcard and output folders, presets (the defaults of a
//! generation, selectable with `--preset`) and per-model head sizes. A missing file means the
//! documented defaults; presets in the file add to or replace the built-in ones by name.

mod preset;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use preset::{LoraChoice, Preset, DEFAULT_PRESET, DEFAULT_STYLES};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub paths: Paths,
    /// Presets by name; `default` is used when none is chosen.
    pub presets: BTreeMap<String, Preset>,
    /// Attention head sizes of models that are not standard SDXL (64), by file name.
    pub head_dims: BTreeMap<String, HeadDimsConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            paths: Paths::default(),
            presets: BTreeMap::from([(DEFAULT_PRESET.to_string(), Preset::default())]),
            head_dims: BTreeMap::new(),
        }
    }
}

/// Where models, styles and wildcards are looked for and images saved.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Paths {
    pub checkpoints: Vec<PathBuf>,
    pub loras: Vec<PathBuf>,
    /// The CLIP tokenizer (`tokenizer.json` of openai/clip-vit-large-patch14).
    pub tokenizer: PathBuf,
    pub styles: PathBuf,
    pub wildcards: PathBuf,
    pub outputs: PathBuf,
    /// The upscaler's folder (Fooocus' `models/upscale_models`).
    pub upscale_models: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            checkpoints: vec![PathBuf::from("models/checkpoints")],
            loras: vec![PathBuf::from("models/loras")],
            tokenizer: PathBuf::from("models/clip/tokenizer.json"),
            styles: PathBuf::from("styles"),
            wildcards: PathBuf::from("wildcards"),
            outputs: PathBuf::from("outputs"),
            upscale_models: PathBuf::from("models/upscale_models"),
        }
    }
}

/// Head sizes of one model's networks (each defaults to 64).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HeadDimsConfig {
    pub clip_l: usize,
    pub clip_g: usize,
    pub unet: usize,
}

impl Default for HeadDimsConfig {
    fn default() -> Self {
        // SDXL's own head size; other values only for checkpoints that differ.
        Self {
            clip_l: 64,
            clip_g: 64,
            unet: 64,
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
    #[error("unknown preset `{name}`: known presets are {known}")]
    UnknownPreset { name: String, known: String },
    #[error("{name} not found in {searched} (put the file there, or add its folder to [paths] in config.toml)")]
    NotFound { name: PathBuf, searched: String },
    #[error(
        "\"{name}\" is not a model name: {problem}; give the name of a file in the model folders, \
         as GET /api/options lists them"
    )]
    NotAName { name: String, problem: &'static str },
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
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config
            .presets
            .entry(DEFAULT_PRESET.to_string())
            .or_default();
        Ok(config)
    }

    /// The preset called `name`, or an error listing the known ones.
    pub fn preset(&self, name: &str) -> Result<&Preset, ConfigError> {
        self.presets
            .get(name)
            .ok_or_else(|| ConfigError::UnknownPreset {
                name: name.to_string(),
                known: self.presets.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// Head sizes for the model file `path` (by file name), 64 unless configured.
    pub fn head_dims(&self, path: &Path) -> HeadDimsConfig {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.head_dims.get(&name).copied().unwrap_or_default()
    }

    /// The folders holding models of `kind`.
    pub fn model_dirs(&self, kind: ModelKind) -> &[PathBuf] {
        match kind {
            ModelKind::Checkpoint => &self.paths.checkpoints,
            ModelKind::Lora => &self.paths.loras,
        }
    }

    /// Every `.safetensors` file under the folders of `kind` (recursively), named by its path
    /// relative to its folder with `/` separators, sorted; the first folder wins on equal names.
    pub fn list_models(&self, kind: ModelKind) -> Vec<ModelEntry> {
        let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
        for dir in self.model_dirs(kind) {
            for path in collect_safetensors(dir) {
                let Ok(rel) = path.strip_prefix(dir) else {
                    continue;
                };
                let name = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                found.entry(name).or_insert(path);
            }
        }
        found
            .into_iter()
            .map(|(name, path)| ModelEntry { name, path })
            .collect()
    }

    /// The model of `kind` whose relative name, file name or file stem is `name`. Names are never
    /// paths: an absolute path, `..` or a backslash is refused before any file is looked at, and
    /// only files inside the folders (links included) are candidates, so an answer says nothing
    /// about files elsewhere.
    pub fn find_model(&self, kind: ModelKind, name: &str) -> Result<PathBuf, ConfigError> {
        if let Some(problem) = path_problem(name) {
            return Err(ConfigError::NotAName {
                name: name.to_owned(),
                problem,
            });
        }
        let as_path = Path::new(name);
        let models = self.list_models(kind);
        let matches = |m: &&ModelEntry| {
            m.name == name
                || m.path.file_name().is_some_and(|f| f == name)
                || m.path.file_stem().is_some_and(|f| f == name)
        };
        models
            .iter()
            .find(matches)
            .map(|m| m.path.clone())
            .ok_or_else(|| ConfigError::NotFound {
                name: as_path.to_path_buf(),
                searched: self
                    .model_dirs(kind)
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// Which model folders to search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Checkpoint,
    Lora,
}

/// A model file found in a model folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    /// Path relative to its folder, `/`-separated (what requests and the UI use).
    pub name: String,
    pub path: PathBuf,
}

/// Adds the `.safetensors` files under `dir` to `out`, recursively; unreadable folders are
/// skipped (a missing model folder simply holds no models).
/// How deep model folders are searched (a bound on links that lead back up).
const MAX_MODEL_DEPTH: usize = 16;

/// Every `.safetensors` file under `root`, recursively, whose real location lies inside `root`'s:
/// a link leading out of the folder (or nowhere) is left out, so a model name can only ever
/// reach files under the configured folders.
fn collect_safetensors(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(real_root) = root.canonicalize() {
        walk_models(root, &real_root, 0, &mut out);
    }
    out
}

fn walk_models(dir: &Path, real_root: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let Ok(real) = path.canonicalize() else {
            continue;
        };
        if !real.starts_with(real_root) {
            continue;
        }
        if real.is_dir() {
            if depth < MAX_MODEL_DEPTH {
                walk_models(&path, real_root, depth + 1, out);
            }
        } else if path.extension().is_some_and(|e| e == "safetensors") {
            out.push(path);
        }
    }
}

/// Why `name` is a path rather than a model name, if it is one.
fn path_problem(name: &str) -> Option<&'static str> {
    let path = Path::new(name);
    if name.is_empty() {
        Some("it is empty")
    } else if path.is_absolute() || name.starts_with(['/', '\\']) || name.get(1..2) == Some(":") {
        Some("it is an absolute path")
    } else if name.contains('\\') || name.contains('\0') {
        Some("it holds a backslash or a NUL")
    } else if path
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        Some("it holds `..` or `.`")
    } else {
        None
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
    fn models_are_found_recursively_by_name_or_stem() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/sub")).unwrap();
        std::fs::write(dir.path().join("a/sub/x.safetensors"), b"").unwrap();
        std::fs::write(dir.path().join("a/y.safetensors"), b"").unwrap();
        std::fs::write(dir.path().join("a/notes.txt"), b"").unwrap();
        let mut config = Config::default();
        config.paths.loras = vec![dir.path().join("a"), dir.path().join("missing")];
        let names: Vec<String> = config
            .list_models(ModelKind::Lora)
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, vec!["sub/x.safetensors", "y.safetensors"]);
        for name in ["sub/x.safetensors", "x.safetensors", "x"] {
            assert!(config.find_model(ModelKind::Lora, name).is_ok(), "{name}");
        }
        assert!(config.find_model(ModelKind::Lora, "z").is_err());
    }

    #[test]
    fn model_names_are_never_paths_and_links_out_of_the_folder_are_not_models() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("loras");
        std::fs::create_dir_all(folder.join("sub")).unwrap();
        std::fs::write(folder.join("in.safetensors"), b"x").unwrap();
        let outside = dir.path().join("secret.safetensors");
        std::fs::write(&outside, b"secret").unwrap();
        std::os::unix::fs::symlink(&outside, folder.join("escape.safetensors")).unwrap();
        std::os::unix::fs::symlink(dir.path(), folder.join("up")).unwrap();
        std::os::unix::fs::symlink(&folder, folder.join("sub/loop")).unwrap();
        std::os::unix::fs::symlink(
            folder.join("in.safetensors"),
            folder.join("alias.safetensors"),
        )
        .unwrap();
        let mut config = Config::default();
        config.paths.loras = vec![folder.clone()];
        let names: Vec<String> = config
            .list_models(ModelKind::Lora)
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert!(
            !names
                .iter()
                .any(|n| n.contains("escape") || n.starts_with("up/")),
            "{names:?}"
        );
        assert!(names.contains(&"alias.safetensors".to_owned()), "{names:?}");
        let outside_text = outside.display().to_string();
        for name in [
            outside_text.as_str(),
            "/etc/passwd",
            "../secret.safetensors",
            "sub/../../secret.safetensors",
            "./in.safetensors",
            "..\\secret.safetensors",
            "C:secret.safetensors",
            "escape.safetensors",
            "up/secret.safetensors",
            "",
        ] {
            let err = config.find_model(ModelKind::Lora, name);
            let text = err
                .map(|p| p.display().to_string())
                .unwrap_err()
                .to_string();
            assert!(
                !text.contains("bytes") && !text.contains("secret\""),
                "{name}: {text}"
            );
        }
        assert!(matches!(
            config.find_model(ModelKind::Lora, "/etc/passwd"),
            Err(ConfigError::NotAName { .. })
        ));
        assert!(config.find_model(ModelKind::Lora, "in.safetensors").is_ok());
    }

    #[test]
    fn missing_file_gives_defaults_and_bad_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Config::load(&dir.path().join("none.toml")).unwrap(),
            Config::default()
        );
        let err = Config::default()
            .find_model(ModelKind::Checkpoint, "absent.safetensors")
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
