//! Scaled dot-product attention shared by the text encoders, the UNet and the VAE. Queries are
//! processed in chunks so that the score matrix never exceeds a fixed budget, whatever the image
//! size (a 1024² VAE decode would otherwise hold a 16384² matrix).

use candle_core::{DType, Result, Tensor};

/// Largest number of score elements (batch·heads·queries·keys) computed at once.
const SCORE_BUDGET: usize = 1 << 24;

/// Multi-head attention on `[B, T, H·d]` inputs, returning `[B, Tq, H·d]`. With `causal`, query
/// `i` sees keys `0..=i` only (text encoders).
pub fn multi_head(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    causal: bool,
) -> Result<Tensor> {
    let (b, tq, width) = q.dims3()?;
    let tk = k.dim(1)?;
    let d = width / heads;
    let split = |t: &Tensor, len: usize| -> Result<Tensor> {
        t.reshape((b, len, heads, d))?.transpose(1, 2)?.contiguous()
    };
    let (q, k, v) = (split(q, tq)?, split(k, tk)?, split(v, tk)?);
    let out = heads_attention(&q, &k, &v, causal)?;
    out.transpose(1, 2)?.reshape((b, tq, width))
}

/// Attention on `[B, H, T, d]` tensors, returned in the input dtype. On the CPU everything runs
/// in f32; on a GPU the two matmuls run in the input dtype (cuBLAS and Metal accumulate half
/// precision in f32) and the softmax in f32.
pub fn heads_attention(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool) -> Result<Tensor> {
    let dtype = q.dtype();
    let work = if q.device().is_cpu() {
        DType::F32
    } else {
        dtype
    };
    let (b, h, tq, d) = q.dims4()?;
    let tk = k.dim(2)?;
    let scale = 1.0 / (d as f64).sqrt();
    let q = (q.to_dtype(work)? * scale)?;
    let k_t = k.to_dtype(work)?.transpose(2, 3)?.contiguous()?;
    let v = v.to_dtype(work)?;
    let rows = (SCORE_BUDGET / (b * h * tk).max(1)).clamp(1, tq);
    let mut outs = Vec::with_capacity(tq.div_ceil(rows));
    let mut start = 0;
    while start < tq {
        let len = rows.min(tq - start);
        let q_chunk = q.narrow(2, start, len)?.contiguous()?;
        let mut scores = q_chunk.matmul(&k_t)?.to_dtype(DType::F32)?;
        if causal {
            scores = scores.broadcast_add(&causal_mask(start, len, tk, q.device())?)?;
        }
        let probs = super::softmax::softmax_last_dim(&scores)?.to_dtype(work)?;
        outs.push(probs.matmul(&v)?);
        start += len;
    }
    Tensor::cat(&outs, 2)?.to_dtype(dtype)
}

/// `[len, tk]` additive mask for query rows `start..start+len`: −∞ above the diagonal.
fn causal_mask(
    start: usize,
    len: usize,
    tk: usize,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let mask: Vec<f32> = (0..len)
        .flat_map(|i| {
            (0..tk).map(move |j| {
                if j > start + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (len, tk), device)
}
