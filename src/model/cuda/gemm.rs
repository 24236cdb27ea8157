//! residual + x w^T (+ bias) as one cuBLASLt matrix product: the residual goes in as the
//! product's C (beta = 1) and the bias in its epilogue, so the sum is rounded to bf16 once
//! and no separate pass reads the product back. Each GPU gets one cuBLASLt handle and
//! workspace, and each shape its algorithm, found once.

use std::collections::HashMap;
use std::ffi::c_void;
use std::mem::size_of;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::cuda::DeviceId;
use candle_core::cuda::cudarc::cublaslt::{result as lt, sys};
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use candle_core::{CudaDevice, DType, Result, Tensor, bail};
use half::bf16;

use super::{lock, output, tensor, view};

/// The workspace NVIDIA recommends for Hopper's products (32 MiB).
const WORKSPACE_BYTES: usize = 32 << 20;

/// What picks a product's algorithm: sizes (cuBLASLt's column-major m, n, k), whether a
/// bias is added, and the alignment of each pointer (a, b, c, d).
type Shape = (u64, u64, u64, bool, [u32; 4]);

/// One GPU's cuBLASLt handle, its workspace and the algorithms found so far.
struct Lt {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    stream: Arc<CudaStream>,
    /// None where cuBLASLt has no algorithm for the shape (then the product and a pass).
    algos: Mutex<HashMap<Shape, Option<sys::cublasLtMatmulAlgo_t>>>,
}

// SAFETY: a cuBLASLt handle may be used from any thread (NVIDIA's documentation), and all of
// its calls go through the one stream the model's thread drives.
unsafe impl Send for Lt {}
unsafe impl Sync for Lt {}

