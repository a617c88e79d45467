//! The checkpoints as A1111 lists them: a title `"<name> [<sha256[:10]>]"` (the file's hash read
//! once per process and cached, so a title never changes under a client), and the checkpoint the
//! API has selected (`POST options`), which requests that name none run on.

use super::meaning::strip_title;
use super::wire::SdModel;
use crate::server::AppState;
use crate::store::file_sha256;
use crate::store::hash::SHORT_HASH_LEN;

/// Every SDXL checkpoint under the checkpoint folders, with its title (hashes files not hashed
/// yet: call off the async runtime).
pub fn sd_models(state: &AppState) -> Vec<SdModel> {
    state
        .sdxl_checkpoints()
        .into_iter()
        .filter_map(|m| {
            let sha256 = file_sha256(&m.path).ok()?;
            let hash = sha256.get(..SHORT_HASH_LEN).unwrap_or(&sha256).to_string();
            let model_name = m
                .name
                .strip_suffix(".safetensors")
                .unwrap_or(&m.name)
                .replace(['/', '\\'], "_");
            Some(SdModel {
                title: format!("{} [{hash}]", m.name),
                model_name,
                hash,
                sha256,
                filename: m.path.display().to_string(),
                config: None,
            })
        })
        .collect()
}

/// The checkpoint `alias` names: a title, a name, a file name or stem, `model_name`, a short
/// hash or a sha256, as A1111 accepts them.
pub fn find<'a>(models: &'a [SdModel], alias: &str) -> Option<&'a SdModel> {
    let alias = alias.trim();
    let name = strip_title(alias);
    models.iter().find(|m| {
        let file = m
            .title
            .rsplit_once(" [")
            .map_or(m.title.as_str(), |(n, _)| n);
        let stem = file.strip_suffix(".safetensors").unwrap_or(file);
        let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
        m.title == alias
            || file == name
            || stem == name
            || base(file) == name
            || base(stem) == name
            || m.model_name == name
            || m.hash == alias
            || m.sha256 == alias
    })
}

/// The checkpoint requests run on when they name none: the one `POST options` selected, else
/// the preset's base model.
pub fn selected(state: &AppState) -> String {
    state
        .api_checkpoint
        .read()
        .map(|c| c.clone())
        .unwrap_or_else(|p| p.into_inner().clone())
        .unwrap_or_else(|| state.preset.base_model.clone())
}

/// The selected checkpoint's entry among `models` (by its name as the preset or a client gave it).
pub fn selected_entry<'a>(state: &AppState, models: &'a [SdModel]) -> Option<&'a SdModel> {
    find(models, &selected(state))
}

/// Selects the checkpoint `alias` names; its name, or `None` when no checkpoint matches.
pub fn select(state: &AppState, models: &[SdModel], alias: &str) -> Option<String> {
    let found = find(models, alias)?;
    let name = strip_title(&found.title).to_string();
    let mut slot = state
        .api_checkpoint
        .write()
        .unwrap_or_else(|p| p.into_inner());
    *slot = Some(name.clone());
    Some(name)
}
