//! The model's matrix products at a batch of eight photos' shapes, bf16: candle's product
//! (the path the model takes where nothing is fused) against cuBLASLt's first guess and each
//! of its other candidate algorithms, to see what choosing among them by measurement would
//! give, and (for those that end in a residual add) what the model runs: the fastest measured
//! by `cuda::linear_residual_tuned`. The fastest candidate's result is checked against the
//! first's.

use candle_core::{DType, Device, Tensor};

use super::{OpTiming, time};

/// (name, rows, k, n, times in one photo, with a residual, with a bias)
const PRODUCTS: [(&str, usize, usize, usize, usize, bool, bool); 9] = [
    ("vision q/k/v", 8 * 3996, 1280, 3840, 32, false, false),
    ("vision gate/up", 8 * 3996, 1280, 6848, 32, false, false),
    ("vision output", 8 * 3996, 1280, 1280, 32, true, true),
    ("vision down", 8 * 3996, 3424, 1280, 32, true, true),
    ("merger", 8 * 999, 5120, 5120, 1, false, false),
    ("text q/k/v", 8 * 1006, 3584, 4608, 28, false, false),
    ("text output", 8 * 1006, 3584, 3584, 28, true, false),
    ("text gate/up", 8 * 1006, 3584, 37888, 28, false, false),
    ("text down", 8 * 1006, 18944, 3584, 28, true, false),
];

/// Times each product's candidates, handing each result to `report`, and a last line with
/// the sums over one photo.
pub(super) fn run(device: &Device, report: &mut dyn FnMut(OpTiming)) -> candle_core::Result<()> {
    use crate::model::cuda::{self, Pick};
    let randn = |shape: &[usize], std: f32| -> candle_core::Result<Tensor> {
        Tensor::randn(0f32, std, shape, device)?.to_dtype(DType::BF16)
    };
    let (mut sum_candle, mut sum_first, mut sum_best, mut sum_model) = (0.0, 0.0, 0.0, 0.0);
    for (name, rows, k, n, per_photo, with_residual, with_bias) in PRODUCTS {
        let x = randn(&[rows, k], 1.0)?;
        let w = randn(&[n, k], 0.02)?;
        let r = with_residual.then(|| randn(&[rows, n], 1.0)).transpose()?;
        let b = with_bias.then(|| randn(&[n], 0.1)).transpose()?;
        let label = format!("product {name} {rows}x{k} -> {n}");
        let run = |pick: Pick| cuda::linear_lt(&x, &w, b.as_ref(), r.as_ref(), pick);
        let candle = || -> candle_core::Result<Tensor> {
            let y = x.matmul(&w.t()?)?;
            match (&b, &r) {
                (Some(b), Some(r)) => cuda::bias_residual(&y, b, r),
                (None, Some(r)) => cuda::residual_add(&y, r),
                (Some(b), None) => cuda::bias_add(&y, b),
                (None, None) => Ok(y),
            }
        };
        let described = cuda::linear_lt_candidates(&x, &w, b.as_ref(), r.as_ref())?;
        let Some(first) = run(Pick::First)? else {
            report(OpTiming::new(
                label,
                f64::NAN,
                "no cuBLASLt algorithm".into(),
            ));
            continue;
        };
        let us_candle = time(device, 10, candle)?;
        let mut times = Vec::with_capacity(described.len());
        for i in 0..described.len() {
            let us = time(device, 10, || {
                run(Pick::Candidate(i)).map(|y| y.unwrap_or_else(|| first.clone()))
            })?;
            times.push(us);
        }
        let best = (0..times.len())
            .min_by(|&a, &b| times[a].total_cmp(&times[b]))
            .unwrap_or(0);
        let fastest = run(Pick::Candidate(best))?.unwrap_or_else(|| first.clone());
        let d = (fastest.to_dtype(DType::F32)? - first.to_dtype(DType::F32)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        // What the model runs for a product that ends in a residual: the fastest measured.
        let tuned_us = match &r {
            Some(r) => {
                let unfused = || {
                    let y = x.matmul(&w.t()?)?;
                    match &b {
                        Some(b) => cuda::bias_residual(&y, b, r),
                        None => cuda::residual_add(&y, r),
                    }
                };
                Some(time(device, 10, || {
                    cuda::linear_residual_tuned(&x, &w, b.as_ref(), r, &unfused)
                })?)
            }
            None => None,
        };
        let tuned = tuned_us.map_or(String::new(), |us| format!("; tuned {us:.1} us"));
        let tflops = |us: f64| 2.0 * (rows * k * n) as f64 / us / 1e6;
        let others: Vec<String> = times.iter().map(|t| format!("{t:.0}")).collect();
        report(OpTiming::new(
            label,
            times[0],
            format!(
                "first {:.0} TFLOP/s; candle {us_candle:.1} us{tuned}; fastest #{best} {:.1} us ({:.0} TFLOP/s, {}; max |diff| from the first {d:.4}); all: {}",
                tflops(times[0]),
                times[best],
                tflops(times[best]),
                described[best],
                others.join(" ")
            ),
        ));
        let photo = per_photo as f64 / 8.0 / 1e3;
        sum_candle += us_candle * photo;
        sum_first += times[0] * photo;
        sum_best += times[best] * photo;
        // What the model runs with LYCHEE_TUNED_PRODUCTS=1: the measured choice where a
        // residual is added, candle's product elsewhere.
        sum_model += photo * tuned_us.unwrap_or(us_candle);
    }
    report(OpTiming::new(
        "products of one photo (ms)",
        sum_first * 1e3,
        format!(
            "with the measured choice (LYCHEE_TUNED_PRODUCTS=1) {sum_model:.2} ms; candle's products (no residual added) {sum_candle:.2} ms; cuBLASLt first guess {sum_first:.2} ms; fastest candidates {sum_best:.2} ms"
        ),
    ));
    Ok(())
}
