//! What `lychee-rerank bench --ops` measures: single operations at the model's shapes,
//! candle's own and the model's fused steps and CUDA kernels, to find operations that run
//! far from the device's limits; flash attention is also checked against an f32 reference.

use std::time::Instant;

use candle_core::{D, DType, Device, Tensor};

use super::layers::attention;
use super::ops::{ScoreMask, masked_softmax};

#[cfg(feature = "cuda")]
mod flash;
#[cfg(feature = "cuda")]
mod passes;
#[cfg(feature = "cuda")]
mod products;

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
        products::run(device, &mut report)?;
        passes::run(device, &mut report)?;
        flash::run(device, &mut report)?;
    }
    Ok(())
}
