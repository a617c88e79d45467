//! Encoding an RGB image to PNG, JPEG or WebP bytes with the metadata embedded. Pure and
//! deterministic: the same pixels, metadata and options give the same bytes (nothing time- or
//! machine-dependent is written).
//!
//! What each format carries when metadata is on:
//! * **PNG**: text chunks `parameters` (A1111 text; tEXt when Latin-1, else iTXt, as A1111 does),
//!   `fooocus_scheme` = `a1111` (so Fooocus' "load parameters" reads it), and iTXt
//!   [`JSON_KEYWORD`] (`fooocus-rs`) = the full [`ImageMetadata`] JSON.
//! * **JPEG** and **WebP**: an EXIF block (see [`super::exif`]): `UserComment` = A1111 text,
//!   `MakerNote` = the JSON, `Software` = `fooocus-rs <version>`. JPEG limits EXIF to 64 KiB: the
//!   JSON is dropped first, then the whole block (with a warning), for extremely long prompts.
//!
//! With metadata off nothing is embedded (no text chunks, no EXIF).

use std::path::Path;

use image::{ExtendedColorType, ImageEncoder, RgbImage};

use super::a1111::to_a1111;
use super::error::{Result, StoreError};
use super::exif::build_exif;
use super::metadata::{version_string, ImageMetadata, OutputFormat, JSON_KEYWORD};

/// The PNG keyword Fooocus reads to pick its metadata parser.
pub const FOOOCUS_SCHEME_KEYWORD: &str = "fooocus_scheme";

/// Largest EXIF block a JPEG APP1 segment holds (65535 − 2 length bytes − 6 `Exif\0\0` bytes).
const JPEG_MAX_EXIF: usize = 65_527;

/// How to encode a saved image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// File format.
    pub format: OutputFormat,
    /// JPEG quality 1–100 (Fooocus uses 95); ignored for PNG and for WebP, which is lossless.
    pub quality: u8,
    /// Embed the metadata in the file (text chunks / EXIF). Off: nothing is embedded.
    pub embed_metadata: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            format: OutputFormat::Png,
            quality: 95,
            embed_metadata: true,
        }
    }
}

/// Writes the RGB pixels of `image` through `encoder`.
fn write_rgb(encoder: impl ImageEncoder, image: &RgbImage) -> image::ImageResult<()> {
    encoder.write_image(
        image.as_raw(),
        image.width(),
        image.height(),
        ExtendedColorType::Rgb8,
    )
}

/// Encodes `image` with `meta` embedded as `options` say. `path` only names the file in errors.
pub fn encode_image(
    image: &RgbImage,
    meta: &ImageMetadata,
    options: &EncodeOptions,
    path: &Path,
) -> Result<Vec<u8>> {
    let fail = |message: String| StoreError::Encode {
        format: options.format.extension(),
        path: path.to_path_buf(),
        message,
    };
    match options.format {
        OutputFormat::Png => encode_png(image, options.embed_metadata.then_some(meta))
            .map_err(|e| fail(e.to_string())),
        OutputFormat::Jpeg => {
            let mut out = Vec::new();
            let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(
                &mut out,
                options.quality.clamp(1, 100),
            );
            if options.embed_metadata {
                if let Some(exif) = jpeg_exif(meta, path) {
                    encoder
                        .set_exif_metadata(exif)
                        .map_err(|e| fail(e.to_string()))?;
                }
            }
            write_rgb(encoder, image).map_err(|e| fail(e.to_string()))?;
            Ok(out)
        }
        OutputFormat::Webp => {
            let mut out = Vec::new();
            let mut encoder = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
            if options.embed_metadata {
                let exif = build_exif(
                    &version_string(),
                    &to_a1111(meta),
                    Some(meta.to_json().as_bytes()),
                );
                encoder
                    .set_exif_metadata(exif)
                    .map_err(|e| fail(e.to_string()))?;
            }
            write_rgb(encoder, image).map_err(|e| fail(e.to_string()))?;
            Ok(out)
        }
    }
}

/// The EXIF block for a JPEG, shrunk to fit one APP1 segment; `None` when even the A1111 text
/// alone is too long.
fn jpeg_exif(meta: &ImageMetadata, path: &Path) -> Option<Vec<u8>> {
    let parameters = to_a1111(meta);
    let full = build_exif(
        &version_string(),
        &parameters,
        Some(meta.to_json().as_bytes()),
    );
    if full.len() <= JPEG_MAX_EXIF {
        return Some(full);
    }
    let bare = build_exif(&version_string(), &parameters, None);
    if bare.len() <= JPEG_MAX_EXIF {
        tracing::warn!(
            "{}: metadata too long for JPEG EXIF; only the A1111 text is embedded",
            path.display()
        );
        return Some(bare);
    }
    tracing::warn!(
        "{}: metadata too long for JPEG EXIF; none embedded (use PNG)",
        path.display()
    );
    None
}

fn is_latin1(text: &str) -> bool {
    text.chars().all(|c| (c as u32) < 0x100)
}

fn encode_png(
    image: &RgbImage,
    meta: Option<&ImageMetadata>,
) -> std::result::Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, image.width(), image.height());
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    if let Some(meta) = meta {
        let parameters = to_a1111(meta);
        if is_latin1(&parameters) {
            encoder.add_text_chunk("parameters".into(), parameters)?;
        } else {
            encoder.add_itxt_chunk("parameters".into(), parameters)?;
        }
        encoder.add_text_chunk(FOOOCUS_SCHEME_KEYWORD.into(), "a1111".into())?;
        encoder.add_itxt_chunk(JSON_KEYWORD.into(), meta.to_json())?;
    }
    let mut writer = encoder.write_header()?;
    writer.write_image_data(image.as_raw())?;
    writer.finish()?;
    Ok(out)
}
