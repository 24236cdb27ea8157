//! `lychee-rerank index` and `lychee-rerank search`: the first stage from a shell, through
//! the same code as the window; and the first stage of `rank --shortlist`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::bail;
use serde_json::json;

use super::progress::Progress;
use super::{EmbedderArgs, IndexArgs, SearchArgs};
use crate::embed::Embedder;
use crate::hub::ModelSource;
use crate::index::{Catalog, Flow, Hit, IndexEvent, IndexStore, IndexSummary, run_indexing_on};
use crate::library::{ScanResult, scan_paths};
use crate::model::ComputeDevice;
use crate::model::device::{DevicePreference, GpuChoice};
use crate::worker::load_embedder;

/// `index`: builds or updates the index; non-zero only when nothing could be indexed.
pub fn run_index(args: IndexArgs) -> ExitCode {
    exit(index(args))
}

/// `search`: ranks by the first stage alone.
pub fn run_search(args: SearchArgs) -> ExitCode {
    exit(search(args))
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lychee-rerank: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The photos under `paths`, with what was skipped said on stderr.
pub fn scan(paths: &[PathBuf]) -> anyhow::Result<ScanResult> {
    let scan = scan_paths(paths);
    for (path, reason) in &scan.problems {
        eprintln!("skipped {}: {reason}", path.display());
    }
    if scan.photos.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        bail!("no photos found in {}", names.join(", "));
    }
    eprintln!(
        "{} photos{}",
        scan.photos.len(),
        if scan.ignored > 0 {
            format!(" ({} other files left out)", scan.ignored)
        } else {
            String::new()
        }
    );
    Ok(scan)
}

/// Loads the embedder named by `args`, saying where and on what device on stderr.
pub fn load(args: &EmbedderArgs, cpu: bool) -> anyhow::Result<Embedder> {
    let source = ModelSource::parse(&args.embedder, None)?;
    let preference = if cpu {
        DevicePreference::Cpu
    } else {
        DevicePreference::Auto
    };
    let (device, _) = ComputeDevice::select(preference);
    eprintln!(
        "loading the embedder {} on {} ({})",
        source.display(),
        device.name,
        device.dtype_name()
    );
    let loaded = load_embedder(&source, device)?;
    eprintln!("embedder ready in {:.1} s", loaded.load_seconds);
    Ok(loaded.embedder)
}

/// A copy of the embedder named by `args` on each GPU of `choice`, one after another; a
/// GPU that cannot take it is left out with a note, and only when none can is it an error.
pub fn load_on_gpus(args: &EmbedderArgs, choice: &GpuChoice) -> anyhow::Result<Vec<Embedder>> {
    let source = ModelSource::parse(&args.embedder, None)?;
    let mut embedders = Vec::new();
    for ordinal in choice.ordinals() {
        let loaded = ComputeDevice::gpu(ordinal)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .and_then(|device| load_embedder(&source, device));
        match loaded {
            Ok(l) => {
                eprintln!(
                    "GPU {ordinal}: the embedder {} ready on {} in {:.1} s",
                    source.display(),
                    l.embedder.device.name,
                    l.load_seconds
                );
                embedders.push(l.embedder);
            }
            Err(e) => eprintln!("note: GPU {ordinal} is left out: {e:#}"),
        }
    }
    if embedders.is_empty() {
        bail!("the embedder could not be loaded on any of the GPUs asked for");
    }
    Ok(embedders)
}

/// What indexing a set of photos gives: the catalog, the summary, and the photos that
/// could not be indexed (by index) with the reason.
pub type Indexed = (Catalog, IndexSummary, Vec<(usize, String)>);

