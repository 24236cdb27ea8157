//! Scaled dot-product attention and the small layers both towers share.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::Result;
use super::ops::{self, ScoreMask};

/// Largest attention score block materialized at once, in bytes.
const MAX_SCORE_BYTES: usize = 256 << 20;

/// softmax(q k^T * scale, masked) v for `q` (batch, heads, q_len, dim) and `k`, `v`
/// (batch, heads, k_len, dim), already repeated to the number of query heads. The scores
/// are in the inputs' dtype, as transformers' eager attention computes them; the softmax
/// accumulates in f32. Long sequences run in slices of heads so that the score block stays
/// bounded.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: ScoreMask,
    scale: f64,
) -> Result<Tensor> {
    let (batch, heads, q_len, _) = q.dims4()?;
    let k_len = k.dim(2)?;
    let per_head = batch * q_len * k_len * q.dtype().size_in_bytes();
    let step = (MAX_SCORE_BYTES / per_head.max(1)).clamp(1, heads);
    if step == heads {
        return attention_block(q, k, v, mask, scale);
    }
    let mut outs = Vec::with_capacity(heads.div_ceil(step));
    for start in (0..heads).step_by(step) {
        let n = step.min(heads - start);
        outs.push(attention_block(
            &q.narrow(1, start, n)?,
            &k.narrow(1, start, n)?,
            &v.narrow(1, start, n)?,
            mask,
            scale,
        )?);
    }
    Ok(Tensor::cat(&outs, 1)?)
}

fn attention_block(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: ScoreMask,
    scale: f64,
) -> Result<Tensor> {
    let scores = q.contiguous()?.matmul(&k.contiguous()?.t()?)?;
    let probs = ops::masked_softmax(&scores, scale, mask)?;
    Ok(probs.matmul(&v.contiguous()?)?)
}

/// A linear layer whose bias (if any) is added by a fused kernel on CUDA.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// `weight` (out, in) and optional `bias` (out) under `vb`.
    pub fn new(input: usize, output: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((output, input), "weight")?;
        let bias = if bias {
            Some(vb.get(output, "bias")?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let input = dims[dims.len() - 1];
        let rows = x.elem_count() / input.max(1);
        let y = x.reshape((rows, input))?.matmul(&self.weight.t()?)?;
        let y = match &self.bias {
            Some(b) => ops::bias_add(&y, b)?,
            None => y,
        };
        let mut out_dims = dims;
        *out_dims.last_mut().expect("a linear input has dimensions") = y.dim(1)?;
        Ok(y.reshape(out_dims)?)
    }

    /// `residual` + this layer of `x`, for a residual of the output's shape, as one
    /// product on CUDA ([`ops::linear_residual`]).
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let dims = residual.dims().to_vec();
        let input = self.weight.dim(1)?;
        let rows = x.elem_count() / input.max(1);
        let y = ops::linear_residual(
            &x.reshape((rows, input))?,
            &self.weight,
            self.bias.as_ref(),
            &residual.reshape((rows, self.weight.dim(0)?))?,
        )?;
        Ok(y.reshape(dims)?)
    }
}

/// Rounds `n` up to a multiple of 16: matrix products whose inner sizes are not multiples
/// of 8 bf16 values run several times slower on tensor cores (3420 ran at 207 TFLOP/s
/// where 3424 ran at 659 on an H100).
fn padded(n: usize) -> usize {
    n.div_ceil(16) * 16
}

/// Pads `t` with zeros along `dim` to `size`.
fn pad_zeros(t: Tensor, dim: usize, size: usize) -> Result<Tensor> {
    let have = t.dim(dim)?;
    if have == size {
        return Ok(t);
    }
    let mut shape = t.dims().to_vec();
    shape[dim] = size - have;
    let zeros = Tensor::zeros(shape, t.dtype(), t.device())?;
    Ok(Tensor::cat(&[&t, &zeros], dim)?)
}

/// The gated MLP of both towers: down(silu(gate(x)) * up(x)). Gate and up run as one
/// matrix product of their stacked weights. The intermediate size is padded with zero
/// weights to a multiple of 16, which changes no output: the padded gate and up rows give
/// silu(0) * 0 = 0, and the padded down columns multiply zeros.
#[derive(Debug, Clone)]
pub struct GatedMlp {
    /// (2 * padded intermediate, hidden): the gate rows, then the up rows.
    gate_up: Tensor,
    /// Their biases (zeros when the checkpoint has none).
    gate_up_bias: Tensor,
    /// (hidden, padded intermediate).
    down: Tensor,
    down_bias: Option<Tensor>,
}

impl GatedMlp {
    /// `gate_proj`, `up_proj`, `down_proj` under `vb`, with or without biases.
    pub fn new(hidden: usize, intermediate: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let wide = padded(intermediate);
        let weight =
            |name: &str| pad_zeros(vb.pp(name).get((intermediate, hidden), "weight")?, 0, wide);
        let bias_of = |name: &str| -> Result<Tensor> {
            if bias {
                pad_zeros(vb.pp(name).get(intermediate, "bias")?, 0, wide)
            } else {
                Ok(Tensor::zeros(wide, vb.dtype(), vb.device())?)
            }
        };
        let gate_up = Tensor::cat(&[&weight("gate_proj")?, &weight("up_proj")?], 0)?;
        let gate_up_bias = Tensor::cat(&[&bias_of("gate_proj")?, &bias_of("up_proj")?], 0)?;
        let down_vb = vb.pp("down_proj");
        let down =
            pad_zeros(down_vb.get((hidden, intermediate), "weight")?, 1, wide)?.contiguous()?;
        let down_bias = if bias {
            Some(down_vb.get(hidden, "bias")?)
        } else {
            None
        };
        Ok(GatedMlp {
            gate_up,
            gate_up_bias,
            down,
            down_bias,
        })
    }

    /// `residual` + mlp(`x`), for `x` and `residual` of the same shape (.., hidden).
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let hidden = dims[dims.len() - 1];
        let rows = x.elem_count() / hidden;
        let h = x.reshape((rows, hidden))?.matmul(&self.gate_up.t()?)?;
        let gated = ops::bias_swiglu(&h, &self.gate_up_bias)?;
        let out = ops::linear_residual(
            &gated,
            &self.down,
            self.down_bias.as_ref(),
            &residual.reshape((rows, hidden))?,
        )?;
        Ok(out.reshape(dims)?)
    }
}

/// RMSNorm as transformers' `Qwen2RMSNorm` computes it: the mean of the squares in f32,
/// then the scale (in f32 on the GPU; for bf16 on the CPU candle rounds the scale to bf16
/// first, but the CPU runs f32). It multiplies by the weight before the final cast where
/// transformers casts first: one bf16 rounding apart, and closer to the f32 result.
/// [`ops::rms_norm`] decides the kernel.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::rms_norm(x, &self.weight, self.eps)
    }
}

/// The RMSNorm of `size` values whose weight is `weight` under `vb`.
pub fn rms_norm(size: usize, eps: f64, vb: VarBuilder) -> Result<RmsNorm> {
    Ok(RmsNorm {
        weight: vb.get(size, "weight")?,
        eps,
    })
}
