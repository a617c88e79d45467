//! Output names: `YYYY-MM-DD/YYYY-MM-DD_HH-MM-SS_NNNN.<ext>` (local time, NNNN four random
//! digits), recognising our own names among foreign files, and resolving a client's relative path
//! safely inside the output root.

use std::path::{Path, PathBuf};

use chrono::{NaiveDate, NaiveDateTime};

use super::error::{Result, StoreError};
use super::metadata::OutputFormat;

/// The file name of each date folder's log page.
pub const LOG_HTML: &str = "log.html";

/// The date folder for a moment: `YYYY-MM-DD`.
pub fn date_folder(now: &NaiveDateTime) -> String {
    now.format("%Y-%m-%d").to_string()
}

/// The image file name for a moment, four digits (1000..=9999) and format:
/// `YYYY-MM-DD_HH-MM-SS_NNNN.<ext>`.
pub fn image_file_name(now: &NaiveDateTime, digits: u16, format: OutputFormat) -> String {
    format!(
        "{}_{:04}.{}",
        now.format("%Y-%m-%d_%H-%M-%S"),
        digits % 10000,
        format.extension()
    )
}

/// True for a valid `YYYY-MM-DD` folder name.
pub fn is_date_folder(name: &str) -> bool {
    name.len() == 10 && NaiveDate::parse_from_str(name, "%Y-%m-%d").is_ok()
}

/// An image file name of ours, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName<'a> {
    /// `YYYY-MM-DD_HH-MM-SS`: sorts like the moment it names.
    pub stamp: &'a str,
    /// The four random digits.
    pub digits: &'a str,
    /// The format the extension names.
    pub format: OutputFormat,
}

/// Recognises `YYYY-MM-DD_HH-MM-SS_NNNN.<png|jpeg|jpg|webp>`; `None` for anything else.
pub fn parse_image_name(name: &str) -> Option<ImageName<'_>> {
    let (stem, ext) = name.rsplit_once('.')?;
    let format = OutputFormat::from_extension(ext)?;
    if stem.len() != 24 || !stem.is_ascii() {
        return None;
    }
    let (stamp, rest) = stem.split_at(19);
    let digits = rest.strip_prefix('_')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d_%H-%M-%S").ok()?;
    Some(ImageName {
        stamp,
        digits,
        format,
    })
}

/// Resolves a client-supplied `YYYY-MM-DD/<image name>` or `YYYY-MM-DD/log.html` against `root`.
/// Anything else (other shapes, `..`, absolute paths, a target that resolves outside `root`
/// through a link) is refused; the file must exist.
pub fn resolve_output_path(root: &Path, relative: &str) -> Result<PathBuf> {
    let invalid = || StoreError::InvalidPath {
        path: relative.to_string(),
    };
    let (date, name) = relative.split_once('/').ok_or_else(invalid)?;
    if !is_date_folder(date) || !(name == LOG_HTML || parse_image_name(name).is_some()) {
        return Err(invalid());
    }
    let joined = root.join(date).join(name);
    let real_root = root
        .canonicalize()
        .map_err(|e| StoreError::io("open output folder", root, e))?;
    let real = joined
        .canonicalize()
        .map_err(|e| StoreError::io("open", &joined, e))?;
    if !real.starts_with(&real_root) {
        return Err(invalid());
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moment() -> NaiveDateTime {
        NaiveDateTime::parse_from_str("2024-03-05 07:08:09", "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn names_follow_fooocus_layout() {
        assert_eq!(date_folder(&moment()), "2024-03-05");
        let name = image_file_name(&moment(), 1234, OutputFormat::Png);
        assert_eq!(name, "2024-03-05_07-08-09_1234.png");
        assert_eq!(
            image_file_name(&moment(), 42, OutputFormat::Jpeg),
            "2024-03-05_07-08-09_0042.jpeg"
        );
        let parsed = parse_image_name(&name).unwrap();
        assert_eq!(parsed.stamp, "2024-03-05_07-08-09");
        assert_eq!(parsed.digits, "1234");
        assert_eq!(parsed.format, OutputFormat::Png);
    }

    #[test]
    fn foreign_names_are_not_ours() {
        for name in [
            "log.html",
            "log.jsonl",
            "2024-03-05_07-08-09_1234.gif",
            "2024-03-05_07-08-09_12a4.png",
            "2024-13-05_07-08-09_1234.png",
            "2024-03-05_07-08-09_12345.png",
            ".2024-03-05_07-08-09_1234.png.tmp",
            "cat.png",
        ] {
            assert!(parse_image_name(name).is_none(), "{name}");
        }
        assert!(parse_image_name("2024-03-05_07-08-09_1234.JPG").is_some());
        assert!(is_date_folder("2024-02-29"));
        assert!(!is_date_folder("2023-02-29"));
        assert!(!is_date_folder("2024-3-05"));
    }

    #[test]
    fn resolves_only_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let day = dir.path().join("2024-03-05");
        std::fs::create_dir(&day).unwrap();
        std::fs::write(day.join("2024-03-05_07-08-09_1234.png"), b"x").unwrap();
        std::fs::write(day.join("log.html"), b"x").unwrap();
        assert!(resolve_output_path(dir.path(), "2024-03-05/2024-03-05_07-08-09_1234.png").is_ok());
        assert!(resolve_output_path(dir.path(), "2024-03-05/log.html").is_ok());
        for bad in [
            "../2024-03-05/log.html",
            "2024-03-05/../log.html",
            "/etc/passwd",
            "2024-03-05/2024-03-05_07-08-09_9999.png",
            "2024-03-05",
            "2024-03-05/sub/log.html",
        ] {
            assert!(resolve_output_path(dir.path(), bad).is_err(), "{bad}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn refuses_links_out_of_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("log.html"), b"secret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("2024-03-05")).unwrap();
        assert!(resolve_output_path(dir.path(), "2024-03-05/log.html").is_err());
    }
}
