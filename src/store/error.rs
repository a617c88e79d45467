//! The store's error type: every variant names the file or folder it is about.

use std::path::PathBuf;

/// What went wrong while saving, reading or listing images.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation failed.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was attempted ("write", "create folder", "read", ...).
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The image could not be encoded.
    #[error("could not encode {format} image for {}: {message}", path.display())]
    Encode {
        format: &'static str,
        path: PathBuf,
        message: String,
    },
    /// An image file's headers could not be parsed while looking for metadata.
    #[error("could not read metadata from {}: {message}", path.display())]
    Decode { path: PathBuf, message: String },
    /// Every candidate file name in the folder was taken.
    #[error("no free file name in {} after {tries} tries; is another program writing there?", dir.display())]
    NoFreeName { dir: PathBuf, tries: u32 },
    /// A path given to the store does not name one of its images.
    #[error(
        "not an image of the output folder: {path} (expected YYYY-MM-DD/<file>.png|jpeg|jpg|webp)"
    )]
    InvalidPath { path: String },
}

impl StoreError {
    /// An [`StoreError::Io`] for `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        StoreError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// The store's result type.
pub type Result<T> = std::result::Result<T, StoreError>;
