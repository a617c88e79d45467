//! Atomic file writes: a hidden temporary file in the target's folder, flushed to disk, then
//! renamed over the target, so readers see the old file or the new one, never half of one.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{Result, StoreError};

/// Writes started by this process, so that two writes of one file never share a temporary name.
static WRITES: AtomicU64 = AtomicU64::new(0);

/// The temporary name used while writing `path`: `.<name>.<pid>.<n>.tmp` beside it, unique to
/// this write.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Writes `bytes` to `path` atomically (the folder must exist). On failure the temporary file is
/// removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let temp = temp_path(path);
    let written = (|| {
        let mut file = File::create(&temp).map_err(|e| StoreError::io("create", &temp, e))?;
        file.write_all(bytes)
            .map_err(|e| StoreError::io("write", &temp, e))?;
        file.sync_all()
            .map_err(|e| StoreError::io("flush", &temp, e))?;
        std::fs::rename(&temp, path)
            .map_err(|e| StoreError::io("rename temporary file to", path, e))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.png")]);
    }

    #[test]
    fn failure_names_the_file_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-folder").join("a.png");
        let err = write_atomic(&path, b"x").unwrap_err();
        assert!(err.to_string().contains("missing-folder"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
