//! The image metadata readers: `embedded_text_from_bytes` (PNG text chunks, JPEG/WebP EXIF), the
//! EXIF parser on its own, and `ImageMetadata::from_json`; whatever parses is written back out
//! (JSON and A1111 text) and read again.
#![no_main]

use fooocus::store::a1111::{parse_a1111, to_a1111};
use fooocus::store::exif::parse_exif;
use fooocus::store::metadata::ImageMetadata;
use fooocus::store::read::embedded_text_from_bytes;
use libfuzzer_sys::fuzz_target;

fn round_trip(meta: &ImageMetadata) {
    let json = meta.to_json();
    assert!(
        ImageMetadata::from_json(&json).is_some(),
        "to_json output does not parse back: {json}"
    );
    let _ = parse_a1111(&to_a1111(meta));
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = embedded_text_from_bytes(data) {
        if let Some(meta) = text.metadata() {
            round_trip(&meta);
        }
    }
    let _ = parse_exif(data);
    let text = String::from_utf8_lossy(data);
    if let Some(meta) = ImageMetadata::from_json(&text) {
        round_trip(&meta);
    }
});
