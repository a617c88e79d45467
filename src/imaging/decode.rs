//! Bounded decoding of PNG, JPEG and WebP bytes to RGB8. The side limit is checked against the
//! header before any pixel buffer is allocated; the memory limit bounds every allocation the
//! decoder makes. Alpha is dropped without compositing (Pillow's `convert("RGB")`, which is how
//! Fooocus reads an upload), grey is replicated, 16-bit channels are reduced to 8.

use std::io::Cursor;

use image::{ImageFormat, ImageReader, Limits, RgbImage};

/// Bounds on one decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// The longest side accepted, in pixels.
    pub max_side: u32,
    /// The most memory the decoder may allocate, in bytes.
    pub max_bytes: u64,
}

/// Why bytes are not an image we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("is not a PNG, JPEG or WebP image")]
    UnknownFormat,
    #[error("is {width}×{height} pixels; the largest accepted is {max} pixels per side: scale it down first")]
    TooLarge { width: u32, height: u32, max: u32 },
    #[error("would need more than {max_mib} MiB to decode: scale it down first")]
    TooMuchMemory { max_mib: u64 },
    #[error("is a {format} image that cannot be decoded ({message}); is the file complete?")]
    Broken {
        format: &'static str,
        message: String,
    },
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::WebP => "WebP",
        _ => "other",
    }
}

/// Decodes `bytes` within `limits`.
pub fn decode_image(bytes: &[u8], limits: DecodeLimits) -> Result<RgbImage, DecodeError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|_| DecodeError::UnknownFormat)?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP)) => f,
        _ => return Err(DecodeError::UnknownFormat),
    };
    let broken = |e: image::ImageError| DecodeError::Broken {
        format: format_name(format),
        message: e.to_string(),
    };
    let (width, height) = reader.into_dimensions().map_err(broken)?;
    if width.max(height) > limits.max_side {
        return Err(DecodeError::TooLarge {
            width,
            height,
            max: limits.max_side,
        });
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut bounds = Limits::default();
    bounds.max_image_width = Some(limits.max_side);
    bounds.max_image_height = Some(limits.max_side);
    bounds.max_alloc = Some(limits.max_bytes);
    reader.limits(bounds);
    let image = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => DecodeError::TooMuchMemory {
            max_mib: limits.max_bytes >> 20,
        },
        e => broken(e),
    })?;
    Ok(image.to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DecodeLimits = DecodeLimits {
        max_side: 64,
        max_bytes: 1 << 20,
    };

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = image::RgbaImage::from_fn(width, height, |x, y| {
            image::Rgba([x as u8, y as u8, 7, if x % 2 == 0 { 0 } else { 255 }])
        });
        let mut bytes = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        bytes
    }

    #[test]
    fn alpha_is_dropped_without_compositing() {
        let rgb = decode_image(&png(8, 4), LIMITS).unwrap();
        assert_eq!(rgb.dimensions(), (8, 4));
        assert_eq!(rgb.get_pixel(2, 3).0, [2, 3, 7]);
    }

    #[test]
    fn bad_bytes_are_refused_with_their_reason() {
        assert_eq!(
            decode_image(b"hello", LIMITS),
            Err(DecodeError::UnknownFormat)
        );
        let bytes = png(32, 32);
        let cut = &bytes[..bytes.len() / 2];
        assert!(matches!(
            decode_image(cut, LIMITS),
            Err(DecodeError::Broken { format: "PNG", .. })
        ));
        assert_eq!(
            decode_image(&png(65, 2), LIMITS),
            Err(DecodeError::TooLarge {
                width: 65,
                height: 2,
                max: 64
            })
        );
    }
}
