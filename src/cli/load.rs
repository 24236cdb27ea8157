//! Loading the judge for a command: one copy on the chosen device, or one per GPU side by
//! side, saying where and how long on stderr.

use anyhow::bail;

use super::ModelArgs;
use crate::hub::ModelSource;
use crate::model::Reranker;
use crate::model::device::GpuChoice;
use crate::worker::load_reranker;

/// Loads the model named by `args`, saying where and on what device on stderr.
pub fn load_model(args: &ModelArgs) -> anyhow::Result<Reranker> {
    let source = ModelSource::parse(&args.model, None)?;
    let (device, note) = args.compute_device();
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    eprintln!(
        "loading {} on {} ({})",
        source.display(),
        device.name,
        device.dtype_name()
    );
    let loaded = load_reranker(&source, device)?;
    if loaded.model.device.is_gpu() {
        eprintln!(
            "model ready in {:.1} s (GPU kernels loaded in {:.1} s)",
            loaded.load_seconds,
            loaded.warm_up.as_secs_f64()
        );
    } else {
        eprintln!("model ready in {:.1} s", loaded.load_seconds);
    }
    Ok(loaded.model)
}

/// One copy of the model on each GPU of `choice`, loaded side by side; a GPU that cannot
/// take it is left out with a note, and only when none can is it an error.
pub fn load_on_gpus(args: &ModelArgs, choice: &GpuChoice) -> anyhow::Result<Vec<Reranker>> {
    let ordinals = choice.ordinals();
    if ordinals.is_empty() {
        bail!(
            "no CUDA GPU is visible{}; leave out --gpus, or check the driver with nvidia-smi",
            if cfg!(feature = "cuda") {
                ""
            } else {
                " (this build has no GPU support)"
            }
        );
    }
    let source = ModelSource::parse(&args.model, None)?;
    eprintln!(
        "loading {} on {} GPUs ({})",
        source.display(),
        ordinals.len(),
        ordinals
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let loaded =
        crate::worker::load::load_on_gpus(&source, &ordinals, args.dtype.as_deref() == Some("f32"));
    let mut models = Vec::new();
    for (ordinal, result) in loaded {
        match result {
            Ok(l) => {
                eprintln!(
                    "GPU {ordinal}: {} ready in {:.1} s",
                    l.model.device.name, l.load_seconds
                );
                models.push(l.model);
            }
            Err(e) => eprintln!("note: GPU {ordinal} is left out: {e:#}"),
        }
    }
    if models.is_empty() {
        bail!("the model could not be loaded on any of the GPUs asked for");
    }
    Ok(models)
}
