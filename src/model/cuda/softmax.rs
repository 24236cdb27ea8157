//! The kernels of src/kernels/softmax.cu: masked row softmax, and attention within short
//! segments with the scores in shared memory.

use candle_core::cuda::WrapErr;
use candle_core::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::{DType, Result, Tensor, bail, builder_arg};

use super::{Kernel, SOFTMAX, THREADS, lock, output, tensor, view};

/// Which columns of each score row are real keys (see softmax.cu, `softmax_rows`).
#[derive(Debug, Clone, Copy)]
pub enum RowMask {
    None,
    Causal { q_len: u32, past: u32 },
    Segments { rows_per_segment: u32 },
}

/// Softmax of `scale * x` along the last dimension over the columns `mask` allows;
/// `lengths` (u32, one per segment) is read in segment mode.
pub fn softmax_rows(x: &Tensor, scale: f32, mask: RowMask, lengths: &Tensor) -> Result<Tensor> {
    let (dev, n) = (x.device().as_cuda_device()?, x.elem_count());
    let cols = *x.dims().last().unwrap_or(&1);
    let (mode, q_len, past, per_segment) = match mask {
        RowMask::None => (0i32, 1u32, 0u32, 1u32),
        RowMask::Causal { q_len, past } => (1, q_len, past, 1),
        RowMask::Segments { rows_per_segment } => (2, 1, 0, rows_per_segment),
    };
    let cfg = LaunchConfig {
        grid_dim: ((n / cols.max(1)) as u32, 1, 1),
        block_dim: ((cols.next_power_of_two() as u32).clamp(32, 256), 1, 1),
        shared_mem_bytes: 0,
    };
    let [xs, ls] = lock([x, lengths]);
    let ls = view::<u32>(&ls)?;
    with_type!(x.dtype(), T => {
        let (xs, out) = (view::<T>(&xs)?, output::<T>(dev, n)?);
        let kernel = Kernel::typed::<T>(dev, SOFTMAX, "softmax_rows")?;
        let mut args = kernel.args();
        args.arg(&xs).arg(&out);
        builder_arg!(args, cols as u32, scale, mode, q_len, past);
        args.arg(&ls);
        builder_arg!(args, per_segment);
        // SAFETY: the arguments match the kernel's signature; `lengths` holds one entry per
        // segment in mode 2.
        unsafe { args.launch(cfg) }.w()?;
        Ok(tensor(out, dev, x.shape()))
    })
}

/// Dynamic shared memory a block may use without opting in.
const SHARED_MEMORY_LIMIT: usize = 48 << 10;

/// Row stride in shared memory: an odd number of 4-byte words, so that the rows that the
/// threads of a warp read at once sit in different banks.
fn segment_row_stride(dim: usize, elem: usize) -> usize {
    let per_word = 4 / elem.min(4);
    let mut stride = dim.div_ceil(per_word) * per_word;
    if (stride / per_word).is_multiple_of(2) {
        stride += per_word;
    }
    stride
}

fn segment_shared_bytes(max_len: usize, dim: usize, elem: usize) -> usize {
    max_len * max_len * 4 + 3 * max_len * segment_row_stride(dim, elem) * elem
}

/// Whether segments of `max_len` rows of `dim` values of `dtype` fit one block.
pub fn segment_attention_fits(max_len: usize, dim: usize, dtype: DType) -> bool {
    segment_shared_bytes(max_len, dim, dtype.size_in_bytes()) <= SHARED_MEMORY_LIMIT
}

/// Attention within segments of rows: `q`, `k`, `v` (rows, heads, dim) contiguous,
/// `bounds` (segments + 1) u32 on the same GPU, each segment at most `max_len` rows;
/// returns (rows, heads, dim).
pub fn segment_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bounds: &Tensor,
    max_len: usize,
    scale: f32,
) -> Result<Tensor> {
    let (dev, (rows, heads, dim)) = (q.device().as_cuda_device()?, q.dims3()?);
    let elem = q.dtype().size_in_bytes();
    let smem = segment_shared_bytes(max_len, dim, elem);
    if smem > SHARED_MEMORY_LIMIT {
        bail!("segments of {max_len} rows need {smem} bytes of shared memory");
    }
    let cfg = LaunchConfig {
        grid_dim: ((bounds.elem_count() - 1) as u32, heads as u32, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    let [qs, ks, vs, bs] = lock([q, k, v, bounds]);
    let bs = view::<u32>(&bs)?;
    with_type!(q.dtype(), T => {
        let (qs, ks, vs) = (view::<T>(&qs)?, view::<T>(&ks)?, view::<T>(&vs)?);
        let out = output::<T>(dev, q.elem_count())?;
        let kernel = Kernel::typed::<T>(dev, SOFTMAX, "segment_attention")?;
        let mut args = kernel.args();
        args.arg(&qs).arg(&ks).arg(&vs).arg(&out).arg(&bs);
        let stride = segment_row_stride(dim, elem) as u32;
        builder_arg!(args, heads as u32, dim as u32, stride, max_len as u32, scale);
        // SAFETY: the arguments match the kernel's signature; no segment is longer than
        // max_len rows, for which the shared memory was sized.
        unsafe { args.launch(cfg) }.w()?;
        Ok(tensor(out, dev, (rows, heads, dim)))
    })
}
