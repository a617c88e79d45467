//! Prompt randomisation: `__name__` wildcards (a line of `wildcards/**/name.txt`, picked with the
//! image's seed, nested up to 64 rounds) and `[[a,b,c]]` arrays (one image per combination, the
//! first array varying fastest).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::sampling::TorchGenerator;

/// Rounds of nested wildcard replacement.
const MAX_ROUNDS: usize = 64;

/// Longest text wildcards may expand to, in bytes (nested wildcards can grow a text
/// exponentially).
pub const MAX_EXPANDED_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WildcardError {
    #[error("wildcard file {path} is not UTF-8 text: save it as UTF-8")]
    NotUtf8 { path: PathBuf },
    #[error("cannot read wildcard file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the wildcards expand the prompt past {MAX_EXPANDED_BYTES} bytes: a wildcard file names \
         itself (or a file that names it back) more than once in a line; fix those files"
    )]
    TooLong,
}

/// The wildcard folder and the lines of the files read so far.
pub struct Wildcards {
    dir: PathBuf,
    files: HashMap<String, Vec<String>>,
}

impl Wildcards {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            files: HashMap::new(),
        }
    }

    /// The non-empty lines of `name.txt` anywhere under the folder (empty when there is none).
    fn lines(&mut self, name: &str) -> Result<&[String], WildcardError> {
        if !self.files.contains_key(name) {
            let lines = match find_file(&self.dir, &format!("{name}.txt")) {
                Some(path) => read_lines(&path)?,
                None => Vec::new(),
            };
            self.files.insert(name.to_string(), lines);
        }
        Ok(self.files.get(name).map_or(&[][..], Vec::as_slice))
    }

    /// Replaces every `__name__` left to right with a line chosen by `rng`, repeating for nested
    /// wildcards. A missing or empty file leaves the bare word `name`.
    pub fn apply(&mut self, text: &str, rng: &mut TorchGenerator) -> Result<String, WildcardError> {
        let mut text = text.to_string();
        for _ in 0..MAX_ROUNDS {
            let mut out = String::with_capacity(text.len());
            let mut rest = text.as_str();
            let mut replaced = false;
            while let Some((start, name, end)) = next_wildcard(rest) {
                out.push_str(&rest[..start]);
                let lines = self.lines(name)?;
                if lines.is_empty() {
                    out.push_str(name);
                } else {
                    let pick = rng.next_u32() as usize % lines.len();
                    out.push_str(&lines[pick]);
                }
                if out.len() > MAX_EXPANDED_BYTES {
                    return Err(WildcardError::TooLong);
                }
                replaced = true;
                rest = &rest[end..];
            }
            out.push_str(rest);
            if out.len() > MAX_EXPANDED_BYTES {
                return Err(WildcardError::TooLong);
            }
            text = out;
            if !replaced {
                break;
            }
        }
        Ok(text)
    }

    /// Reads every wildcard file `text` uses, nested ones too, so that a bad file is reported
    /// before any work starts.
    pub fn check(&mut self, text: &str) -> Result<(), WildcardError> {
        let mut pending: Vec<String> = wildcard_names(text);
        let mut seen = std::collections::HashSet::new();
        while let Some(name) = pending.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            let nested: Vec<String> = self
                .lines(&name)?
                .iter()
                .flat_map(|l| wildcard_names(l))
                .collect();
            pending.extend(nested);
        }
        Ok(())
    }
}

/// The first `__name__` in `text`: (start, name, end), name made of word characters and `-`.
fn next_wildcard(text: &str) -> Option<(usize, &str, usize)> {
    let mut from = 0;
    while let Some(open) = text[from..].find("__").map(|i| i + from) {
        let body_start = open + 2;
        let body_len = text[body_start..]
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(text.len() - body_start);
        let body = &text[body_start..body_start + body_len];
        // The name ends at the first "__" inside the word run.
        if let Some(close) = body.find("__") {
            if close > 0 {
                return Some((open, &body[..close], body_start + close + 2));
            }
        }
        from = open + 1;
    }
    None
}

fn wildcard_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some((_, name, end)) = next_wildcard(rest) {
        names.push(name.to_string());
        rest = &rest[end..];
    }
    names
}

