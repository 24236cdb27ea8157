//! Choosing where the model runs, once: CUDA with bf16 when the binary was built with the
//! `cuda` feature and a GPU answers, otherwise the CPU in f32.

use candle_core::{DType, Device};

/// The device and number format the model runs in, with a name for the user.
#[derive(Debug, Clone)]
pub struct ComputeDevice {
    pub device: Device,
    pub dtype: DType,
    /// "CPU" or the GPU's name.
    pub name: String,
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DevicePreference {
    /// The GPU when there is one, else the CPU.
    #[default]
    Auto,
    Cpu,
}

impl ComputeDevice {
    /// The CPU in f32 (the only format the CPU runs at a useful speed and precision).
    pub fn cpu() -> Self {
        ComputeDevice {
            device: Device::Cpu,
            dtype: DType::F32,
            name: "CPU".into(),
        }
    }

    /// Picks the device. The second value explains a fall-back to the CPU, if any.
    pub fn select(preference: DevicePreference) -> (Self, Option<String>) {
        if preference == DevicePreference::Cpu {
            return (Self::cpu(), None);
        }
        Self::select_gpu()
    }

    fn select_gpu() -> (Self, Option<String>) {
        match Self::gpu(0) {
            Ok(device) => (device, None),
            Err(e) => (
                Self::cpu(),
                Some(format!("{e}; running on the CPU, which is slow")),
            ),
        }
    }

    /// GPU number `ordinal` in bf16.
    #[cfg(feature = "cuda")]
    pub fn gpu(ordinal: usize) -> Result<Self, String> {
        let device =
            Device::new_cuda(ordinal).map_err(|e| format!("no usable CUDA GPU {ordinal} ({e})"))?;
        if let Device::Cuda(cuda) = &device {
            // SAFETY: all model work runs on this device's one stream, so the cross-stream
            // events that tracking records are never needed; they cost time on every
            // kernel launch.
            unsafe { cuda.disable_event_tracking() };
            keep_freed_memory_pooled(ordinal);
        }
        let name = gpu_name(ordinal).unwrap_or_else(|| format!("CUDA GPU {ordinal}"));
        let name = if gpu_count() > 1 {
            format!("{name} (GPU {ordinal})")
        } else {
            name
        };
        Ok(ComputeDevice {
            device,
            dtype: DType::BF16,
            name,
        })
    }

    /// GPU number `ordinal`: this build has none.
    #[cfg(not(feature = "cuda"))]
    pub fn gpu(_ordinal: usize) -> Result<Self, String> {
        Err("this build has no GPU support".into())
    }

    /// The same device computing in `dtype` instead.
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// True when the model runs on a GPU.
    pub fn is_gpu(&self) -> bool {
        !self.device.is_cpu()
    }

    /// (free, total) bytes of device memory, for a GPU.
    pub fn memory(&self) -> Option<(u64, u64)> {
        #[cfg(feature = "cuda")]
        if self.is_gpu() {
            use candle_core::cuda_backend::cudarc::driver::result;
            return result::mem_get_info()
                .ok()
                .map(|(f, t)| (f as u64, t as u64));
        }
        None
    }

