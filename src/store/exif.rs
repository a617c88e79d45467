//! A minimal EXIF (TIFF) block for JPEG and WebP files, and a bounds-checked reader for it.
//!
//! What we write (big-endian TIFF, as piexif does for A1111):
//! * IFD0 `Software` (0x0131, ASCII) = `fooocus-rs <version>`;
//! * Exif IFD `UserComment` (0x9286) = `UNICODE\0` + the A1111 `parameters` text in UTF-16BE,
//!   the encoding A1111 writes and reads;
//! * Exif IFD `MakerNote` (0x927C, UNDEFINED) = our [`super::ImageMetadata`] JSON in UTF-8.
//!
//! The reader also accepts little-endian blocks, a `UserComment` in IFD0 (where Fooocus puts it)
//! and the `ASCII` / undefined character codes.

const TAG_SOFTWARE: u16 = 0x0131;
const TAG_EXIF_IFD: u16 = 0x8769;
const TAG_MAKER_NOTE: u16 = 0x927C;
const TAG_USER_COMMENT: u16 = 0x9286;

const TYPE_ASCII: u16 = 2;
const TYPE_LONG: u16 = 4;
const TYPE_UNDEFINED: u16 = 7;

/// The text fields we write into, and read back from, an EXIF block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExifText {
    /// IFD0 `Software`.
    pub software: Option<String>,
    /// `UserComment`, decoded (the A1111 `parameters` text).
    pub user_comment: Option<String>,
    /// Exif IFD `MakerNote`, raw bytes (our JSON, when we wrote the file).
    pub maker_note: Option<Vec<u8>>,
}

struct Entry {
    tag: u16,
    kind: u16,
    data: Vec<u8>,
}

/// Appends an IFD holding `entries` (sorted by tag) at the end of `out`, with its values after it;
/// `patch` receives (tag, offset of the 4-byte value field) so pointers can be filled in later.
fn write_ifd(out: &mut Vec<u8>, entries: &[Entry], patch: &mut Vec<(u16, usize)>) {
    let start = out.len();
    let count = entries.len();
    let mut data_at = start + 2 + 12 * count + 4;
    out.extend_from_slice(&(count as u16).to_be_bytes());
    let mut blobs = Vec::new();
    for e in entries {
        out.extend_from_slice(&e.tag.to_be_bytes());
        out.extend_from_slice(&e.kind.to_be_bytes());
        let unit = if e.kind == TYPE_LONG { 4 } else { 1 };
        out.extend_from_slice(&((e.data.len() / unit) as u32).to_be_bytes());
        if e.data.len() <= 4 {
            patch.push((e.tag, out.len()));
            let mut inline = [0u8; 4];
            inline[..e.data.len()].copy_from_slice(&e.data);
            out.extend_from_slice(&inline);
        } else {
            out.extend_from_slice(&(data_at as u32).to_be_bytes());
            blobs.push(&e.data);
            data_at += e.data.len() + e.data.len() % 2;
        }
    }
    out.extend_from_slice(&0u32.to_be_bytes());
    for blob in blobs {
        out.extend_from_slice(blob);
        if blob.len() % 2 == 1 {
            out.push(0);
        }
    }
}

/// Builds a big-endian TIFF block (no `Exif\0\0` prefix) with `Software`, and in the Exif IFD
/// the `UserComment` and optional `MakerNote`.
pub fn build_exif(software: &str, user_comment: &str, maker_note: Option<&[u8]>) -> Vec<u8> {
    let mut out = b"MM\0\x2a\0\0\0\x08".to_vec();
    let mut sw = software.as_bytes().to_vec();
    sw.push(0);
    let ifd0 = [
        Entry {
            tag: TAG_SOFTWARE,
            kind: TYPE_ASCII,
            data: sw,
        },
        Entry {
            tag: TAG_EXIF_IFD,
            kind: TYPE_LONG,
            data: vec![0; 4],
        },
    ];
    let mut patch = Vec::new();
    write_ifd(&mut out, &ifd0, &mut patch);

    let exif_ifd_at = out.len() as u32;
    if let Some(&(_, at)) = patch.iter().find(|(tag, _)| *tag == TAG_EXIF_IFD) {
        out[at..at + 4].copy_from_slice(&exif_ifd_at.to_be_bytes());
    }
    let mut comment = b"UNICODE\0".to_vec();
    comment.extend(user_comment.encode_utf16().flat_map(|u| u.to_be_bytes()));
    let mut exif_ifd = Vec::new();
    if let Some(note) = maker_note {
        exif_ifd.push(Entry {
            tag: TAG_MAKER_NOTE,
            kind: TYPE_UNDEFINED,
            data: note.to_vec(),
        });
    }
    exif_ifd.push(Entry {
        tag: TAG_USER_COMMENT,
        kind: TYPE_UNDEFINED,
        data: comment,
    });
    write_ifd(&mut out, &exif_ifd, &mut Vec::new());
    out
}

/// A TIFF block being read, with its byte order.
struct Tiff<'a> {
    data: &'a [u8],
    big_endian: bool,
}

