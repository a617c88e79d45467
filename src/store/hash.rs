//! Model file hashes: streaming SHA-256, cut to A1111's 10 hex chars, cached per process by
//! (path, size, modification time) so a 7 GB checkpoint is read once, also when several threads
//! ask for it at the same time (the others wait for the one that reads it).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::error::{Result, StoreError};

/// Length of the short hash A1111 and Fooocus write (`Model hash`, "AutoV2").
pub const SHORT_HASH_LEN: usize = 10;

type CacheKey = (PathBuf, u64, Option<SystemTime>);

/// One slot per file: filled by the first thread that hashes it, which holds its lock meanwhile.
type Slot = Arc<Mutex<Option<String>>>;

fn cache() -> &'static Mutex<HashMap<CacheKey, Slot>> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, Slot>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// SHA-256 of everything `reader` yields, as 64 lowercase hex chars.
fn sha256_reader(mut reader: impl Read, path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StoreError::io("read", path, e)),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Full SHA-256 (64 hex chars) of the file at `path`, read in 1 MiB pieces. Cached for the
/// process: the same path with the same size and modification time is not read again.
pub fn file_sha256(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| StoreError::io("read", path, e))?;
    let key: CacheKey = (path.to_path_buf(), meta.len(), meta.modified().ok());
    let slot = {
        let mut slots = cache().lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(key).or_default().clone()
    };
    let mut hash = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(hit) = hash.as_ref() {
        return Ok(hit.clone());
    }
    tracing::info!("hashing {}", path.display());
    let file = File::open(path).map_err(|e| StoreError::io("open", path, e))?;
    let hex = sha256_reader(file, path)?;
    *hash = Some(hex.clone());
    Ok(hex)
}

/// The A1111 short hash of the file at `path`: the first 10 hex chars of its SHA-256.
pub fn short_hash(path: &Path) -> Result<String> {
    let mut hex = file_sha256(path)?;
    hex.truncate(SHORT_HASH_LEN);
    Ok(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_known_content_and_caches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        std::fs::write(&path, b"abc").unwrap();
        let full = file_sha256(&path).unwrap();
        assert_eq!(
            full,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(short_hash(&path).unwrap(), "ba7816bf8f");

        // A changed file (different size) is hashed again.
        std::fs::write(&path, b"abcd").unwrap();
        assert_eq!(
            file_sha256(&path).unwrap(),
            "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589"
        );
    }

    #[test]
    fn streams_more_than_one_buffer() {
        let data = vec![7u8; (1 << 20) + 123];
        let one = sha256_reader(&data[..], Path::new("mem")).unwrap();
        let expected: String = Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(one, expected);
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = file_sha256(Path::new("/no/such/model.safetensors")).unwrap_err();
        assert!(err.to_string().contains("/no/such/model.safetensors"));
    }
}