fn find_file(dir: &Path, file_name: &str) -> Option<PathBuf> {
    let direct = dir.join(file_name);
    if direct.is_file() {
        return Some(direct);
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    entries
        .into_iter()
        .filter(|p| p.is_dir())
        .find_map(|sub| find_file(&sub, file_name))
}

fn read_lines(path: &Path) -> Result<Vec<String>, WildcardError> {
    let bytes = std::fs::read(path).map_err(|source| WildcardError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| WildcardError::NotUtf8 {
        path: path.to_path_buf(),
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Replaces each `[[a,b,c]]` with the element that image `index` gets: combinations counted in
/// mixed radix with the first array varying fastest; elements split on `,` without trimming.
pub fn apply_arrays(text: &str, index: usize) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut radix = index;
    while let Some(open) = rest.find("[[") {
        let Some(close) = rest[open + 2..].find("]]").map(|c| c + open + 2) else {
            break;
        };
        let items: Vec<&str> = rest[open + 2..close].split(',').collect();
        out.push_str(&rest[..open]);
        out.push_str(items[radix % items.len()]);
        radix /= items.len();
        rest = &rest[close + 2..];
    }
    out.push_str(rest);
    out
}

/// Number of combinations the arrays of `text` give (1 without arrays).
pub fn array_combinations(text: &str) -> usize {
    let mut count = 1usize;
    let mut rest = text;
    while let Some(open) = rest.find("[[") {
        let Some(close) = rest[open + 2..].find("]]").map(|c| c + open + 2) else {
            break;
        };
        count = count.saturating_mul(rest[open + 2..close].split(',').count());
        rest = &rest[close + 2..];
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_vary_the_first_fastest() {
        let t = "a [[red,blue]] [[cat,dog,fox]]";
        assert_eq!(array_combinations(t), 6);
        assert_eq!(apply_arrays(t, 0), "a red cat");
        assert_eq!(apply_arrays(t, 1), "a blue cat");
        assert_eq!(apply_arrays(t, 2), "a red dog");
        assert_eq!(apply_arrays(t, 5), "a blue fox");
        assert_eq!(apply_arrays("x [[a, b]]", 1), "x  b");
        assert_eq!(apply_arrays("no arrays [[", 3), "no arrays [[");
    }

    #[test]
    fn wildcards_nest_and_fall_back_to_the_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("color.txt"), "red\n\n").unwrap();
        std::fs::write(dir.path().join("sub/flower.txt"), "rose\n").unwrap();
        std::fs::write(
            dir.path().join("color_flower.txt"),
            "__color__ __flower__\n",
        )
        .unwrap();
        let mut w = Wildcards::new(dir.path());
        let mut rng = TorchGenerator::new(1);
        assert_eq!(
            w.apply("a __color_flower__, __missing__", &mut rng)
                .unwrap(),
            "a red rose, missing"
        );
        assert_eq!(
            w.apply("snake_case __ word", &mut rng).unwrap(),
            "snake_case __ word"
        );
        std::fs::write(dir.path().join("bad.txt"), [0xffu8, 0xfe, 0x00]).unwrap();
        let err = Wildcards::new(dir.path())
            .check("x __bad__")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.txt") && err.contains("UTF-8"), "{err}");
        assert!(Wildcards::new(dir.path()).check("__color_flower__").is_ok());
    }

    #[test]
    fn the_seed_decides_the_pick() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<String> = (0..50).map(|i| format!("w{i}")).collect();
        std::fs::write(dir.path().join("word.txt"), lines.join("\n")).unwrap();
        let pick = |seed| {
            Wildcards::new(dir.path())
                .apply("__word__", &mut TorchGenerator::new(seed))
                .unwrap()
        };
        assert_eq!(pick(7), pick(7));
        assert!(
            (0..10)
                .map(pick)
                .collect::<std::collections::HashSet<_>>()
                .len()
                > 1
        );
    }

    /// A line naming its own file twice doubles the prompt each round, 2⁶⁴ times over (found by
    /// `cargo fuzz`, target `wildcards`): refused once past the bound, naming the cause.
    #[test]
    fn self_doubling_wildcards_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fz.txt"), "__fz__ and __fz__\n").unwrap();
        let err = Wildcards::new(dir.path())
            .apply("__fz__", &mut TorchGenerator::new(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("names itself"), "{err}");
    }
}
