//! The flash-attention kernel of src/kernels/fused.cu (`flash_attention_d*`) as a candle
//! custom operation: attention over per-row key ranges (the vision tower) or causal over
//! a cached prefix (the language model), without materializing the scores.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::WrapErr;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::{CpuStorage, CudaStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use half::bf16;

use super::{MODULE, as_cuda, cuda_only, cuda_storage, input, output, ptx};

/// Head sizes the fused flash-attention kernel is compiled for.
const FLASH_DIMS: [usize; 4] = [16, 64, 80, 128];

/// Whether [`flash_rows`] and [`flash_causal`] run for heads of `dim` values of `dtype`.
pub fn flash_supported(dim: usize, dtype: DType) -> bool {
    dtype == DType::BF16 && FLASH_DIMS.contains(&dim)
}

/// Strides, in values, of a (batch, heads, rows, dim) view with contiguous rows.
#[derive(Debug, Clone, Copy)]
struct Strides {
    batch: u32,
    head: u32,
    row: u32,
}

impl Strides {
    /// A contiguous (batch, heads, rows, dim) tensor.
    fn heads_major(heads: usize, rows: usize, dim: usize) -> Self {
        Strides {
            batch: (heads * rows * dim) as u32,
            head: (rows * dim) as u32,
            row: dim as u32,
        }
    }

    /// A contiguous (batch, rows, heads, dim) tensor.
    fn rows_major(heads: usize, rows: usize, dim: usize) -> Self {
        Strides {
            batch: (rows * heads * dim) as u32,
            head: dim as u32,
            row: (heads * dim) as u32,
        }
    }
}

/// Which keys each query sees (see fused.cu, `flash_attention`).
#[derive(Debug, Clone)]
enum FlashKeys {
    /// Query i sees keys lo[i] .. hi[i] (u32 tensors, one value per query).
    Rows { lo: Tensor, hi: Tensor },
    /// Query i sees the cached prefix (`past`, (1, kv_heads, len, dim) each for k and v)
    /// and keys 0 ..= q_off + i of this call.
    Causal {
        past: Option<(Tensor, Tensor)>,
        q_off: u32,
    },
}

struct FlashAttention {
    keys: FlashKeys,
    batch: u32,
    heads: u32,
    kv_heads: u32,
    dim: u32,
    n_q: u32,
    q: Strides,
    k: Strides,
    o: Strides,
    out_shape: Shape,
    scale: f32,
}

/// Checks that a bf16 input is contiguous and 16-byte aligned, as the kernel reads it.
fn flash_input<'a>(
    s: &'a CudaStorage,
    l: &Layout,
) -> Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, bf16>> {
    if l.start_offset() % 8 != 0 {
        candle_core::bail!("flash attention needs inputs aligned to 8 values");
    }
    input::<bf16>(s, l)
}

impl CustomOp3 for FlashAttention {
    fn name(&self) -> &'static str {
        "fused-flash-attention"
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
        if q.dtype() != DType::BF16 || !FLASH_DIMS.contains(&(self.dim as usize)) {
            candle_core::bail!(
                "flash attention runs on bf16 heads of {FLASH_DIMS:?} values, not {:?} x {}",
                q.dtype(),
                self.dim
            );
        }
        let dev = q.device().clone();
        let func = dev.get_or_load_custom_func(
            &format!("flash_attention_d{}", self.dim),
            MODULE,
            ptx::FUSED,
        )?;
        let (qs, ks, vs) = (
            flash_input(q, ql)?,
            flash_input(k, kl)?,
            flash_input(v, vl)?,
        );
        let out = output::<bf16>(&dev, self.out_shape.elem_count())?;
        // Storages of the tensors the op holds, borrowed for the launch.
        let (lo_hi, past) = match &self.keys {
            FlashKeys::Rows { lo, hi } => (Some((cuda_storage(lo)?, cuda_storage(hi)?)), None),
            FlashKeys::Causal { past, .. } => (
                None,
                match past {
                    Some((pk, pv)) => Some((cuda_storage(pk)?, cuda_storage(pv)?)),
                    None => None,
                },
            ),
        };
        // Never read when the keys are causal (the kernel computes the ranges).
        // SAFETY: a one-value buffer the kernel does not read in causal mode.
        let unused = unsafe { dev.alloc::<u32>(1) }?;
        let (lo, hi) = match &lo_hi {
            Some(((ls, ll), (hs, hl))) => (
                input::<u32>(as_cuda(ls), ll)?,
                input::<u32>(as_cuda(hs), hl)?,
            ),
            None => (unused.slice(0..), unused.slice(0..)),
        };
        let (kp, vp, past_len, p_head, p_row) = match &past {
            Some(((ps, pl), (vs_, vl_))) => {
                let (_, _, len, dim) = pl.shape().dims4()?;
                (
                    flash_input(as_cuda(ps), pl)?,
                    flash_input(as_cuda(vs_), vl_)?,
                    len as u32,
                    (len * dim) as u32,
                    dim as u32,
                )
            }
            None => (flash_input(k, kl)?, flash_input(v, vl)?, 0, 0, 0),
        };
        let (causal, q_off) = match &self.keys {
            FlashKeys::Rows { .. } => (0i32, 0u32),
            FlashKeys::Causal { q_off, .. } => (1, *q_off),
        };
        let group = self.heads / self.kv_heads;
        let scale_log2 = self.scale * std::f32::consts::LOG2_E;
        let cfg = LaunchConfig {
            grid_dim: (self.n_q.div_ceil(64), self.heads, self.batch),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = func.builder();
        launch
            .arg(&qs)
            .arg(&ks)
            .arg(&vs)
            .arg(&kp)
            .arg(&vp)
            .arg(&out)
            .arg(&lo)
            .arg(&hi)
            .arg(&self.n_q)
            .arg(&q_off)
            .arg(&past_len)
            .arg(&group)
            .arg(&causal)
            .arg(&scale_log2)
            .arg(&self.q.batch)
            .arg(&self.q.head)
            .arg(&self.q.row)
            .arg(&self.k.batch)
            .arg(&self.k.head)
            .arg(&self.k.row)
            .arg(&p_head)
            .arg(&p_row)
            .arg(&self.o.batch)
            .arg(&self.o.head)
            .arg(&self.o.row);
        // SAFETY: the arguments match the kernel's signature; the callers checked the
        // shapes, and every key and query index the kernel forms is inside them.
        unsafe { launch.launch(cfg) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev),
            self.out_shape.clone(),
        ))
    }
}

