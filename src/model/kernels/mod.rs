//! The fused CUDA kernels of src/kernels/fused.cu as candle custom operations. Only built
//! with the `cuda` feature; [`super::fused`] chooses between them and plain candle ops.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{
    CpuStorage, CudaDevice, CudaStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result,
    Shape, Tensor,
};
use half::bf16;

mod ptx {
    include!(concat!(env!("OUT_DIR"), "/kernels_ptx.rs"));
}

mod flash;
pub use flash::{flash_causal, flash_rows, flash_supported};

const MODULE: &str = "lychee_fused";
const THREADS: u32 = 256;

fn elementwise(n: usize) -> LaunchConfig {
    let blocks = (n as u32).div_ceil(THREADS).clamp(1, 1 << 16);
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn suffix(dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::BF16 => Ok("bf16"),
        DType::F32 => Ok("f32"),
        d => candle_core::bail!("the fused kernels do not support {d:?}"),
    }
}

fn cuda_only(name: &str) -> Result<(CpuStorage, Shape)> {
    candle_core::bail!("{name} runs on CUDA only")
}

/// Reads a contiguous input of type `T` starting at its layout's offset.
fn input<'a, T: CudaDType>(
    s: &'a CudaStorage,
    l: &Layout,
) -> Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, T>> {
    if !l.is_contiguous() {
        candle_core::bail!("the fused kernels need contiguous inputs");
    }
    Ok(s.as_cuda_slice::<T>()?.slice(l.start_offset()..))
}

fn output<T: CudaDType + DeviceRepr>(dev: &CudaDevice, n: usize) -> Result<CudaSlice<T>> {
    // SAFETY: every element is written by the kernel before it is read.
    unsafe { dev.alloc::<T>(n) }
}

macro_rules! dispatch {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            DType::BF16 => {
                type $T = bf16;
                $body
            }
            DType::F32 => {
                type $T = f32;
                $body
            }
            d => candle_core::bail!("the fused kernels do not support {d:?}"),
        }
    };
}

struct BiasAdd;

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "fused-bias-add"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        b: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = x.device().clone();
        let n = xl.shape().elem_count();
        let cols = bl.shape().elem_count();
        let rows = n / cols;
        let func = dev.get_or_load_custom_func(
            &format!("bias_add_{}", suffix(x.dtype())?),
            MODULE,
            ptx::FUSED,
        )?;
        dispatch!(x.dtype(), T => {
            let (xs, bs) = (input::<T>(x, xl)?, input::<T>(b, bl)?);
            let out = output::<T>(&dev, n)?;
            let mut launch = func.builder();
            let (r, c) = (rows as u32, cols as u32);
            launch.arg(&xs).arg(&bs).arg(&out).arg(&r).arg(&c);
            // SAFETY: the arguments match the kernel's signature; sizes were checked.
            unsafe { launch.launch(elementwise(n)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), xl.shape().clone()))
        })
    }
}

struct Swiglu;

impl CustomOp2 for Swiglu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        g: &CudaStorage,
        gl: &Layout,
        u: &CudaStorage,
        ul: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = g.device().clone();
        let n = gl.shape().elem_count();
        let func = dev.get_or_load_custom_func(
            &format!("swiglu_{}", suffix(g.dtype())?),
            MODULE,
            ptx::FUSED,
        )?;
        dispatch!(g.dtype(), T => {
            let (gs, us) = (input::<T>(g, gl)?, input::<T>(u, ul)?);
            let out = output::<T>(&dev, n)?;
            let mut launch = func.builder();
            let count = n as u32;
            launch.arg(&gs).arg(&us).arg(&out).arg(&count);
            // SAFETY: as above.
            unsafe { launch.launch(elementwise(n)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), gl.shape().clone()))
        })
    }
}

/// Which columns of each score row are real keys (see fused.cu, `softmax_rows`).
#[derive(Debug, Clone, Copy)]
pub enum RowMask {
    None,
    Causal { q_len: u32, past: u32 },
    Segments { rows_per_segment: u32 },
}

struct SoftmaxRows {
    scale: f32,
    mask: RowMask,
}

