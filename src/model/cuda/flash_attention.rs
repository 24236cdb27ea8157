//! The flash-attention kernels of src/kernels/flash_attention.cu (`flash_attention_d*`, any
//! GPU) and src/kernels/flash_hopper.cu (`flash_wgmma_d*`, Hopper's warpgroup products):
//! attention over per-row key ranges (the vision tower) or causal over a cached prefix (the
//! language model), without materializing the scores.

use std::sync::{Mutex, OnceLock};

use candle_core::cuda::WrapErr;
use candle_core::cuda::cudarc::driver::sys::CUfunction_attribute;
use candle_core::cuda::cudarc::driver::{
    DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg, SyncOnDrop,
};
use candle_core::{CudaDevice, DType, Result, Shape, Tensor, bail};
use half::bf16;

use super::super::flash_tiles::{
    FlashUse, Tiling, block_starts, compiled_for, smem_bytes, tiling_for, tiling_for_causal,
};
use super::{FLASH_ATTENTION, FLASH_HOPPER, Kernel, lock, output, tensor, view};

/// Head sizes the fused flash-attention kernel is compiled for.
const FLASH_DIMS: [usize; 4] = [16, 64, 80, 128];

/// Whether the warpgroup kernels of flash_hopper.cu run on `dev`: a GPU of compute
/// capability 9.0 (H100, H200), and the file built for it (sm_90a; built for any other
/// target it holds no kernel). Asked of the driver once per GPU.
pub fn hopper_flash(dev: &CudaDevice) -> bool {
    static BUILT: OnceLock<bool> = OnceLock::new();
    if !*BUILT.get_or_init(|| super::ptx::FLASH_HOPPER.contains(".entry flash_wgmma")) {
        return false;
    }
    static SEEN: Mutex<Vec<(usize, bool)>> = Mutex::new(Vec::new());
    let ordinal = dev.cuda_stream().context().ordinal();
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, yes)) = seen.iter().find(|(o, _)| *o == ordinal) {
        return *yes;
    }
    let yes = dev.cuda_stream().context().compute_capability().ok() == Some((9, 0));
    seen.push((ordinal, yes));
    yes
}

/// The tilings that run on `dev` for heads of `dim` values.
pub fn flash_tilings(dim: usize, dev: &CudaDevice) -> Vec<Tiling> {
    compiled_for(dim, hopper_flash(dev))
}

/// Whether [`flash_rows`] and [`flash_causal`] run for heads of `dim` values of `dtype`.
pub fn flash_supported(dim: usize, dtype: DType) -> bool {
    dtype == DType::BF16 && FLASH_DIMS.contains(&dim)
}

/// The tiling [`flash_rows`] takes for `use_` at heads of `dim` on `dev`.
pub fn flash_tiling(use_: FlashUse, dim: usize, dev: &CudaDevice) -> Tiling {
    tiling_for(use_, dim, hopper_flash(dev))
}

/// Where the blocks of a [`flash_rows`] launch start, on the GPU: the segments (windows,
/// photos) cut into blocks of at most `block_rows` rows ([`block_starts`]), so that no block
/// straddles two segments. For tilings of `block_rows` rows a block.
#[derive(Clone)]
pub struct BlockStarts {
    block_rows: u32,
    rows: u32,
    blocks: u32,
    table: Tensor,
}

impl BlockStarts {
    /// The table for segments with boundaries `bounds` (in rows) and blocks of
    /// `block_rows` rows, on `device`.
    pub fn new(bounds: &[usize], block_rows: u32, device: &candle_core::Device) -> Result<Self> {
        let table = block_starts(bounds, block_rows as usize);
        let blocks = table.len() as u32 - 1;
        let rows = *table.last().expect("the table ends with the rows' count");
        Ok(BlockStarts {
            block_rows,
            rows,
            blocks,
            table: Tensor::new(table.as_slice(), device)?,
        })
    }

    /// Rows a block of the tilings this table is for.
    pub fn block_rows(&self) -> u32 {
        self.block_rows
    }
}

/// Strides, in values, of a (batch, heads, rows, dim) view with contiguous rows.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
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

/// The kernel's arguments, passed by value as one struct: `FlashParams` of
/// flash_attention.cu, field for field (device pointers are 64-bit there). See that file for
/// what each means.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct FlashParams {
    q: u64,
    k: u64,
    v: u64,
    kp: u64,
    vp: u64,
    out: u64,
    lo: u64,
    hi: u64,
    n_q: u32,
    q_off: u32,
    past: u32,
    group: u32,
    causal: i32,
    scale_log2: f32,
    q_strides: Strides,
    k_strides: Strides,
    o_strides: Strides,
    past_head: u32,
    past_row: u32,
    starts: u64,
}

// The same layout as flash_attention.cu asserts.
const _: () = {
    assert!(std::mem::size_of::<Strides>() == 12);
    assert!(std::mem::offset_of!(FlashParams, n_q) == 64);
    assert!(std::mem::offset_of!(FlashParams, q_strides) == 88);
    assert!(std::mem::offset_of!(FlashParams, past_head) == 124);
    assert!(std::mem::offset_of!(FlashParams, starts) == 136);
    assert!(std::mem::size_of::<FlashParams>() == 144);
};

