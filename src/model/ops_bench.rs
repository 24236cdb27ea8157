//! What `lychee-rerank bench --ops` measures: single operations at the model's shapes,
//! candle's own and the model's fused steps and CUDA kernels, to find operations that run
//! far from the device's limits; flash attention is also checked against an f32 reference.

use std::time::Instant;

use candle_core::{D, DType, Device, Tensor};

use super::layers::attention;
use super::ops::{ScoreMask, masked_softmax};

/// One measured operation.
#[derive(Debug, Clone)]
pub struct OpTiming {
    pub name: String,
    /// Microseconds per call.
    pub micros: f64,
    /// The rate it reached, or what it was compared with.
    pub detail: String,
}

impl OpTiming {
    fn new(name: impl Into<String>, micros: f64, detail: String) -> Self {
        OpTiming {
            name: name.into(),
            micros,
            detail,
        }
    }
}

fn time(
    device: &Device,
    reps: usize,
    mut f: impl FnMut() -> candle_core::Result<Tensor>,
) -> candle_core::Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    device.synchronize()?;
    let start = Instant::now();
    for _ in 0..reps {
        f()?;
    }
    device.synchronize()?;
    Ok(start.elapsed().as_secs_f64() * 1e6 / reps as f64)
}

/// Times the operations on `device` in `dtype`, handing each result to `report` as it comes.
/// A flash-attention result beyond bf16 rounding of the reference is an error.
pub fn bench_ops(
    device: &Device,
    dtype: DType,
    mut report: impl FnMut(OpTiming),
) -> candle_core::Result<()> {
    let reps = 50;
    let rows = 4000;
    let x = Tensor::randn(0f32, 1.0, (rows, 1280), device)?.to_dtype(dtype)?;
    let w_up = Tensor::randn(0f32, 0.02, (3420, 1280), device)?.to_dtype(dtype)?;
    let w_up_pad = Tensor::randn(0f32, 0.02, (3424, 1280), device)?.to_dtype(dtype)?;
    let w_qkv = Tensor::randn(0f32, 0.02, (3840, 1280), device)?.to_dtype(dtype)?;
    let bias = Tensor::randn(0f32, 0.02, 3420, device)?.to_dtype(dtype)?;
    let h = Tensor::randn(0f32, 1.0, (rows, 3420), device)?.to_dtype(dtype)?;
    let x2 = Tensor::randn(0f32, 1.0, (1060, 3584), device)?.to_dtype(dtype)?;
    let w_gate = Tensor::randn(0f32, 0.02, (18944, 3584), device)?.to_dtype(dtype)?;
    let norm_w = Tensor::ones(1280, dtype, device)?;
    let scores = Tensor::randn(0f32, 1.0, (63, 16, 64, 64), device)?.to_dtype(dtype)?;
    let big_scores = Tensor::randn(0f32, 1.0, (1, 8, 4000, 4000), device)?.to_dtype(dtype)?;
    let qw = Tensor::randn(0f32, 1.0, (63, 16, 64, 80), device)?.to_dtype(dtype)?;
    let idx = Tensor::arange(0u32, rows as u32, device)?;
    let tq = Tensor::randn(0f32, 1.0, (1, 28, 1060, 128), device)?.to_dtype(dtype)?;
    let tk = Tensor::randn(0f32, 1.0, (1, 28, 1120, 128), device)?.to_dtype(dtype)?;
    let tp = Tensor::randn(0f32, 1.0, (1, 28, 1060, 1120), device)?.to_dtype(dtype)?;
    let fq = Tensor::randn(0f32, 1.0, (1, 8, 4000, 80), device)?.to_dtype(dtype)?;
    let fq16 = Tensor::randn(0f32, 1.0, (1, 16, 4000, 80), device)?.to_dtype(dtype)?;
    let fsm = |t: &Tensor, m: ScoreMask| -> candle_core::Result<Tensor> {
        masked_softmax(t, 0.1, m).map_err(|e| candle_core::Error::Msg(e.to_string()))
    };
    let attn_full = || -> candle_core::Result<Tensor> {
        attention(&fq16, &fq16, &fq16, ScoreMask::All, 0.1)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    };
    let flops = |m: usize, n: usize, k: usize, us: f64| 2.0 * (m * n * k) as f64 / us / 1e6;
    let gbs = |bytes: usize, us: f64| bytes as f64 / us / 1e3;
    let e = dtype.size_in_bytes();
    let rows_out: Vec<(&str, f64)> = vec![
        (
            "matmul 4000x1280 @ 1280x3420 (w.t)",
            time(device, reps, || x.matmul(&w_up.t()?))?,
        ),
        (
            "matmul 4000x1280 @ 1280x3424 (w.t)",
            time(device, reps, || x.matmul(&w_up_pad.t()?))?,
        ),
        (
            "matmul 4000x1280 @ 1280x3840 (w.t)",
            time(device, reps, || x.matmul(&w_qkv.t()?))?,
        ),
        (
            "matmul 1060x3584 @ 3584x18944 (w.t)",
            time(device, reps, || x2.matmul(&w_gate.t()?))?,
        ),
        (
            "broadcast_add bias 4000x3420",
            time(device, reps, || h.broadcast_add(&bias))?,
        ),
        ("silu 4000x3420", time(device, reps, || h.silu())?),
        ("mul 4000x3420", time(device, reps, || &h * &h)?),
        (
            "rms_norm 4000x1280",
            time(device, reps, || candle_nn::ops::rms_norm(&x, &norm_w, 1e-6))?,
        ),
        (
            "softmax 63x16x64x64",
            time(device, reps, || candle_nn::ops::softmax_last_dim(&scores))?,
        ),
        (
            "softmax 8x4000x4000",
            time(device, 10, || candle_nn::ops::softmax_last_dim(&big_scores))?,
        ),
        (
            "bmm 1008 x (64x80 @ 80x64)",
            time(device, reps, || qw.matmul(&qw.t()?))?,
        ),
        (
            "to_dtype f32 4000x3420",
            time(device, reps, || h.to_dtype(DType::F32))?,
        ),
        (
            "index_select rows 4000x1280",
            time(device, reps, || x.index_select(&idx, 0))?,
        ),
        (
            "transpose+contiguous 4000x1280",
            time(device, reps, || {
                x.reshape((rows, 16, 80))?.transpose(0, 1)?.contiguous()
            })?,
        ),
        (
            "sum_keepdim 4000x3420",
            time(device, reps, || h.sum_keepdim(D::Minus1))?,
        ),
        (
            "bmm 28 x (1060x128 @ 128x1120)",
            time(device, reps, || tq.matmul(&tk.t()?))?,
        ),
        (
            "bmm 28 x (1060x1120 @ 1120x128)",
            time(device, reps, || tp.matmul(&tk))?,
        ),
        (
            "fused softmax causal 28x1060x1120",
            time(device, reps, || fsm(&tp, ScoreMask::Causal))?,
        ),
        (
            "candle softmax 28x1060x1120",
            time(device, reps, || candle_nn::ops::softmax_last_dim(&tp))?,
        ),
        (
            "fused softmax 8x4000x4000",
            time(device, 10, || fsm(&big_scores, ScoreMask::All))?,
        ),
        (
            "bmm 8 x (4000x80 @ 80x4000)",
            time(device, 10, || fq.matmul(&fq.t()?))?,
        ),
        (
            "attention full 16 heads 4000x80",
            time(device, 10, attn_full)?,
        ),
    ];
    #[cfg(feature = "cuda")]
    {
        let bounds: Vec<u32> = (0..=63u32).map(|i| i * 64).collect();
        let bounds = Tensor::new(bounds.as_slice(), device)?;
        let wq = Tensor::randn(0f32, 1.0, (4032, 16, 80), device)?.to_dtype(dtype)?;
        let us = time(device, reps, || {
            super::cuda::segment_attention(&wq, &wq, &wq, &bounds, 64, 0.1)
        })?;
        let name = "fused window attention 63 x 16 x 64x80";
        report(OpTiming::new(name, us, String::new()));
    }
    for (name, us) in rows_out {
        let rate = if name.starts_with("matmul") {
            let dims: Vec<usize> = name
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .filter_map(|s| s.parse().ok())
                .collect();
            format!("{:.0} TFLOP/s", flops(dims[0], dims[3], dims[1], us))
        } else if name.contains("4000x3420") {
            format!(
                "{:.0} GB/s (1 read + 1 write)",
                gbs(2 * 4000 * 3420 * e, us)
            )
        } else {
            String::new()
        };
        report(OpTiming::new(name, us, rate));
    }
    #[cfg(feature = "cuda")]
    if dtype == DType::BF16 {
        passes(device, &mut report)?;
        flash::run(device, &mut report)?;
    }
    Ok(())
}

