//! cuBLASLt's candidate algorithms for a product: asked for once per shape, checked
//! against a shape, and described (for `bench --ops`).

use std::ffi::c_void;
use std::mem::size_of;
use std::sync::Arc;

use candle_core::cuda::cudarc::cublaslt::{result as lt, sys};
use candle_core::{Result, Tensor};

use super::{
    CANDIDATES, Described, Lt, Pick, Shape, WORKSPACE_BYTES, cublas, handle_of, linear_lt,
};

/// Whether cuBLASLt says `algo` runs the product `described` within the workspace.
pub(super) fn runs(lt: &Lt, described: &Described, algo: &sys::cublasLtMatmulAlgo_t) -> bool {
    let [a, b, c] = described.layouts;
    let mut result = std::mem::MaybeUninit::<sys::cublasLtMatmulHeuristicResult_t>::uninit();
    // SAFETY: live descriptors and algorithm; cuBLASLt writes the result when it succeeds.
    let status = unsafe {
        sys::cublasLtMatmulAlgoCheck(
            lt.handle,
            described.desc,
            a,
            b,
            c,
            c,
            algo,
            result.as_mut_ptr(),
        )
    };
    status == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS
        // SAFETY: written, since the check succeeded.
        && unsafe { result.assume_init() }.workspaceSize <= WORKSPACE_BYTES
}

/// Into how many parts `algo` splits the inner dimension (1: none).
pub(super) fn splits_k(algo: &sys::cublasLtMatmulAlgo_t) -> i64 {
    algo_attr(
        algo,
        sys::cublasLtMatmulAlgoConfigAttributes_t::CUBLASLT_ALGO_CONFIG_SPLITK_NUM,
    )
}

/// A u32 attribute of a cuBLASLt algorithm's configuration; -1 where it has none.
fn algo_attr(
    algo: &sys::cublasLtMatmulAlgo_t,
    attr: sys::cublasLtMatmulAlgoConfigAttributes_t,
) -> i64 {
    let mut v: u32 = 0;
    let mut written = 0usize;
    // SAFETY: reads one attribute of a live algorithm into a value of its size.
    let r = unsafe {
        sys::cublasLtMatmulAlgoConfigGetAttribute(
            algo,
            attr,
            (&mut v) as *mut u32 as *mut c_void,
            size_of::<u32>(),
            &mut written,
        )
    };
    if r == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        v as i64
    } else {
        -1
    }
}

/// What cuBLASLt says of each candidate algorithm for this product (its id, tile, stages,
/// split of k and waves), in its order; empty where it has none.
pub fn linear_lt_candidates(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Vec<String>> {
    // One product asks for the candidates and keeps them; this reads them back.
    if linear_lt(x, w, bias, residual, Pick::First)?.is_none() {
        return Ok(Vec::new());
    }
    let dev = x.device().as_cuda_device()?;
    let lt = handle_of(dev)?;
    let (rows, k) = x.dims2()?;
    let n = w.dim(0)?;
    let list = lt.candidates.lock().unwrap_or_else(|e| e.into_inner());
    let found = list
        .iter()
        .find(|((m, nn, kk, b, r, _), _)| {
            (*m, *nn, *kk, *b, *r)
                == (
                    n as u64,
                    rows as u64,
                    k as u64,
                    bias.is_some(),
                    residual.is_some(),
                )
        })
        .map(|(_, c)| c.clone())
        .unwrap_or_else(|| Arc::from(Vec::new()));
    Ok(found.iter().map(describe_algo).collect())
}

/// "algo 66 tile 18 stages 20 split 1 cluster 2" for a cuBLASLt algorithm.
fn describe_algo(algo: &sys::cublasLtMatmulAlgo_t) -> String {
    use sys::cublasLtMatmulAlgoConfigAttributes_t as C;
    let get = |attr: C| algo_attr(algo, attr);
    format!(
        "algo {} tile {} stages {} split {} cluster {}",
        get(C::CUBLASLT_ALGO_CONFIG_ID),
        get(C::CUBLASLT_ALGO_CONFIG_TILE_ID),
        get(C::CUBLASLT_ALGO_CONFIG_STAGES_ID),
        get(C::CUBLASLT_ALGO_CONFIG_SPLITK_NUM),
        get(C::CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID),
    )
}

/// The candidates of `key`, asked of cuBLASLt the first time.
pub(super) fn candidates_of(
    lt: &Lt,
    key: Shape,
    described: &Described,
) -> Result<Arc<[sys::cublasLtMatmulAlgo_t]>> {
    if let Some(c) = lt
        .candidates
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
    {
        return Ok(c.clone());
    }
    // SAFETY: the descriptors are live.
    let found: Arc<[_]> = unsafe { find_algos(lt, described, key.5) }?.into();
    lt.candidates
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, found.clone());
    Ok(found)
}

/// cuBLASLt's algorithms for the product `described` with the workspace and these pointer
/// alignments, best guess first; empty where it has none.
///
/// # Safety
/// The descriptors must be live.
unsafe fn find_algos(
    lt: &Lt,
    described: &Described,
    aligns: [u32; 4],
) -> Result<Vec<sys::cublasLtMatmulAlgo_t>> {
    use sys::cublasLtMatmulPreferenceAttributes_t as P;
    let [a, b, c] = described.layouts;
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
            let mut results: Vec<sys::cublasLtMatmulHeuristicResult_t> =
                Vec::with_capacity(CANDIDATES);
            let mut count: i32 = 0;
            let status = sys::cublasLtMatmulAlgoGetHeuristic(
                lt.handle,
                described.desc,
                a,
                b,
                c,
                c,
                pref,
                CANDIDATES as i32,
                results.as_mut_ptr(),
                &mut count,
            );
            match status {
                sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS => {}
                sys::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED => return Ok(Vec::new()),
                e => return cublas(Err(lt::CublasError(e)), "algorithm search"),
            }
            // SAFETY: cuBLASLt wrote `count` (at most CANDIDATES) results.
            results.set_len((count.max(0) as usize).min(CANDIDATES));
            Ok(results
                .into_iter()
                .filter(|r| r.state == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS)
                .map(|r| r.algo)
                .collect())
        })();
        let _ = lt::destroy_matmul_pref(pref);
        found
    }
}
