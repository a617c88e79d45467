//! `GET /api/presets`: every preset of the configuration with its values, for the page's preset
//! picker (it fills the controls from them; requests carry the values, not the name).

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use crate::config::Preset;
use crate::server::SharedState;

/// The body of `GET /api/presets`.
#[derive(Debug, Serialize)]
pub struct Presets {
    /// The preset the server was started with (`--preset`).
    pub current: String,
    /// By name, in name order.
    pub presets: Vec<NamedPreset>,
}

/// One preset and its values.
#[derive(Debug, Serialize)]
pub struct NamedPreset {
    pub name: String,
    pub values: Preset,
}

/// `GET /api/presets`. The server's own preset is listed as it was started, even where the
/// configuration has none by that name.
pub async fn presets(State(state): State<SharedState>) -> Json<Presets> {
    let mut presets: Vec<NamedPreset> = state
        .config
        .presets
        .iter()
        .filter(|(name, _)| **name != state.preset_name)
        .map(|(name, values)| NamedPreset {
            name: name.clone(),
            values: values.clone(),
        })
        .collect();
    presets.push(NamedPreset {
        name: state.preset_name.clone(),
        values: state.preset.clone(),
    });
    presets.sort_by(|a, b| a.name.cmp(&b.name));
    Json(Presets {
        current: state.preset_name.clone(),
        presets,
    })
}
