//! Scaled dot-product attention and the small layers both towers share.

use candle_core::{D, DType, Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::Result;

/// Largest attention score block materialized at once, in bytes.
const MAX_SCORE_BYTES: usize = 256 << 20;

/// softmax(q k^T * scale + mask) v for `q`, `k`, `v` of shape (batch, heads, len, dim),
/// with `k` and `v` already repeated to the number of query heads. The scores are in the
/// inputs' dtype, as transformers' eager attention computes them, and the softmax
/// accumulates in f32 whatever the dtype. `mask` is added to the scores and broadcasts to
/// (batch, heads, q, k). Long sequences run in slices of heads so that the score block
/// stays bounded.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let (batch, heads, q_len, _) = q.dims4()?;
    let k_len = k.dim(2)?;
    let per_head = batch * q_len * k_len * q.dtype().size_in_bytes();
    let step = (MAX_SCORE_BYTES / per_head.max(1)).clamp(1, heads);
    let mask = match mask {
        Some(m) => Some(m.to_dtype(q.dtype())?),
        None => None,
    };
    let q = (q * scale)?;
    if step == heads {
        return attention_block(&q, k, v, mask.as_ref());
    }
    let mut outs = Vec::with_capacity(heads.div_ceil(step));
    for start in (0..heads).step_by(step) {
        let n = step.min(heads - start);
        let mask = match &mask {
            Some(m) if m.dim(1)? == heads => Some(m.narrow(1, start, n)?),
            Some(m) => Some(m.clone()),
            None => None,
        };
        outs.push(attention_block(
            &q.narrow(1, start, n)?,
            &k.narrow(1, start, n)?,
            &v.narrow(1, start, n)?,
            mask.as_ref(),
        )?);
    }
    Ok(Tensor::cat(&outs, 1)?)
}

fn attention_block(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let mut scores = q.contiguous()?.matmul(&k.contiguous()?.t()?)?;
    if let Some(mask) = mask {
        scores = scores.broadcast_add(mask)?;
    }
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    Ok(probs.matmul(&v.contiguous()?)?)
}

/// The gated MLP of both towers: down(silu(gate(x)) * up(x)).
#[derive(Debug, Clone)]
pub struct GatedMlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl GatedMlp {
    /// `gate_proj`, `up_proj`, `down_proj` under `vb`, with or without biases.
    pub fn new(hidden: usize, intermediate: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let make = |i, o, name: &str| -> Result<Linear> {
            Ok(if bias {
                candle_nn::linear(i, o, vb.pp(name))?
            } else {
                candle_nn::linear_no_bias(i, o, vb.pp(name))?
            })
        };
        Ok(GatedMlp {
            gate: make(hidden, intermediate, "gate_proj")?,
            up: make(hidden, intermediate, "up_proj")?,
            down: make(intermediate, hidden, "down_proj")?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gated = (self.gate.forward(x)?.silu()? * self.up.forward(x)?)?;
        Ok(self.down.forward(&gated)?)
    }
}

/// RMSNorm as transformers' `Qwen2RMSNorm`: normalized in f32, then scaled.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(RmsNorm {
            weight: vb.get(size, "weight")?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // The fused kernel accumulates in f32 for every dtype; it scales before the final
        // cast where transformers casts first, a difference of one bf16 rounding.
        if x.is_contiguous() {
            return Ok(candle_nn::ops::rms_norm(x, &self.weight, self.eps as f32)?);
        }
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = xf.broadcast_mul(&(var + self.eps)?.sqrt()?.recip()?)?;
        Ok(normed.to_dtype(dtype)?.broadcast_mul(&self.weight)?)
    }
}
