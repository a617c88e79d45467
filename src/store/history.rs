//! History listing: the images under the output root by date folder, newest date first and newest
//! image first, with their metadata where readable. Only our own date folders and file names are
//! listed; links are not followed, so nothing outside the root is ever read.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use super::error::{Result, StoreError};
use super::log_html::read_entries;
use super::metadata::ImageMetadata;
use super::naming::{is_date_folder, parse_image_name};
use super::read::read_metadata;

/// One saved image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryImage {
    /// Path relative to the output root, `/`-separated: `YYYY-MM-DD/<file>`.
    pub path: String,
    /// The file name alone.
    pub file_name: String,
    /// Its metadata: from the day's `log.jsonl`, else read from the file; `None` if neither has it.
    pub metadata: Option<ImageMetadata>,
}

/// The images of one date folder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryDay {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Newest first.
    pub images: Vec<HistoryImage>,
}

/// Names of the real (non-link) entries of `dir` that are folders (`want_dirs`) or files.
fn entries(dir: &Path, want_dirs: bool) -> Result<Vec<String>> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("list", dir, e)),
    };
    let mut names = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| StoreError::io("list", dir, e))?;
        // `DirEntry::file_type` does not follow links: a link is neither a dir nor a file here.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if (want_dirs && kind.is_dir()) || (!want_dirs && kind.is_file()) {
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
    }
    Ok(names)
}

/// The images of the date folder `date` (`YYYY-MM-DD`) under `root`, newest first. A missing
/// folder gives none; a malformed `date` is an error.
pub fn list_day(root: &Path, date: &str) -> Result<Vec<HistoryImage>> {
    if !is_date_folder(date) {
        return Err(StoreError::InvalidPath {
            path: date.to_string(),
        });
    }
    let dir = root.join(date);
    if std::fs::symlink_metadata(&dir).is_ok_and(|m| !m.is_dir()) {
        return Ok(Vec::new());
    }
    let logged = read_entries(&dir).unwrap_or_default();
    let mut order: HashMap<&str, usize> = HashMap::new();
    let mut logged_meta: HashMap<&str, &ImageMetadata> = HashMap::new();
    for (i, e) in logged.iter().enumerate() {
        order.insert(e.file.as_str(), i);
        logged_meta.insert(e.file.as_str(), &e.metadata);
    }

    let mut files: Vec<(String, String)> = entries(&dir, false)?
        .into_iter()
        .filter_map(|name| {
            let stamp = parse_image_name(&name)?.stamp.to_string();
            Some((stamp, name))
        })
        .collect();
    // Newest first: by the time in the name, then by when the log recorded it, then by name.
    files.sort_by(|(sa, na), (sb, nb)| {
        sb.cmp(sa)
            .then_with(|| order.get(nb.as_str()).cmp(&order.get(na.as_str())))
            .then_with(|| nb.cmp(na))
    });

    Ok(files
        .into_iter()
        .map(|(_, name)| {
            let metadata = match logged_meta.get(name.as_str()) {
                Some(m) => Some((*m).clone()),
                None => read_metadata(&dir.join(&name)).unwrap_or_else(|e| {
                    tracing::debug!("no metadata: {e}");
                    None
                }),
            };
            HistoryImage {
                path: format!("{date}/{name}"),
                file_name: name,
                metadata,
            }
        })
        .collect())
}

/// Every date folder under `root` with its images, newest date first; days without images are
/// left out. A missing root gives an empty history.
pub fn list_history(root: &Path) -> Result<Vec<HistoryDay>> {
    let mut dates: Vec<String> = entries(root, true)?
        .into_iter()
        .filter(|name| is_date_folder(name))
        .collect();
    dates.sort_by(|a, b| b.cmp(a));
    let mut days = Vec::new();
    for date in dates {
        let images = list_day(root, &date)?;
        if !images.is_empty() {
            days.push(HistoryDay { date, images });
        }
    }
    Ok(days)
}

/// Whether the date folder `dir` holds at least one image of ours (metadata is not read).
fn has_images(dir: &Path) -> Result<bool> {
    Ok(entries(dir, false)?
        .iter()
        .any(|name| parse_image_name(name).is_some()))
}

/// One page of the history: the date folders before `before` (`YYYY-MM-DD`; `None`: from the
/// newest) that hold images, at most `limit` of them, newest first, with their images; and
/// whether earlier folders hold images too. A malformed `before` is an error.
pub fn list_days_before(
    root: &Path,
    before: Option<&str>,
    limit: usize,
) -> Result<(Vec<HistoryDay>, bool)> {
    if let Some(date) = before.filter(|d| !is_date_folder(d)) {
        return Err(StoreError::InvalidPath {
            path: date.to_string(),
        });
    }
    let mut dates: Vec<String> = entries(root, true)?
        .into_iter()
        .filter(|name| is_date_folder(name) && before.is_none_or(|b| name.as_str() < b))
        .collect();
    dates.sort_by(|a, b| b.cmp(a));
    let mut days = Vec::new();
    for date in &dates {
        if days.len() == limit {
            // Look one folder further only to say whether there is more.
            if has_images(&root.join(date))? {
                return Ok((days, true));
            }
            continue;
        }
        let images = list_day(root, date)?;
        if !images.is_empty() {
            days.push(HistoryDay {
                date: date.clone(),
                images,
            });
        }
    }
    Ok((days, false))
}
