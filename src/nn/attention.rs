//! Scaled dot-product attention shared by the text encoders, the UNet and the VAE. On the CPU it
//! runs the fused kernel of `kernels::attention` (in f32, whatever the input dtype); elsewhere
//! queries are processed in chunks so that the score matrix never exceeds a fixed budget, whatever the image size (a 1024² VAE decode would
//! otherwise hold a 16384² matrix).

use candle_core::{CpuStorage, DType, Layout, Result, Storage, Tensor};

use crate::kernels::attention::{attention, Operand, OutputOrder, Sizes, Strides};
use crate::nn::Kernels;

/// Largest number of score elements (batch·heads·queries·keys) computed at once.
const SCORE_BUDGET: usize = 1 << 24;

/// Multi-head attention on `[B, T, H·d]` inputs, returning `[B, Tq, H·d]`. With `causal`, query
/// `i` sees keys `0..=i` only (text encoders).
pub fn multi_head(
    kernels: Kernels,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    causal: bool,
) -> Result<Tensor> {
    let (b, tq, width) = q.dims3()?;
    let tk = k.dim(1)?;
    if heads == 0 || width % heads != 0 {
        candle_core::bail!("attention: width {width} does not split into {heads} heads");
    }
    let d = width / heads;
    // `[B, T, H·d]` seen as `[B, H, T, d]` without copying.
    let split = |t: &Tensor, len: usize| -> Result<Tensor> {
        t.reshape((b, len, heads, d))?.transpose(1, 2)
    };
    let (q, k, v) = (split(q, tq)?, split(k, tk)?, split(v, tk)?);
    if fused_on_cpu(kernels, &q) {
        let out = fused(&q, &k, &v, causal, OutputOrder::TokensMajor)?;
        return out.transpose(1, 2)?.reshape((b, tq, width));
    }
    let out = chunked(&q.contiguous()?, &k.contiguous()?, &v.contiguous()?, causal)?;
    out.transpose(1, 2)?.reshape((b, tq, width))
}

/// Attention on `[B, H, T, d]` tensors of any strides, returned contiguous in the input dtype.
pub fn heads_attention(
    kernels: Kernels,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    causal: bool,
) -> Result<Tensor> {
    if fused_on_cpu(kernels, q) {
        return fused(q, k, v, causal, OutputOrder::HeadsMajor);
    }
    chunked(q, k, v, causal)
}

/// Whether the fused CPU kernel runs (with our kernels on, on the CPU, in any dtype).
fn fused_on_cpu(kernels: Kernels, q: &Tensor) -> bool {
    kernels.own && q.device().is_cpu()
}

/// The fused CPU kernel in f32, the result cast back to the input dtype.
fn fused(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool, order: OutputOrder) -> Result<Tensor> {
    let dtype = q.dtype();
    let (q, k, v) = (
        q.to_dtype(DType::F32)?,
        k.to_dtype(DType::F32)?,
        v.to_dtype(DType::F32)?,
    );
    let (b, h, tq, d) = q.dims4()?;
    let tk = k.dim(2)?;
    if k.dims() != [b, h, tk, d] || v.dims() != [b, h, tk, d] {
        candle_core::bail!(
            "attention: q {:?}, k {:?} and v {:?} do not match",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    let out = {
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let sizes = Sizes { b, h, tq, tk, d };
        attention(
            operand(&qs, ql)?,
            operand(&ks, kl)?,
            operand(&vs, vl)?,
            sizes,
            causal,
            order,
        )
        .map_err(candle_core::Error::wrap)?
    };
    let device = q.device();
    match order {
        OutputOrder::HeadsMajor => Tensor::from_vec(out, (b, h, tq, d), device)?.to_dtype(dtype),
        OutputOrder::TokensMajor => Tensor::from_vec(out, (b, tq, h, d), device)?
            .transpose(1, 2)?
            .to_dtype(dtype),
    }
}

/// A 4-D f32 CPU tensor's storage as the kernel's operand.
fn operand<'a>(storage: &'a Storage, layout: &Layout) -> Result<Operand<'a>> {
    let Storage::Cpu(CpuStorage::F32(data)) = storage else {
        candle_core::bail!("fused attention expects f32 CPU tensors");
    };
    let &[batch, head, row, col] = layout.stride() else {
        candle_core::bail!("attention expects 4-D operands, got {:?}", layout.dims());
    };
    let strides = Strides {
        start: layout.start_offset(),
        batch,
        head,
        row,
        col,
    };
    Ok(Operand { data, strides })
}

