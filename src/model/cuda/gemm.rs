//! x w^T (+ bias) (+ residual) as one cuBLASLt matrix product: the residual goes in as the
//! product's C (beta = 1) and the bias in its epilogue, so the sum is rounded to bf16 once
//! and no separate pass reads the product back. Each GPU gets one cuBLASLt handle and
//! workspace, and each shape its list of candidate algorithms, asked for once. A product
//! runs cuBLASLt's first guess, a candidate it is told (`bench --ops` times them all), or,
//! through [`linear_residual_tuned`], what the GPU ran fastest the first time a product of
//! its size came: each candidate and the unfused product-then-pass, measured on the device
//! and kept on disk ([`super::super::product_choices`]) for the next runs. The candidates
//! and what cuBLASLt says of them are in gemm/algos.rs, the measured choice in gemm/tune.rs.

use std::collections::HashMap;
use std::ffi::c_void;
use std::mem::size_of;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::cuda::DeviceId;
use candle_core::cuda::cudarc::cublaslt::{result as lt, sys};
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use candle_core::{CudaDevice, DType, Result, Tensor, bail};
use half::bf16;

use super::super::product_choices::Choices;
use super::{lock, output, tensor, view};

mod algos;
mod tune;

use algos::candidates_of;
pub use algos::linear_lt_candidates;
use tune::Choice;

/// The workspace NVIDIA recommends for Hopper's products (32 MiB).
const WORKSPACE_BYTES: usize = 32 << 20;

/// How many algorithms cuBLASLt is asked for, best guess first.
const CANDIDATES: usize = 16;

/// What picks a product's algorithms: sizes (cuBLASLt's column-major m, n, k), whether a
/// bias and a residual are added, and the alignment of each pointer (a, b, c, d).
type Shape = (u64, u64, u64, bool, bool, [u32; 4]);

/// Which of a shape's candidate algorithms a product runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// cuBLASLt's first guess.
    First,
    /// The candidate at this place of cuBLASLt's list (for measurements).
    Candidate(usize),
}

/// One GPU's cuBLASLt handle, its workspace and the candidates found so far.
struct Lt {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    stream: Arc<CudaStream>,
    /// Empty where cuBLASLt has no algorithm for the shape (then the product and a pass).
    candidates: Mutex<HashMap<Shape, Arc<[sys::cublasLtMatmulAlgo_t]>>>,
    /// What [`linear_residual_tuned`] runs for each shape met so far.
    chosen: Mutex<HashMap<Shape, Choice>>,
    /// What was measured fastest per size class, in this run and the ones before.
    stored: Mutex<Choices>,
    /// The GPU and cuBLASLt version the stored choices hold for.
    device_key: String,
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
        candidates: Mutex::new(HashMap::new()),
        chosen: Mutex::new(HashMap::new()),
        stored: Mutex::new(Choices::load(&Choices::default_path())),
        device_key: format!(
            "{} | cuBLASLt {}",
            dev.cuda_stream()
                .context()
                .name()
                .unwrap_or_else(|_| "CUDA GPU".into()),
            // SAFETY: a plain query of the loaded library.
            unsafe { sys::cublasLtGetVersion() }
        ),
    });
    handles.push((dev.id(), lt.clone()));
    Ok(lt)
}

