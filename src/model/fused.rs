//! Steps that run as one fused kernel on CUDA (src/kernels/fused.cu) and as plain candle
//! operations elsewhere. Both compute the same function; the CPU versions are what the
//! parity tests check against transformers.

use candle_core::{DType, Tensor};

use super::Result;

/// Largest element count the fused kernels index with 32 bits.
#[cfg(feature = "cuda")]
const MAX_FUSED_ELEMENTS: usize = u32::MAX as usize;

/// True when `t` can go through the fused kernels.
#[cfg(feature = "cuda")]
fn fusable(t: &Tensor) -> bool {
    t.device().is_cuda()
        && t.is_contiguous()
        && matches!(t.dtype(), DType::BF16 | DType::F32)
        && t.elem_count() < MAX_FUSED_ELEMENTS
}

/// `x` (.., cols) + `bias` (cols).
pub fn bias_add(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if fusable(x) && bias.is_contiguous() && bias.dtype() == x.dtype() {
        return Ok(super::kernels::bias_add(x, bias)?);
    }
    Ok(x.broadcast_add(bias)?)
}

/// silu(gate) * up.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if fusable(gate)
        && up.is_contiguous()
        && up.dtype() == gate.dtype()
        && up.shape() == gate.shape()
    {
        return Ok(super::kernels::swiglu(gate, up)?);
    }
    Ok((gate.silu()? * up)?)
}

/// Which keys each attention score row may see.
#[derive(Debug, Clone, Copy)]
pub enum ScoreMask<'a> {
    /// Every key.
    All,
    /// Scores (.., q_len, past + q_len): query i sees keys 0 ..= past + i.
    Causal,
    /// Scores (segments, heads, len, len) of padded segments: segment s has `host[s]` real
    /// keys; `device` holds the same lengths as u32 on the scores' device.
    Segments { host: &'a [u32], device: &'a Tensor },
}

/// softmax(scale * scores) along the last dimension, masked. The softmax accumulates in
/// f32; masked entries become 0.
pub fn masked_softmax(scores: &Tensor, scale: f64, mask: ScoreMask) -> Result<Tensor> {
    let dims = scores.dims().to_vec();
    let (q_len, k_len) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    #[cfg(feature = "cuda")]
    if fusable(scores) {
        use super::kernels::{RowMask, softmax_rows};
        let (row_mask, lengths) = match mask {
            ScoreMask::All => (RowMask::None, None),
            ScoreMask::Causal => (
                RowMask::Causal {
                    q_len: q_len as u32,
                    past: (k_len - q_len) as u32,
                },
                None,
            ),
            ScoreMask::Segments { device, .. } => (
                RowMask::Segments {
                    rows_per_segment: (scores.elem_count() / k_len / dims[0]) as u32,
                },
                Some(device),
            ),
        };
        let dummy;
        let lengths = match lengths {
            Some(l) => l,
            None => {
                dummy = Tensor::zeros(1, DType::U32, scores.device())?;
                &dummy
            }
        };
        return Ok(softmax_rows(scores, scale as f32, row_mask, lengths)?);
    }
    let scaled = (scores * scale)?;
    let masked = match mask {
        ScoreMask::All => scaled,
        ScoreMask::Causal => {
            let past = k_len - q_len;
            let m: Vec<f32> = (0..q_len)
                .flat_map(|i| {
                    (0..k_len).map(move |j| {
                        if j <= past + i {
                            0.0
                        } else {
                            f32::NEG_INFINITY
                        }
                    })
                })
                .collect();
            let m =
                Tensor::from_vec(m, (q_len, k_len), scores.device())?.to_dtype(scores.dtype())?;
            scaled.broadcast_add(&m)?
        }
        ScoreMask::Segments { host, .. } => {
            let m: Vec<f32> = host
                .iter()
                .flat_map(|&len| {
                    (0..k_len).map(move |j| {
                        if j < len as usize {
                            0.0
                        } else {
                            f32::NEG_INFINITY
                        }
                    })
                })
                .collect();
            let m = Tensor::from_vec(m, (host.len(), 1, 1, k_len), scores.device())?
                .to_dtype(scores.dtype())?;
            scaled.broadcast_add(&m)?
        }
    };
    Ok(candle_nn::ops::softmax_last_dim(&masked)?)
}

/// Rotary embedding (rotate-half) of `x` (rows, heads, dim) with f32 `cos`, `sin`
/// (rows, dim / 2), computed in f32 and returned in `x`'s dtype.
pub fn rope_rows(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if fusable(x) && cos.is_contiguous() && sin.is_contiguous() && cos.dtype() == DType::F32 {
        return Ok(super::kernels::rope_rows(x, cos, sin)?);
    }
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?.unsqueeze(0)?.contiguous()?; // (1, rows, heads, dim)
    Ok(candle_nn::rotary_emb::rope_thd(&xf, cos, sin)?
        .squeeze(0)?
        .to_dtype(dtype)?)
}
