//! The model's fused steps: each runs as one CUDA kernel on the GPU ([`super::cuda`], device
//! code in src/kernels/) and as plain candle operations elsewhere. Both compute the same
//! function; the plain versions are what the parity tests check against transformers.

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

/// Whether attention on CUDA runs as the fused flash-attention kernel: on unless the
/// environment sets `LYCHEE_FLASH=0` (for side-by-side measurements and for ruling the
/// kernel out when a result looks wrong).
#[cfg(feature = "cuda")]
pub fn flash_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("LYCHEE_FLASH").map_or(true, |v| v.trim() != "0"))
}

/// Whether the vision tower's flash-attention blocks follow its windows and photos (each
/// block's rows in one segment) rather than every tiling's rows from row 0: on unless
/// `LYCHEE_FLASH_BLOCKS=rows` (for side-by-side measurements).
#[cfg(feature = "cuda")]
pub fn flash_blocks_by_segment() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("LYCHEE_FLASH_BLOCKS").map_or(true, |v| v.trim() != "rows"))
}

/// True when `t` can be read by the flash-attention kernel: bf16 on CUDA, contiguous,
/// starting on a 16-byte boundary.
#[cfg(feature = "cuda")]
pub fn flash_ready(t: &Tensor) -> bool {
    t.device().is_cuda()
        && t.dtype() == DType::BF16
        && t.is_contiguous()
        && t.layout().start_offset().is_multiple_of(8)
}

/// `x` (.., cols) + `bias` (cols).
pub fn bias_add(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if fusable(x) && bias.is_contiguous() && bias.dtype() == x.dtype() {
        return Ok(super::cuda::bias_add(x, bias)?);
    }
    Ok(x.broadcast_add(bias)?)
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
    Segments {
        host: &'a [u32],
        #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
        device: &'a Tensor,
    },
}

/// softmax(scale * scores) along the last dimension, masked. The softmax accumulates in
/// f32; masked entries become 0.
pub fn masked_softmax(scores: &Tensor, scale: f64, mask: ScoreMask) -> Result<Tensor> {
    let dims = scores.dims().to_vec();
    let (q_len, k_len) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    #[cfg(feature = "cuda")]
    if fusable(scores) {
        use super::cuda::{RowMask, softmax_rows};
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
        return Ok(super::cuda::rope_rows(x, cos, sin)?);
    }
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?.unsqueeze(0)?.contiguous()?; // (1, rows, heads, dim)
    Ok(candle_nn::rotary_emb::rope_thd(&xf, cos, sin)?
        .squeeze(0)?
        .to_dtype(dtype)?)
}

/// The q, k, v of a fused projection output `x` (rows, (q_heads + 2 kv_heads) * dim):
/// `bias` added, rotary (f32 tables (rows, dim / 2), computed in f32) applied to q and k.
/// Each comes back (rows, heads, dim), or (rows / seq, heads, seq, dim) when `seq` is given.
#[allow(clippy::too_many_arguments)]
pub fn qkv_epilogue(
    x: &Tensor,
    bias: &Tensor,
    rope: &(Tensor, Tensor),
    q_heads: usize,
    kv_heads: usize,
    dim: usize,
    seq: Option<usize>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let rows = x.dim(0)?;
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    let shape = |heads: usize| -> Vec<usize> {
        match seq {
            Some(s) => vec![rows / s, heads, s, dim],
            None => vec![rows, heads, dim],
        }
    };
    #[cfg(feature = "cuda")]
    if fusable(x)
        && bias.is_contiguous()
        && rope.0.dtype() == DType::F32
        && rope.0.is_contiguous()
        && rope.1.is_contiguous()
    {
        let heads = (q_heads, kv_heads, dim);
        let all = super::cuda::qkv_epilogue(x, bias, rope, heads, seq.unwrap_or(0))?;
        let (nq, nkv) = (rows * q_heads * dim, rows * kv_heads * dim);
        return Ok((
            all.narrow(0, 0, nq)?.reshape(shape(q_heads))?,
            all.narrow(0, nq, nkv)?.reshape(shape(kv_heads))?,
            all.narrow(0, nq + nkv, nkv)?.reshape(shape(kv_heads))?,
        ));
    }
    let y = x.broadcast_add(bias)?;
    let part = |start: usize, heads: usize, rotate: bool| -> Result<Tensor> {
        let t = y
            .narrow(1, start * dim, heads * dim)?
            .contiguous()?
            .reshape((rows, heads, dim))?;
        let t = if rotate {
            rope_rows(&t, &rope.0, &rope.1)?
        } else {
            t
        };
        Ok(match seq {
            Some(s) => t
                .reshape((rows / s, s, heads, dim))?
                .transpose(1, 2)?
                .contiguous()?,
            None => t,
        })
    };
    Ok((
        part(0, q_heads, true)?,
        part(q_heads, kv_heads, true)?,
        part(q_heads + kv_heads, kv_heads, false)?,
    ))
}

