//! Loading the judge: find the model's folder, load it onto the device, and, on a GPU,
//! run every kernel once so that the first photo of a ranking does not pay for loading
//! them. The inference thread and the command line both load through [`load_reranker`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::hub::{ModelSource, resolve_local};
use crate::model::{ComputeDevice, Reranker};

/// A model ready to judge, and how long it took to get there.
pub struct LoadedModel {
    pub model: Reranker,
    /// The model's folder.
    pub folder: PathBuf,
    /// From the start of the load to the model being ready.
    pub load_seconds: f64,
    /// Of which loading the GPU's kernels (zero on the CPU).
    pub warm_up: Duration,
}

/// Loads `source` onto `device`; the error says what to do.
pub fn load_reranker(source: &ModelSource, device: ComputeDevice) -> anyhow::Result<LoadedModel> {
    use anyhow::Context;
    let start = Instant::now();
    let folder = resolve_local(source)?;
    let model = Reranker::load(&folder, device)
        .with_context(|| format!("cannot load the model in {}", folder.display()))?;
    let warm_up = if model.device.is_gpu() {
        model.warm_up()?
    } else {
        Duration::ZERO
    };
    Ok(LoadedModel {
        model,
        folder,
        load_seconds: start.elapsed().as_secs_f64(),
        warm_up,
    })
}

/// One copy of `source` on each GPU of `ordinals` (a number given twice: two copies on
/// that GPU), loaded side by side; each entry says how that GPU's load went. `f32` loads
/// them in f32 instead of bf16.
pub fn load_on_gpus(
    source: &ModelSource,
    ordinals: &[usize],
    f32: bool,
) -> Vec<(usize, anyhow::Result<LoadedModel>)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = ordinals
            .iter()
            .map(|&ordinal| {
                let loader = std::thread::Builder::new()
                    .name(format!("load-gpu-{ordinal}"))
                    .spawn_scoped(s, move || {
                        let device = ComputeDevice::gpu(ordinal).map_err(anyhow::Error::msg)?;
                        let device = if f32 {
                            device.with_dtype(candle_core::DType::F32)
                        } else {
                            device
                        };
                        load_reranker(source, device)
                    });
                (ordinal, loader)
            })
            .collect();
        handles
            .into_iter()
            .map(|(ordinal, loader)| {
                let result = match loader {
                    Ok(h) => h
                        .join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("loading stopped unexpectedly"))),
                    Err(e) => Err(anyhow::anyhow!("no thread to load it on ({e})")),
                };
                (ordinal, result)
            })
            .collect()
    })
}

/// An embedder ready to embed, and how long it took.
pub struct LoadedEmbedder {
    pub embedder: crate::embed::Embedder,
    pub folder: PathBuf,
    pub load_seconds: f64,
}

/// Loads the first-stage embedder `source` onto `device`; the error says what to do.
pub fn load_embedder(
    source: &ModelSource,
    device: ComputeDevice,
) -> anyhow::Result<LoadedEmbedder> {
    use anyhow::Context;
    let start = Instant::now();
    let folder = resolve_local(source)?;
    let embedder = crate::embed::Embedder::load(&folder, device)
        .with_context(|| format!("cannot load the embedder in {}", folder.display()))?;
    Ok(LoadedEmbedder {
        embedder,
        folder,
        load_seconds: start.elapsed().as_secs_f64(),
    })
}
