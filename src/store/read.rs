//! Reading metadata back from a PNG, JPEG or WebP file (ours or another tool's): our JSON first,
//! the A1111 `parameters` text as fallback. The format is told by the file's first bytes, not its
//! name, and only headers are parsed (PNG stops at the first image data chunk).

use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, Seek, SeekFrom};
use std::path::Path;

use image::ImageDecoder;

use super::a1111::parse_a1111;
use super::error::{Result, StoreError};
use super::exif::parse_exif;
use super::metadata::{ImageMetadata, OutputFormat, JSON_KEYWORD};

/// The metadata texts found in an image file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmbeddedText {
    /// The image's format (by content).
    pub format: Option<OutputFormat>,
    /// The A1111 `parameters` text (PNG chunk or EXIF `UserComment`).
    pub parameters: Option<String>,
    /// Our [`ImageMetadata`] JSON (PNG `fooocus-rs` chunk or EXIF `MakerNote`).
    pub json: Option<String>,
}

impl EmbeddedText {
    /// The metadata: our JSON when present and valid, else the parsed A1111 text (with
    /// `output_format` set from the file). `None` when neither is usable.
    pub fn metadata(&self) -> Option<ImageMetadata> {
        if let Some(meta) = self.json.as_deref().and_then(ImageMetadata::from_json) {
            return Some(meta);
        }
        let mut meta = parse_a1111(self.parameters.as_deref()?)?;
        if let Some(format) = self.format {
            meta.output_format = format;
        }
        Some(meta)
    }
}

/// The image format `head` (the first bytes of a file) starts.
fn sniff(head: &[u8]) -> Option<OutputFormat> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(OutputFormat::Png)
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(OutputFormat::Jpeg)
    } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Some(OutputFormat::Webp)
    } else {
        None
    }
}

/// Reads the metadata texts from an image in `reader`; an unknown format gives an empty result.
/// Errors are messages for [`StoreError::Decode`].
fn embedded_from<R: BufRead + Seek>(mut reader: R) -> std::result::Result<EmbeddedText, String> {
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match reader.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    reader.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let format = sniff(&head[..got]);
    let mut out = EmbeddedText {
        format,
        ..Default::default()
    };
    match format {
        None => {}
        Some(OutputFormat::Png) => {
            let png = png::Decoder::new(reader)
                .read_info()
                .map_err(|e| e.to_string())?;
            let info = png.info();
            let mut texts: Vec<(String, String)> = Vec::new();
            for c in &info.uncompressed_latin1_text {
                texts.push((c.keyword.clone(), c.text.clone()));
            }
            for c in &info.compressed_latin1_text {
                if let Ok(text) = c.get_text() {
                    texts.push((c.keyword.clone(), text));
                }
            }
            for c in &info.utf8_text {
                if let Ok(text) = c.get_text() {
                    texts.push((c.keyword.clone(), text));
                }
            }
            for (keyword, text) in texts {
                match keyword.as_str() {
                    "parameters" => out.parameters = Some(text),
                    k if k == JSON_KEYWORD => out.json = Some(text),
                    _ => {}
                }
            }
        }
        Some(OutputFormat::Jpeg) => {
            let mut decoder =
                image::codecs::jpeg::JpegDecoder::new(reader).map_err(|e| e.to_string())?;
            fill_from_exif(
                &mut out,
                decoder.exif_metadata().map_err(|e| e.to_string())?,
            );
        }
        Some(OutputFormat::Webp) => {
            // A chunk cannot be longer than the file: without this limit a chunk header claiming
            // 4 GiB makes the decoder allocate that much before it finds the file too short.
            let len = reader.seek(SeekFrom::End(0)).map_err(|e| e.to_string())?;
            reader.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
            let mut decoder = image_webp::WebPDecoder::new(reader).map_err(|e| e.to_string())?;
            decoder.set_memory_limit(usize::try_from(len).unwrap_or(usize::MAX));
            let exif = decoder.exif_metadata().map_err(|e| match e {
                image_webp::DecodingError::MemoryLimitExceeded => {
                    format!("its EXIF chunk claims more than the file's {len} bytes: it is damaged")
                }
                e => e.to_string(),
            })?;
            fill_from_exif(&mut out, exif);
        }
    }
    Ok(out)
}

fn fill_from_exif(out: &mut EmbeddedText, exif: Option<Vec<u8>>) {
    if let Some(text) = exif.as_deref().and_then(parse_exif) {
        out.parameters = text.user_comment.filter(|s| !s.is_empty());
        out.json = text
            .maker_note
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|s| s.trim_start().starts_with('{'));
    }
}

/// The metadata texts embedded in the image file at `path`.
pub fn read_embedded_text(path: &Path) -> Result<EmbeddedText> {
    let file = File::open(path).map_err(|e| StoreError::io("open", path, e))?;
    embedded_from(BufReader::new(file)).map_err(|message| StoreError::Decode {
        path: path.to_path_buf(),
        message,
    })
}

/// The metadata texts embedded in an image held in memory (e.g. an upload).
pub fn embedded_text_from_bytes(bytes: &[u8]) -> Result<EmbeddedText> {
    embedded_from(Cursor::new(bytes)).map_err(|message| StoreError::Decode {
        path: "<memory>".into(),
        message,
    })
}

/// The metadata of the image at `path`: our JSON, or else its A1111 text parsed. `Ok(None)` when
/// the file carries neither (or is not a PNG/JPEG/WebP); `Err` when it cannot be read or its
/// headers are corrupt.
pub fn read_metadata(path: &Path) -> Result<Option<ImageMetadata>> {
    Ok(read_embedded_text(path)?.metadata())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WebP whose EXIF chunk claims 4 GiB (found by `cargo fuzz`, target `image_metadata`):
    /// refused as damaged instead of allocating the claimed size.
    #[test]
    fn webp_exif_longer_than_the_file_is_an_error() {
        let mut webp = b"RIFF\0\0\0\0WEBP".to_vec();
        webp.extend_from_slice(b"VP8X\x0a\0\0\0\x08\0\0\0\x01\0\0\x01\0\0");
        // A 2×2 lossy frame (from the seed the fuzzer started with).
        webp.extend_from_slice(
            b"VP8 \x30\0\0\0\xd0\x01\0\x9d\x01\x2a\x02\0\x02\0\x01\x40\x26\x25\xa0\x02\x74\xba\
              \x01\xf8\0\x03\xb0\0\xfe\xf6\x13\x5f\xfe\x2c\xe4\x62\x3b\x3c\xdf\xfe\x04\xef\xc0\x9d\
              \xf8\x13\xbf\xf0\0\0\0\0",
        );
        webp.extend_from_slice(b"EXIF\x5a\x04\xff\xffII*\0\x08\0\0\0");
        let riff_len = (webp.len() - 8) as u32;
        webp[4..8].copy_from_slice(&riff_len.to_le_bytes());
        let err = embedded_text_from_bytes(&webp).unwrap_err().to_string();
        assert!(
            err.contains("<memory>") && err.contains("EXIF chunk"),
            "{err}"
        );
    }
}
