//! The CUDA kernels of src/kernels/ as tensor functions (`cuda` feature only), one Rust file
//! per .cu file. Each takes contiguous tensors on one GPU and returns a new one;
//! [`super::ops`] decides when they run and holds the plain candle version of each for every
//! other case. This file has what they share: loading a kernel, borrowing the inputs' device
//! memory, wrapping the output as a tensor.

use std::sync::Arc;

use candle_core::cuda::cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, CudaView, DeviceRepr, LaunchArgs, LaunchConfig,
};
use candle_core::cuda::{CudaDType, kernel_name};
use candle_core::op::BackpropOp;
use candle_core::{
    CudaDevice, CudaStorage, Layout, Result, Shape, Storage, StorageRef, Tensor, WithDType, bail,
};

mod ptx {
    include!(concat!(env!("OUT_DIR"), "/kernels_ptx.rs"));
}

/// A PTX module: the name candle keeps it under once loaded, and its text.
type Module = (&'static str, &'static str);
const ELEMENTWISE: Module = ("lychee_elementwise", ptx::ELEMENTWISE);
const ROTARY: Module = ("lychee_rotary", ptx::ROTARY);
const SOFTMAX: Module = ("lychee_softmax", ptx::SOFTMAX);
const FLASH_ATTENTION: Module = ("lychee_flash_attention", ptx::FLASH_ATTENTION);
const FLASH_HOPPER: Module = ("lychee_flash_hopper", ptx::FLASH_HOPPER);

const THREADS: u32 = 256;

/// Grid-stride launch over `n` items.
fn spread(n: usize) -> LaunchConfig {
    let blocks = (n as u32).div_ceil(THREADS).clamp(1, 1 << 16);
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Runs `$body` with `$T` the element type of `$dtype`: bf16 or f32, the types the kernels
/// are built for.
macro_rules! with_type {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            candle_core::DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            candle_core::DType::F32 => {
                type $T = f32;
                $body
            }
            d => candle_core::bail!("the CUDA kernels do not support {d:?}"),
        }
    };
}

mod elementwise;
mod flash_attention;
mod gemm;
mod rotary;
mod softmax;
mod transfer;

pub use super::flash_tiles::{FlashUse, Tiling};
pub use elementwise::{
    RMS_NORM_MAX_COLS, bias_add, bias_residual, bias_swiglu, residual_add, rms_norm,
};
pub use flash_attention::{
    BlockStarts, flash_causal, flash_rows, flash_supported, flash_tiling, flash_tilings,
};
pub use gemm::{
    Pick, linear_lt, linear_lt_candidates, linear_residual, linear_residual_fits,
    linear_residual_tuned,
};
pub use rotary::{qkv_epilogue, rope_rows};
pub use softmax::{RowMask, segment_attention, segment_attention_fits, softmax_rows};
pub use transfer::{Transfers, WeightStaging};

/// Read locks on the tensors' storage, held while their kernel is queued.
fn lock<const N: usize>(tensors: [&Tensor; N]) -> [(StorageRef<'_>, &Layout); N] {
    tensors.map(Tensor::storage_and_layout)
}

/// The device memory of a locked tensor of `T`, from its first value; it must be on the GPU
/// and contiguous.
fn view<'a, T: CudaDType>(
    (storage, layout): &'a (StorageRef<'_>, &Layout),
) -> Result<CudaView<'a, T>> {
    let Storage::Cuda(storage) = &**storage else {
        bail!("the CUDA kernels need their inputs on the GPU");
    };
    if !layout.is_contiguous() {
        bail!("the CUDA kernels need contiguous inputs");
    }
    Ok(storage.as_cuda_slice::<T>()?.slice(layout.start_offset()..))
}

/// Room for `n` values that the kernel writes before anything reads them.
fn output<T: DeviceRepr>(dev: &CudaDevice, n: usize) -> Result<CudaSlice<T>> {
    // SAFETY: every element is written by the kernel before it is read.
    unsafe { dev.alloc::<T>(n) }
}

/// A tensor of `shape` over a kernel's output.
fn tensor<T: CudaDType>(out: CudaSlice<T>, dev: &CudaDevice, shape: impl Into<Shape>) -> Tensor {
    let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(out, dev.clone()));
    Tensor::from_storage(storage, shape, BackpropOp::none(), false)
}

/// A loaded kernel and the stream it runs on.
struct Kernel {
    func: CudaFunction,
    stream: Arc<CudaStream>,
}

impl Kernel {
    /// The kernel `name` of `module`, loaded on first use.
    fn load(dev: &CudaDevice, (module, ptx): Module, name: &str) -> Result<Self> {
        let func = dev.get_or_load_custom_func(name, module, ptx)?;
        Ok(Kernel {
            func: func.into_cuda_function(),
            stream: dev.cuda_stream(),
        })
    }

    /// `root`_bf16 or `root`_f32 of `module`, for values of `T`.
    fn typed<T: WithDType>(dev: &CudaDevice, module: Module, root: &str) -> Result<Self> {
        Self::load(dev, module, &kernel_name::<T>(root))
    }

    fn args(&self) -> LaunchArgs<'_> {
        self.stream.launch_builder(&self.func)
    }
}