/// The first stage over `photos`: indexes what is not indexed yet (progress on stderr)
/// and returns the catalog and what the run did.
pub fn index_photos(
    embedders: &[&Embedder],
    photos: &[PathBuf],
    use_index: bool,
) -> anyhow::Result<Indexed> {
    let store = if use_index {
        match IndexStore::open(&IndexStore::default_path()) {
            Ok((store, warning)) => {
                if let Some(w) = warning {
                    eprintln!("warning: {w}");
                }
                Some(Mutex::new(store))
            }
            Err(e) => {
                eprintln!("warning: the index cannot be used ({e}); indexing without it");
                None
            }
        }
    } else {
        None
    };
    let mut catalog = Catalog::default();
    let mut progress = Progress::new(photos.len(), "indexed");
    let mut failed = Vec::new();
    let summary = run_indexing_on(
        embedders,
        photos,
        store.as_ref(),
        &mut catalog,
        |_, event| {
            match event {
                IndexEvent::Indexed { index, .. } => progress.step(&photos[index]),
                IndexEvent::Failed { index, reason } => {
                    progress.step(&photos[index]);
                    failed.push((index, reason));
                }
                IndexEvent::Notice { text } => progress.note(&text),
                IndexEvent::Started { .. } | IndexEvent::Batch => {}
            }
            Flow::Continue
        },
    )?;
    progress.finish();
    for (index, reason) in &failed {
        eprintln!("could not index {}: {reason}", photos[*index].display());
    }
    Ok((catalog, summary, failed))
}

/// The query's vector: the text's, the example image's, or both combined.
pub fn query_vector(
    embedder: &Embedder,
    text: Option<&str>,
    image: Option<&Path>,
) -> anyhow::Result<Vec<f32>> {
    Ok(embedder.embed_query(text, image)?)
}

fn index(args: IndexArgs) -> anyhow::Result<()> {
    let scan = scan(&args.paths)?;
    // Every GPU by default, when there are several.
    let embedders = match GpuChoice::or_every(args.gpus.clone(), args.cpu) {
        None => vec![load(&args.embedder, args.cpu)?],
        Some(choice) => load_on_gpus(&args.embedder, &choice)?,
    };
    let embedders: Vec<&Embedder> = embedders.iter().collect();
    let (_, summary, _) = index_photos(&embedders, &scan.photos, !args.embedder.no_index)?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{} photos embedded, {} already indexed, {} could not be read ({:.1} photos/s)",
            summary.indexed, summary.reused, summary.failed, summary.photos_per_s
        );
    }
    if summary.indexed + summary.reused == 0 {
        bail!("none of the {} photos could be indexed", scan.photos.len());
    }
    Ok(())
}

fn search(args: SearchArgs) -> anyhow::Result<()> {
    if args.query.as_deref().is_none_or(|q| q.trim().is_empty()) && args.query_image.is_none() {
        bail!("give a --query, a --query-image, or both");
    }
    let scan = scan(&args.paths)?;
    let embedder = load(&args.embedder, args.cpu)?;
    let (catalog, _, failed) = index_photos(&[&embedder], &scan.photos, !args.embedder.no_index)?;
    let query = query_vector(
        &embedder,
        args.query.as_deref(),
        args.query_image.as_deref(),
    )?;
    let hits: Vec<Hit> = match args.top {
        Some(k) => catalog.top_k(&query, k),
        None => catalog.search(&query),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        for (rank, hit) in hits.iter().enumerate() {
            let line = json!({
                "path": catalog.photos[hit.photo].to_string_lossy(),
                "rank": rank + 1,
                "similarity": hit.similarity,
                "logit": embedder.logit(hit.similarity),
            });
            writeln!(out, "{line}")?;
        }
        for (index, reason) in &failed {
            let line = json!({ "path": scan.photos[*index].to_string_lossy(), "error": reason });
            writeln!(out, "{line}")?;
        }
    } else {
        writeln!(out, "{:>5}  {:>10}  photo", "rank", "similarity")?;
        for (rank, hit) in hits.iter().enumerate() {
            writeln!(
                out,
                "{:>5}  {:>10.4}  {}",
                rank + 1,
                hit.similarity,
                catalog.photos[hit.photo].display()
            )?;
        }
    }
    out.flush()?;
    if hits.is_empty() {
        bail!("none of the {} photos could be indexed", scan.photos.len());
    }
    Ok(())
}
