//! How a batch's pixels reach the device and its scores come back. On a GPU computing in
//! bf16, both go through a second stream ([`super::super::cuda::Transfers`]): the pixels of
//! the next batch cross the bus while the language model still runs on this one, and this
//! batch's scores are read without waiting for the work queued after them. Elsewhere (the
//! CPU, or `LYCHEE_OVERLAP=0` for side-by-side measurements) a plain copy.

#[cfg(feature = "cuda")]
use std::sync::Mutex;

#[cfg(feature = "cuda")]
use candle_core::Device;
use candle_core::Tensor;

use super::super::Result;
use super::super::device::ComputeDevice;
use super::super::preprocess::PhotoInput;

/// True unless the environment sets `LYCHEE_OVERLAP=0`.
fn overlap_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("LYCHEE_OVERLAP").map_or(true, |v| v.trim() != "0"))
}

/// The copy stream of the model's GPU, where it has one.
pub(super) struct Link {
    #[cfg(feature = "cuda")]
    transfers: Option<Mutex<super::super::cuda::Transfers>>,
}

/// Scores queued on the device: read them with [`super::Reranker::collect`].
pub struct PendingScores {
    /// Per document (yes, no), f32, contiguous; None for no documents.
    logits: Option<Tensor>,
    #[cfg(feature = "cuda")]
    ready: Option<candle_core::cuda::cudarc::driver::CudaEvent>,
}

impl PendingScores {
    /// Scores of no documents.
    pub(super) fn none() -> Self {
        PendingScores {
            logits: None,
            #[cfg(feature = "cuda")]
            ready: None,
        }
    }
}

impl Link {
    /// A copy stream on `device` when it is a GPU computing in bf16 (a GPU that cannot make
    /// one copies as the CPU does).
    pub(super) fn new(device: &ComputeDevice) -> Self {
        #[cfg(feature = "cuda")]
        {
            let transfers = match &device.device {
                Device::Cuda(dev)
                    if device.dtype == candle_core::DType::BF16 && overlap_enabled() =>
                {
                    super::super::cuda::Transfers::new(dev).ok().map(Mutex::new)
                }
                _ => None,
            };
            Link { transfers }
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (device, overlap_enabled);
            Link {}
        }
    }

    /// The patch rows of `photos` (rows of `row` values) as one tensor on `device` in its
    /// dtype.
    pub(super) fn pixels(
        &self,
        device: &ComputeDevice,
        photos: &[&PhotoInput],
        row: usize,
    ) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if let (Some(transfers), Device::Cuda(dev)) = (&self.transfers, &device.device) {
            let packed: Option<Vec<&[half::bf16]>> =
                photos.iter().map(|p| p.packed_bf16.as_deref()).collect();
            if let Some(parts) = packed {
                let rows = parts.iter().map(|p| p.len()).sum::<usize>() / row;
                let mut t = transfers.lock().unwrap_or_else(|e| e.into_inner());
                return Ok(t.upload(dev, &parts, (rows, row))?);
            }
        }
        let dev = &device.device;
        let parts = photos
            .iter()
            .map(|p| {
                let n = p.len() / row;
                Ok(match &p.packed_bf16 {
                    Some(v) => Tensor::from_slice(v, (n, row), dev)?,
                    None => Tensor::from_slice(&p.pixel_values, (n, row), dev)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let all = if parts.len() == 1 {
            parts.into_iter().next().expect("one part")
        } else {
            Tensor::cat(&parts, 0)?
        };
        Ok(all.to_dtype(device.dtype)?)
    }

    /// `logits` (documents x (yes, no)) as queued work: nothing waits for the device yet.
    pub(super) fn queue(&self, device: &ComputeDevice, logits: Tensor) -> Result<PendingScores> {
        let logits = logits.to_dtype(candle_core::DType::F32)?.contiguous()?;
        #[cfg(feature = "cuda")]
        {
            let ready = match (&self.transfers, &device.device) {
                (Some(_), Device::Cuda(dev)) => Some(super::super::cuda::Transfers::mark(dev)?),
                _ => None,
            };
            Ok(PendingScores {
                logits: Some(logits),
                ready,
            })
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = device;
            Ok(PendingScores {
                logits: Some(logits),
            })
        }
    }

    /// The (yes, no) logits of each document of `pending`, once the device has them.
    pub(super) fn read(&self, pending: PendingScores) -> Result<Vec<[f32; 2]>> {
        let Some(logits) = &pending.logits else {
            return Ok(Vec::new());
        };
        let (n, two) = logits.dims2()?;
        if two != 2 {
            return Err(
                candle_core::Error::Msg(format!("{two} logits per document, not 2")).into(),
            );
        }
        #[cfg(feature = "cuda")]
        let values = match (&self.transfers, &pending.ready) {
            (Some(t), Some(ready)) => t
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .read_f32(logits, ready)?,
            _ => logits.flatten_all()?.to_vec1::<f32>()?,
        };
        #[cfg(not(feature = "cuda"))]
        let values = logits.flatten_all()?.to_vec1::<f32>()?;
        debug_assert_eq!(values.len(), n * 2);
        Ok(values.chunks_exact(2).map(|c| [c[0], c[1]]).collect())
    }
}
