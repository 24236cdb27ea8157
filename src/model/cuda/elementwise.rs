//! The kernels of src/kernels/elementwise.cu: bias, SwiGLU, residual and RMSNorm steps in one
//! pass. bf16 rows of a multiple of 8 values, starting on 16-byte boundaries, take the `_v8`
//! kernels (eight values per 16-byte access); everything else the one-value kernels.

use candle_core::cuda::WrapErr;
use candle_core::cuda::cudarc::driver::PushKernelArg;
use candle_core::{DType, Result, Tensor, bail, builder_arg};
use half::bf16;

use super::{ELEMENTWISE, Kernel, lock, output, spread, tensor, view};

/// Whether rows of `cols` values of these tensors can be read eight values at a time.
pub(super) fn by_eight(tensors: &[&Tensor], cols: usize) -> bool {
    cols.is_multiple_of(8)
        && tensors
            .iter()
            .all(|t| t.dtype() == DType::BF16 && t.layout().start_offset().is_multiple_of(8))
}

/// Widest row [`rms_norm`] holds in registers (`rms_norm_v8<16>`: 16 x 8 values per lane).
pub const RMS_NORM_MAX_COLS: usize = 32 * 8 * 16;

/// RMSNorm of each row of `x` (rows, cols), bf16, with weight `w` (cols): x *
/// rsqrt(mean(x^2) + eps) * w in f32, rounded once (what candle's kernel computes), one warp
/// per row. `cols` a multiple of 8, at most [`RMS_NORM_MAX_COLS`].
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    let dev = x.device().as_cuda_device()?;
    let cols = x.dim(candle_core::D::Minus1)?;
    if !by_eight(&[x, w], cols) || cols > RMS_NORM_MAX_COLS || w.elem_count() != cols {
        bail!("rms_norm runs on bf16 rows of a multiple of 8 values up to {RMS_NORM_MAX_COLS}");
    }
    let rows = x.elem_count() / cols;
    let [xs, ws] = lock([x, w]);
    let (xs, ws, out) = (
        view::<bf16>(&xs)?,
        view::<bf16>(&ws)?,
        output::<bf16>(dev, rows * cols)?,
    );
    let kernel = Kernel::load(dev, ELEMENTWISE, "rms_norm_v8")?;
    let mut args = kernel.args();
    args.arg(&xs).arg(&ws).arg(&out);
    builder_arg!(args, rows as u32, cols as u32, eps);
    // Eight warps (rows) per block.
    let cfg = candle_core::cuda::cudarc::driver::LaunchConfig {
        grid_dim: ((rows as u32).div_ceil(8).clamp(1, 1 << 16), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the arguments match the kernel's signature; rows x cols values in and out.
    unsafe { args.launch(cfg) }.w()?;
    Ok(tensor(out, dev, x.shape()))
}

/// x (rows, cols) + bias (cols).
pub fn bias_add(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (dev, n, cols) = (
        x.device().as_cuda_device()?,
        x.elem_count(),
        bias.elem_count(),
    );
    let eight = by_eight(&[x, bias], cols);
    let [xs, bs] = lock([x, bias]);
    with_type!(x.dtype(), T => {
        let (xs, bs, out) = (view::<T>(&xs)?, view::<T>(&bs)?, output::<T>(dev, n)?);
        let kernel = if eight {
            Kernel::load(dev, ELEMENTWISE, "bias_add_v8")?
        } else {
            Kernel::typed::<T>(dev, ELEMENTWISE, "bias_add")?
        };
        let mut args = kernel.args();
        args.arg(&xs).arg(&bs).arg(&out);
        builder_arg!(args, (n / cols) as u32, cols as u32);
        // SAFETY (each launch in this file): the arguments match the kernel's signature, and
        // the callers checked the sizes the kernel indexes with.
        unsafe { args.launch(spread(if eight { n / 8 } else { n })) }.w()?;
        Ok(tensor(out, dev, x.shape()))
    })
}

/// silu(x[:, :n] + bias[:n]) * (x[:, n:] + bias[n:]) for x (rows, 2n).
pub fn bias_swiglu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (dev, (rows, width)) = (x.device().as_cuda_device()?, x.dims2()?);
    let half = width / 2;
    let eight = by_eight(&[x, bias], half);
    let [xs, bs] = lock([x, bias]);
    with_type!(x.dtype(), T => {
        let (xs, bs, out) = (view::<T>(&xs)?, view::<T>(&bs)?, output::<T>(dev, rows * half)?);
        let kernel = if eight {
            Kernel::load(dev, ELEMENTWISE, "bias_swiglu_v8")?
        } else {
            Kernel::typed::<T>(dev, ELEMENTWISE, "bias_swiglu")?
        };
        let mut args = kernel.args();
        args.arg(&xs).arg(&bs).arg(&out);
        builder_arg!(args, rows as u32, half as u32);
        unsafe { args.launch(spread(rows * half / if eight { 8 } else { 1 })) }.w()?;
        Ok(tensor(out, dev, (rows, half)))
    })
}