/// The one-pass kernels at a batch of eight photos' shapes (8 x 3 996 rows in the vision
/// tower, 8 x 1 006 in the language model), bf16: their rate counting each value read once
/// and written once, against candle's operation where it has one, and their largest
/// difference from the plain candle computation (which must stay within bf16 rounding).
#[cfg(feature = "cuda")]
fn passes(device: &Device, report: &mut dyn FnMut(OpTiming)) -> candle_core::Result<()> {
    use super::cuda;
    let randn = |shape: &[usize], std: f32| -> candle_core::Result<Tensor> {
        Tensor::randn(0f32, std, shape, device)?.to_dtype(DType::BF16)
    };
    // |a - b| / (1 + |b|): outputs reach tens, where a bf16 rounding is 0.06.
    let diff = |a: &Tensor, b: &Tensor| -> candle_core::Result<f32> {
        let b = b.to_dtype(DType::F32)?;
        ((a.to_dtype(DType::F32)? - &b)?.abs()? / (b.abs()? + 1.0)?)?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()
    };
    // A few bf16 roundings (2^-8 each, relative).
    let check = |name: &str, d: f32| -> candle_core::Result<()> {
        if d.is_nan() || d > 0.03 {
            candle_core::bail!("{name} differs from candle's result by {d}");
        }
        Ok(())
    };
    // The products that end in a residual add, as one cuBLASLt product against the product
    // and the one-pass kernel after it: the vision tower's output projection and MLP down
    // (with biases), the language model's (without), at a batch of eight.
    for (rows, k, n, with_bias) in [
        (8 * 3996, 1280usize, 1280usize, true),
        (8 * 3996, 3424, 1280, true),
        (8 * 1006, 3584, 3584, false),
        (8 * 1006, 18944, 3584, false),
    ] {
        let x = randn(&[rows, k], 1.0)?;
        let w = randn(&[n, k], 0.02)?;
        let r = randn(&[rows, n], 1.0)?;
        let b = with_bias.then(|| randn(&[n], 0.1)).transpose()?;
        let Some(ours) = cuda::linear_residual(&x, &w, b.as_ref(), &r)? else {
            report(OpTiming::new(
                format!("product + residual {rows}x{k} -> {n}"),
                f64::NAN,
                "no cuBLASLt algorithm on this GPU: a product and a pass".into(),
            ));
            continue;
        };
        let (xf, wf) = (x.to_dtype(DType::F32)?, w.to_dtype(DType::F32)?);
        let mut exact = (xf.matmul(&wf.t()?)? + r.to_dtype(DType::F32)?)?;
        if let Some(b) = &b {
            exact = exact.broadcast_add(&b.to_dtype(DType::F32)?)?;
        }
        let d = diff(&ours, &exact)?;
        check("linear_residual", d)?;
        let unfused = || -> candle_core::Result<Tensor> {
            let y = x.matmul(&w.t()?)?;
            match &b {
                Some(b) => cuda::bias_residual(&y, b, &r),
                None => cuda::residual_add(&y, &r),
            }
        };
        let d_unfused = diff(&unfused()?, &exact)?;
        let us = time(device, 10, || {
            cuda::linear_residual(&x, &w, b.as_ref(), &r).map(|y| y.unwrap_or_else(|| ours.clone()))
        })?;
        let old = time(device, 10, unfused)?;
        report(OpTiming::new(
            format!("product + residual {rows}x{k} -> {n}"),
            us,
            format!(
                "{:.0} TFLOP/s  product then pass {old:>8.1} us  max |diff| from f32 {d:.4} (product then pass {d_unfused:.4})",
                2.0 * (rows * k * n) as f64 / us / 1e6
            ),
        ));
    }
    let mut line = |name: String, us: f64, bytes: usize, old: Option<f64>, d: f32| {
        let old = old.map_or(String::new(), |o| format!("  candle {o:>8.1} us"));
        let detail = format!(
            "{:.0} GB/s{old}  max |diff| {d:.4}",
            bytes as f64 / us / 1e3
        );
        report(OpTiming::new(name, us, detail));
    };
    for (rows, cols) in [(8 * 3996, 1280usize), (8 * 1006, 3584)] {
        let x = randn(&[rows, cols], 1.0)?;
        let w = (randn(&[cols], 0.1)? + 1.0)?;
        let ours = cuda::rms_norm(&x, &w, 1e-6)?;
        let theirs = candle_nn::ops::rms_norm(&x, &w, 1e-6)?;
        let d = diff(&ours, &theirs)?;
        check("rms_norm", d)?;
        let us = time(device, 20, || cuda::rms_norm(&x, &w, 1e-6))?;
        let old = time(device, 20, || candle_nn::ops::rms_norm(&x, &w, 1e-6))?;
        line(
            format!("rms_norm {rows}x{cols}"),
            us,
            4 * rows * cols,
            Some(old),
            d,
        );
        let r = randn(&[rows, cols], 1.0)?;
        let ours = cuda::residual_add(&x, &r)?;
        let d = diff(&ours, &(&r + &x)?)?;
        check("residual_add", d)?;
        let us = time(device, 20, || cuda::residual_add(&x, &r))?;
        let old = time(device, 20, || &r + &x)?;
        line(
            format!("residual add {rows}x{cols}"),
            us,
            6 * rows * cols,
            Some(old),
            d,
        );
        let b = randn(&[cols], 0.1)?;
        let ours = cuda::bias_residual(&x, &b, &r)?;
        let d = diff(&ours, &(&r + x.broadcast_add(&b)?)?)?;
        check("bias_residual", d)?;
        let us = time(device, 20, || cuda::bias_residual(&x, &b, &r))?;
        line(
            format!("bias + residual {rows}x{cols}"),
            us,
            6 * rows * cols,
            None,
            d,
        );
    }
    for (rows, n) in [(8 * 3996, 3424usize), (8 * 1006, 18944)] {
        let x = randn(&[rows, 2 * n], 1.0)?;
        let b = randn(&[2 * n], 0.1)?;
        let ours = cuda::bias_swiglu(&x, &b)?;
        let y = x.broadcast_add(&b)?;
        let d = diff(&ours, &(y.narrow(1, 0, n)?.silu()? * y.narrow(1, n, n)?)?)?;
        check("bias_swiglu", d)?;
        let us = time(device, 20, || cuda::bias_swiglu(&x, &b))?;
        line(
            format!("bias + swiglu {rows}x{n}"),
            us,
            6 * rows * n,
            None,
            d,
        );
    }
    // q, k, v epilogues: the vision tower (16 heads of 80 each) and the language model (28
    // query and 4 key heads of 128, laid out per photo).
    for (rows, qh, kvh, dim, seq) in [
        (8 * 3996, 16usize, 16usize, 80usize, 0usize),
        (8 * 1006, 28, 4, 128, 1006),
    ] {
        let width = (qh + 2 * kvh) * dim;
        let x = randn(&[rows, width], 1.0)?;
        let b = randn(&[width], 0.1)?;
        let angle = Tensor::randn(0f32, 3.0, (rows, dim / 2), device)?;
        let rope = (angle.cos()?, angle.sin()?);
        let ours = cuda::qkv_epilogue(&x, &b, &rope, (qh, kvh, dim), seq)?;
        let plain = super::ops::qkv_epilogue(
            &x.to_dtype(DType::F32)?,
            &b.to_dtype(DType::F32)?,
            &rope,
            qh,
            kvh,
            dim,
            (seq > 0).then_some(seq),
        )
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let plain = Tensor::cat(
            &[
                plain.0.flatten_all()?,
                plain.1.flatten_all()?,
                plain.2.flatten_all()?,
            ],
            0,
        )?;
        let d = diff(&ours, &plain)?;
        check("qkv_epilogue", d)?;
        let us = time(device, 20, || {
            cuda::qkv_epilogue(&x, &b, &rope, (qh, kvh, dim), seq)
        })?;
        line(
            format!("q/k/v epilogue {rows}x{width}"),
            us,
            4 * rows * width,
            None,
            d,
        );
    }
    Ok(())
}