/// Attention in query chunks through tensor ops. On the CPU everything runs in f32; on a GPU the
/// two matmuls run in the input dtype (cuBLAS and Metal accumulate half precision in f32) and the
/// softmax in f32.
fn chunked(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool) -> Result<Tensor> {
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
    let v = v.to_dtype(work)?.contiguous()?;
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
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(work)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    /// The fused CPU kernel matches the chunked tensor-op path: strided `[B, T, H·d]` heads,
    /// causal or not, keys fewer or more than a block of queries, transposed operands.
    #[test]
    fn fused_matches_chunked() -> Result<()> {
        let dev = Device::Cpu;
        for (tq, tk, causal) in [
            (77, 77, true),
            (300, 300, true),
            (300, 77, false),
            (70, 700, false),
        ] {
            let q = Tensor::randn(0f32, 1.0, (2, tq, 24), &dev)?;
            let k = Tensor::randn(0f32, 1.0, (2, tk, 24), &dev)?;
            let v = Tensor::randn(0f32, 1.0, (2, tk, 24), &dev)?;
            let split = |t: &Tensor, len: usize| t.reshape((2, len, 3, 8))?.transpose(1, 2);
            let (qh, kh, vh) = (split(&q, tq)?, split(&k, tk)?, split(&v, tk)?);
            let want = chunked(
                &qh.contiguous()?,
                &kh.contiguous()?,
                &vh.contiguous()?,
                causal,
            )?;
            let heads = fused(&qh, &kh, &vh, causal, OutputOrder::HeadsMajor)?;
            assert!(heads.is_contiguous());
            assert!(max_diff(&heads, &want)? < 1e-5, "{tq}×{tk} heads-major");
            let tokens = multi_head(Kernels::default(), &q, &k, &v, 3, causal)?;
            let want_tokens = want.transpose(1, 2)?.reshape((2, tq, 24))?;
            assert!(
                max_diff(&tokens, &want_tokens)? < 1e-5,
                "{tq}×{tk} tokens-major"
            );
        }
        // The VAE's operands: `[B, 1, C, T]` storage read as `[B, 1, T, C]`.
        let raw = Tensor::randn(0f32, 1.0, (1, 1, 16, 90), &dev)?;
        let t = raw.transpose(2, 3)?;
        let want = chunked(&t.contiguous()?, &t.contiguous()?, &t.contiguous()?, false)?;
        let fused = heads_attention(Kernels::default(), &t, &t, &t, false)?;
        assert!(max_diff(&fused, &want)? < 1e-5);
        Ok(())
    }

    /// Half-precision inputs run through the fused kernel in f32 and come back in their dtype.
    #[test]
    fn fused_keeps_the_dtype() -> Result<()> {
        let q = Tensor::randn(0f32, 1.0, (1, 2, 5, 4), &Device::Cpu)?;
        let got = heads_attention(
            Kernels::default(),
            &q.to_dtype(DType::F16)?,
            &q.to_dtype(DType::F16)?,
            &q.to_dtype(DType::F16)?,
            false,
        )?;
        assert_eq!(got.dtype(), DType::F16);
        let want = chunked(&q, &q, &q, false)?;
        assert!(max_diff(&got.to_dtype(DType::F32)?, &want)? < 1e-2);
        Ok(())
    }
}