/// silu(x[.., :n] + bias[:n]) * (x[.., n:] + bias[n:]) for x (rows, 2n).
pub fn bias_swiglu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if fusable(x) && bias.is_contiguous() && x.rank() == 2 {
        return Ok(super::cuda::bias_swiglu(x, bias)?);
    }
    let half = x.dim(1)? / 2;
    let y = x.broadcast_add(bias)?;
    Ok((y.narrow(1, 0, half)?.silu()? * y.narrow(1, half, half)?)?)
}

/// residual + x (+ bias over the last dimension).
pub fn bias_residual(x: &Tensor, bias: Option<&Tensor>, residual: &Tensor) -> Result<Tensor> {
    let Some(bias) = bias else {
        return residual_add(x, residual);
    };
    #[cfg(feature = "cuda")]
    if fusable(x)
        && bias.is_contiguous()
        && residual.is_contiguous()
        && residual.shape() == x.shape()
    {
        return Ok(super::cuda::bias_residual(x, bias, residual)?);
    }
    Ok((residual + x.broadcast_add(bias)?)?)
}

/// Shortest inner dimension at which [`linear_residual`] runs as one product: below it, the
/// product's epilogue (reading the residual, adding the bias) weighs more than the pass it
/// saves. Measured on the H200 at a batch of eight (`bench --ops`): the vision tower's
/// output projection (k = 1 280) took 229 us as one product against 205 us as a product and
/// a pass; its MLP down projection (k = 3 424) 412 against 420, the language model's output
/// projection (k = 3 584) 269 against 296, its MLP down projection (k = 18 944) 1 332
/// against 1 364.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub const FUSED_PRODUCT_MIN_K: usize = 2048;

/// residual + x w^T (+ bias) for x (rows, k), w (n, k), residual (rows, n). On CUDA in bf16,
/// from an inner size of [`FUSED_PRODUCT_MIN_K`]: one cuBLASLt product with its first-guess
/// algorithm, which reads the residual as its C and adds the bias in its epilogue (one bf16
/// rounding of the sum instead of two, no pass over the product); below it, and elsewhere,
/// the product and then [`bias_residual`].
///
/// With `LYCHEE_TUNED_PRODUCTS=1`, instead, whichever of cuBLASLt's candidates and the
/// product-then-pass the GPU ran fastest the first time a product of this size came
/// (`cuda::linear_residual_tuned`; kept on disk for the next runs). At a batch of eight on the
/// H200 (`bench --ops`), the vision tower's output projection took 201 us with the first
/// guess, 165-167 with the fastest candidate and 206-222 as the product and the pass; its
/// MLP down projection 421-424, 397-400 and 426-432.
pub fn linear_residual(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: &Tensor,
) -> Result<Tensor> {
    let unfused = || bias_residual(&x.matmul(&w.t()?)?, bias, residual);
    #[cfg(feature = "cuda")]
    if fused_products() && super::cuda::linear_residual_fits(x, w, bias, residual) {
        if tuned_products() {
            let unfused = || unfused().map_err(|e| candle_core::Error::Msg(e.to_string()));
            return Ok(super::cuda::linear_residual_tuned(
                x, w, bias, residual, &unfused,
            )?);
        }
        // None: no cuBLASLt algorithm for this shape on this GPU.
        if x.dim(candle_core::D::Minus1)? >= FUSED_PRODUCT_MIN_K
            && let Some(y) = super::cuda::linear_residual(x, w, bias, residual)?
        {
            return Ok(y);
        }
    }
    unfused()
}

/// Whether [`linear_residual`] fuses on CUDA: on unless the environment sets
/// `LYCHEE_FUSED_PRODUCTS=0` (for side-by-side measurements).
#[cfg(feature = "cuda")]
fn fused_products() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("LYCHEE_FUSED_PRODUCTS").map_or(true, |v| v.trim() != "0"))
}

