//! Copies between the host and the GPU that overlap the model's work: a second stream and a
//! page-locked buffer the pixels are written into. A batch's pixels cross the bus while the
//! main stream is still busy with the batch before, into device memory allocated on the
//! second stream; the main stream waits only for the copy to be done and then owns that
//! memory as a tensor (and frees it in its own order). Scores are read back on the second
//! stream once an event says they are computed, so reading them does not wait for work
//! queued after them.
//!
//! Memory the second stream writes is never allocated on the main stream: that allocation
//! would be ordered after the main stream's queued work, which the copy is meant to overlap.

use std::sync::Arc;

use candle_core::cuda::WrapErr;
use candle_core::cuda::cudarc::driver::sys::CUevent_flags;
use candle_core::cuda::cudarc::driver::{CudaEvent, CudaStream, PinnedHostSlice};
use candle_core::{CudaDevice, DType, Result, Shape, Tensor, bail};
use half::{bf16, f16};

use super::super::preprocess::concat_into;
use super::super::profile::mark_stream;
use super::{lock, tensor, view};

/// One GPU's copy stream and its buffers.
pub struct Transfers {
    copy: Arc<CudaStream>,
    /// Page-locked memory the pixels are written into; the device reads it directly.
    host: Option<PinnedHostSlice<bf16>>,
    /// Reached on the copy stream when the last upload has landed.
    copied: CudaEvent,
}

// SAFETY: the page-locked buffer is only touched through `&mut self`, and only after
// `copied` says the device is done reading it.
unsafe impl Send for Transfers {}

impl Transfers {
    /// A copy stream on `dev`, with buffers made at the first upload.
    pub fn new(dev: &CudaDevice) -> Result<Self> {
        let ctx = dev.cuda_stream().context().clone();
        Ok(Transfers {
            copy: ctx.new_stream().w()?,
            host: None,
            copied: ctx
                .new_event(Some(CUevent_flags::CU_EVENT_DISABLE_TIMING))
                .w()?,
        })
    }

    /// `parts` one after the other as a `rows` x `cols` tensor on the main stream of `dev`.
    /// The copy runs on the second stream at once; the main stream takes the values only
    /// when it reaches this point of its work.
    pub fn upload(
        &mut self,
        dev: &CudaDevice,
        parts: &[&[bf16]],
        (rows, cols): (usize, usize),
    ) -> Result<Tensor> {
        let n: usize = parts.iter().map(|p| p.len()).sum();
        if n != rows * cols || n == 0 {
            bail!("{n} pixel values do not make {rows} rows of {cols}");
        }
        // The page-locked buffer is written again only once the last copy out of it is done.
        self.copied.synchronize().w()?;
        if self.host.as_ref().is_none_or(|h| h.len() < n) {
            self.host = None;
            let ctx = self.copy.context();
            // SAFETY: every value the device reads is written below first.
            self.host = Some(unsafe { ctx.alloc_pinned::<bf16>(n) }.w()?);
        }
        let host = self.host.as_mut().expect("made above");
        let values = &mut host.as_mut_slice().w()?[..n];
        mark_stream("fill", &self.copy);
        concat_into(values, parts);
        // The batch's device memory is allocated on the copy stream and written there; the
        // tensor made of it belongs to the main stream, which frees it in its own order once
        // the vision tower has read it.
        // SAFETY: the copy below writes every value before the main stream reads any.
        let mut landed = unsafe { self.copy.alloc::<bf16>(n) }.w()?;
        mark_stream("h2d", &self.copy);
        self.copy.memcpy_htod(&*values, &mut landed).w()?;
        self.copied.record(&self.copy).w()?;
        mark_stream("landed", &self.copy);
        let main = dev.cuda_stream();
        main.wait(&self.copied).w()?;
        mark_stream("waited", &main);
        // SAFETY: the pointer was allocated for `n` values and is owned by nothing else once
        // leaked; the main stream uses it only after the event above.
        let owned = unsafe { main.upgrade_device_ptr::<bf16>(landed.leak(), n) };
        Ok(tensor(owned, dev, (rows, cols)))
    }

    /// An event reached on the main stream of `dev` once the work queued so far is done.
    pub fn mark(dev: &CudaDevice) -> Result<CudaEvent> {
        dev.cuda_stream()
            .record_event(Some(CUevent_flags::CU_EVENT_DISABLE_TIMING))
            .w()
    }

