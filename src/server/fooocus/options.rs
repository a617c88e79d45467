//! What the page builds itself from (`GET /api/options`: defaults, vocabularies, models) and
//! `GET /api/health` (which files of the preset are missing, and how their downloads go).

use serde::Serialize;

use crate::config::{ModelKind, Preset};
use crate::hub::{builtin_catalog, missing, Needed};
use crate::pipeline::request::{aspect_label, Performance, ASPECT_RATIOS};
use crate::runtime::describe;
use crate::sampling::{Sampler, Scheduler};
use crate::server::AppState;

/// An SDXL resolution: `value` for requests, `label` `W×H | a:b` for people.
#[derive(Debug, Serialize)]
pub struct AspectOption {
    pub value: String,
    pub label: String,
    pub width: u32,
    pub height: u32,
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The 26 SDXL resolutions with their labels.
pub fn aspect_options() -> Vec<AspectOption> {
    ASPECT_RATIOS
        .iter()
        .map(|&(w, h)| {
            let g = gcd(w, h).max(1);
            AspectOption {
                value: aspect_label((w, h)),
                label: format!("{} | {}:{}", aspect_label((w, h)), w / g, h / g),
                width: w,
                height: h,
            }
        })
        .collect()
}

/// `GET /api/options`: what the page builds its controls from.
#[derive(Debug, Serialize)]
pub struct Options {
    pub preset: String,
    pub defaults: Preset,
    pub styles: Vec<String>,
    pub aspect_ratios: Vec<AspectOption>,
    pub performance: Vec<&'static str>,
    pub samplers: Vec<&'static str>,
    pub schedulers: Vec<&'static str>,
    pub models: Vec<String>,
    pub loras: Vec<String>,
    pub presets: Vec<String>,
    pub output_formats: [&'static str; 3],
}

/// `GET /api/health`: the files the preset lacks, where it runs, how busy it is.
#[derive(Debug, Serialize)]
pub struct Health {
    pub ok: bool,
    pub preset: String,
    pub missing_models: Vec<MissingModel>,
    pub device: String,
    pub queue: usize,
    pub version: &'static str,
}

/// A file the preset needs and lacks, with how its download goes.
#[derive(Debug, Serialize)]
pub struct MissingModel {
    pub name: String,
    /// What it is, for people: "base model", "refiner model", "LoRA", "CLIP tokenizer".
    pub what: &'static str,
    pub dest: String,
    /// Where to download it by hand, when the catalog knows.
    pub url: Option<String>,
    pub downloadable: bool,
    pub downloaded: u64,
    pub total: u64,
    pub error: Option<String>,
}

/// The body of `GET /api/options`. Models are the SDXL checkpoints under the checkpoint folders
/// (LoRAs, other architectures and tensor dumps there are left out); LoRAs are the files under
/// the LoRA folders.
pub fn options(state: &AppState) -> Options {
    let models: Vec<String> = state
        .sdxl_checkpoints()
        .into_iter()
        .map(|m| m.name)
        .collect();
    let loras: Vec<String> = state
        .config
        .list_models(ModelKind::Lora)
        .into_iter()
        .map(|m| m.name)
        .collect();
    Options {
        preset: state.preset_name.clone(),
        defaults: state.preset.clone(),
        styles: state.styles.names().into_iter().map(String::from).collect(),
        aspect_ratios: aspect_options(),
        performance: Performance::ALL.iter().map(|p| p.name()).collect(),
        samplers: Sampler::names(),
        schedulers: Scheduler::names(),
        models,
        loras,
        presets: state.config.presets.keys().cloned().collect(),
        output_formats: ["png", "jpeg", "webp"],
    }
}

/// What the missing file `needed` is to the preset.
fn role(state: &AppState, needed: &Needed) -> &'static str {
    let preset = &state.preset;
    if needed.dest == state.config.paths.tokenizer {
        "CLIP tokenizer"
    } else if needed.name == preset.base_model {
        "base model"
    } else if preset.refiner_model.as_deref() == Some(needed.name.as_str()) {
        "refiner model"
    } else if preset.loras.iter().any(|l| l.name == needed.name) {
        "LoRA"
    } else {
        "model file"
    }
}

/// The body of `GET /api/health`: the files the preset lacks right now (the model folders are
/// scanned on each call, so a file put in place shows at once) with their download state.
pub fn health(state: &AppState) -> Health {
    let needed = missing(&state.config, &state.preset, &builtin_catalog());
    let downloads = state
        .downloads
        .lock()
        .map(|d| d.clone())
        .unwrap_or_default();
    let missing: Vec<MissingModel> = needed
        .iter()
        .map(|n| {
            let status = downloads.iter().find(|d| d.name == n.name);
            MissingModel {
                name: n.name.clone(),
                what: role(state, n),
                dest: n.dest.display().to_string(),
                url: n.entry.as_ref().map(|e| e.url(&state.hub_endpoint)),
                downloadable: n.entry.is_some(),
                downloaded: status.map_or(0, |s| s.downloaded),
                total: status.map_or(0, |s| s.total),
                error: status.and_then(|s| s.error.clone()),
            }
        })
        .collect();
    Health {
        ok: missing.is_empty(),
        preset: state.preset_name.clone(),
        missing_models: missing,
        device: describe(&state.device),
        queue: state.worker.queue().len(),
        version: env!("CARGO_PKG_VERSION"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aspect_labels_carry_the_ratio() {
        let all = aspect_options();
        assert_eq!(all.len(), 26);
        let default = all.iter().find(|a| a.value == "1152×896").unwrap();
        assert_eq!(default.label, "1152×896 | 9:7");
        let square = all
            .iter()
            .find(|a| a.width == 1024 && a.height == 1024)
            .unwrap();
        assert_eq!(square.label, "1024×1024 | 1:1");
    }
}
