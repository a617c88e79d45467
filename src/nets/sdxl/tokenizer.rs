//! CLIP BPE tokenization for SDXL prompts: `(text:1.3)` / `(text)` weights with `\(` escapes,
//! word-wise tokenization and packing into 77-token chunks (BOS + 75 + EOS) the way Fooocus does,
//! with the encoder-specific pad ids (CLIP-L pads with end-of-text 49407, CLIP-G with 0).

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::weights::ModelError;

/// Start-of-text token id.
pub const BOS: u32 = 49406;
/// End-of-text token id (also CLIP-L's pad).
pub const EOS: u32 = 49407;
/// Tokens per chunk, BOS and EOS included.
pub const CHUNK_LEN: usize = 77;
/// Words of at least this many tokens are split across chunks instead of moving whole.
const LONG_WORD_TOKENS: usize = 8;

/// How an encoder pads its chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pad {
    /// CLIP-L: pad with end-of-text (49407).
    EndOfText,
    /// CLIP-G: pad with `!` (0).
    Zero,
}

impl Pad {
    pub fn id(self) -> u32 {
        match self {
            Pad::EndOfText => EOS,
            Pad::Zero => 0,
        }
    }
}

/// One 77-token chunk: the real tokens (BOS … EOS) with their weights; padding is added per
/// encoder by [`Chunk::ids`].
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    tokens: Vec<(u32, f32)>,
}

impl Chunk {
    /// The chunk of an empty prompt: [BOS, EOS].
    pub fn empty() -> Self {
        Self {
            tokens: vec![(BOS, 1.0), (EOS, 1.0)],
        }
    }

    /// Token ids padded to 77 with `pad`.
    pub fn ids(&self, pad: Pad) -> Vec<u32> {
        let mut ids: Vec<u32> = self.tokens.iter().map(|&(t, _)| t).collect();
        ids.resize(CHUNK_LEN, pad.id());
        ids
    }

    /// Per-position weights (1 for BOS, EOS and padding).
    pub fn weights(&self) -> Vec<f32> {
        let mut w: Vec<f32> = self.tokens.iter().map(|&(_, w)| w).collect();
        w.resize(CHUNK_LEN, 1.0);
        w
    }

    /// Number of real tokens, BOS and EOS included.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether any token has a weight other than 1.
    pub fn is_weighted(&self) -> bool {
        self.tokens.iter().any(|&(_, w)| w != 1.0)
    }
}

/// The CLIP BPE tokenizer shared by both SDXL text encoders.
pub struct ClipTokenizer {
    inner: Tokenizer,
    path: PathBuf,
}

impl ClipTokenizer {
    /// Loads a Hugging Face `tokenizer.json` (openai/clip-vit-large-patch14's).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref().to_path_buf();
        let mut inner = Tokenizer::from_file(&path).map_err(|e| ModelError::Tokenizer {
            path: path.clone(),
            reason: format!(
                "{e}; expected the CLIP tokenizer.json of openai/clip-vit-large-patch14"
            ),
        })?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| ModelError::Tokenizer {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self { inner, path })
    }

    /// BPE ids of `text` without BOS/EOS.
    fn bare_ids(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                reason: format!("cannot tokenize {text:?}: {e}"),
            })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Plain CLIP tokenization: BOS + up to 75 tokens + EOS, padded to 77 (truncating, no
    /// weights). This is what the reference tokenizers give.
    pub fn encode_truncated(&self, text: &str, pad: Pad) -> Result<Vec<u32>, ModelError> {
        let mut ids = vec![BOS];
        ids.extend(self.bare_ids(text)?.into_iter().take(CHUNK_LEN - 2));
        ids.push(EOS);
        ids.resize(CHUNK_LEN, pad.id());
        Ok(ids)
    }

    /// Fooocus tokenization: weights parsed, each space-separated word tokenized on its own and
    /// packed into chunks; a word that does not fit moves to the next chunk unless it is 8
    /// tokens or longer, in which case it is split. An empty prompt gives one chunk [BOS, EOS].
    pub fn chunks(&self, prompt: &str) -> Result<Vec<Chunk>, ModelError> {
        let mut words: Vec<Vec<(u32, f32)>> = Vec::new();
        for (text, weight) in parse_weights(prompt) {
            for word in text.split([' ', '\n']).filter(|w| !w.is_empty()) {
                let ids = self.bare_ids(word)?;
                words.push(ids.into_iter().map(|id| (id, weight)).collect());
            }
        }
        Ok(pack(words))
    }
}