// SAFETY: plain old data of the layout the kernel declares.
unsafe impl DeviceRepr for FlashParams {}

/// Fills in the device pointers of `params` and runs the kernel over `heads` x `batch`
/// blocks of queries: `q`, `k`, `v`, the cached prefix `past` (or none), the per-query key
/// ranges `ranges` (or none: causal), where the blocks start (or none: every `tiling`'s
/// rows). The output is a new tensor of `out_shape`.
#[allow(clippy::too_many_arguments)]
fn launch(
    mut params: FlashParams,
    (heads, batch): (usize, usize),
    [q, k, v]: [&Tensor; 3],
    past: Option<(&Tensor, &Tensor)>,
    ranges: Option<(&Tensor, &Tensor)>,
    starts: Option<&BlockStarts>,
    out_shape: Shape,
    tiling: Tiling,
) -> Result<Tensor> {
    let dim = q.dim(candle_core::D::Minus1)?;
    if !flash_supported(dim, q.dtype()) {
        bail!(
            "flash attention runs on bf16 heads of {FLASH_DIMS:?} values, not {:?} x {dim}",
            q.dtype()
        );
    }
    // Without a prefix the kernel reads no key from kp / vp (past is 0).
    let (pk, pv) = past.unwrap_or((k, v));
    let inputs = lock([q, k, v, pk, pv]);
    let mut views = Vec::with_capacity(5);
    for (t, locked) in [q, k, v, pk, pv].iter().zip(&inputs) {
        // The kernel reads rows of 8 values (16 bytes) at once.
        if t.layout().start_offset() % 8 != 0 {
            bail!("flash attention needs inputs aligned to 8 values");
        }
        views.push(view::<bf16>(locked)?);
    }
    let ranges = ranges.map(|(lo, hi)| lock([lo, hi]));
    let ranges = match &ranges {
        Some([lo, hi]) => Some([view::<u32>(lo)?, view::<u32>(hi)?]),
        None => None,
    };
    if let Some(s) = starts
        && (s.block_rows != tiling.block_rows() || s.rows != params.n_q)
    {
        bail!(
            "flash attention: a table of blocks of {} rows over {} rows, for a tiling of {} over {}",
            s.block_rows,
            s.rows,
            tiling.block_rows(),
            params.n_q
        );
    }
    let starts_locked = starts.map(|s| lock([&s.table]));
    let starts_view = match &starts_locked {
        Some([t]) => Some(view::<u32>(t)?),
        None => None,
    };
    let dev = q.device().as_cuda_device()?;
    if !flash_tilings(dim, dev).contains(&tiling) {
        bail!("flash attention is not compiled for {tiling:?} at heads of {dim} on this GPU");
    }
    let mut out = output::<bf16>(dev, out_shape.elem_count())?;
    let stream = dev.cuda_stream();
    // Each pointer's guard orders the kernel after earlier writes of its memory (where
    // candle tracks them); they are dropped once the launch is queued.
    let mut guards = Vec::with_capacity(8);
    [params.q, params.k, params.v, params.kp, params.vp] =
        [0, 1, 2, 3, 4].map(|i| keep(&mut guards, views[i].device_ptr(&stream)));
    // Left null in causal mode: the kernel then computes the ranges and never reads these.
    if let Some([lo, hi]) = &ranges {
        params.lo = keep(&mut guards, lo.device_ptr(&stream));
        params.hi = keep(&mut guards, hi.device_ptr(&stream));
    }
    if let Some(t) = &starts_view {
        params.starts = keep(&mut guards, t.device_ptr(&stream));
    }
    params.out = keep(&mut guards, out.device_ptr_mut(&stream));
    let smem = smem_bytes(dim, tiling);
    let blocks = starts.map_or(params.n_q.div_ceil(tiling.block_rows()), |s| s.blocks);
    let cfg = LaunchConfig {
        grid_dim: (blocks, heads as u32, batch as u32),
        block_dim: (32 * tiling.warps, 1, 1),
        shared_mem_bytes: smem,
    };
    let name = tiling.kernel_name(dim);
    let module = if tiling.hopper {
        FLASH_HOPPER
    } else {
        FLASH_ATTENTION
    };
    let kernel = Kernel::load(dev, module, &name)?;
    // More than 48 KiB of dynamic shared memory must be asked for per kernel.
    if smem > 48 * 1024 {
        kernel
            .func
            .set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                smem as i32,
            )
            .w()?;
    }
    let mut args = kernel.args();
    args.arg(&params);
    // SAFETY: the parameters match the kernel's `FlashParams`; the callers checked the
    // shapes, and every key and query index the kernel forms is inside them.
    unsafe { args.launch(cfg) }.w()?;
    drop(guards);
    Ok(tensor(out, dev, out_shape))
}