    /// The device memory pool's (in use now, in use at most, reserved at most) bytes since
    /// the last [`ComputeDevice::reset_memory_peaks`], for a GPU: what a batch really took.
    pub fn memory_pool(&self) -> Option<(u64, u64, u64)> {
        #[cfg(feature = "cuda")]
        if let candle_core::DeviceLocation::Cuda { gpu_id } = self.device.location() {
            use candle_core::cuda_backend::cudarc::driver::sys::CUmemPool_attribute as A;
            return Some((
                pool_attribute(gpu_id, A::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?,
                pool_attribute(gpu_id, A::CU_MEMPOOL_ATTR_USED_MEM_HIGH)?,
                pool_attribute(gpu_id, A::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH)?,
            ));
        }
        None
    }

    /// Hands the memory the pool keeps from earlier work (free, but reserved) back to the
    /// device, so that the device's free memory says what a new batch can have. The
    /// pool grows again as the next batches need it.
    pub fn release_pooled_memory(&self) {
        #[cfg(feature = "cuda")]
        if let candle_core::DeviceLocation::Cuda { gpu_id } = self.device.location() {
            use candle_core::cuda_backend::cudarc::driver::{result, sys};
            let _ = self.device.synchronize();
            let Ok(device) = result::device::get(gpu_id as i32) else {
                return;
            };
            let mut pool = std::ptr::null_mut();
            // SAFETY: plain driver calls; trimming never releases memory in use.
            unsafe {
                if sys::cuDeviceGetDefaultMemPool(&mut pool, device) == sys::CUresult::CUDA_SUCCESS
                {
                    let _ = sys::cuMemPoolTrimTo(pool, 0);
                }
            }
        }
    }

    /// Starts the pool's high-water marks over from what is in use now.
    pub fn reset_memory_peaks(&self) {
        #[cfg(feature = "cuda")]
        if let candle_core::DeviceLocation::Cuda { gpu_id } = self.device.location() {
            use candle_core::cuda_backend::cudarc::driver::sys::CUmemPool_attribute as A;
            let _ = self.device.synchronize();
            set_pool_attribute(gpu_id, A::CU_MEMPOOL_ATTR_USED_MEM_HIGH, 0);
            set_pool_attribute(gpu_id, A::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH, 0);
        }
    }

    /// "bf16" / "f32" for display.
    pub fn dtype_name(&self) -> &'static str {
        match self.dtype {
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::F32 => "f32",
            _ => "other",
        }
    }
}

/// Tensors are allocated from the device's stream-ordered memory pool, which by default
/// hands freed memory back to the driver at every synchronization (once per photo), so the
/// large attention and MLP buffers were mapped anew for each photo. Keeping freed memory in
/// the pool makes those allocations free; the pool's size stays at the peak of one batch.
#[cfg(feature = "cuda")]
fn keep_freed_memory_pooled(ordinal: usize) {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    let Ok(device) = result::device::get(ordinal as i32) else {
        return;
    };
    let mut pool = std::ptr::null_mut();
    // SAFETY: plain driver calls on the current device with valid out-pointers.
    unsafe {
        if sys::cuDeviceGetDefaultMemPool(&mut pool, device) != sys::CUresult::CUDA_SUCCESS {
            return;
        }
        let mut threshold = u64::MAX;
        let _ = sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        );
    }
}

/// A u64 attribute of GPU `ordinal`'s default memory pool.
#[cfg(feature = "cuda")]
fn pool_attribute(
    ordinal: usize,
    attribute: candle_core::cuda_backend::cudarc::driver::sys::CUmemPool_attribute,
) -> Option<u64> {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    let device = result::device::get(ordinal as i32).ok()?;
    let mut pool = std::ptr::null_mut();
    let mut value = 0u64;
    // SAFETY: plain driver calls with valid out-pointers; these attributes are u64.
    unsafe {
        if sys::cuDeviceGetDefaultMemPool(&mut pool, device) != sys::CUresult::CUDA_SUCCESS {
            return None;
        }
        if sys::cuMemPoolGetAttribute(pool, attribute, (&mut value as *mut u64).cast())
            != sys::CUresult::CUDA_SUCCESS
        {
            return None;
        }
    }
    Some(value)
}

/// Sets a u64 attribute of GPU `ordinal`'s default memory pool (best effort).
#[cfg(feature = "cuda")]
fn set_pool_attribute(
    ordinal: usize,
    attribute: candle_core::cuda_backend::cudarc::driver::sys::CUmemPool_attribute,
    mut value: u64,
) {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    let Ok(device) = result::device::get(ordinal as i32) else {
        return;
    };
    let mut pool = std::ptr::null_mut();
    // SAFETY: as in `pool_attribute`.
    unsafe {
        if sys::cuDeviceGetDefaultMemPool(&mut pool, device) == sys::CUresult::CUDA_SUCCESS {
            let _ = sys::cuMemPoolSetAttribute(pool, attribute, (&mut value as *mut u64).cast());
        }
    }
}

