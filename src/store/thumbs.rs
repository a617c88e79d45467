//! Small JPEG thumbnails of saved images, so that the history does not load whole images: made
//! when an image is saved, or on the first request for an older one, and kept beside it as
//! `<root>/YYYY-MM-DD/.thumbs/<file>.jpg` (a hidden folder the history listing never shows).
//! Images are decoded with bounds on their size and memory.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::{ImageReader, Limits, RgbImage};

use super::atomic::write_atomic;
use super::error::{Result, StoreError};
use super::naming::{parse_image_name, resolve_output_path};

/// The longest side of a thumbnail, in pixels (tiles are ~100–140 CSS pixels; 2× for sharp
/// screens).
pub const THUMB_SIDE: u32 = 256;
/// The folder, inside each date folder, that holds its thumbnails.
pub const THUMB_FOLDER: &str = ".thumbs";
/// JPEG quality of thumbnails.
const QUALITY: u8 = 80;
/// The largest image side decoded to make a thumbnail (ours are at most 2048).
const MAX_DECODE_SIDE: u32 = 8192;
/// The most memory one decode may take.
const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;

/// Where the thumbnail of the image at `image` is kept.
pub fn thumb_path(image: &Path) -> PathBuf {
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    image
        .with_file_name(THUMB_FOLDER)
        .join(format!("{name}.jpg"))
}

/// The size of `image`'s thumbnail: the longest side [`THUMB_SIDE`] (never enlarged), the aspect
/// kept, no side under 1.
fn thumb_size(width: u32, height: u32) -> (u32, u32) {
    let longest = width.max(height).max(1);
    if longest <= THUMB_SIDE {
        return (width.max(1), height.max(1));
    }
    let scale = |side: u32| ((u64::from(side) * u64::from(THUMB_SIDE)) / u64::from(longest)) as u32;
    (scale(width).max(1), scale(height).max(1))
}

/// The thumbnail of `image` (saved at `image_path`) as JPEG bytes.
fn encode_thumbnail(image_path: &Path, image: &RgbImage) -> Result<Vec<u8>> {
    let (width, height) = thumb_size(image.width(), image.height());
    let small = image::imageops::thumbnail(image, width, height);
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(Cursor::new(&mut bytes), QUALITY)
        .encode_image(&small)
        .map_err(|e| StoreError::Encode {
            format: "jpeg",
            path: thumb_path(image_path),
            message: e.to_string(),
        })?;
    Ok(bytes)
}

/// Keeps `bytes` as the thumbnail of the image at `image_path`, atomically; returns its path.
fn cache_thumbnail(image_path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let path = thumb_path(image_path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io("create folder", dir, e))?;
    }
    write_atomic(&path, bytes)?;
    Ok(path)
}

/// Writes the thumbnail of `image`, saved at `image_path`, atomically; returns its path.
pub fn write_thumbnail(image_path: &Path, image: &RgbImage) -> Result<PathBuf> {
    cache_thumbnail(image_path, &encode_thumbnail(image_path, image)?)
}

/// Decodes the image at `path` with bounds on its size and memory.
fn decode_bounded(path: &Path) -> Result<RgbImage> {
    let decode_error = |message: String| StoreError::Decode {
        path: path.to_path_buf(),
        message,
    };
    let mut reader = ImageReader::open(path)
        .map_err(|e| StoreError::io("open", path, e))?
        .with_guessed_format()
        .map_err(|e| StoreError::io("read", path, e))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DECODE_SIDE);
    limits.max_image_height = Some(MAX_DECODE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| decode_error(e.to_string()))?;
    Ok(image.to_rgb8())
}

/// Whether the file at `thumb` exists and is not older than `image`.
fn is_current(thumb: &Path, image: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (modified(thumb), modified(image)) {
        (Some(t), Some(i)) => t >= i,
        _ => false,
    }
}

/// The thumbnail (JPEG bytes) of the image a client names as `YYYY-MM-DD/<image file>` under
/// `root`: the cached one when it is current, else made now and cached (a folder that cannot be
/// written to still gets its thumbnail, only uncached). Anything that is not one of the store's
/// images (the day's log, other names, paths leaving the root) is [`StoreError::InvalidPath`].
pub fn thumbnail(root: &Path, relative: &str) -> Result<Vec<u8>> {
    let is_image = relative
        .rsplit_once('/')
        .is_some_and(|(_, name)| parse_image_name(name).is_some());
    if !is_image {
        return Err(StoreError::InvalidPath {
            path: relative.to_string(),
        });
    }
    let image_path = resolve_output_path(root, relative)?;
    let thumb = thumb_path(&image_path);
    if is_current(&thumb, &image_path) {
        if let Ok(bytes) = std::fs::read(&thumb) {
            return Ok(bytes);
        }
    }
    let bytes = encode_thumbnail(&image_path, &decode_bounded(&image_path)?)?;
    if let Err(e) = cache_thumbnail(&image_path, &bytes) {
        tracing::warn!("thumbnail made but not kept: {e}");
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_keep_the_aspect_and_never_grow() {
        assert_eq!(thumb_size(1152, 896), (256, 199));
        assert_eq!(thumb_size(896, 1152), (199, 256));
        assert_eq!(thumb_size(100, 50), (100, 50));
        assert_eq!(thumb_size(4096, 1), (256, 1));
        assert_eq!(thumb_size(0, 0), (1, 1));
    }

    #[test]
    fn the_thumbnail_lies_in_the_hidden_folder_beside_the_image() {
        let path = thumb_path(Path::new("/o/2024-01-01/2024-01-01_10-00-00_1234.png"));
        assert_eq!(
            path,
            Path::new("/o/2024-01-01/.thumbs/2024-01-01_10-00-00_1234.png.jpg")
        );
    }
}
