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
use candle_core::{CudaDevice, Result, Tensor, bail};
use half::bf16;

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