/// The flash-attention kernel at the model's shapes: its largest difference from an f32
/// reference that materializes the scores, and its time against the materialized bf16
/// path it replaces. A difference beyond bf16 rounding fails the command.
#[cfg(feature = "cuda")]
mod flash {
    use candle_core::{DType, Device, Result, Tensor};

    use super::{OpTiming, time};
    use crate::model::cuda;
    use crate::model::layers::attention;
    use crate::model::ops::ScoreMask;

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
    fn reference(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        allowed: &Tensor,
        scale: f64,
    ) -> Result<Tensor> {
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
            candle_core::bail!(
                "flash attention differs from the f32 reference by {diff} in {name}"
            );
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

    /// The vision tower: 16 heads of 80, 3 996 patches per 1024x768 photo, as one segment per
    /// photo (the full-attention blocks) or in windows of at most 64 rows. Checked against
    /// the f32 reference on two photos (a block can span both), timed on one and on eight,
    /// in every compiled tiling; the materialized path is timed on one photo.
    fn vision(device: &Device, report: &mut dyn FnMut(OpTiming)) -> Result<()> {
        let scale = 80f64.powf(-0.5);
        let per_photo = 3996u32;
        let heads_first = |t: &Tensor| t.transpose(0, 1)?.contiguous();
        for windowed in [false, true] {
            let bounds = |photos: u32| -> Vec<u32> {
                let mut b = vec![0];
                for p in 0..photos {
                    let start = p * per_photo;
                    if windowed {
                        b.extend((1..=62u32).map(|i| start + i * 64));
                    }
                    b.push(start + per_photo);
                }
                b
            };
            let kind = if windowed { "windows" } else { "full" };
            let use_ = if windowed {
                cuda::FlashUse::Windows
            } else {
                cuda::FlashUse::Full
            };
            for photos in [2u32, 1, 8] {
                let b = bounds(photos);
                let rows = *b.last().unwrap_or(&0) as usize;
                let (q, k, v) = (
                    randn(&[rows, 16, 80], device)?,
                    randn(&[rows, 16, 80], device)?,
                    randn(&[rows, 16, 80], device)?,
                );
                let (lo, hi, allowed) = segments(&b, photos == 2, device)?;
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
                for t in cuda::flash_tilings(80) {
                    let flash =
                        || cuda::flash_rows(&q, &k, &v, &lo, &hi, scale as f32, use_, Some(t));
                    let out = heads_first(&flash()?)?;
                    let diff = match (&want, &first) {
                        (Some(w), _) => max_diff(&out, w)?,
                        (None, Some(f)) => max_diff(&out, f)?,
                        (None, None) => 0.0,
                    };
                    if first.is_none() {
                        first = Some(out);
                    }
                    let name = format!("vision {kind} {photos} x 16 x 3996x80, {}", tile_name(t));
                    if photos == 2 {
                        report(timing(
                            &name,
                            flops,
                            time(device, 5, flash)?,
                            f64::NAN,
                            diff,
                        )?);
                        continue;
                    }
                    let flash_us = time(device, 20, flash)?;
                    report(timing(&name, flops, flash_us, f64::NAN, diff)?);
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
                        let bt = Tensor::new(b.as_slice(), device)?;
                        time(device, 20, || {
                            cuda::segment_attention(&q, &k, &v, &bt, 64, scale as f32)
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
                let tilings = cuda::flash_tilings(128);
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
}