    /// The values of `t` (f32, contiguous, on the GPU), read on the copy stream once `ready`
    /// is reached: work the main stream has queued after `ready` is not waited for.
    pub fn read_f32(&self, t: &Tensor, ready: &CudaEvent) -> Result<Vec<f32>> {
        let locked = lock([t]);
        let src = view::<f32>(&locked[0])?;
        let n = t.elem_count();
        let mut host = vec![0f32; n];
        self.copy.wait(ready).w()?;
        self.copy.memcpy_dtoh(&src.slice(..n), &mut host).w()?;
        self.copy.synchronize().w()?;
        Ok(host)
    }
}

impl Drop for Transfers {
    fn drop(&mut self) {
        // The page-locked buffer is freed only once no copy reads it.
        let _ = self.copy.synchronize();
    }
}

/// Page-locked buffers the checkpoint passes through on its way to the GPU: while the device
/// copies out of one, the readers fill the next. Copies from page-locked memory run at the
/// link's speed and do not wait for one another, where copies from ordinary (or
/// memory-mapped) memory go through the driver's own staging one at a time.
pub struct WeightStaging {
    slots: Vec<StagingSlot>,
    next: usize,
}

struct StagingSlot {
    host: PinnedHostSlice<u8>,
    /// Reached on the main stream once the copy out of `host` is done.
    free: CudaEvent,
}

/// Buffers of the weight staging, and the bytes of each: 128 MiB of page-locked memory
/// while the model loads.
const STAGING_SLOTS: usize = 4;
const STAGING_BYTES: usize = 32 << 20;

impl WeightStaging {
    pub fn new(dev: &CudaDevice) -> Result<Self> {
        let ctx = dev.cuda_stream().context().clone();
        let slots = (0..STAGING_SLOTS)
            .map(|_| {
                Ok(StagingSlot {
                    // SAFETY: the device reads only bytes the readers have written.
                    host: unsafe { ctx.alloc_pinned::<u8>(STAGING_BYTES) }.w()?,
                    free: ctx
                        .new_event(Some(CUevent_flags::CU_EVENT_DISABLE_TIMING))
                        .w()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(WeightStaging { slots, next: 0 })
    }

    /// A tensor of `dtype` and `shape` (`len` bytes) on the main stream of `dev`, whose bytes
    /// `fill(from, buf)` writes, `buf.len()` of them from byte `from`, one buffer at a time.
    /// The copies are queued on the main stream, so whatever runs after them on it sees the
    /// values.
    pub fn upload(
        &mut self,
        dev: &CudaDevice,
        dtype: DType,
        shape: &Shape,
        len: usize,
        fill: &mut dyn FnMut(usize, &mut [u8]) -> Result<()>,
    ) -> Result<Tensor> {
        use DType::*;
        if !matches!(dtype, BF16 | F16 | F32 | F64 | U8 | U32 | I16 | I32 | I64) {
            bail!("tensors of {dtype:?} are not loaded on the GPU");
        }
        if len != shape.elem_count() * dtype.size_in_bytes() {
            bail!("{len} bytes do not make a {shape:?} tensor of {dtype:?}");
        }
        let main = dev.cuda_stream();
        // SAFETY: the copies below write every byte before anything queued after them on
        // the main stream reads one.
        let mut landed = unsafe { main.alloc::<u8>(len.max(1)) }.w()?;
        let mut from = 0;
        while from < len {
            let n = (len - from).min(STAGING_BYTES);
            let slot = &mut self.slots[self.next];
            self.next = (self.next + 1) % STAGING_SLOTS;
            slot.free.synchronize().w()?;
            let buf = &mut slot.host.as_mut_slice().w()?[..n];
            fill(from, buf)?;
            main.memcpy_htod(&*buf, &mut landed.slice_mut(from..from + n))
                .w()?;
            slot.free.record(&main).w()?;
            from += n;
        }
        let ptr = landed.leak();
        macro_rules! typed {
            ($T:ty) => {{
                // SAFETY: the allocation holds `len` bytes, that many values of the type;
                // once leaked nothing else owns it, and the tensor frees it on the main
                // stream.
                let owned =
                    unsafe { main.upgrade_device_ptr::<$T>(ptr, len / std::mem::size_of::<$T>()) };
                tensor(owned, dev, shape.clone())
            }};
        }
        Ok(match dtype {
            BF16 => typed!(bf16),
            F16 => typed!(f16),
            F32 => typed!(f32),
            F64 => typed!(f64),
            U8 => typed!(u8),
            U32 => typed!(u32),
            I16 => typed!(i16),
            I32 => typed!(i32),
            I64 => typed!(i64),
            _ => unreachable!("checked above"),
        })
    }
}

impl Drop for WeightStaging {
    fn drop(&mut self) {
        // The page-locked buffers are freed only once no copy reads them.
        for slot in &self.slots {
            let _ = slot.free.synchronize();
        }
    }
}
