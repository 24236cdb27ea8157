//! The kernels of src/kernels/elementwise.cu: bias, SwiGLU and residual steps in one pass.

use candle_core::cuda::WrapErr;
use candle_core::cuda::cudarc::driver::PushKernelArg;
use candle_core::{Result, Tensor, builder_arg};

use super::{ELEMENTWISE, Kernel, lock, output, spread, tensor, view};

/// x (rows, cols) + bias (cols).
pub fn bias_add(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (dev, n, cols) = (
        x.device().as_cuda_device()?,
        x.elem_count(),
        bias.elem_count(),
    );
    let [xs, bs] = lock([x, bias]);
    with_type!(x.dtype(), T => {
        let (xs, bs, out) = (view::<T>(&xs)?, view::<T>(&bs)?, output::<T>(dev, n)?);
        let kernel = Kernel::typed::<T>(dev, ELEMENTWISE, "bias_add")?;
        let mut args = kernel.args();
        args.arg(&xs).arg(&bs).arg(&out);
        builder_arg!(args, (n / cols) as u32, cols as u32);
        // SAFETY (each launch in this file): the arguments match the kernel's signature, and
        // the callers checked the sizes the kernel indexes with.
        unsafe { args.launch(spread(n)) }.w()?;
        Ok(tensor(out, dev, x.shape()))
    })
}

/// silu(x[:, :n] + bias[:n]) * (x[:, n:] + bias[n:]) for x (rows, 2n).
pub fn bias_swiglu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (dev, (rows, width)) = (x.device().as_cuda_device()?, x.dims2()?);
    let half = width / 2;
    let [xs, bs] = lock([x, bias]);
    with_type!(x.dtype(), T => {
        let (xs, bs, out) = (view::<T>(&xs)?, view::<T>(&bs)?, output::<T>(dev, rows * half)?);
        let kernel = Kernel::typed::<T>(dev, ELEMENTWISE, "bias_swiglu")?;
        let mut args = kernel.args();
        args.arg(&xs).arg(&bs).arg(&out);
        builder_arg!(args, rows as u32, half as u32);
        unsafe { args.launch(spread(rows * half)) }.w()?;
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
