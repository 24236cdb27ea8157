//! The flash-attention kernel at the model's shapes: its largest difference from an f32
//! reference that materializes the scores, and its time against the materialized bf16
//! path it replaces. A difference beyond bf16 rounding fails the command.

use candle_core::{DType, Device, Result, Tensor};

use super::{OpTiming, time};
use crate::model::cuda;
use crate::model::layers::attention;
use crate::model::ops::ScoreMask;
use crate::model::vision::WindowLayout;

/// Largest allowed |flash - reference| for outputs of unit-variance inputs: a few bf16
/// roundings of values below 4.
const TOLERANCE: f32 = 0.05;

fn msg(e: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

fn randn(shape: &[usize], device: &Device) -> Result<Tensor> {
    Tensor::randn(0f32, 1.0, shape, device)?.to_dtype(DType::BF16)
}

/// softmax(q k^T * scale) v in f32 for (heads, n, d) q and (heads, m, d) k, v, where
/// `allowed` (n, m; u8) says which keys each query sees.
fn reference(q: &Tensor, k: &Tensor, v: &Tensor, allowed: &Tensor, scale: f64) -> Result<Tensor> {
    let (q, k, v) = (
        q.to_dtype(DType::F32)?,
        k.to_dtype(DType::F32)?,
        v.to_dtype(DType::F32)?,
    );
    let s = (q.matmul(&k.t()?)? * scale)?;
    let neg = Tensor::full(f32::NEG_INFINITY, s.shape(), s.device())?;
    let s = allowed.broadcast_as(s.shape())?.where_cond(&s, &neg)?;
    candle_nn::ops::softmax_last_dim(&s)?.matmul(&v)
}

fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()
}

/// The flash kernel's time and rate, the time of the path it replaces and its largest
/// difference from the reference, which must stay within bf16 rounding.
fn timing(name: &str, flops: f64, flash_us: f64, old_us: f64, diff: f32) -> Result<OpTiming> {
    if diff.is_nan() || diff > TOLERANCE {
        candle_core::bail!("flash attention differs from the f32 reference by {diff} in {name}");
    }
    let detail = if old_us.is_nan() {
        format!(
            "flash ({:.0} TFLOP/s)  max |diff| {diff:.4}",
            flops / flash_us / 1e6
        )
    } else {
        format!(
            "flash ({:.0} TFLOP/s)  materialized {old_us:>8.1} us  max |diff| vs f32 {diff:.4}",
            flops / flash_us / 1e6
        )
    };
    Ok(OpTiming::new(name, flash_us, detail))
}

/// Rows 0..n in segments given by `bounds`: per-row key ranges, and the (n, n) mask
/// when `mask` is asked for.
fn segments(
    bounds: &[u32],
    mask: bool,
    device: &Device,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let n = *bounds.last().unwrap_or(&0) as usize;
    let (mut lo, mut hi) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for b in bounds.windows(2) {
        for _ in b[0]..b[1] {
            lo.push(b[0]);
            hi.push(b[1]);
        }
    }
    let allowed = if mask {
        let mut allowed = vec![0u8; n * n];
        for i in 0..n {
            for j in lo[i]..hi[i] {
                allowed[i * n + j as usize] = 1;
            }
        }
        Some(Tensor::from_vec(allowed, (n, n), device)?)
    } else {
        None
    };
    Ok((
        Tensor::from_vec(lo, n, device)?,
        Tensor::from_vec(hi, n, device)?,
        allowed,
    ))
}

/// "8x64": warps per block and key rows per tile (then rows per warp, where not 16).
fn tile_name(t: cuda::Tiling) -> String {
    t.to_string()
}

pub fn run(device: &Device, report: &mut dyn FnMut(OpTiming)) -> Result<()> {
    vision(device, report)?;
    text(device, report)
}

