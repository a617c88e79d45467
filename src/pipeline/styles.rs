//! Prompt styles: the style library in `styles/*.json` and how selected styles turn a prompt into
//! positive and negative lines ("workloads", one conditioning each).
//!
//! * [`StyleLibrary::load`] reads every `*.json` of a folder in file-name order (the file format
//!   is described in `styles/README.md`).
//! * [`PromptLines::parse`] splits a prompt box into its first line and the extra lines, each
//!   cleaned by [`safe_str`].
//! * [`build_workloads`] (or [`StyleLibrary::workloads`], which also resolves names and
//!   [`RANDOM_STYLE`]) applies the styles: each style's template with `{prompt}` replaced, split
//!   into lines; the raw prompt first when no selected style has `{prompt}`; then the extra lines.
//!   Negatives: the styles' negatives, the user's negative, the extra negatives.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Where the user prompt goes in a style's positive template.
pub const PROMPT_PLACEHOLDER: &str = "{prompt}";

/// The pseudo-style that picks one real style at random, per image, from the caller's RNG.
pub const RANDOM_STYLE: &str = "Random Style";

/// Fooocus' prompt-expansion pseudo-style, which Fooocus API clients select by default; refused
/// with its own message until prompt expansion exists here.
pub const PROMPT_EXPANSION: &str = "Fooocus V2";

/// How many close matches an unknown-style error lists.
const MAX_SUGGESTIONS: usize = 5;

/// Label used as the "file" of styles built in memory.
const IN_MEMORY: &str = "(in memory)";

/// Errors of loading a style library and of resolving style names.
#[derive(Debug, thiserror::Error)]
pub enum StyleError {
    #[error("cannot list the style folder {dir}: {source}; check that it exists and is readable")]
    Folder {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the style file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is not a valid style file: {source}; expected a JSON list of objects with \
         \"name\", \"prompt\" and \"negative_prompt\" (see styles/README.md)"
    )]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: style #{entry} {problem}; fix its \"name\"")]
    BadName {
        path: PathBuf,
        /// 1-based position of the style in its file.
        entry: usize,
        problem: String,
    },
    #[error(
        "{path}: style \"{name}\" is already defined in {first}; style names must be unique \
         (ignoring case), rename one of them"
    )]
    Duplicate {
        name: String,
        path: PathBuf,
        first: PathBuf,
    },
    #[error(
        "unknown style \"{name}\"; {}; every style name is listed under \"styles\" by \
         GET /api/options",
        suggestion_text(.suggestions)
    )]
    Unknown {
        name: String,
        suggestions: Vec<String>,
    },
    #[error("\"{RANDOM_STYLE}\" was selected but the style library is empty")]
    NothingToPick,
    #[error(
        "\"{PROMPT_EXPANSION}\" (Fooocus' prompt expansion) is not available in fooocus-rs yet; \
         leave it out of the styles (every other selected style still applies)"
    )]
    PromptExpansion,
}

fn suggestion_text(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        return "no style has a similar name".to_owned();
    }
    let quoted: Vec<String> = suggestions.iter().map(|s| format!("\"{s}\"")).collect();
    format!("did you mean {}?", quoted.join(", "))
}

/// One style: a positive template (usually containing [`PROMPT_PLACEHOLDER`] once) and a
/// negative text. Each line of either becomes its own workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Style {
    pub name: String,
    #[serde(default)]
    pub prompt: String,
    #[serde(default)]
    pub negative_prompt: String,
}

impl Style {
    /// Whether the positive template has a place for the user prompt.
    pub fn has_placeholder(&self) -> bool {
        self.prompt.contains(PROMPT_PLACEHOLDER)
    }

    /// The positive template with `{prompt}` replaced by `prompt`, split into lines.
    pub fn positive_lines(&self, prompt: &str) -> Vec<String> {
        let text = self.prompt.replace(PROMPT_PLACEHOLDER, prompt);
        split_lines(&text).into_iter().map(str::to_owned).collect()
    }

    /// The negative text split into lines.
    pub fn negative_lines(&self) -> Vec<String> {
        split_lines(&self.negative_prompt)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }
}

