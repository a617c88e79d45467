//! The input image a request names, read into pixels: base64 bytes (plain or a `data:` URL),
//! one of our saved images by its address (`/outputs/YYYY-MM-DD/<file>`, with or without the
//! leading slash, scheme and host), or a kept input or saved output by its file's hash (`sha256:<hex>`, what a
//! request rebuilt from metadata names). Decoded with `imaging::decode` under
//! [`INPUT_LIMITS`].

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use image::RgbImage;
use sha2::{Digest, Sha256};

use crate::imaging::{decode_image, DecodeLimits};
use crate::store::OutputStore;

/// The bounds on an input image: 4096 pixels per side (Fooocus' upscaler makes 4× that before
/// resizing) and 512 MiB for the decoder.
pub const INPUT_LIMITS: DecodeLimits = DecodeLimits {
    max_side: 4096,
    max_bytes: 512 << 20,
};

/// A decoded input image with its file's bytes and their sha256.
#[derive(Clone)]
pub struct InputImage {
    pub pixels: Arc<RgbImage>,
    pub bytes: Arc<Vec<u8>>,
    /// 64 lowercase hex digits.
    pub sha256: String,
}

impl InputImage {
    /// Decodes `bytes` under [`INPUT_LIMITS`]; the error says what is wrong with them.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, String> {
        let pixels = decode_image(&bytes, INPUT_LIMITS).map_err(|e| format!("the image {e}"))?;
        let sha256 = hex(&Sha256::digest(&bytes));
        Ok(Self {
            pixels: Arc::new(pixels),
            bytes: Arc::new(bytes),
            sha256,
        })
    }

    /// The file extension of its format (`png`, `jpg`, `webp`).
    pub fn extension(&self) -> &'static str {
        match image::guess_format(&self.bytes) {
            Ok(image::ImageFormat::Jpeg) => "jpg",
            Ok(image::ImageFormat::WebP) => "webp",
            _ => "png",
        }
    }
}

impl PartialEq for InputImage {
    fn eq(&self, other: &Self) -> bool {
        self.sha256 == other.sha256
    }
}

impl fmt::Debug for InputImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "InputImage({}×{}, sha256 {})",
            self.pixels.width(),
            self.pixels.height(),
            self.sha256
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the input image `text` names (see the module documentation); `store` holds our saved
/// images and kept inputs. The error says what was wrong and what is accepted.
pub fn read_input(text: &str, store: &OutputStore) -> Result<InputImage, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(
            "is empty: send an image as base64, a data URL, or the address of one of \
                    our saved images"
                .into(),
        );
    }
    let bytes = if let Some(hash) = text.strip_prefix("sha256:") {
        by_hash(hash, store)?
    } else if let Some(relative) = output_address(text) {
        let path = store.resolve(relative).map_err(|_| {
            format!("{text} is not one of our saved images (an address under /outputs/)")
        })?;
        read_file(&path)?
    } else if looks_like_address(text) {
        return Err(format!(
            "{text} is not the address of one of our saved images: only images under /outputs/ \
             of this server are read; send other images' bytes as base64"
        ));
    } else {
        from_base64(text)?
    };
    InputImage::from_bytes(bytes)
}

/// The `YYYY-MM-DD/<file>` part of an address of our outputs: `/outputs/…` or `outputs/…` (as
/// the API's image `url`), or the same after a scheme and host.
fn output_address(text: &str) -> Option<&str> {
    let path = match text.split_once("://") {
        Some((_, rest)) => &rest[rest.find('/')?..],
        None => text,
    };
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let path = path.strip_prefix('/').unwrap_or(path);
    path.strip_prefix("outputs/")
}

/// Whether `text` is an address (a URL); base64 may start with `/` (JPEG's does), so a path
/// alone is an address only under `outputs/`, which [`output_address`] takes first.
fn looks_like_address(text: &str) -> bool {
    text.contains("://")
}

fn by_hash(hash: &str, store: &OutputStore) -> Result<Vec<u8>, String> {
    let hash = hash.to_ascii_lowercase();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("sha256:{hash} is not a sha256 (64 hex digits)"));
    }
    match store.find_by_sha256(&hash) {
        Ok(Some(path)) => read_file(&path),
        Ok(None) => Err(format!(
            "no saved or kept image has sha256 {hash}: send the image itself"
        )),
        Err(e) => Err(format!("the saved images cannot be searched: {e}")),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{} cannot be read: {e}", path.display()))
}

fn from_base64(text: &str) -> Result<Vec<u8>, String> {
    let data = match text.strip_prefix("data:") {
        Some(rest) => match rest.split_once(',') {
            Some((kind, data)) if kind.ends_with(";base64") => data,
            _ => return Err("is a data URL that is not base64 (`data:image/png;base64,…`)".into()),
        },
        None => text,
    };
    let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.trim_end_matches('=').to_owned() + padding(&compact))
        .map_err(|e| format!("is not base64 ({e}), a data URL or an address of our outputs"))
}

/// The `=` padding a base64 text without it needs.
fn padding(text: &str) -> &'static str {
    match text.trim_end_matches('=').len() % 4 {
        2 => "==",
        3 => "=",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_outputs_are_recognised() {
        assert_eq!(
            output_address("/outputs/2026-01-02/a.png"),
            Some("2026-01-02/a.png")
        );
        assert_eq!(
            output_address("http://127.0.0.1:7865/outputs/2026-01-02/a.png?x=1"),
            Some("2026-01-02/a.png")
        );
        assert_eq!(
            output_address("outputs/2026-01-02/a.png"),
            Some("2026-01-02/a.png")
        );
        assert_eq!(output_address("iVBORw0KGgo"), None);
        assert_eq!(output_address("/9j/4AAQSkZJRg"), None);
        assert!(looks_like_address("https://example.com/a.png"));
        assert!(!looks_like_address("/9j/4AAQSkZJRg"));
    }

    #[test]
    fn base64_with_or_without_padding_and_data_urls() {
        assert_eq!(from_base64("aGk=").unwrap(), b"hi");
        assert_eq!(from_base64("aGk").unwrap(), b"hi");
        assert_eq!(from_base64("data:image/png;base64,aGk=").unwrap(), b"hi");
        assert!(from_base64("data:text/plain,hi").is_err());
        assert!(from_base64("not base64!").is_err());
    }
}