/// Packs tokenized words into chunks of BOS + ≤ 75 tokens + EOS.
fn pack(words: Vec<Vec<(u32, f32)>>) -> Vec<Chunk> {
    let capacity = CHUNK_LEN - 1; // BOS + tokens, before EOS
    let mut chunks = Vec::new();
    let mut current = vec![(BOS, 1.0)];
    for word in words {
        let long = word.len() >= LONG_WORD_TOKENS;
        let mut rest = word.as_slice();
        while !rest.is_empty() {
            if rest.len() + current.len() > capacity {
                if long {
                    let room = capacity - current.len();
                    current.extend_from_slice(&rest[..room]);
                    rest = &rest[room..];
                }
                current.push((EOS, 1.0));
                chunks.push(Chunk {
                    tokens: std::mem::replace(&mut current, vec![(BOS, 1.0)]),
                });
            } else {
                current.extend_from_slice(rest);
                rest = &[];
            }
        }
    }
    current.push((EOS, 1.0));
    chunks.push(Chunk { tokens: current });
    chunks
}

/// Splits a prompt into (text, weight) segments: `(a)` multiplies the enclosing weight by 1.1
/// (nesting multiplies), `(a:1.3)` sets it to exactly 1.3, `\(` and `\)` are literal parentheses.
/// An unclosed `(` or a stray `)` is kept as text.
pub fn parse_weights(prompt: &str) -> Vec<(String, f32)> {
    let chars: Vec<char> = prompt.chars().collect();
    let mut out = Vec::new();
    segments(&chars, 1.0, &mut out);
    out.retain(|(t, _)| !t.is_empty());
    out
}

fn segments(chars: &[char], weight: f32, out: &mut Vec<(String, f32)>) {
    let mut text = String::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' if matches!(chars.get(i + 1), Some('(') | Some(')')) => {
                text.push(chars[i + 1]);
                i += 2;
            }
            '(' => match closing_paren(chars, i) {
                Some(end) => {
                    out.push((std::mem::take(&mut text), weight));
                    let inner = &chars[i + 1..end];
                    let (body, w) = split_weight(inner, weight);
                    segments(body, w, out);
                    i = end + 1;
                }
                None => {
                    text.push('(');
                    i += 1;
                }
            },
            c => {
                text.push(c);
                i += 1;
            }
        }
    }
    out.push((text, weight));
}

/// Index of the `)` closing the `(` at `open`, skipping escaped parentheses.
fn closing_paren(chars: &[char], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = open;
    while i < chars.len() {
        match chars[i] {
            '\\' if matches!(chars.get(i + 1), Some('(') | Some(')')) => i += 1,
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// `text:1.3` → (text, 1.3); anything else → (inner, outer · 1.1). The split is at the last `:`.
fn split_weight(inner: &[char], outer: f32) -> (&[char], f32) {
    if let Some(colon) = inner.iter().rposition(|&c| c == ':') {
        let number: String = inner[colon + 1..].iter().collect();
        if colon > 0 {
            if let Ok(w) = number.trim().parse::<f32>() {
                return (&inner[..colon], w);
            }
        }
    }
    (inner, outer * 1.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(p: &str) -> Vec<(String, f32)> {
        parse_weights(p)
            .into_iter()
            .map(|(t, w)| (t, (w * 1e4).round() / 1e4))
            .collect()
    }

    #[test]
    fn weight_syntax() {
        assert_eq!(weights("a cat"), vec![("a cat".into(), 1.0)]);
        assert_eq!(
            weights("a (cat) dog"),
            vec![
                ("a ".into(), 1.0),
                ("cat".into(), 1.1),
                (" dog".into(), 1.0)
            ]
        );
        assert_eq!(weights("((cat))"), vec![("cat".into(), 1.21)]);
        assert_eq!(weights("(cat:1.3)"), vec![("cat".into(), 1.3)]);
        assert_eq!(weights("((cat:0.5))"), vec![("cat".into(), 0.5)]);
        assert_eq!(weights("(a:b)"), vec![("a:b".into(), 1.1)]);
        assert_eq!(weights(r"\(cat\)"), vec![("(cat)".into(), 1.0)]);
        assert_eq!(weights("(cat"), vec![("(cat".into(), 1.0)]);
        assert_eq!(weights("cat)"), vec![("cat)".into(), 1.0)]);
        assert_eq!(
            weights("(red (cat:1.5) x)"),
            vec![
                ("red ".into(), 1.1),
                ("cat".into(), 1.5),
                (" x".into(), 1.1)
            ]
        );
    }

    fn word(n: usize, id: u32) -> Vec<(u32, f32)> {
        vec![(id, 1.0); n]
    }

    #[test]
    fn packing_moves_short_words_and_splits_long_ones() {
        let chunks = pack(vec![word(70, 1), word(7, 2)]);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].len(), 72);
        assert_eq!(chunks[1].len(), 9);
        let chunks = pack(vec![word(70, 1), word(8, 2)]);
        assert_eq!(chunks[0].len(), 77);
        assert_eq!(chunks[1].len(), 5);
        let empty = pack(vec![]);
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0].ids(Pad::Zero)[..3], [BOS, EOS, 0]);
        assert_eq!(empty[0].ids(Pad::EndOfText)[2], EOS);
    }
}