/// Whether [`linear_residual`] picks by measurement on CUDA: only where the environment
/// sets `LYCHEE_TUNED_PRODUCTS=1`. Measured on the H200 (docs/PERFORMANCE.md), the choice
/// gained 0.3 % over a 256-photo ranking, within the spread between runs, and its scores
/// were not yet checked against transformers, so it is not the default.
#[cfg(feature = "cuda")]
fn tuned_products() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("LYCHEE_TUNED_PRODUCTS").is_ok_and(|v| v.trim() == "1"))
}

/// residual + x, both of the same shape.
pub fn residual_add(x: &Tensor, residual: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if fusable(x)
        && x.dtype() == DType::BF16
        && residual.is_contiguous()
        && residual.shape() == x.shape()
        && x.dim(candle_core::D::Minus1)?.is_multiple_of(8)
    {
        return Ok(super::cuda::residual_add(x, residual)?);
    }
    Ok((residual + x)?)
}

/// RMSNorm over the last dimension with weight `w`: x * rsqrt(mean(x^2) + eps) * w, the
/// mean in f32 (transformers' `Qwen2RMSNorm`). candle's kernel elsewhere; on CUDA, bf16
/// rows of a multiple of 8 values go through the one-warp-per-row kernel, which computes
/// the same in f32 (the sum of squares in another order).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    {
        let cols = x.dim(candle_core::D::Minus1)?;
        if fusable(x)
            && x.dtype() == DType::BF16
            && w.dtype() == DType::BF16
            && w.is_contiguous()
            && cols.is_multiple_of(8)
            && cols <= super::cuda::RMS_NORM_MAX_COLS
        {
            return Ok(super::cuda::rms_norm(x, w, eps as f32)?);
        }
    }
    // candle's operation reads contiguous rows.
    Ok(candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    fn close(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn rms_norm_is_qwen2s_and_reads_any_layout() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 2.0, (24, 16), &dev).unwrap();
        let w = Tensor::randn(1f32, 0.1, 24, &dev).unwrap();
        // (16, 24) seen through a transpose: not contiguous.
        let xt = x.t().unwrap();
        assert!(!xt.is_contiguous());
        let got = rms_norm(&xt, &w, 1e-6).unwrap();
        // x / sqrt(mean(x^2) + eps) * w, row by row in f64.
        let rows: Vec<Vec<f32>> = xt.contiguous().unwrap().to_vec2().unwrap();
        let wv: Vec<f32> = w.to_vec1().unwrap();
        let want: Vec<f32> = rows
            .iter()
            .flat_map(|r| {
                let ms = r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / r.len() as f64;
                let s = 1.0 / (ms + 1e-6).sqrt();
                r.iter()
                    .zip(&wv)
                    .map(move |(&v, &g)| (v as f64 * s * g as f64) as f32)
                    .collect::<Vec<_>>()
            })
            .collect();
        let want = Tensor::from_vec(want, (16, 24), &dev).unwrap();
        assert!(close(&got, &want) < 1e-5);
    }

    #[test]
    fn residuals_add_with_and_without_a_bias() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (5, 8), &dev).unwrap();
        let r = Tensor::randn(0f32, 1.0, (5, 8), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 8, &dev).unwrap();
        assert_eq!(
            close(&residual_add(&x, &r).unwrap(), &(&r + &x).unwrap()),
            0.0
        );
        assert_eq!(
            close(&bias_residual(&x, None, &r).unwrap(), &(&r + &x).unwrap()),
            0.0
        );
        let with = bias_residual(&x, Some(&b), &r).unwrap();
        let want = (&r + x.broadcast_add(&b).unwrap()).unwrap();
        assert!(close(&with, &want) < 1e-6);
    }

    #[test]
    fn a_product_adds_to_its_residual() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (5, 16), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (8, 16), &dev).unwrap();
        let r = Tensor::randn(0f32, 1.0, (5, 8), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 8, &dev).unwrap();
        // Row i, column j: r[i][j] + b[j] + sum over k of x[i][k] w[j][k], by hand.
        let (xv, wv) = (x.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
        let (rv, bv) = (r.to_vec2::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
        for bias in [None, Some(&b)] {
            let got = linear_residual(&x, &w, bias, &r).unwrap();
            let got = got.to_vec2::<f32>().unwrap();
            for i in 0..5 {
                for j in 0..8 {
                    let dot: f32 = (0..16).map(|k| xv[i][k] * wv[j][k]).sum();
                    let want = rv[i][j] + dot + bias.map_or(0.0, |_| bv[j]);
                    assert!((got[i][j] - want).abs() < 1e-4, "{i} {j}");
                }
            }
        }
    }
}