impl Tiff<'_> {
    fn u16_at(&self, at: usize) -> Option<u16> {
        let b: [u8; 2] = self.data.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        self.u32_of(self.data.get(at..at.checked_add(4)?)?)
    }

    fn u32_of(&self, bytes: &[u8]) -> Option<u32> {
        let b: [u8; 4] = bytes.try_into().ok()?;
        Some(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    /// The entries of the IFD at `at`: (tag, type, value bytes); malformed entries are skipped.
    fn ifd(&self, at: usize) -> Vec<(u16, u16, &[u8])> {
        let Some(count) = self.u16_at(at) else {
            return Vec::new();
        };
        (0..usize::from(count))
            .filter_map(|i| {
                let e = at + 2 + 12 * i;
                let tag = self.u16_at(e)?;
                let kind = self.u16_at(e + 2)?;
                let count = self.u32_at(e + 4)? as usize;
                let unit = match kind {
                    1 | 2 | 6 | 7 => 1,
                    3 | 8 => 2,
                    4 | 9 | 11 => 4,
                    5 | 10 | 12 => 8,
                    _ => return None,
                };
                let len = count.checked_mul(unit)?;
                let start = if len <= 4 {
                    e + 8
                } else {
                    self.u32_at(e + 8)? as usize
                };
                let bytes = self.data.get(start..start.checked_add(len)?)?;
                Some((tag, kind, bytes))
            })
            .collect()
    }

    fn user_comment(&self, kind: u16, bytes: &[u8]) -> String {
        let text = if kind == TYPE_ASCII {
            String::from_utf8_lossy(bytes).into_owned()
        } else if let Some(rest) = bytes.strip_prefix(b"UNICODE\0") {
            let (units, big) = match rest {
                [0xFE, 0xFF, tail @ ..] => (tail, true),
                [0xFF, 0xFE, tail @ ..] => (tail, false),
                _ => (rest, self.big_endian),
            };
            let u16s: Vec<u16> = units
                .chunks_exact(2)
                .map(|c| {
                    if big {
                        u16::from_be_bytes([c[0], c[1]])
                    } else {
                        u16::from_le_bytes([c[0], c[1]])
                    }
                })
                .collect();
            String::from_utf16_lossy(&u16s)
        } else if let Some(rest) = bytes
            .strip_prefix(b"ASCII\0\0\0")
            .or_else(|| bytes.strip_prefix(&[0u8; 8][..]))
        {
            String::from_utf8_lossy(rest).into_owned()
        } else {
            String::from_utf8_lossy(bytes).into_owned()
        };
        text.trim_end_matches('\0').to_string()
    }
}

/// Reads the fields of [`ExifText`] from an EXIF block (with or without the `Exif\0\0` prefix).
/// `None` when the block is not TIFF; missing fields are `None`.
pub fn parse_exif(data: &[u8]) -> Option<ExifText> {
    let data = data.strip_prefix(b"Exif\0\0").unwrap_or(data);
    let big_endian = match data.get(..4)? {
        b"MM\0\x2a" => true,
        b"II\x2a\0" => false,
        _ => return None,
    };
    let tiff = Tiff { data, big_endian };
    let ifd0_at = tiff.u32_at(4)? as usize;
    let mut out = ExifText::default();
    let mut exif_ifd_at = None;
    for (tag, kind, bytes) in tiff.ifd(ifd0_at) {
        match tag {
            TAG_SOFTWARE => {
                out.software = Some(
                    String::from_utf8_lossy(bytes)
                        .trim_end_matches('\0')
                        .to_string(),
                )
            }
            TAG_USER_COMMENT => out.user_comment = Some(tiff.user_comment(kind, bytes)),
            TAG_EXIF_IFD => exif_ifd_at = tiff.u32_of(bytes).map(|v| v as usize),
            _ => {}
        }
    }
    if let Some(at) = exif_ifd_at.filter(|&at| at != ifd0_at) {
        for (tag, kind, bytes) in tiff.ifd(at) {
            match tag {
                TAG_USER_COMMENT => out.user_comment = Some(tiff.user_comment(kind, bytes)),
                TAG_MAKER_NOTE => out.maker_note = Some(bytes.to_vec()),
                _ => {}
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_non_ascii_text() {
        let block = build_exif(
            "fooocus-rs 0.1.0",
            "a cat ☕ 猫\nSteps: 3",
            Some(b"{\"a\":1}"),
        );
        assert!(block.starts_with(b"MM\0\x2a"));
        let text = parse_exif(&block).unwrap();
        assert_eq!(text.software.as_deref(), Some("fooocus-rs 0.1.0"));
        assert_eq!(text.user_comment.as_deref(), Some("a cat ☕ 猫\nSteps: 3"));
        assert_eq!(text.maker_note.as_deref(), Some(&b"{\"a\":1}"[..]));

        let mut prefixed = b"Exif\0\0".to_vec();
        prefixed.extend_from_slice(&build_exif("x", "odd", None));
        let text = parse_exif(&prefixed).unwrap();
        assert_eq!(text.user_comment.as_deref(), Some("odd"));
        assert_eq!(text.maker_note, None);
    }

    #[test]
    fn little_endian_ascii_comment_in_ifd0() {
        // II, IFD0 at 8 with one UserComment entry of type UNDEFINED, "ASCII\0\0\0hello".
        let mut b = b"II\x2a\0\x08\0\0\0".to_vec();
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&TAG_USER_COMMENT.to_le_bytes());
        b.extend_from_slice(&TYPE_UNDEFINED.to_le_bytes());
        b.extend_from_slice(&13u32.to_le_bytes());
        b.extend_from_slice(&26u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(b"ASCII\0\0\0hello");
        let text = parse_exif(&b).unwrap();
        assert_eq!(text.user_comment.as_deref(), Some("hello"));
    }

    #[test]
    fn garbage_is_rejected_or_ignored_without_panics() {
        assert!(parse_exif(b"").is_none());
        assert!(parse_exif(b"JFIF....").is_none());
        let block = build_exif("fooocus-rs", "parameters", Some(b"json"));
        for cut in 0..block.len() {
            let _ = parse_exif(&block[..cut]);
        }
        let mut bad = block.clone();
        for i in (8..bad.len()).step_by(3) {
            bad[i] = 0xFF;
        }
        let _ = parse_exif(&bad);
    }
}