/// The GPU's marketing name, from the driver.
#[cfg(feature = "cuda")]
fn gpu_name(ordinal: usize) -> Option<String> {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    result::init().ok()?;
    let device = result::device::get(ordinal as i32).ok()?;
    let mut buf = [0 as std::ffi::c_char; 256];
    // SAFETY: the buffer is large enough and the driver writes a NUL-terminated string.
    let rc = unsafe { sys::cuDeviceGetName(buf.as_mut_ptr(), buf.len() as i32, device) };
    if rc != sys::CUresult::CUDA_SUCCESS {
        return None;
    }
    // SAFETY: the driver wrote a NUL-terminated string into `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// Number of CUDA GPUs the driver shows (0 without GPU support or a driver).
/// A GPU of this machine, as the model panel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    /// Its memory, in MiB (0 when the driver does not say).
    pub memory_mib: u64,
}

/// Every GPU the driver lists (none in a build without GPU support).
pub fn gpu_list() -> Vec<GpuInfo> {
    #[cfg(feature = "cuda")]
    {
        use candle_core::cuda_backend::cudarc::driver::result;
        return (0..gpu_count())
            .map(|ordinal| GpuInfo {
                ordinal,
                name: gpu_name(ordinal).unwrap_or_else(|| format!("CUDA GPU {ordinal}")),
                memory_mib: result::device::get(ordinal as i32)
                    // SAFETY: a plain query of a device handle the driver gave.
                    .and_then(|d| unsafe { result::device::total_mem(d) })
                    .map_or(0, |b| b as u64 >> 20),
            })
            .collect();
    }
    #[allow(unreachable_code)]
    Vec::new()
}

pub fn gpu_count() -> usize {
    #[cfg(feature = "cuda")]
    {
        use candle_core::cuda_backend::cudarc::driver::result;
        if result::init().is_ok() {
            return result::device::get_count().map_or(0, |n| n.max(0) as usize);
        }
    }
    0
}

/// Which GPUs to use: `all`, or a list of numbers (`0,1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuChoice {
    All,
    List(Vec<usize>),
}

impl std::str::FromStr for GpuChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("all") {
            return Ok(GpuChoice::All);
        }
        let list = s
            .split(',')
            .map(|p| {
                p.trim().parse::<usize>().map_err(|_| {
                    format!("{p:?} is not a GPU number; give all, or numbers such as 0,1")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if list.is_empty() {
            return Err("give all, or GPU numbers such as 0,1".into());
        }
        Ok(GpuChoice::List(list))
    }
}

impl GpuChoice {
    /// `chosen`, or every GPU when there are several and the CPU was not asked for: what
    /// the commands use by default.
    pub fn or_every(chosen: Option<GpuChoice>, cpu: bool) -> Option<GpuChoice> {
        chosen.or_else(|| (!cpu && gpu_count() > 1).then_some(GpuChoice::All))
    }

    /// The GPU numbers chosen, in order; a number given twice is two copies of the model
    /// on that GPU (one with room for both overlaps their work).
    pub fn ordinals(&self) -> Vec<usize> {
        match self {
            GpuChoice::All => (0..gpu_count()).collect(),
            GpuChoice::List(l) => l.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_choices_parse() {
        assert_eq!("all".parse::<GpuChoice>(), Ok(GpuChoice::All));
        assert_eq!("1, 0".parse::<GpuChoice>(), Ok(GpuChoice::List(vec![1, 0])));
        assert_eq!(GpuChoice::List(vec![1, 0, 1]).ordinals(), vec![1, 0, 1]);
        assert!("0,x".parse::<GpuChoice>().unwrap_err().contains("\"x\""));
    }
}
