//! Downloads in the background while the server runs: what the active preset lacks is fetched
//! one file at a time, and the state of each file (bytes so far, done, the error) is shared with
//! `/api/health` and the page's banner.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::Serialize;

use super::{HubClient, Needed};

/// One missing file and how its download goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileStatus {
    pub name: String,
    /// Where the file belongs (put it there by hand when there is no network).
    pub dest: String,
    /// Whether the catalog knows where to download it.
    pub downloadable: bool,
    pub downloaded: u64,
    pub total: u64,
    pub done: bool,
    pub error: Option<String>,
}

/// The files being (or failing to be) downloaded, shared between threads.
pub type Downloads = Arc<Mutex<Vec<FileStatus>>>;

/// The state of `needed` before anything is fetched.
pub fn statuses(needed: &[Needed]) -> Downloads {
    Arc::new(Mutex::new(
        needed
            .iter()
            .map(|n| FileStatus {
                name: n.name.clone(),
                dest: n.dest.display().to_string(),
                downloadable: n.entry.is_some(),
                downloaded: 0,
                total: n.entry.as_ref().and_then(|e| e.size).unwrap_or(0),
                done: false,
                error: None,
            })
            .collect(),
    ))
}

fn update(downloads: &Downloads, index: usize, f: impl FnOnce(&mut FileStatus)) {
    if let Ok(mut list) = downloads.lock() {
        if let Some(status) = list.get_mut(index) {
            f(status);
        }
    }
}

/// Fetches every downloadable file of `needed` on a thread, recording progress in `downloads`
/// (made by [`statuses`] from the same list).
pub fn spawn(needed: Vec<Needed>, client: HubClient, downloads: Downloads) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for (index, item) in needed.into_iter().enumerate() {
            let Some(entry) = item.entry else {
                tracing::warn!(
                    "{} is missing and not in the download catalog: put it at {}",
                    item.name,
                    item.dest.display()
                );
                continue;
            };
            tracing::info!("downloading {} to {}", item.name, item.dest.display());
            let result = client.download(&entry, &item.dest, &mut |p| {
                update(&downloads, index, |s| {
                    s.downloaded = p.downloaded;
                    s.total = p.total;
                })
            });
            update(&downloads, index, |s| match result {
                Ok(_) => s.done = true,
                Err(e) => {
                    tracing::warn!("{e}");
                    s.error = Some(e.to_string());
                }
            });
        }
    })
}

/// A sentence on the state of `name`'s download, for errors such as "model missing".
pub fn describe(downloads: &Downloads, name: &str) -> Option<String> {
    let list = downloads.lock().ok()?;
    let status = list.iter().find(|s| s.name == name)?;
    Some(match (&status.error, status.done) {
        (Some(e), _) => format!("its download failed: {e}"),
        (None, true) => "it has just been downloaded".to_string(),
        (None, false) if status.total > 0 => format!(
            "it is downloading: {:.0}% of {:.1} GB",
            100.0 * status.downloaded as f64 / status.total as f64,
            status.total as f64 / 1e9
        ),
        (None, false) if status.downloadable => "its download is about to start".to_string(),
        (None, false) => format!("put it at {}", status.dest),
    })
}