/// Whether [`linear_lt`] runs for these tensors: bf16 on one GPU, contiguous, x (rows, k),
/// w (n, k), bias (n), residual (rows, n), sizes that keep every row 16-byte aligned.
pub fn linear_lt_fits(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> bool {
    let all = [Some(x), Some(w), bias, residual];
    let (Ok((rows, k)), Ok((n, wk))) = (x.dims2(), w.dims2()) else {
        return false;
    };
    all.iter().flatten().all(|t| {
        t.device().is_cuda()
            && t.device().same_device(x.device())
            && t.dtype() == DType::BF16
            && t.is_contiguous()
    }) && wk == k
        && residual.is_none_or(|r| r.dims() == [rows, n])
        && bias.is_none_or(|b| b.dims() == [n])
        && k % 8 == 0
        && n % 8 == 0
        && rows > 0
}

/// Whether [`linear_residual`] runs for these tensors (see [`linear_lt_fits`]).
pub fn linear_residual_fits(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: &Tensor,
) -> bool {
    linear_lt_fits(x, w, bias, Some(residual))
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
    linear_lt(x, w, bias, Some(residual), Pick::First)
}

/// A product's descriptor and its three matrix layouts (a, b, c = d), destroyed on drop.
struct Described {
    desc: sys::cublasLtMatmulDesc_t,
    layouts: [sys::cublasLtMatrixLayout_t; 3],
}

impl Drop for Described {
    fn drop(&mut self) {
        // SAFETY: each was made by describe() and is destroyed once, here.
        unsafe {
            for l in self.layouts {
                let _ = lt::destroy_matrix_layout(l);
            }
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

/// The descriptors of d (rows x n, row-major) = x (rows x k) w^T (w n x k) (+ bias): as
/// cuBLASLt sees row-major memory in its column-major terms, D (n x rows) = A' B + C, where
/// A is w stored k x n (transposed) and B is x stored k x rows.
fn describe(rows: usize, k: usize, n: usize, bias_ptr: Option<u64>) -> Result<Described> {
    // SAFETY: the descriptor is made here and owned by the returned value (or destroyed on
    // the way out); the attribute values outlive the calls that copy them.
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
        let made: Vec<_> = layouts
            .iter()
            .filter_map(|l| l.as_ref().ok().copied())
            .collect();
        let Ok(layouts) = <[_; 3]>::try_from(made.clone()) else {
            for l in made {
                let _ = lt::destroy_matrix_layout(l);
            }
            let _ = lt::destroy_matmul_desc(desc);
            bail!("cuBLASLt could not describe a {rows}x{k} by {k}x{n} product");
        };
        let described = Described { desc, layouts };
        let set = |attr, value: *const c_void, size: usize, what: &str| {
            cublas(lt::set_matmul_desc_attribute(desc, attr, value, size), what)
        };
        use sys::cublasLtMatmulDescAttributes_t as D;
        let transpose: i32 = 1;
        set(
            D::CUBLASLT_MATMUL_DESC_TRANSA,
            (&transpose) as *const i32 as *const c_void,
            size_of::<i32>(),
            "transpose",
        )?;
        let epilogue = if let Some(ptr) = &bias_ptr {
            set(
                D::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                ptr as *const u64 as *const c_void,
                size_of::<u64>(),
                "bias",
            )?;
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS
        } else {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT
        };
        set(
            D::CUBLASLT_MATMUL_DESC_EPILOGUE,
            (&epilogue) as *const sys::cublasLtEpilogue_t as *const c_void,
            size_of::<sys::cublasLtEpilogue_t>(),
            "epilogue",
        )?;
        Ok(described)
    }
}

/// x w^T (+ bias) (+ residual) for bf16 x (rows, k), w (n, k), bias (n) and residual (rows,
/// n), as one product with the candidate algorithm `pick`; [`linear_lt_fits`] must hold.
/// None where this GPU's cuBLASLt has no such candidate for the shape.
pub fn linear_lt(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    pick: Pick,
) -> Result<Option<Tensor>> {
    product(x, w, bias, residual, Mode::Pick(pick))
}

/// residual + x w^T (+ bias) as [`linear_residual`] does it with one of cuBLASLt's candidate
/// algorithms, or as `unfused` does it (the product, then a pass), whichever the GPU ran
/// fastest when a product of this size class first came (see [`measure`]); that first time
/// waits for the device. The candidates are those that do not split the inner dimension,
/// so that every choice sums in the same order.
pub fn linear_residual_tuned(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: &Tensor,
    unfused: &dyn Fn() -> Result<Tensor>,
) -> Result<Tensor> {
    match product(x, w, bias, Some(residual), Mode::Tuned(unfused))? {
        Some(y) => Ok(y),
        None => unfused(),
    }
}

/// How [`product`] picks what it runs.
enum Mode<'a> {
    Pick(Pick),
    Tuned(&'a dyn Fn() -> Result<Tensor>),
}

fn product(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    mode: Mode<'_>,
) -> Result<Option<Tensor>> {
    if !linear_lt_fits(x, w, bias, residual) {
        bail!("a cuBLASLt product needs contiguous bf16 x (rows, k), w (n, k), residual (rows, n)");
    }
    let dev = x.device().as_cuda_device()?;
    let (rows, k) = x.dims2()?;
    let n = w.dim(0)?;
    let lt = handle_of(dev)?;
    let stream = dev.cuda_stream();
    let [xs, ws] = lock([x, w]);
    let bias_lock = bias.map(|b| lock([b]));
    let res_lock = residual.map(|r| lock([r]));
    let (xs, ws) = (view::<bf16>(&xs)?, view::<bf16>(&ws)?);
    let bias_view = match &bias_lock {
        Some([b]) => Some(view::<bf16>(b)?),
        None => None,
    };
    let res_view = match &res_lock {
        Some([r]) => Some(view::<bf16>(r)?),
        None => None,
    };
    let out = output::<bf16>(dev, rows * n)?;
    {
        let (a_ptr, _a) = ws.device_ptr(&stream);
        let (b_ptr, _b) = xs.device_ptr(&stream);
        let (d_ptr, _d) = out.device_ptr(&stream);
        let res_ptr = res_view.as_ref().map(|r| r.device_ptr(&stream));
        let bias_ptr = bias_view.as_ref().map(|b| b.device_ptr(&stream));
        let (w_ptr, _w) = lt.workspace.device_ptr(&stream);
        // Without a residual, C is D and beta 0: cuBLASLt does not read it.
        let (c_ptr, beta) = match &res_ptr {
            Some((p, _)) => (*p, 1.0f32),
            None => (d_ptr, 0.0f32),
        };
        let described = describe(rows, k, n, bias_ptr.as_ref().map(|(p, _)| *p))?;
        let aligns = [a_ptr, b_ptr, c_ptr, d_ptr].map(alignment);
        let key: Shape = (
            n as u64,
            rows as u64,
            k as u64,
            bias.is_some(),
            residual.is_some(),
            aligns,
        );
        let candidates = candidates_of(&lt, key, &described)?;
        let [a_l, b_l, c_l] = described.layouts;
        let alpha = 1.0f32;
        let launch = |algo: &sys::cublasLtMatmulAlgo_t| -> Result<()> {
            // SAFETY: the descriptors are live; the pointers are the locked tensors' memory,
            // the output and the workspace, of the sizes the layouts give.
            unsafe {
                cublas(
                    lt::matmul(
                        lt.handle,
                        described.desc,
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
                        algo,
                        w_ptr as *mut c_void,
                        WORKSPACE_BYTES,
                        stream.cu_stream() as sys::cudaStream_t,
                    ),
                    "product",
                )
            }
        };
        let algo = match mode {
            Mode::Pick(pick) => {
                let at = match pick {
                    Pick::First => 0,
                    Pick::Candidate(i) => i,
                };
                match candidates.get(at) {
                    Some(a) => *a,
                    None => return Ok(None),
                }
            }
            Mode::Tuned(unfused) => {
                match tune::choice(&lt, &described, key, &candidates, &launch, unfused)? {
                    Choice::Algo(a) => a,
                    Choice::Unfused => return Ok(None),
                }
            }
        };
        launch(&algo)?;
    }
    Ok(Some(tensor(out, dev, (rows, n))))
}
