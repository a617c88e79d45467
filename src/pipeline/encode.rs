//! Prompt workloads to conditioning: every workload (a style line, the prompt, an extra line) is
//! encoded on its own, their contexts concatenated on the token axis, and the pooled vector is
//! the sum over the first K workloads. Encodings are cached by text until the models change.

use std::collections::HashMap;

use candle_core::{Result, Tensor};

use super::error::PipelineError;
use super::plan::MAX_CHUNKS;
use crate::nets::sdxl::text::{TextConditioning, TextEncoders};
use crate::nets::sdxl::tokenizer::ClipTokenizer;

/// Most encodings kept (each ~0.6 MB at full size); past it the cache starts over, so a long
/// server session with wildcards cannot grow without bound.
const MAX_ENTRIES: usize = 512;

/// Encodings of single texts, valid for one set of text encoders (models and LoRAs).
#[derive(Default)]
pub struct EncodeCache {
    entries: HashMap<(String, usize), TextConditioning>,
}

impl EncodeCache {
    /// Forgets every encoding (the encoders changed).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Encodes `workloads`: contexts concatenated, pooled summed over the first `pooled_count`
    /// (all of them when it exceeds the count). At least one workload is needed. A text over
    /// [`MAX_CHUNKS`] is refused; `interrupted` is asked before every chunk (see
    /// [`TextEncoders::encode_chunks`]).
    pub fn encode(
        &mut self,
        encoders: &TextEncoders<'_>,
        tokenizer: &ClipTokenizer,
        workloads: &[String],
        pooled_count: usize,
        clip_skip: usize,
        interrupted: &dyn Fn() -> bool,
    ) -> std::result::Result<TextConditioning, PipelineError> {
        let mut parts = Vec::with_capacity(workloads.len());
        for text in workloads {
            let key = (text.clone(), clip_skip);
            let cond = match self.entries.get(&key) {
                Some(c) => c.clone(),
                None => {
                    if self.entries.len() >= MAX_ENTRIES {
                        self.entries.clear();
                    }
                    let chunks = tokenizer.chunks(text)?;
                    if chunks.len() > MAX_CHUNKS {
                        return Err(PipelineError::PromptTooLong {
                            chunks: chunks.len(),
                            limit: MAX_CHUNKS,
                        });
                    }
                    let c = encoders.encode_chunks(&chunks, clip_skip, interrupted)?;
                    self.entries.insert(key, c.clone());
                    c
                }
            };
            parts.push(cond);
        }
        Ok(combine(&parts, pooled_count)?)
    }
}

fn combine(parts: &[TextConditioning], pooled_count: usize) -> Result<TextConditioning> {
    let Some(first) = parts.first() else {
        candle_core::bail!("a prompt needs at least one workload");
    };
    let contexts: Vec<&Tensor> = parts.iter().map(|p| &p.context).collect();
    let mut pooled = first.pooled.clone();
    for p in parts.iter().take(pooled_count.max(1)).skip(1) {
        pooled = (pooled + &p.pooled)?;
    }
    Ok(TextConditioning {
        context: Tensor::cat(&contexts, 1)?,
        pooled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn cond(v: f32, tokens: usize) -> TextConditioning {
        TextConditioning {
            context: Tensor::full(v, (1, tokens, 2), &Device::Cpu).unwrap(),
            pooled: Tensor::full(v, (1, 3), &Device::Cpu).unwrap(),
        }
    }

    #[test]
    fn contexts_concatenate_and_pooled_sums_the_first_k() {
        let parts = [cond(1.0, 77), cond(2.0, 154), cond(4.0, 77)];
        let c = combine(&parts, 2).unwrap();
        assert_eq!(c.context.dims(), &[1, 308, 2]);
        assert_eq!(c.pooled.to_vec2::<f32>().unwrap(), vec![vec![3.0; 3]]);
        let all = combine(&parts, 10).unwrap();
        assert_eq!(all.pooled.to_vec2::<f32>().unwrap(), vec![vec![7.0; 3]]);
        assert!(combine(&[], 1).is_err());
    }
}