/// residual + x + bias, for x and residual (rows, cols) and bias (cols).
pub fn bias_residual(x: &Tensor, bias: &Tensor, residual: &Tensor) -> Result<Tensor> {
    let (dev, n, cols) = (
        x.device().as_cuda_device()?,
        x.elem_count(),
        bias.elem_count(),
    );
    if by_eight(&[x, bias, residual], cols) {
        return residual_v8(x, Some(bias), residual, cols);
    }
    let [xs, bs, rs] = lock([x, bias, residual]);
    with_type!(x.dtype(), T => {
        let (xs, bs, rs) = (view::<T>(&xs)?, view::<T>(&bs)?, view::<T>(&rs)?);
        let out = output::<T>(dev, n)?;
        let kernel = Kernel::typed::<T>(dev, ELEMENTWISE, "bias_residual")?;
        let mut args = kernel.args();
        args.arg(&xs).arg(&bs).arg(&rs).arg(&out);
        builder_arg!(args, (n / cols) as u32, cols as u32);
        unsafe { args.launch(spread(n)) }.w()?;
        Ok(tensor(out, dev, x.shape()))
    })
}

/// residual + x for bf16 x and residual of the same shape, rows of `cols` values (a
/// multiple of 8): the language model's residual adds, eight values per access.
pub fn residual_add(x: &Tensor, residual: &Tensor) -> Result<Tensor> {
    let cols = x.dim(candle_core::D::Minus1)?;
    if !by_eight(&[x, residual], cols) || x.shape() != residual.shape() {
        bail!("residual_add runs on bf16 tensors of one shape, rows of a multiple of 8 values");
    }
    residual_v8(x, None, residual, cols)
}

/// `bias_residual_v8`: residual + x (+ bias), bf16, rows of `cols` values.
fn residual_v8(
    x: &Tensor,
    bias: Option<&Tensor>,
    residual: &Tensor,
    cols: usize,
) -> Result<Tensor> {
    let (dev, n) = (x.device().as_cuda_device()?, x.elem_count());
    let [xs, rs] = lock([x, residual]);
    let (xs, rs) = (view::<bf16>(&xs)?, view::<bf16>(&rs)?);
    let out = output::<bf16>(dev, n)?;
    let kernel = Kernel::load(dev, ELEMENTWISE, "bias_residual_v8")?;
    let bias_lock = bias.map(|b| lock([b]));
    let bias_view = match &bias_lock {
        Some([b]) => Some(view::<bf16>(b)?),
        None => None,
    };
    let mut args = kernel.args();
    args.arg(&xs);
    // A null pointer is no bias.
    let null = 0u64;
    match &bias_view {
        Some(b) => args.arg(b),
        None => args.arg(&null),
    };
    args.arg(&rs).arg(&out);
    builder_arg!(args, (n / cols) as u32, cols as u32);
    unsafe { args.launch(spread(n / 8)) }.w()?;
    Ok(tensor(out, dev, x.shape()))
}
