//! [`OutputStore`]: saving images under `<root>/YYYY-MM-DD/` with a fresh name, atomically, and
//! recording them in the day's log; plus the history and safe path resolution the server needs.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::NaiveDateTime;
use image::RgbImage;
use rand::Rng;

use super::atomic::write_atomic;
use super::encode::{encode_image, EncodeOptions};
use super::error::{Result, StoreError};
use super::hash::file_sha256;
use super::history::{list_day, list_days_before, list_history, HistoryDay, HistoryImage};
use super::log_html::{log_image, LogEntry};
use super::metadata::{ImageMetadata, OutputFormat};
use super::naming::{date_folder, image_file_name, resolve_output_path};
use super::read::embedded_text_from_bytes;
use super::thumbs::{thumbnail, write_thumbnail};

/// How many random names are tried before giving up.
const NAME_TRIES: u32 = 100;

/// A saved image.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedImage {
    /// Where it lies on disk.
    pub path: PathBuf,
    /// Its path relative to the output root, `/`-separated: `YYYY-MM-DD/<file>`.
    pub relative: String,
    /// The metadata as embedded in the file (read back from its bytes: a JPEG whose EXIF has no
    /// room for our JSON carries only the A1111 text); `None` when it carries none.
    pub metadata: Option<Box<ImageMetadata>>,
}

/// Encodes `image` and writes it to exactly `path` (atomically; the folder must exist); returns
/// the metadata the file carries. The same image, metadata and options give the same bytes.
pub fn save_image_file(
    path: &Path,
    image: &RgbImage,
    meta: &ImageMetadata,
    options: &EncodeOptions,
) -> Result<Option<ImageMetadata>> {
    let bytes = encode_image(image, meta, options, path)?;
    write_atomic(path, &bytes)?;
    // What a reader of the file will find (our own encoder's output always parses).
    Ok(embedded_text_from_bytes(&bytes)
        .ok()
        .and_then(|text| text.metadata()))
}

/// The first of `candidates` that names nothing in `dir` (not even a dangling link).
fn free_name(dir: &Path, mut candidates: impl Iterator<Item = String>) -> Option<String> {
    candidates.find(|name| std::fs::symlink_metadata(dir.join(name)).is_err())
}

/// The output folder: saves images, keeps each day's `log.html`, lists history.
///
/// Saves made through one `OutputStore` are serialized (name choice, write, log update), so share
/// one per output folder in a process.
#[derive(Debug)]
pub struct OutputStore {
    root: PathBuf,
    write_log: bool,
    lock: Mutex<()>,
}

