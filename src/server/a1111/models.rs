//! The checkpoints as A1111 lists them: a title `"<name> [<sha256[:10]>]"` (the file's hash read
//! once per process and cached, so a title never changes under a client), and the checkpoint the
//! API has selected (`POST options`), which requests that name none run on.

use super::meaning::strip_title;
use super::wire::SdModel;
use crate::config::ModelEntry;
use crate::server::AppState;
use crate::store::file_sha256;
use crate::store::hash::SHORT_HASH_LEN;

/// The names a checkpoint called `name` (relative to its folder) answers to, most exact first:
/// the name, without `.safetensors`, A1111's `model_name`, the file name, the file stem.
fn name_keys(name: &str) -> Vec<String> {
    let stem = name.strip_suffix(".safetensors").unwrap_or(name);
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
    vec![
        name.to_string(),
        stem.to_string(),
        stem.replace(['/', '\\'], "_"),
        base(name),
        base(stem),
    ]
}

/// The first item whose `k`-th key is `alias` (or the name in a title `alias`), for the lowest
/// `k`: an exact match wins over a looser one anywhere in the list.
fn find_by_keys<'a, T>(
    items: &'a [T],
    alias: &str,
    keys: impl Fn(&T) -> Vec<String>,
) -> Option<&'a T> {
    let alias = alias.trim();
    let name = strip_title(alias);
    let keyed: Vec<Vec<String>> = items.iter().map(keys).collect();
    let depth = keyed.iter().map(Vec::len).max().unwrap_or(0);
    (0..depth).find_map(|k| {
        items
            .iter()
            .zip(&keyed)
            .find(|(_, ks)| ks.get(k).is_some_and(|key| key == alias || key == name))
            .map(|(item, _)| item)
    })
}

/// A checkpoint's A1111 entry (hashes the file when it is not hashed yet).
fn sd_model(entry: &ModelEntry) -> Option<SdModel> {
    let sha256 = match file_sha256(&entry.path) {
        Ok(hash) => hash,
        Err(e) => {
            tracing::warn!("{} is left out of sd-models: {e}", entry.name);
            return None;
        }
    };
    let hash = sha256.get(..SHORT_HASH_LEN).unwrap_or(&sha256).to_string();
    Some(SdModel {
        title: format!("{} [{hash}]", entry.name),
        model_name: name_keys(&entry.name).swap_remove(2),
        hash,
        sha256,
        filename: entry.path.display().to_string(),
        config: None,
    })
}

/// Every SDXL checkpoint under the checkpoint folders, with its title (hashes files not hashed
/// yet: call off the async runtime).
pub fn sd_models(state: &AppState) -> Vec<SdModel> {
    state
        .sdxl_checkpoints()
        .iter()
        .filter_map(sd_model)
        .collect()
}

/// The checkpoint `alias` names: a title, a name, a file name or stem, `model_name`, a short
/// hash or a sha256, as A1111 accepts them; the most exact match wins.
pub fn find<'a>(models: &'a [SdModel], alias: &str) -> Option<&'a SdModel> {
    find_by_keys(models, alias, |m| {
        let mut keys = vec![m.title.clone()];
        keys.extend(name_keys(strip_title(&m.title)));
        keys.extend([m.hash.clone(), m.sha256.clone()]);
        keys
    })
}

/// The selected checkpoint's entry (only its file is hashed).
pub fn selected_model(state: &AppState) -> Option<SdModel> {
    let entries = state.sdxl_checkpoints();
    let wanted = selected(state);
    find_by_keys(&entries, &wanted, |e| name_keys(&e.name)).and_then(sd_model)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, sha256: &str) -> SdModel {
        SdModel {
            title: format!("{name} [{}]", &sha256[..SHORT_HASH_LEN]),
            model_name: name_keys(name).swap_remove(2),
            hash: sha256[..SHORT_HASH_LEN].to_string(),
            sha256: sha256.to_string(),
            filename: format!("/models/{name}"),
            config: None,
        }
    }

    #[test]
    fn the_most_exact_alias_wins() {
        let models = [
            model("a/x.safetensors", &"1".repeat(64)),
            model("x.safetensors", &"2".repeat(64)),
        ];
        let found = |alias| find(&models, alias).map(|m| m.sha256.clone());
        // The exact title (and the exact name) of the second, though the first's file name is
        // the same.
        assert_eq!(found("x.safetensors [2222222222]"), Some("2".repeat(64)));
        assert_eq!(found("x.safetensors"), Some("2".repeat(64)));
        assert_eq!(found("a/x"), Some("1".repeat(64)));
        assert_eq!(found("a_x"), Some("1".repeat(64)));
        assert_eq!(found("1111111111"), Some("1".repeat(64)));
        assert_eq!(found("nope"), None);
    }
}
