//! The one-pass kernels at a batch of eight photos' shapes (8 x 3 996 rows in the vision
//! tower, 8 x 1 006 in the language model), bf16: their rate counting each value read once
//! and written once, against candle's operation where it has one, and their largest
//! difference from the plain candle computation (which must stay within bf16 rounding).

use candle_core::{DType, Device, Tensor};

use super::{OpTiming, time};

/// Times and checks each of them, handing each result to `report`; a result beyond bf16
/// rounding of candle's is an error.
pub(super) fn run(device: &Device, report: &mut dyn FnMut(OpTiming)) -> candle_core::Result<()> {
    use crate::model::cuda;
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
        let plain = crate::model::ops::qkv_epilogue(
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
