//! Saved images: output naming, atomic writes, embedded metadata (PNG text chunks: A1111
//! `parameters` and our JSON scheme; EXIF for JPEG/WebP), the daily `log.html`, history listing.
//!
//! Knows nothing of models or the pipeline: the pipeline fills an [`ImageMetadata`] and calls
//! [`OutputStore::save`]. Layout on disk:
//!
//! ```text
//! <root>/YYYY-MM-DD/YYYY-MM-DD_HH-MM-SS_NNNN.png|jpeg|webp   images (NNNN: 4 random digits)
//! <root>/YYYY-MM-DD/log.jsonl                               one LogEntry per saved image
//! <root>/YYYY-MM-DD/log.html                                regenerated from it, newest first
//! <root>/YYYY-MM-DD/.thumbs/<image file>.jpg                its thumbnail (≤ 256 px)
//! ```
//!
//! * [`metadata`]: [`ImageMetadata`] and its JSON; [`a1111`]: the A1111 `parameters` text;
//! * [`hash`]: cached model SHA-256 / A1111 short hashes;
//! * [`encode`] / [`read`]: image bytes with metadata in, metadata out ([`exif`] for JPEG/WebP);
//! * [`naming`], [`atomic`]: names and atomic writes; [`log_html`]: the daily log;
//!   [`history`]: listing; [`thumbs`]: small JPEGs of saved images for the history;
//!   [`save`]: [`OutputStore`], tying them together.

pub mod a1111;
pub mod atomic;
pub mod encode;
mod error;
pub mod exif;
pub mod hash;
pub mod history;
pub mod log_html;
pub mod metadata;
pub mod naming;
pub mod read;
pub mod save;
pub mod thumbs;

pub use a1111::{parse_a1111, to_a1111};
pub use encode::{encode_image, EncodeOptions};
pub use error::{Result, StoreError};
pub use hash::{file_sha256, short_hash};
pub use history::{HistoryDay, HistoryImage};
pub use metadata::{
    version_string, ImageMetadata, InputImageRecord, LoraEntry, OutputFormat, JSON_KEYWORD,
};
pub use read::{embedded_text_from_bytes, read_embedded_text, read_metadata, EmbeddedText};
pub use save::{save_image_file, OutputStore, SavedImage};

#[cfg(test)]
mod tests;
