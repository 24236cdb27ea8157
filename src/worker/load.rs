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
