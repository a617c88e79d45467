//! Prompt text to SDXL conditioning for one text (a "workload" in Fooocus terms): chunks encoded
//! by CLIP-L and CLIP-G, token weights applied as Fooocus does, chunk contexts concatenated on the
//! token axis, and the pooled vector of the first chunk.

use candle_core::{DType, Device, Result, Tensor, D};

use crate::nets::sdxl::clip::ClipTextModel;
use crate::nets::sdxl::tokenizer::{Chunk, ClipTokenizer, Pad};
use crate::weights::ModelError;

/// The conditioning of one text.
#[derive(Debug, Clone)]
pub struct TextConditioning {
    /// `[1, 77·chunks, C_L + C_G]` for the base, `[1, 77·chunks, C_G]` for the refiner.
    pub context: Tensor,
    /// `[1, P]`: CLIP-G's pooled vector of the first chunk.
    pub pooled: Tensor,
}

/// The message of an encoding that its caller interrupted (see [`TextEncoders::encode_chunks`]).
pub const INTERRUPTED: &str = "text encoding interrupted";

/// The text encoders of one checkpoint (CLIP-L is absent in refiners).
pub struct TextEncoders<'a> {
    pub clip_l: Option<&'a ClipTextModel>,
    pub clip_g: &'a ClipTextModel,
}

impl TextEncoders<'_> {
    /// Encodes `prompt` (weights and long prompts handled) with the hidden state `clip_skip`
    /// layers from the end.
    pub fn encode(
        &self,
        tokenizer: &ClipTokenizer,
        prompt: &str,
        clip_skip: usize,
    ) -> std::result::Result<TextConditioning, ModelError> {
        let chunks = tokenizer.chunks(prompt)?;
        Ok(self.encode_chunks(&chunks, clip_skip, &|| false)?)
    }

    /// Encodes already tokenized chunks, one at a time (each chunk is its own CLIP input, as in
    /// Fooocus); `interrupted` is asked before each and, when it answers true, encoding ends
    /// with the error [`INTERRUPTED`].
    pub fn encode_chunks(
        &self,
        chunks: &[Chunk],
        clip_skip: usize,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<TextConditioning> {
        let device = self.clip_g.device().clone();
        let weighted = chunks.iter().any(Chunk::is_weighted);
        let mut parts = Vec::with_capacity(2);
        let input = |pad| ChunkInput {
            chunks,
            pad,
            weighted,
            clip_skip,
            interrupted,
        };
        if let Some(clip_l) = self.clip_l {
            let (hidden, _) = encode_weighted(clip_l, &input(Pad::EndOfText), &device)?;
            parts.push(hidden);
        }
        let (hidden, pooled) = encode_weighted(self.clip_g, &input(Pad::Zero), &device)?;
        parts.push(hidden);
        let Some(pooled) = pooled else {
            candle_core::bail!("the CLIP-G encoder has no text projection");
        };
        let context = Tensor::cat(&parts, D::Minus1)?;
        let (n, t, c) = context.dims3()?;
        Ok(TextConditioning {
            context: context.reshape((1, n * t, c))?,
            pooled: pooled.narrow(0, 0, 1)?,
        })
    }
}

/// What one encoder reads: the chunks, their padding, whether weights apply, the layer.
struct ChunkInput<'a> {
    chunks: &'a [Chunk],
    pad: Pad,
    weighted: bool,
    clip_skip: usize,
    interrupted: &'a dyn Fn() -> bool,
}

/// Runs one encoder on each chunk (plus the empty prompt when weights are present) and applies
/// z' = (z − z_empty)·w + z_empty to weighted tokens, then rescales each chunk to its old mean.
/// Returns `[chunks, 77, C]` and the pooled rows.
fn encode_weighted(
    model: &ClipTextModel,
    input: &ChunkInput<'_>,
    device: &Device,
) -> Result<(Tensor, Option<Tensor>)> {
    let ChunkInput {
        chunks, weighted, ..
    } = *input;
    let mut rows: Vec<Vec<u32>> = chunks.iter().map(|c| c.ids(input.pad)).collect();
    if weighted {
        rows.push(Chunk::empty().ids(input.pad));
    }
    let len = rows.first().map_or(0, Vec::len);
    let mut hidden_rows = Vec::with_capacity(rows.len());
    let mut pooled_rows = Vec::with_capacity(rows.len());
    for row in rows {
        if (input.interrupted)() {
            candle_core::bail!("{INTERRUPTED}");
        }
        let out = model.forward(&Tensor::from_vec(row, (1, len), device)?, input.clip_skip)?;
        hidden_rows.push(out.hidden.to_dtype(DType::F32)?);
        pooled_rows.extend(out.pooled);
    }
    let hidden = Tensor::cat(&hidden_rows, 0)?;
    let n = chunks.len();
    let pooled = match pooled_rows.is_empty() {
        true => None,
        false => Some(Tensor::cat(&pooled_rows, 0)?.narrow(0, 0, n)?),
    };
    if !weighted {
        return Ok((hidden, pooled));
    }
    let empty = hidden.get(n)?;
    let mut result = Vec::with_capacity(n);
    for (k, chunk) in chunks.iter().enumerate() {
        let z = hidden.get(k)?;
        let w = Tensor::from_vec(chunk.weights(), (len, 1), device)?;
        let weighted = (z.broadcast_sub(&empty)?.broadcast_mul(&w)? + &empty)?;
        let before = z.mean_all()?;
        let after = weighted.mean_all()?;
        result.push(weighted.broadcast_mul(&(before / after)?)?);
    }
    Ok((Tensor::stack(&result, 0)?, pooled))
}