/// The vision tower: 16 heads of 80, 3 996 patches per 1024x768 photo (54 x 74 patches), as
/// one segment per photo (the full-attention blocks) or in the tower's windows (of 64, 48,
/// 16 and 12 rows, so that most windows do not start on a block's first row). Checked
/// against the f32 reference on two photos, timed on one and on eight, in every compiled
/// tiling, with the blocks every tiling's rows from row 0 and following the segments; the
/// materialized path is timed on one photo.
fn vision(device: &Device, report: &mut dyn FnMut(OpTiming)) -> Result<()> {
    let scale = 80f64.powf(-0.5);
    let heads_first = |t: &Tensor| t.transpose(0, 1)?.contiguous();
    let cfg = crate::model::config::VisionConfig::default();
    for windowed in [false, true] {
        let bounds = |photos: usize| -> Vec<usize> {
            let layout = WindowLayout::new(&cfg, &vec![(54, 74); photos]);
            if windowed {
                layout.window_bounds
            } else {
                layout.image_bounds
            }
        };
        let kind = if windowed { "windows" } else { "full" };
        let use_ = if windowed {
            cuda::FlashUse::Windows
        } else {
            cuda::FlashUse::Full
        };
        for photos in [2usize, 1, 8] {
            let b = bounds(photos);
            let b32: Vec<u32> = b.iter().map(|&x| x as u32).collect();
            let rows = *b.last().unwrap_or(&0);
            let (q, k, v) = (
                randn(&[rows, 16, 80], device)?,
                randn(&[rows, 16, 80], device)?,
                randn(&[rows, 16, 80], device)?,
            );
            let (lo, hi, allowed) = segments(&b32, photos == 2, device)?;
            let pairs: f64 = b.windows(2).map(|w| ((w[1] - w[0]) as f64).powi(2)).sum();
            let flops = 4.0 * pairs * 16.0 * 80.0;
            // The f32 reference on two photos; elsewhere the first tiling's output
            // (itself checked on two photos).
            let want = match &allowed {
                Some(allowed) => {
                    let (qh, kh, vh) = (heads_first(&q)?, heads_first(&k)?, heads_first(&v)?);
                    Some(reference(&qh, &kh, &vh, allowed, scale)?)
                }
                None => None,
            };
            let mut first: Option<Tensor> = None;
            for t in cuda::flash_tilings(80, device.as_cuda_device()?) {
                let starts = cuda::BlockStarts::new(&b, t.block_rows(), device)?;
                for by_segment in [false, true] {
                    let table = by_segment.then_some(&starts);
                    let flash = || {
                        cuda::flash_rows(&q, &k, &v, &lo, &hi, table, scale as f32, use_, Some(t))
                    };
                    let out = heads_first(&flash()?)?;
                    let diff = match (&want, &first) {
                        (Some(w), _) => max_diff(&out, w)?,
                        (None, Some(f)) => max_diff(&out, f)?,
                        (None, None) => 0.0,
                    };
                    if first.is_none() {
                        first = Some(out);
                    }
                    let blocks = if by_segment {
                        if windowed {
                            ", blocks by window"
                        } else {
                            ", blocks by photo"
                        }
                    } else {
                        ""
                    };
                    let name = format!(
                        "vision {kind} {photos} x 16 x 3996x80, {}{blocks}",
                        tile_name(t)
                    );
                    let runs = if photos == 2 { 5 } else { 20 };
                    let flash_us = time(device, runs, flash)?;
                    report(timing(&name, flops, flash_us, f64::NAN, diff)?);
                }
            }
            if photos == 1 {
                let (qh, kh, vh) = (heads_first(&q)?, heads_first(&k)?, heads_first(&v)?);
                let old_us = if !windowed {
                    time(device, 20, || {
                        attention(
                            &qh.unsqueeze(0)?,
                            &kh.unsqueeze(0)?,
                            &vh.unsqueeze(0)?,
                            ScoreMask::All,
                            scale,
                        )
                        .map_err(msg)
                    })?
                } else {
                    let longest = b.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
                    let bt = Tensor::new(b32.as_slice(), device)?;
                    time(device, 20, || {
                        cuda::segment_attention(&q, &k, &v, &bt, longest, scale as f32)
                    })?
                };
                report(OpTiming::new(
                    format!("vision {kind} 1 x 16 x 3996x80, materialized"),
                    old_us,
                    String::new(),
                ));
            }
        }
    }
    Ok(())
}