impl CustomOp2 for SoftmaxRows {
    fn name(&self) -> &'static str {
        "fused-softmax"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        len: &CudaStorage,
        ll: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = x.device().clone();
        let dims = xl.shape().dims();
        let cols = *dims.last().unwrap_or(&1);
        let n = xl.shape().elem_count();
        let rows = n / cols.max(1);
        let (mode, q_len, past, per_segment) = match self.mask {
            RowMask::None => (0i32, 1u32, 0u32, 1u32),
            RowMask::Causal { q_len, past } => (1, q_len, past, 1),
            RowMask::Segments { rows_per_segment } => (2, 1, 0, rows_per_segment),
        };
        let threads = (cols.next_power_of_two() as u32).clamp(32, 256);
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        let func = dev.get_or_load_custom_func(
            &format!("softmax_rows_{}", suffix(x.dtype())?),
            MODULE,
            ptx::FUSED,
        )?;
        let lengths = input::<u32>(len, ll)?;
        dispatch!(x.dtype(), T => {
            let xs = input::<T>(x, xl)?;
            let out = output::<T>(&dev, n)?;
            let mut launch = func.builder();
            let c = cols as u32;
            launch
                .arg(&xs)
                .arg(&out)
                .arg(&c)
                .arg(&self.scale)
                .arg(&mode)
                .arg(&q_len)
                .arg(&past)
                .arg(&lengths)
                .arg(&per_segment);
            // SAFETY: as above; `lengths` holds one entry per segment in mode 2.
            unsafe { launch.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), xl.shape().clone()))
        })
    }
}

struct RopeRows;

impl CustomOp3 for RopeRows {
    fn name(&self) -> &'static str {
        "fused-rope"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        cos: &CudaStorage,
        cl: &Layout,
        sin: &CudaStorage,
        sl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = x.device().clone();
        let (rows, heads, dim) = xl.shape().dims3()?;
        let n = rows * heads * dim;
        let func = dev.get_or_load_custom_func(
            &format!("rope_rows_{}", suffix(x.dtype())?),
            MODULE,
            ptx::FUSED,
        )?;
        let (cs, ss) = (input::<f32>(cos, cl)?, input::<f32>(sin, sl)?);
        dispatch!(x.dtype(), T => {
            let xs = input::<T>(x, xl)?;
            let out = output::<T>(&dev, n)?;
            let mut launch = func.builder();
            let (r, h, d) = (rows as u32, heads as u32, dim as u32);
            launch.arg(&xs).arg(&cs).arg(&ss).arg(&out).arg(&r).arg(&h).arg(&d);
            // SAFETY: as above; cos and sin hold rows x dim / 2 values.
            unsafe { launch.launch(elementwise(n / 2)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), xl.shape().clone()))
        })
    }
}

struct SegmentAttention {
    /// Segment boundaries (segments + 1, u32, on the device).
    bounds: Tensor,
    max_len: u32,
    scale: f32,
}

/// Row stride in shared memory: an odd number of 4-byte words, so that the rows that the
/// threads of a warp read at once sit in different banks.
fn segment_row_stride(dim: usize, elem: usize) -> usize {
    let per_word = 4 / elem.min(4);
    let mut stride = dim.div_ceil(per_word) * per_word;
    if (stride / per_word) % 2 == 0 {
        stride += per_word;
    }
    stride
}

fn segment_shared_bytes(max_len: usize, dim: usize, elem: usize) -> usize {
    max_len * max_len * 4 + 3 * max_len * segment_row_stride(dim, elem) * elem
}

impl CustomOp3 for SegmentAttention {
    fn name(&self) -> &'static str {
        "fused-segment-attention"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        q: &CudaStorage,
        ql: &Layout,
        k: &CudaStorage,
        kl: &Layout,
        v: &CudaStorage,
        vl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = q.device().clone();
        let (rows, heads, dim) = ql.shape().dims3()?;
        let n = rows * heads * dim;
        let smem = segment_shared_bytes(self.max_len as usize, dim, q.dtype().size_in_bytes());
        if smem > SHARED_MEMORY_LIMIT {
            candle_core::bail!(
                "segments of {} rows need {smem} bytes of shared memory",
                self.max_len
            );
        }
        let (bounds_storage, bl) = self.bounds.storage_and_layout();
        let candle_core::Storage::Cuda(bounds_storage) = &*bounds_storage else {
            candle_core::bail!("segment bounds must be on the GPU");
        };
        let segments = bl.shape().elem_count() - 1;
        let cfg = LaunchConfig {
            grid_dim: (segments as u32, heads as u32, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        let func = dev.get_or_load_custom_func(
            &format!("segment_attention_{}", suffix(q.dtype())?),
            MODULE,
            ptx::FUSED,
        )?;
        let bounds = input::<u32>(bounds_storage, bl)?;
        dispatch!(q.dtype(), T => {
            let (qs, ks, vs) = (input::<T>(q, ql)?, input::<T>(k, kl)?, input::<T>(v, vl)?);
            let out = output::<T>(&dev, n)?;
            let mut launch = func.builder();
            let (h, d) = (heads as u32, dim as u32);
            let stride = segment_row_stride(dim, q.dtype().size_in_bytes()) as u32;
            launch
                .arg(&qs)
                .arg(&ks)
                .arg(&vs)
                .arg(&out)
                .arg(&bounds)
                .arg(&h)
                .arg(&d)
                .arg(&stride)
                .arg(&self.max_len)
                .arg(&self.scale);
            // SAFETY: as above; every segment is at most max_len rows.
            unsafe { launch.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((rows, heads, dim))))
        })
    }
}