impl OutputStore {
    /// A store writing under `root` (created on first save), with the daily log on.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        OutputStore {
            root: root.into(),
            write_log: true,
            lock: Mutex::new(()),
        }
    }

    /// Turns the daily `log.jsonl` / `log.html` on or off.
    pub fn with_log(mut self, write_log: bool) -> Self {
        self.write_log = write_log;
        self
    }

    /// The output root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Saves `image` now (local time); see [`OutputStore::save_at`].
    pub fn save(
        &self,
        image: &RgbImage,
        meta: &ImageMetadata,
        options: &EncodeOptions,
    ) -> Result<SavedImage> {
        self.save_announced(image, meta, options, &mut |_| {})
    }

    /// Saves `image` now, telling `announce` its path relative to the root (`YYYY-MM-DD/<file>`)
    /// once the name is chosen and before the file is written: a durable job records the name
    /// first, so that after a crash an image written but not yet recorded is found, not made
    /// again.
    pub fn save_announced(
        &self,
        image: &RgbImage,
        meta: &ImageMetadata,
        options: &EncodeOptions,
        announce: &mut dyn FnMut(&str),
    ) -> Result<SavedImage> {
        let now = chrono::Local::now().naive_local();
        self.save_when(image, meta, options, now, announce)
    }

    /// Saves `image` as `<root>/<date>/<date>_<time>_<NNNN>.<ext>` for the moment `now`, with
    /// `meta` (its `output_format` set to `options.format`) embedded as `options` say, then
    /// records it in the day's log. A log failure is reported as a warning: the image is saved.
    pub fn save_at(
        &self,
        image: &RgbImage,
        meta: &ImageMetadata,
        options: &EncodeOptions,
        now: NaiveDateTime,
    ) -> Result<SavedImage> {
        self.save_when(image, meta, options, now, &mut |_| {})
    }

    fn save_when(
        &self,
        image: &RgbImage,
        meta: &ImageMetadata,
        options: &EncodeOptions,
        now: NaiveDateTime,
        announce: &mut dyn FnMut(&str),
    ) -> Result<SavedImage> {
        let mut meta = meta.clone();
        meta.output_format = options.format;
        let mut write = |path: &Path| save_image_file(path, image, &meta, options);
        self.place(
            image,
            options.format,
            meta.clone(),
            now,
            announce,
            &mut write,
        )
    }

    /// Saves an image encoded elsewhere (a remote worker's file, metadata embedded) byte for
    /// byte under a fresh name now, as [`OutputStore::save_announced`] does; `image` is its
    /// decoded pixels, for the thumbnail.
    pub fn save_encoded(
        &self,
        bytes: &[u8],
        image: &RgbImage,
        format: OutputFormat,
        announce: &mut dyn FnMut(&str),
    ) -> Result<SavedImage> {
        let embedded = embedded_text_from_bytes(bytes)
            .ok()
            .and_then(|text| text.metadata());
        let mut meta = embedded.clone().unwrap_or_default();
        meta.output_format = format;
        let mut write = |path: &Path| {
            write_atomic(path, bytes)?;
            Ok(embedded.clone())
        };
        let now = chrono::Local::now().naive_local();
        self.place(image, format, meta, now, announce, &mut write)
    }

    /// Picks a free name for the moment `now`, tells `announce`, writes the file with `write`,
    /// then its thumbnail and the day's log entry.
    fn place(
        &self,
        image: &RgbImage,
        format: OutputFormat,
        meta: ImageMetadata,
        now: NaiveDateTime,
        announce: &mut dyn FnMut(&str),
        write: &mut dyn FnMut(&Path) -> Result<Option<ImageMetadata>>,
    ) -> Result<SavedImage> {
        let date = date_folder(&now);
        let dir = self.root.join(&date);

        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io("create folder", &dir, e))?;
        let mut rng = rand::rng();
        let candidates =
            (0..NAME_TRIES).map(|_| image_file_name(&now, rng.random_range(1000..=9999), format));
        let name = free_name(&dir, candidates).ok_or_else(|| StoreError::NoFreeName {
            dir: dir.clone(),
            tries: NAME_TRIES,
        })?;
        let path = dir.join(&name);
        announce(&format!("{date}/{name}"));
        let embedded = write(&path)?.map(Box::new);
        tracing::info!("saved {}", path.display());
        if let Err(e) = write_thumbnail(&path, image) {
            tracing::warn!("image saved, but not its thumbnail: {e}");
        }

        if self.write_log {
            let entry = LogEntry {
                file: name.clone(),
                metadata: meta,
            };
            if let Err(e) = log_image(&dir, &date, &entry) {
                tracing::warn!("image saved, but the day's log was not updated: {e}");
            }
        }
        Ok(SavedImage {
            path,
            relative: format!("{date}/{name}"),
            metadata: embedded,
        })
    }

    /// All saved images, newest date first, newest image first.
    pub fn history(&self) -> Result<Vec<HistoryDay>> {
        list_history(&self.root)
    }

    /// The images of one day (`YYYY-MM-DD`), newest first.
    pub fn day(&self, date: &str) -> Result<Vec<HistoryImage>> {
        list_day(&self.root, date)
    }

    /// The days before `before` (`YYYY-MM-DD`; `None`: from the newest) that hold images, at most
    /// `limit` of them, newest first, and whether earlier days hold more.
    pub fn days_before(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<HistoryDay>, bool)> {
        list_days_before(&self.root, before, limit)
    }

    /// The thumbnail (JPEG bytes) of the image a client names as `YYYY-MM-DD/<image>`: cached,
    /// or made now. Needs no lock: each write has its own temporary name.
    pub fn thumbnail(&self, relative: &str) -> Result<Vec<u8>> {
        thumbnail(&self.root, relative)
    }

    /// The file a client's `YYYY-MM-DD/<image>` or `YYYY-MM-DD/log.html` names, checked to lie
    /// inside the root.
    pub fn resolve(&self, relative: &str) -> Result<PathBuf> {
        resolve_output_path(&self.root, relative)
    }

    /// Keeps `bytes`, an input image a run was given, as `<root>/inputs/<sha256>.<extension>`
    /// (atomically, once per content), so that a request rebuilt from an output's metadata can
    /// find its input again by hash.
    pub fn keep_input(&self, sha256: &str, bytes: &[u8], extension: &str) -> Result<PathBuf> {
        let dir = self.root.join(INPUTS_FOLDER);
        let path = dir.join(format!("{sha256}.{extension}"));
        if !path.exists() {
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::io("create folder", &dir, e))?;
            write_atomic(&path, bytes)?;
        }
        Ok(path)
    }

    /// The kept input or saved output whose file has this sha256 (64 lowercase hex digits):
    /// `inputs/` first, then every day's images, newest day first.
    pub fn find_by_sha256(&self, sha256: &str) -> Result<Option<PathBuf>> {
        let inputs = self.root.join(INPUTS_FOLDER);
        for extension in ["png", "jpg", "jpeg", "webp"] {
            let path = inputs.join(format!("{sha256}.{extension}"));
            if path.is_file() {
                return Ok(Some(path));
            }
        }
        for day in self.history()? {
            for image in &day.images {
                let path = self.root.join(&image.path);
                if file_sha256(&path)? == sha256 {
                    return Ok(Some(path));
                }
            }
        }
        Ok(None)
    }
}

/// The folder, under the output root, keeping the input images runs were given.
pub const INPUTS_FOLDER: &str = "inputs";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collisions_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("taken.png"), b"x").unwrap();
        let names = ["taken.png", "free.png"].map(String::from);
        assert_eq!(
            free_name(dir.path(), names.clone().into_iter()).as_deref(),
            Some("free.png")
        );
        assert_eq!(free_name(dir.path(), names[..1].iter().cloned()), None);
    }
}