/// The pointer of a `device_ptr` answer, its guard kept in `guards`.
fn keep<'a>(guards: &mut Vec<SyncOnDrop<'a>>, (ptr, guard): (u64, SyncOnDrop<'a>)) -> u64 {
    guards.push(guard);
    ptr
}

/// Parameters for queries of `n_q` rows seeing keys in groups of `group` heads, without
/// pointers (null) or a cached prefix yet.
fn params(n_q: usize, group: usize, scale: f32, [q, k, o]: [Strides; 3]) -> FlashParams {
    FlashParams {
        n_q: n_q as u32,
        group: group as u32,
        scale_log2: scale * std::f32::consts::LOG2_E,
        q_strides: q,
        k_strides: k,
        o_strides: o,
        ..FlashParams::default()
    }
}

/// Attention of `q`, `k`, `v` (rows, heads, dim), bf16 and contiguous, where query i sees
/// keys `lo[i]` .. `hi[i]` (u32, one per row, on the same GPU), tiled for `use_` (or as
/// `tiling` says), the blocks starting where `starts` says (made for the tiling's rows a
/// block) or every tiling's rows. Returns (rows, heads, dim).
#[allow(clippy::too_many_arguments)]
pub fn flash_rows(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    lo: &Tensor,
    hi: &Tensor,
    starts: Option<&BlockStarts>,
    scale: f32,
    use_: FlashUse,
    tiling_: Option<Tiling>,
) -> Result<Tensor> {
    let (rows, heads, dim) = q.dims3()?;
    if k.dims3()? != (rows, heads, dim) || v.dims3()? != (rows, heads, dim) {
        bail!("flash attention: q, k and v differ in shape");
    }
    if lo.elem_count() != rows || hi.elem_count() != rows {
        bail!("flash attention: one key range per query row is needed");
    }
    if q.elem_count() > u32::MAX as usize {
        bail!("flash attention: too many rows for 32-bit strides");
    }
    let strides = Strides::rows_major(heads, rows, dim);
    let params = params(rows, 1, scale, [strides; 3]);
    let out_shape = Shape::from((rows, heads, dim));
    let hopper = hopper_flash(q.device().as_cuda_device()?);
    let tiling_ = tiling_.unwrap_or_else(|| tiling_for(use_, dim, hopper));
    launch(
        params,
        (heads, 1),
        [q, k, v],
        None,
        Some((lo, hi)),
        starts,
        out_shape,
        tiling_,
    )
}

/// Causal attention of the queries `q_off` .. `q_off + n_q` of `q` (batch, heads, len, dim)
/// over a cached prefix `past` ((1, kv_heads, past_len, dim) each, shared by the batch) and
/// `k`, `v` (batch, kv_heads, len, dim); all bf16 and contiguous. Query i sees the prefix
/// and keys 0 ..= q_off + i. Tiled as `tiling` says, or as fits the queries. Returns
/// (batch, n_q, heads * dim).
#[allow(clippy::too_many_arguments)]
pub fn flash_causal(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    past: Option<(&Tensor, &Tensor)>,
    q_off: usize,
    n_q: usize,
    scale: f32,
    tiling_: Option<Tiling>,
) -> Result<Tensor> {
    let (batch, heads, len, dim) = q.dims4()?;
    let (kb, kv_heads, klen, kdim) = k.dims4()?;
    if (kb, klen, kdim) != (batch, len, dim) || v.dims4()? != k.dims4()? {
        bail!("flash attention: k and v do not match q");
    }
    if kv_heads == 0 || heads % kv_heads != 0 || q_off + n_q > len {
        bail!("flash attention: bad head counts or query range");
    }
    if let Some((pk, pv)) = past {
        let (one, ph, _, pd) = pk.dims4()?;
        if (one, ph, pd) != (1, kv_heads, dim) || pv.dims4()? != pk.dims4()? {
            bail!("flash attention: the cached prefix does not match k and v");
        }
        if pk.elem_count() > u32::MAX as usize {
            bail!("flash attention: the cached prefix is too long for 32-bit strides");
        }
    }
    if q.elem_count() > u32::MAX as usize {
        bail!("flash attention: too many rows for 32-bit strides");
    }
    let mut params = params(
        n_q,
        heads / kv_heads,
        scale,
        [
            Strides::heads_major(heads, len, dim),
            Strides::heads_major(kv_heads, len, dim),
            Strides::rows_major(heads, n_q, dim),
        ],
    );
    params.causal = 1;
    params.q_off = q_off as u32;
    if let Some((pk, _)) = past {
        let past_len = pk.dim(2)?;
        (params.past, params.past_head, params.past_row) =
            (past_len as u32, (past_len * dim) as u32, dim as u32);
    }
    let out_shape = Shape::from((batch, n_q, heads * dim));
    let hopper = hopper_flash(q.device().as_cuda_device()?);
    let tiling_ = tiling_.unwrap_or_else(|| tiling_for_causal(dim, n_q, hopper));
    launch(
        params,
        (heads, batch),
        [q, k, v],
        past,
        None,
        None,
        out_shape,
        tiling_,
    )
}