/// Dynamic shared memory a block may use without opting in.
pub const SHARED_MEMORY_LIMIT: usize = 48 << 10;

/// Whether segments of `max_len` rows of `dim` values of `dtype` fit one block.
pub fn segment_attention_fits(max_len: usize, dim: usize, dtype: DType) -> bool {
    segment_shared_bytes(max_len, dim, dtype.size_in_bytes()) <= SHARED_MEMORY_LIMIT
}

/// Attention within segments of rows: `q`, `k`, `v` (rows, heads, dim) contiguous,
/// `bounds` (segments + 1) u32 on the same GPU; returns (rows, heads, dim).
pub fn segment_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bounds: &Tensor,
    max_len: usize,
    scale: f32,
) -> Result<Tensor> {
    q.apply_op3_no_bwd(
        k,
        v,
        &SegmentAttention {
            bounds: bounds.clone(),
            max_len: max_len as u32,
            scale,
        },
    )
}

/// Borrows the CUDA storage of a tensor held by an op.
fn cuda_storage(t: &Tensor) -> Result<(candle_core::StorageRef<'_>, Layout)> {
    let (storage, layout) = t.storage_and_layout();
    if !matches!(&*storage, candle_core::Storage::Cuda(_)) {
        candle_core::bail!("the fused kernels need their inputs on the GPU");
    }
    Ok((storage, layout.clone()))
}

fn as_cuda(s: &candle_core::Storage) -> &CudaStorage {
    match s {
        candle_core::Storage::Cuda(c) => c,
        _ => unreachable!("checked by cuda_storage"),
    }
}

struct QkvEpilogue {
    bias: Tensor,
    cos: Tensor,
    sin: Tensor,
    q_heads: u32,
    kv_heads: u32,
    dim: u32,
    seq: u32,
}

impl CustomOp1 for QkvEpilogue {
    fn name(&self) -> &'static str {
        "fused-qkv-epilogue"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
        let dev = x.device().clone();
        let width = ((self.q_heads + 2 * self.kv_heads) * self.dim) as usize;
        let n = xl.shape().elem_count();
        let rows = n / width;
        let (bs, bl) = cuda_storage(&self.bias)?;
        let (cs, cl) = cuda_storage(&self.cos)?;
        let (ss, sl) = cuda_storage(&self.sin)?;
        let (cos, sin) = (
            input::<f32>(as_cuda(&cs), &cl)?,
            input::<f32>(as_cuda(&ss), &sl)?,
        );
        let func = dev.get_or_load_custom_func(
            &format!("qkv_epilogue_{}", suffix(x.dtype())?),
            MODULE,
            ptx::FUSED,
        )?;
        let nq = rows * (self.q_heads * self.dim) as usize;
        let nkv = rows * (self.kv_heads * self.dim) as usize;
        dispatch!(x.dtype(), T => {
            let (xs, b) = (input::<T>(x, xl)?, input::<T>(as_cuda(&bs), &bl)?);
            let out = output::<T>(&dev, n)?;
            let (q, rest) = out.split_at(nq);
            let (k, v) = rest.split_at(nkv);
            let mut launch = func.builder();
            let r = rows as u32;
            launch
                .arg(&xs)
                .arg(&b)
                .arg(&cos)
                .arg(&sin)
                .arg(&q)
                .arg(&k)
                .arg(&v)
                .arg(&r)
                .arg(&self.q_heads)
                .arg(&self.kv_heads)
                .arg(&self.dim)
                .arg(&self.seq);
            // SAFETY: the arguments match the kernel's signature; sizes were checked.
            unsafe { launch.launch(elementwise(n / 2)) }.w()?;
            drop((q, k, v));
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(n)))
        })
    }
}