/// A prompt box split into its first line and the extra lines (each its own workload).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptLines {
    pub first: String,
    pub extra: Vec<String>,
}

impl PromptLines {
    /// Split a prompt box into lines, clean each with [`safe_str`] and drop the empty ones; the
    /// first remaining line is the prompt (empty when none remains), the rest are extra lines.
    pub fn parse(text: &str) -> Self {
        let mut lines = split_lines(text)
            .into_iter()
            .map(safe_str)
            .filter(|line| !line.is_empty());
        let first = lines.next().unwrap_or_default();
        Self {
            first,
            extra: lines.collect(),
        }
    }
}

/// The texts to encode for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workloads {
    pub positive: Vec<String>,
    pub negative: Vec<String>,
    /// Number of positive workloads whose pooled outputs are summed (all of `positive` as built
    /// here; a prompt-expansion line appended later is not counted).
    pub k_pos: usize,
}

impl Workloads {
    /// No workloads: what a result made without sampling records.
    pub fn none() -> Self {
        Workloads {
            positive: Vec::new(),
            negative: Vec::new(),
            k_pos: 0,
        }
    }
}

/// Clean one prompt line: collapse runs of spaces, then strip `,` `.` space CR LF from both ends.
pub fn safe_str(text: &str) -> String {
    let mut out = text.to_owned();
    // Sixteen halving passes, as the reference does: runs up to 65536 spaces collapse to one.
    for _ in 0..16 {
        if !out.contains("  ") {
            break;
        }
        out = out.replace("  ", " ");
    }
    out.trim_matches(|c| matches!(c, ',' | '.' | ' ' | '\r' | '\n'))
        .to_owned()
}

/// Split text into lines like Python's `str.splitlines`: breaks are LF, CR, CR LF, VT, FF,
/// FS, GS, RS, NEL, LS and PS; a final break does not start an empty line.
pub fn split_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if !is_line_break(c) {
            continue;
        }
        lines.push(&text[start..i]);
        start = i + c.len_utf8();
        if c == '\r' && chars.next_if(|&(_, next)| next == '\n').is_some() {
            start += 1;
        }
    }
    if start < text.len() {
        lines.push(&text[start..]);
    }
    lines
}

fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r'
            | '\u{0b}'
            | '\u{0c}'
            | '\u{1c}'
            | '\u{1d}'
            | '\u{1e}'
            | '\u{85}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

/// Build the positive and negative workloads of one image from the selected styles (in order,
/// already resolved), the prompt lines and the negative lines.
pub fn build_workloads(
    styles: &[&Style],
    positive: &PromptLines,
    negative: &PromptLines,
) -> Workloads {
    let mut pos = styled_positive(styles, &positive.first);
    pos.extend(positive.extra.iter().cloned());
    let pos = non_empty_or(pos, &positive.first);

    let mut neg: Vec<String> = styles.iter().flat_map(|s| s.negative_lines()).collect();
    neg.push(negative.first.clone());
    neg.extend(negative.extra.iter().cloned());
    let neg = non_empty_or(neg, &negative.first);

    Workloads {
        k_pos: pos.len(),
        positive: pos,
        negative: neg,
    }
}

/// The styles' positive lines, with the raw prompt first when no style has a placeholder; just
/// the prompt without styles.
fn styled_positive(styles: &[&Style], prompt: &str) -> Vec<String> {
    if styles.is_empty() {
        return vec![prompt.to_owned()];
    }
    let mut lines: Vec<String> = styles
        .iter()
        .flat_map(|s| s.positive_lines(prompt))
        .collect();
    if !styles.iter().any(|s| s.has_placeholder()) {
        lines.insert(0, prompt.to_owned());
    }
    lines
}

/// Drop empty strings; when nothing remains, `[fallback]`.
fn non_empty_or(lines: Vec<String>, fallback: &str) -> Vec<String> {
    let kept: Vec<String> = lines.into_iter().filter(|l| !l.is_empty()).collect();
    if kept.is_empty() {
        vec![fallback.to_owned()]
    } else {
        kept
    }
}

