//! The kernels of src/kernels/rotary.cu: rotary embedding, alone and as the epilogue of the
//! fused q/k/v projection.

use candle_core::cuda::WrapErr;
use candle_core::cuda::cudarc::driver::PushKernelArg;
use candle_core::{Result, Tensor, builder_arg};

use super::{Kernel, ROTARY, lock, output, spread, tensor, view};

/// Rotary embedding of x (rows, heads, dim) with f32 tables (rows, dim / 2).
pub fn rope_rows(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (dev, (rows, heads, dim)) = (x.device().as_cuda_device()?, x.dims3()?);
    let [xs, cs, ss] = lock([x, cos, sin]);
    let (cs, ss) = (view::<f32>(&cs)?, view::<f32>(&ss)?);
    with_type!(x.dtype(), T => {
        let (xs, out) = (view::<T>(&xs)?, output::<T>(dev, x.elem_count())?);
        let kernel = Kernel::typed::<T>(dev, ROTARY, "rope_rows")?;
        let mut args = kernel.args();
        args.arg(&xs).arg(&cs).arg(&ss).arg(&out);
        builder_arg!(args, rows as u32, heads as u32, dim as u32);
        // SAFETY (each launch in this file): the arguments match the kernel's signature, and
        // the tables hold rows x dim / 2 values.
        unsafe { args.launch(spread(x.elem_count() / 2)) }.w()?;
        Ok(tensor(out, dev, x.shape()))
    })
}

/// The q, k, v of a fused projection output `x` (rows, (q_heads + 2 kv_heads) * dim) with
/// `bias` added and rotary (f32 tables (rows, dim / 2)) applied to q and k, in one buffer:
/// q then k then v, each (rows, heads, dim), or (rows / seq, heads, seq, dim) when `seq` > 0.
pub fn qkv_epilogue(
    x: &Tensor,
    bias: &Tensor,
    (cos, sin): &(Tensor, Tensor),
    (q_heads, kv_heads, dim): (usize, usize, usize),
    seq: usize,
) -> Result<Tensor> {
    let (dev, n) = (x.device().as_cuda_device()?, x.elem_count());
    let rows = n / ((q_heads + 2 * kv_heads) * dim);
    // Eight dimensions per thread where each half of a head is a multiple of 8 and the
    // tables' rows start on 16-byte boundaries.
    let eight = super::elementwise::by_eight(&[x, bias], dim / 2)
        && [cos, sin]
            .iter()
            .all(|t| t.layout().start_offset().is_multiple_of(4));
    let [xs, bs, cs, ss] = lock([x, bias, cos, sin]);
    let (cs, ss) = (view::<f32>(&cs)?, view::<f32>(&ss)?);
    with_type!(x.dtype(), T => {
        let (xs, bs, out) = (view::<T>(&xs)?, view::<T>(&bs)?, output::<T>(dev, n)?);
        let (q, rest) = out.split_at(rows * q_heads * dim);
        let (k, v) = rest.split_at(rows * kv_heads * dim);
        let kernel = if eight {
            Kernel::load(dev, ROTARY, "qkv_epilogue_v8")?
        } else {
            Kernel::typed::<T>(dev, ROTARY, "qkv_epilogue")?
        };
        let mut args = kernel.args();
        args.arg(&xs).arg(&bs).arg(&cs).arg(&ss).arg(&q).arg(&k).arg(&v);
        builder_arg!(args, rows as u32, q_heads as u32, kv_heads as u32, dim as u32, seq as u32);
        unsafe { args.launch(spread(n / if eight { 16 } else { 2 })) }.w()?;
        Ok(tensor(out, dev, n))
    })
}