struct BiasSwiglu;

impl CustomOp2 for BiasSwiglu {
    fn name(&self) -> &'static str {
        "fused-bias-swiglu"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        b: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = x.device().clone();
        let (rows, width) = xl.shape().dims2()?;
        let half = width / 2;
        let func = dev.get_or_load_custom_func(
            &format!("bias_swiglu_{}", suffix(x.dtype())?),
            MODULE,
            ptx::FUSED,
        )?;
        dispatch!(x.dtype(), T => {
            let (xs, bs) = (input::<T>(x, xl)?, input::<T>(b, bl)?);
            let out = output::<T>(&dev, rows * half)?;
            let mut launch = func.builder();
            let (r, h) = (rows as u32, half as u32);
            launch.arg(&xs).arg(&bs).arg(&out).arg(&r).arg(&h);
            // SAFETY: as above.
            unsafe { launch.launch(elementwise(rows * half)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((rows, half))))
        })
    }
}

struct BiasResidual;

impl CustomOp3 for BiasResidual {
    fn name(&self) -> &'static str {
        "fused-bias-residual"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        b: &CudaStorage,
        bl: &Layout,
        res: &CudaStorage,
        rl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = x.device().clone();
        let n = xl.shape().elem_count();
        let cols = bl.shape().elem_count();
        let func = dev.get_or_load_custom_func(
            &format!("bias_residual_{}", suffix(x.dtype())?),
            MODULE,
            ptx::FUSED,
        )?;
        dispatch!(x.dtype(), T => {
            let (xs, bs, rs) = (input::<T>(x, xl)?, input::<T>(b, bl)?, input::<T>(res, rl)?);
            let out = output::<T>(&dev, n)?;
            let mut launch = func.builder();
            let (r, c) = ((n / cols) as u32, cols as u32);
            launch.arg(&xs).arg(&bs).arg(&rs).arg(&out).arg(&r).arg(&c);
            // SAFETY: as above.
            unsafe { launch.launch(elementwise(n)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), xl.shape().clone()))
        })
    }
}

/// The q, k, v of a fused projection output `x` (rows, (q_heads + 2 kv_heads) * dim)
/// with `bias` added and rotary applied to q and k, stacked in one buffer: q then k then
/// v, each (rows, heads, dim), or (rows / seq, heads, seq, dim) when `seq` > 0.
#[allow(clippy::too_many_arguments)]
pub fn qkv_epilogue(
    x: &Tensor,
    bias: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    q_heads: usize,
    kv_heads: usize,
    dim: usize,
    seq: usize,
) -> Result<Tensor> {
    x.apply_op1_no_bwd(&QkvEpilogue {
        bias: bias.clone(),
        cos: cos.clone(),
        sin: sin.clone(),
        q_heads: q_heads as u32,
        kv_heads: kv_heads as u32,
        dim: dim as u32,
        seq: seq as u32,
    })
}

/// silu(x[:, :n] + bias[:n]) * (x[:, n:] + bias[n:]) for x (rows, 2n).
pub fn bias_swiglu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.apply_op2_no_bwd(bias, &BiasSwiglu)
}

/// residual + x + bias.
pub fn bias_residual(x: &Tensor, bias: &Tensor, residual: &Tensor) -> Result<Tensor> {
    x.apply_op3_no_bwd(bias, residual, &BiasResidual)
}

/// x (rows, cols) + bias (cols).
pub fn bias_add(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.apply_op2_no_bwd(bias, &BiasAdd)
}

/// silu(gate) * up.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.apply_op2_no_bwd(up, &Swiglu)
}

/// Softmax of `scale * x` along the last dimension over the columns `mask` allows;
/// `lengths` (u32, one per segment) is read in segment mode.
pub fn softmax_rows(x: &Tensor, scale: f32, mask: RowMask, lengths: &Tensor) -> Result<Tensor> {
    x.apply_op2_no_bwd(lengths, &SoftmaxRows { scale, mask })
}

/// Rotary embedding of x (rows, heads, dim) with f32 tables (rows, dim / 2).
pub fn rope_rows(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    x.apply_op3_no_bwd(cos, sin, &RopeRows)
}