/// All styles of a folder, in load order, with case-insensitive lookup by name.
#[derive(Debug, Clone, Default)]
pub struct StyleLibrary {
    styles: Vec<Style>,
    origins: Vec<PathBuf>,
    index: HashMap<String, usize>,
}

impl StyleLibrary {
    /// Read every `*.json` file of `dir` (not recursive), in file-name order; each file's
    /// styles keep their order. Names must be non-empty and unique across all files.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, StyleError> {
        let mut library = Self::default();
        for path in style_files(dir.as_ref())? {
            for (i, style) in read_style_file(&path)?.into_iter().enumerate() {
                library.add(style, &path, i + 1)?;
            }
        }
        Ok(library)
    }

    /// A library from styles built in code (tests, embedders), with the same name checks.
    pub fn from_styles(styles: Vec<Style>) -> Result<Self, StyleError> {
        let mut library = Self::default();
        let origin = Path::new(IN_MEMORY);
        for (i, style) in styles.into_iter().enumerate() {
            library.add(style, origin, i + 1)?;
        }
        Ok(library)
    }

    fn add(&mut self, style: Style, path: &Path, entry: usize) -> Result<(), StyleError> {
        if let Some(problem) = name_problem(&style.name) {
            return Err(StyleError::BadName {
                path: path.to_owned(),
                entry,
                problem,
            });
        }
        let key = lookup_key(&style.name);
        if let Some(&first) = self.index.get(&key) {
            return Err(StyleError::Duplicate {
                name: style.name,
                path: path.to_owned(),
                first: self.origins[first].clone(),
            });
        }
        self.index.insert(key, self.styles.len());
        self.styles.push(style);
        self.origins.push(path.to_owned());
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.styles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.styles.is_empty()
    }

    /// The styles in load order.
    pub fn iter(&self) -> impl Iterator<Item = &Style> {
        self.styles.iter()
    }

    /// The style names in load order ([`RANDOM_STYLE`] is not among them).
    pub fn names(&self) -> Vec<&str> {
        self.styles.iter().map(|s| s.name.as_str()).collect()
    }

    /// The style of this name, ignoring case, if there is one.
    pub fn find(&self, name: &str) -> Option<&Style> {
        self.index.get(&lookup_key(name)).map(|&i| &self.styles[i])
    }

    /// The file a style was loaded from.
    pub fn origin(&self, name: &str) -> Option<&Path> {
        self.index
            .get(&lookup_key(name))
            .map(|&i| self.origins[i].as_path())
    }

    /// The style of this name (ignoring case), or an error listing close matches.
    pub fn get(&self, name: &str) -> Result<&Style, StyleError> {
        if lookup_key(name) == lookup_key(PROMPT_EXPANSION) {
            return Err(StyleError::PromptExpansion);
        }
        self.find(name).ok_or_else(|| StyleError::Unknown {
            name: name.to_owned(),
            suggestions: self.close_matches(name),
        })
    }

    /// Check a selection without drawing anything: every name is a style or [`RANDOM_STYLE`]
    /// (which needs a non-empty library).
    pub fn check<S: AsRef<str>>(&self, names: &[S]) -> Result<(), StyleError> {
        for name in names {
            let name = name.as_ref();
            if is_random_style(name) {
                if self.is_empty() {
                    return Err(StyleError::NothingToPick);
                }
            } else {
                self.get(name)?;
            }
        }
        Ok(())
    }

    /// Up to five names that look like `query`: small edit distance to the whole name or to the
    /// part after the `Category: ` prefix, or containing it; closest first.
    pub fn close_matches(&self, query: &str) -> Vec<String> {
        let query = query.trim().to_lowercase();
        if query.is_empty() {
            return Vec::new();
        }
        let limit = (query.chars().count() / 3).max(2);
        let mut scored: Vec<(usize, usize)> = self
            .styles
            .iter()
            .enumerate()
            .filter_map(|(i, style)| {
                let name = style.name.to_lowercase();
                let short = name.split_once(": ").map_or(name.as_str(), |(_, s)| s);
                let distance = levenshtein(&query, &name).min(levenshtein(&query, short));
                let close = distance <= limit || name.contains(&query);
                close.then_some((distance, i))
            })
            .collect();
        scored.sort_unstable();
        scored
            .into_iter()
            .take(MAX_SUGGESTIONS)
            .map(|(_, i)| self.styles[i].name.clone())
            .collect()
    }

    /// A style drawn uniformly from the library with `rng`.
    pub fn random<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<&Style, StyleError> {
        if self.styles.is_empty() {
            return Err(StyleError::NothingToPick);
        }
        Ok(&self.styles[rng.random_range(0..self.styles.len())])
    }

    /// Resolve selected names in order; each [`RANDOM_STYLE`] draws one style from `rng` (the
    /// RNG is used only for those).
    pub fn select<S: AsRef<str>, R: Rng + ?Sized>(
        &self,
        names: &[S],
        rng: &mut R,
    ) -> Result<Vec<&Style>, StyleError> {
        names
            .iter()
            .map(|name| {
                let name = name.as_ref();
                if is_random_style(name) {
                    self.random(rng)
                } else {
                    self.get(name)
                }
            })
            .collect()
    }

    /// [`Self::select`] then [`build_workloads`].
    pub fn workloads<S: AsRef<str>, R: Rng + ?Sized>(
        &self,
        names: &[S],
        positive: &PromptLines,
        negative: &PromptLines,
        rng: &mut R,
    ) -> Result<Workloads, StyleError> {
        let styles = self.select(names, rng)?;
        Ok(build_workloads(&styles, positive, negative))
    }
}