/// Attention of `q`, `k`, `v` (rows, heads, dim), bf16 and contiguous, where query i sees
/// keys `lo[i]` .. `hi[i]` (u32, one per row, on the same GPU). Returns (rows, heads, dim).
pub fn flash_rows(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    lo: &Tensor,
    hi: &Tensor,
    scale: f32,
) -> Result<Tensor> {
    let (rows, heads, dim) = q.dims3()?;
    if k.dims3()? != (rows, heads, dim) || v.dims3()? != (rows, heads, dim) {
        candle_core::bail!("flash attention: q, k and v differ in shape");
    }
    if lo.elem_count() != rows || hi.elem_count() != rows {
        candle_core::bail!("flash attention: one key range per query row is needed");
    }
    if q.elem_count() > u32::MAX as usize {
        candle_core::bail!("flash attention: too many rows for 32-bit strides");
    }
    let strides = Strides::rows_major(heads, rows, dim);
    q.apply_op3_no_bwd(
        k,
        v,
        &FlashAttention {
            keys: FlashKeys::Rows {
                lo: lo.clone(),
                hi: hi.clone(),
            },
            batch: 1,
            heads: heads as u32,
            kv_heads: heads as u32,
            dim: dim as u32,
            n_q: rows as u32,
            q: strides,
            k: strides,
            o: strides,
            out_shape: Shape::from((rows, heads, dim)),
            scale,
        },
    )
}

/// Causal attention of the queries `q_off` .. `q_off + n_q` of `q` (batch, heads, len, dim)
/// over a cached prefix `past` ((1, kv_heads, past_len, dim) each, shared by the batch) and
/// `k`, `v` (batch, kv_heads, len, dim); all bf16 and contiguous. Query i sees the prefix
/// and keys 0 ..= q_off + i. Returns (batch, n_q, heads * dim).
#[allow(clippy::too_many_arguments)]
pub fn flash_causal(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    past: Option<(&Tensor, &Tensor)>,
    q_off: usize,
    n_q: usize,
    scale: f32,
) -> Result<Tensor> {
    let (batch, heads, len, dim) = q.dims4()?;
    let (kb, kv_heads, klen, kdim) = k.dims4()?;
    if (kb, klen, kdim) != (batch, len, dim) || v.dims4()? != k.dims4()? {
        candle_core::bail!("flash attention: k and v do not match q");
    }
    if kv_heads == 0 || heads % kv_heads != 0 || q_off + n_q > len {
        candle_core::bail!("flash attention: bad head counts or query range");
    }
    if let Some((pk, pv)) = past {
        let (one, ph, _, pd) = pk.dims4()?;
        if (one, ph, pd) != (1, kv_heads, dim) || pv.dims4()? != pk.dims4()? {
            candle_core::bail!("flash attention: the cached prefix does not match k and v");
        }
        if pk.elem_count() > u32::MAX as usize {
            candle_core::bail!("flash attention: the cached prefix is too long for 32-bit strides");
        }
    }
    if q.elem_count() > u32::MAX as usize {
        candle_core::bail!("flash attention: too many rows for 32-bit strides");
    }
    q.apply_op3_no_bwd(
        k,
        v,
        &FlashAttention {
            keys: FlashKeys::Causal {
                past: past.map(|(a, b)| (a.clone(), b.clone())),
                q_off: q_off as u32,
            },
            batch: batch as u32,
            heads: heads as u32,
            kv_heads: kv_heads as u32,
            dim: dim as u32,
            n_q: n_q as u32,
            q: Strides::heads_major(heads, len, dim),
            k: Strides::heads_major(kv_heads, len, dim),
            o: Strides::rows_major(heads, n_q, dim),
            out_shape: Shape::from((batch, n_q, heads * dim)),
            scale,
        },
    )
}