impl Drop for Lt {
    fn drop(&mut self) {
        // SAFETY: the handle was made by create_handle and is dropped once.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

/// The handle of `dev`, made on first use. Handles of devices that no longer exist (only
/// this registry still holds their stream) are let go.
fn handle_of(dev: &CudaDevice) -> Result<Arc<Lt>> {
    type Handles = Mutex<Vec<(DeviceId, Arc<Lt>)>>;
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    let mut handles = HANDLES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some((_, lt)) = handles.iter().find(|(id, _)| *id == dev.id()) {
        return Ok(lt.clone());
    }
    handles.retain(|(_, lt)| Arc::strong_count(&lt.stream) > 1);
    let handle = cublas(lt::create_handle(), "handle")?;
    // SAFETY: cuBLASLt writes the workspace before it reads it.
    let workspace = match unsafe { dev.alloc::<u8>(WORKSPACE_BYTES) } {
        Ok(w) => w,
        Err(e) => {
            // SAFETY: made just above, used nowhere else.
            let _ = unsafe { lt::destroy_handle(handle) };
            return Err(e);
        }
    };
    let lt = Arc::new(Lt {
        handle,
        workspace,
        stream: dev.cuda_stream(),
        algos: Mutex::new(HashMap::new()),
    });
    handles.push((dev.id(), lt.clone()));
    Ok(lt)
}

/// Whether [`linear_residual`] runs for these tensors: bf16 on one GPU, contiguous, x
/// (rows, k), w (n, k), residual (rows, n), bias (n), sizes that keep every row 16-byte
/// aligned.
pub fn linear_residual_fits(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: &Tensor,
) -> bool {
    let all = [Some(x), Some(w), bias, Some(residual)];
    let (Ok((rows, k)), Ok((n, wk))) = (x.dims2(), w.dims2()) else {
        return false;
    };
    all.iter().flatten().all(|t| {
        t.device().is_cuda()
            && t.device().same_device(x.device())
            && t.dtype() == DType::BF16
            && t.is_contiguous()
    }) && wk == k
        && residual.dims() == [rows, n]
        && bias.is_none_or(|b| b.dims() == [n])
        && k % 8 == 0
        && n % 8 == 0
        && rows > 0
}

/// The largest power of two (at most 256) that divides the address: what cuBLASLt may
/// assume of a pointer.
fn alignment(ptr: u64) -> u32 {
    if ptr == 0 {
        256
    } else {
        (1u64 << ptr.trailing_zeros().min(8)) as u32
    }
}

fn cublas<T>(r: std::result::Result<T, lt::CublasError>, what: &str) -> Result<T> {
    r.map_err(|e| candle_core::Error::Msg(format!("cuBLASLt {what}: {e:?}")))
}

/// residual + x w^T (+ bias) for bf16 x (rows, k), w (n, k), residual (rows, n) and bias
/// (n), as one product (see the module's comment); [`linear_residual_fits`] must hold.
/// None where this GPU's cuBLASLt has no algorithm for it.
pub fn linear_residual(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: &Tensor,
) -> Result<Option<Tensor>> {
    if !linear_residual_fits(x, w, bias, residual) {
        bail!("linear_residual needs contiguous bf16 x (rows, k), w (n, k), residual (rows, n)");
    }
    let dev = x.device().as_cuda_device()?;
    let (rows, k) = x.dims2()?;
    let n = w.dim(0)?;
    let lt = handle_of(dev)?;
    let stream = dev.cuda_stream();
    let [xs, ws, rs] = lock([x, w, residual]);
    let bias_lock = bias.map(|b| lock([b]));
    let (xs, ws, rs) = (view::<bf16>(&xs)?, view::<bf16>(&ws)?, view::<bf16>(&rs)?);
    let bias_view = match &bias_lock {
        Some([b]) => Some(view::<bf16>(b)?),
        None => None,
    };
    let out = output::<bf16>(dev, rows * n)?;
    {
        let (a_ptr, _a) = ws.device_ptr(&stream);
        let (b_ptr, _b) = xs.device_ptr(&stream);
        let (c_ptr, _c) = rs.device_ptr(&stream);
        let (d_ptr, _d) = out.device_ptr(&stream);
        let bias_ptr = bias_view.as_ref().map(|b| b.device_ptr(&stream));
        let (w_ptr, _w) = lt.workspace.device_ptr(&stream);
        // Column-major, as cuBLASLt sees row-major memory: D (n x rows) = W^T' x' + C, where
        // A is w stored k x n (transposed), B is x stored k x rows.
        let (m, nn, kk) = (n as u64, rows as u64, k as u64);
        let aligns = [a_ptr, b_ptr, c_ptr, d_ptr].map(alignment);
        let key: Shape = (m, nn, kk, bias.is_some(), aligns);
        // SAFETY: the descriptors are made, used and destroyed here; the pointers are the
        // locked tensors' memory and the output, of the sizes the layouts give.
        unsafe {
            let desc = cublas(
                lt::create_matmul_desc(
                    sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    sys::cudaDataType_t::CUDA_R_32F,
                ),
                "descriptor",
            )?;
            let layouts = [(k, n), (k, rows), (n, rows)].map(|(r, c)| {
                lt::create_matrix_layout(
                    sys::cudaDataType_t::CUDA_R_16BF,
                    r as u64,
                    c as u64,
                    r as i64,
                )
            });
            let run = (|| -> Result<bool> {
                let [a_l, b_l, c_l] = match layouts {
                    [Ok(a), Ok(b), Ok(c)] => [a, b, c],
                    _ => bail!("cuBLASLt could not describe a {rows}x{k} by {k}x{n} product"),
                };
                let transpose: i32 = 1;
                cublas(
                    lt::set_matmul_desc_attribute(
                        desc,
                        sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                        (&transpose) as *const i32 as *const c_void,
                        size_of::<i32>(),
                    ),
                    "transpose",
                )?;
                let epilogue = if let Some((ptr, _)) = &bias_ptr {
                    cublas(
                        lt::set_matmul_desc_attribute(
                            desc,
                            sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                            ptr as *const u64 as *const c_void,
                            size_of::<u64>(),
                        ),
                        "bias",
                    )?;
                    sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS
                } else {
                    sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT
                };
                cublas(
                    lt::set_matmul_desc_attribute(
                        desc,
                        sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_EPILOGUE,
                        (&epilogue) as *const sys::cublasLtEpilogue_t as *const c_void,
                        size_of::<sys::cublasLtEpilogue_t>(),
                    ),
                    "epilogue",
                )?;
                let known = lt
                    .algos
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&key)
                    .copied();
                let algo = match known {
                    Some(a) => a,
                    None => {
                        let algo = find_algo(&lt, desc, [a_l, b_l, c_l], aligns)?;
                        lt.algos
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(key, algo);
                        algo
                    }
                };
                let Some(algo) = algo else {
                    return Ok(false);
                };
                let (alpha, beta) = (1.0f32, 1.0f32);
                cublas(
                    lt::matmul(
                        lt.handle,
                        desc,
                        (&alpha) as *const f32 as *const c_void,
                        (&beta) as *const f32 as *const c_void,
                        a_ptr as *const c_void,
                        a_l,
                        b_ptr as *const c_void,
                        b_l,
                        c_ptr as *const c_void,
                        c_l,
                        d_ptr as *mut c_void,
                        c_l,
                        &algo,
                        w_ptr as *mut c_void,
                        WORKSPACE_BYTES,
                        stream.cu_stream() as sys::cudaStream_t,
                    ),
                    "product",
                )?;
                Ok(true)
            })();
            for l in layouts.into_iter().flatten() {
                let _ = lt::destroy_matrix_layout(l);
            }
            let _ = lt::destroy_matmul_desc(desc);
            if !run? {
                return Ok(None);
            }
        }
    }
    Ok(Some(tensor(out, dev, (rows, n))))
}

/// cuBLASLt's fastest algorithm for the product `desc` over layouts a, b, c (= d) with the
/// workspace and these pointer alignments; None where it has none.
///
/// # Safety
/// `desc` and the layouts must be live descriptors.
unsafe fn find_algo(
    lt: &Lt,
    desc: sys::cublasLtMatmulDesc_t,
    [a, b, c]: [sys::cublasLtMatrixLayout_t; 3],
    aligns: [u32; 4],
) -> Result<Option<sys::cublasLtMatmulAlgo_t>> {
    use sys::cublasLtMatmulPreferenceAttributes_t as P;
    // SAFETY (all of the block): the preference is made, used and destroyed here.
    unsafe {
        let pref = cublas(lt::create_matmul_pref(), "preference")?;
        let set = |attr: P, value: *const c_void, size: usize| {
            cublas(
                lt::set_matmul_pref_attribute(pref, attr, value, size),
                "preference",
            )
        };
        let found = (|| {
            set(
                P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&WORKSPACE_BYTES) as *const usize as *const c_void,
                size_of::<usize>(),
            )?;
            let which = [
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
            ];
            for (attr, align) in which.into_iter().zip(&aligns) {
                set(attr, align as *const u32 as *const c_void, size_of::<u32>())?;
            }
            match lt::get_matmul_algo_heuristic(lt.handle, desc, a, b, c, c, pref) {
                Ok(h) => Ok(Some(h.algo)),
                Err(lt::CublasError(sys::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED)) => Ok(None),
                Err(e) => cublas(Err(e), "algorithm search"),
            }
        })();
        let _ = lt::destroy_matmul_pref(pref);
        found
    }
}