/// Whether a selected name is the [`RANDOM_STYLE`] pseudo-style (ignoring case).
pub fn is_random_style(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case(RANDOM_STYLE)
}

/// How names are compared: ignoring case, surrounding space, and `-`/`_` against a space, so
/// `sai-3d-model` (a Fooocus file name) finds `SAI 3D Model` (the name Fooocus shows).
fn lookup_key(name: &str) -> String {
    name.to_lowercase()
        .replace(['-', '_'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a style name is not acceptable, if it is not.
fn name_problem(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        return Some("has an empty name".to_owned());
    }
    if name.trim() != name {
        return Some(format!("name \"{name}\" starts or ends with whitespace"));
    }
    if name.chars().any(char::is_control) {
        return Some(format!("name {name:?} contains a control character"));
    }
    if name.eq_ignore_ascii_case(RANDOM_STYLE) {
        return Some(format!("is named \"{name}\", which is reserved"));
    }
    None
}

/// The `*.json` files directly inside `dir`, sorted by file name.
fn style_files(dir: &Path) -> Result<Vec<PathBuf>, StyleError> {
    let folder_error = |source| StyleError::Folder {
        dir: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(folder_error)? {
        let path = entry.map_err(folder_error)?.path();
        let is_json = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
        if is_json && path.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

fn read_style_file(path: &Path) -> Result<Vec<Style>, StyleError> {
    let text = fs::read_to_string(path).map_err(|source| StyleError::Read {
        path: path.to_owned(),
        source,
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    serde_json::from_str(text).map_err(|source| StyleError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Edit distance (insertions, deletions, substitutions) between two strings, by chars.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::HashSet;

    fn shipped() -> StyleLibrary {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("styles");
        match StyleLibrary::load(&dir) {
            Ok(library) => library,
            Err(e) => panic!("shipped styles do not load: {e}"),
        }
    }

    fn style(name: &str, prompt: &str, negative: &str) -> Style {
        Style {
            name: name.to_owned(),
            prompt: prompt.to_owned(),
            negative_prompt: negative.to_owned(),
        }
    }

    fn lines(first: &str, extra: &[&str]) -> PromptLines {
        PromptLines {
            first: first.to_owned(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn write(dir: &Path, file: &str, text: &str) {
        fs::write(dir.join(file), text).expect("write test file");
    }

    #[test]
    fn shipped_library_loads_with_unique_names_and_defaults() {
        let library = shipped();
        assert!(library.len() >= 100, "only {} styles", library.len());
        let unique: HashSet<String> = library.iter().map(|s| s.name.to_lowercase()).collect();
        assert_eq!(unique.len(), library.len());
        for name in crate::config::DEFAULT_STYLES {
            assert!(library.find(name).is_some(), "default style {name} missing");
        }
        assert!(library.find("Base: Crisp Detail").is_some());
        assert!(library.iter().any(|s| !s.has_placeholder()));
        assert!(library.iter().any(|s| s.prompt.contains('\n')));
    }

    /// The names Fooocus and its API clients send: its own styles, the SAI set, the pseudo-style.
    const FOOOCUS_NAMES: [&str; 26] = [
        "Fooocus Enhance",
        "Fooocus Semi Realistic",
        "Fooocus Sharp",
        "Fooocus Masterpiece",
        "Fooocus Photograph",
        "Fooocus Negative",
        "Fooocus Cinematic",
        "Fooocus Pony",
        "SAI 3D Model",
        "SAI Analog Film",
        "SAI Anime",
        "SAI Cinematic",
        "SAI Comic Book",
        "SAI Craft Clay",
        "SAI Digital Art",
        "SAI Enhance",
        "SAI Fantasy Art",
        "SAI Isometric",
        "SAI Line Art",
        "SAI Lowpoly",
        "SAI Neonpunk",
        "SAI Origami",
        "SAI Photographic",
        "SAI Pixel Art",
        "SAI Texture",
        "Random Style",
    ];

    #[test]
    fn fooocus_style_names_resolve_ignoring_case_and_dashes() {
        let library = shipped();
        assert!(library.check(&FOOOCUS_NAMES).is_ok());
        let upper: Vec<String> = FOOOCUS_NAMES.iter().map(|n| n.to_uppercase()).collect();
        assert!(library.check(&upper).is_ok());
        let sharp = library.get("fooocus sharp").map(|s| s.name.clone());
        assert_eq!(sharp.ok().as_deref(), Some("Fooocus Sharp"));
        let file_name = library.get("sai-3d-model").map(|s| s.name.clone());
        assert_eq!(file_name.ok().as_deref(), Some("SAI 3D Model"));
        let mut rng = StdRng::seed_from_u64(3);
        let drawn = library.select(&["random style"], &mut rng).map(|s| s.len());
        assert_eq!(drawn.ok(), Some(1));
        // Fooocus API clients' default selection: the expansion is refused with its own reason.
        let err = library.check(&["Fooocus V2", "Fooocus Enhance", "Fooocus Sharp"]);
        assert!(matches!(err, Err(StyleError::PromptExpansion)), "{err:?}");
        let text = err.map(|_| ()).unwrap_err().to_string();
        assert!(
            text.contains("prompt expansion") && text.contains("leave it out"),
            "{text}"
        );
    }

    #[test]
    fn shipped_templates_are_well_formed() {
        let library = shipped();
        for s in library.iter() {
            assert!(
                s.prompt.matches(PROMPT_PLACEHOLDER).count() <= 1,
                "{}",
                s.name
            );
            // Only the file of Fooocus' own names may use names without a category.
            let compat = library
                .origin(&s.name)
                .is_some_and(|p| p.ends_with("05-fooocus-names.json"));
            assert!(
                compat || s.name.split_once(": ").is_some(),
                "{} lacks a category",
                s.name
            );
            for line in split_lines(&s.prompt)
                .into_iter()
                .chain(split_lines(&s.negative_prompt))
            {
                assert_eq!(line, line.trim(), "{}: stray whitespace", s.name);
                assert!(!line.is_empty(), "{}: empty template line", s.name);
                // Words plus commas: a rough CLIP token count, leaving room for the prompt.
                let rough = line.split_whitespace().count() + line.matches(',').count();
                assert!(rough <= 66, "{}: line too long ({rough})", s.name);
            }
        }
    }

    #[test]
    fn safe_str_collapses_spaces_and_strips_ends() {
        assert_eq!(
            safe_str("  a    cat,  on a   mat. ,\r\n"),
            "a cat, on a mat"
        );
        assert_eq!(safe_str(",.,"), "");
        assert_eq!(safe_str("\ta cat\t"), "\ta cat\t");
    }

    #[test]
    fn split_lines_follows_python() {
        assert_eq!(split_lines("a\r\nb\rc\nd\n"), ["a", "b", "c", "d"]);
        assert_eq!(split_lines("a\n\nb"), ["a", "", "b"]);
        assert_eq!(split_lines("a\u{2028}b"), ["a", "b"]);
        assert!(split_lines("").is_empty());
        assert_eq!(split_lines("\n"), [""]);
    }

    #[test]
    fn prompt_box_splits_into_first_and_extra_lines() {
        let parsed = PromptLines::parse("\n , \n  a  cat. \n\nred hat,\n");
        assert_eq!(parsed, lines("a cat", &["red hat"]));
        assert_eq!(PromptLines::parse(" \n,"), lines("", &[]));
    }

    #[test]
    fn without_styles_the_prompt_is_the_only_positive() {
        let w = build_workloads(&[], &lines("a cat", &["hat"]), &lines("ugly", &["dark"]));
        assert_eq!(w.positive, strings(&["a cat", "hat"]));
        assert_eq!(w.negative, strings(&["ugly", "dark"]));
        assert_eq!(w.k_pos, 2);
    }

    #[test]
    fn styles_replace_the_placeholder_in_order() {
        let a = style("A", "{prompt}, oil", "photo");
        let b = style("B", "sketch of {prompt}", "color\nblur");
        let w = build_workloads(&[&a, &b], &lines("a cat", &["hat"]), &lines("ugly", &["x"]));
        assert_eq!(
            w.positive,
            strings(&["a cat, oil", "sketch of a cat", "hat"])
        );
        assert_eq!(
            w.negative,
            strings(&["photo", "color", "blur", "ugly", "x"])
        );
        assert_eq!(w.k_pos, 3);
    }

    #[test]
    fn prompt_is_prepended_only_when_no_style_has_a_placeholder() {
        let light = style("Light", "golden hour", "");
        let empty = style("Neg", "", "lowres");
        let w = build_workloads(&[&light, &empty], &lines("a cat", &[]), &lines("", &[]));
        assert_eq!(w.positive, strings(&["a cat", "golden hour"]));
        assert_eq!(w.negative, strings(&["lowres"]));

        let cine = style("Cine", "{prompt}, film", "");
        let w = build_workloads(&[&light, &cine], &lines("a cat", &[]), &lines("", &[]));
        assert_eq!(w.positive, strings(&["golden hour", "a cat, film"]));
        assert_eq!(w.k_pos, 2);
    }

    #[test]
    fn multi_line_templates_give_one_workload_per_line() {
        let s = style(
            "M",
            "{prompt}, product\nstudio backdrop\n\nsoftbox",
            "dust\nclutter",
        );
        let w = build_workloads(&[&s], &lines("a mug", &[]), &lines("", &["blur"]));
        assert_eq!(
            w.positive,
            strings(&["a mug, product", "studio backdrop", "softbox"])
        );
        assert_eq!(w.negative, strings(&["dust", "clutter", "blur"]));
    }

    #[test]
    fn empty_prompt_is_allowed() {
        let w = build_workloads(&[], &lines("", &[]), &lines("", &[]));
        assert_eq!(w.positive, strings(&[""]));
        assert_eq!(w.negative, strings(&[""]));
        assert_eq!(w.k_pos, 1);

        let bare = style("Bare", "{prompt}", "");
        let w = build_workloads(&[&bare], &lines("", &[]), &lines("", &[]));
        assert_eq!(w.positive, strings(&[""]));

        let s = style("S", "{prompt}, ink", "");
        let w = build_workloads(&[&s], &lines("", &[]), &lines("", &[]));
        assert_eq!(w.positive, strings(&[", ink"]));
    }

    #[test]
    fn library_workloads_resolve_names_case_insensitively() {
        let library = StyleLibrary::from_styles(vec![
            style("Paint: Oil", "{prompt}, oil", "photo"),
            style("Light: Dusk", "dusk", ""),
        ])
        .expect("valid styles");
        let mut rng = StdRng::seed_from_u64(1);
        let w = library
            .workloads(
                &["light: dusk", "Paint: Oil"],
                &lines("a barn", &[]),
                &lines("", &[]),
                &mut rng,
            )
            .expect("known styles");
        assert_eq!(w.positive, strings(&["dusk", "a barn, oil"]));
        assert_eq!(w.negative, strings(&["photo"]));
    }

    #[test]
    fn unknown_style_names_close_matches() {
        let library = shipped();
        let err = match library.get("Paint: Watercolour") {
            Err(e) => e,
            Ok(s) => panic!("resolved to {}", s.name),
        };
        let text = err.to_string();
        assert!(text.contains("\"Paint: Watercolour\""), "{text}");
        assert!(text.contains("\"Paint: Watercolor\""), "{text}");
        assert!(library
            .close_matches("watercolor")
            .contains(&"Paint: Watercolor".to_owned()));
        let none = library.get("zzzzqqqq xxxx").map(|_| ()).unwrap_err();
        assert!(none.to_string().contains("no style has a similar name"));
        assert!(none.to_string().contains("GET /api/options"), "{none}");
    }

    #[test]
    fn random_style_uses_the_given_rng() {
        let library = shipped();
        let pick = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            library
                .select(&[RANDOM_STYLE, "Base: Cinematic"], &mut rng)
                .map(|styles| styles.iter().map(|s| s.name.clone()).collect::<Vec<_>>())
        };
        let first = pick(7).expect("random style");
        assert_eq!(first, pick(7).expect("random style"));
        assert!(library.find(&first[0]).is_some());
        assert!(library.check(&[RANDOM_STYLE, "base: cinematic"]).is_ok());
        assert!(library.check(&["Nope"]).is_err());
        assert_eq!(first[1], "Base: Cinematic");
        let empty = StyleLibrary::default();
        let mut rng = StdRng::seed_from_u64(0);
        assert!(matches!(
            empty.select(&[RANDOM_STYLE], &mut rng),
            Err(StyleError::NothingToPick)
        ));
    }

    #[test]
    fn load_reads_json_files_in_name_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        write(
            dir.path(),
            "b.json",
            r#"[{"name": "B1", "prompt": "{prompt} b"}]"#,
        );
        write(
            dir.path(),
            "a.json",
            r#"[{"name": "A1", "negative_prompt": "n"}, {"name": "A2"}]"#,
        );
        write(dir.path(), "README.md", "not a style");
        let library = StyleLibrary::load(dir.path()).expect("valid folder");
        assert_eq!(library.names(), ["A1", "A2", "B1"]);
        assert_eq!(library.find("a1").map(|s| s.prompt.as_str()), Some(""));
        assert_eq!(
            library.origin("B1").and_then(|p| p.file_name()),
            Some("b.json".as_ref())
        );
    }

    fn load_error(files: &[(&str, &str)]) -> String {
        let dir = tempfile::tempdir().expect("temp dir");
        for (file, text) in files {
            write(dir.path(), file, text);
        }
        match StyleLibrary::load(dir.path()) {
            Err(e) => e.to_string(),
            Ok(library) => panic!("loaded {:?}", library.names()),
        }
    }

    #[test]
    fn load_errors_name_the_file_and_the_problem() {
        let bad = load_error(&[("bad.json", r#"[{"name": "X", "prompt": }]"#)]);
        assert!(
            bad.contains("bad.json") && bad.contains("not a valid style file"),
            "{bad}"
        );

        let typo = load_error(&[("typo.json", r#"[{"name": "X", "negative": "n"}]"#)]);
        assert!(
            typo.contains("typo.json") && typo.contains("negative"),
            "{typo}"
        );

        let dup = load_error(&[
            ("one.json", r#"[{"name": "Same"}]"#),
            ("two.json", r#"[{"name": "same"}]"#),
        ]);
        assert!(
            dup.contains("two.json") && dup.contains("one.json"),
            "{dup}"
        );

        let empty = load_error(&[("e.json", r#"[{"name": "ok"}, {"name": " "}]"#)]);
        assert!(empty.contains("e.json") && empty.contains("#2") && empty.contains("empty"));

        let reserved = load_error(&[("r.json", r#"[{"name": "Random Style"}]"#)]);
        assert!(reserved.contains("reserved"), "{reserved}");

        let missing = StyleLibrary::load("/nonexistent/styles")
            .map(|_| ())
            .unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/styles"));
    }
}