/// The language model: 28 query heads and 4 key heads of 128, a cached prefix of 54
/// tokens and a photo's 1 006 tokens, causal, at batch 1 and 8; then only the last
/// query. Every compiled tiling, each checked against the f32 reference.
fn text(device: &Device, report: &mut dyn FnMut(OpTiming)) -> Result<()> {
    let scale = 128f64.powf(-0.5);
    let (past, len) = (54, 1006);
    let total = past + len;
    let (pk, pv) = (
        randn(&[1, 4, past, 128], device)?,
        randn(&[1, 4, past, 128], device)?,
    );
    for batch in [1usize, 8] {
        let q = randn(&[batch, 28, len, 128], device)?;
        let (k, v) = (
            randn(&[batch, 4, len, 128], device)?,
            randn(&[batch, 4, len, 128], device)?,
        );
        // Every photo's keys after the shared prefix, each key head repeated for its 7
        // query heads: (batch * 28, total, 128).
        let repeat = |p: &Tensor, t: &Tensor| -> Result<Tensor> {
            let p = p.broadcast_as((batch, 4, past, 128))?;
            candle_transformers::utils::repeat_kv(Tensor::cat(&[&p, t], 2)?, 7)?
                .reshape((batch * 28, total, 128))?
                .contiguous()
        };
        let (ka, va) = (repeat(&pk, &k)?, repeat(&pv, &v)?);
        let cases: &[(usize, usize)] = if batch == 1 {
            &[(0, len), (len - 1, 1)]
        } else {
            &[(0, len)]
        };
        for &(q_off, n_q) in cases {
            let mut allowed = vec![0u8; n_q * total];
            for i in 0..n_q {
                for j in 0..=past + q_off + i {
                    allowed[i * total + j] = 1;
                }
            }
            let allowed = Tensor::from_vec(allowed, (n_q, total), device)?;
            let qs = q
                .narrow(2, q_off, n_q)?
                .reshape((batch * 28, n_q, 128))?
                .contiguous()?;
            let want = reference(&qs, &ka, &va, &allowed, scale)?;
            let pairs: f64 = (0..n_q).map(|i| (past + q_off + i + 1) as f64).sum();
            let flops = 4.0 * pairs * 28.0 * 128.0 * batch as f64;
            let tilings = cuda::flash_tilings(128, device.as_cuda_device()?);
            for t in tilings {
                let flash = || {
                    cuda::flash_causal(
                        &q,
                        &k,
                        &v,
                        Some((&pk, &pv)),
                        q_off,
                        n_q,
                        scale as f32,
                        Some(t),
                    )
                };
                let out = flash()?
                    .reshape((batch, n_q, 28, 128))?
                    .transpose(1, 2)?
                    .reshape((batch * 28, n_q, 128))?;
                let diff = max_diff(&out, &want)?;
                let flash_us = time(device, 20, flash)?;
                let name = if n_q == 1 {
                    format!(
                        "text last query {batch} x 28 x 1 (+1059) x128, {}",
                        tile_name(t)
                    )
                } else {
                    format!(
                        "text causal {batch} x 28 x 1006 (+54 cached) x128, {}",
                        tile_name(t)
                    )
                };
                report(timing(&name, flops, flash_us, f64::NAN, diff)?);
            }
            if batch == 1 {
                let qs1 = qs.unsqueeze(0)?;
                let old_us = time(device, 20, || {
                    let (ka, va) = (repeat(&pk, &k)?, repeat(&pv, &v)?);
                    attention(
                        &qs1,
                        &ka.unsqueeze(0)?,
                        &va.unsqueeze(0)?,
                        ScoreMask::Causal,
                        scale,
                    )
                    .map_err(msg)
                })?;
                report(OpTiming::new(
                    format!("text {n_q} queries, materialized (with the repeated heads)"),
                    old_us,
                    String::new(),
                ));
            }
        }
    }
    Ok(())
}
