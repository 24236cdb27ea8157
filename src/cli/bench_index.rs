//! `lychee-rerank bench-index`: the first stage's speed and memory. Search over N
//! synthetic vectors (query embedding, similarity, top K), timed one step at a time;
//! indexing of synthetic JPEG photos, with decoding alone timed beside it so that the
//! report says which of the two bounds the rate. Random weights of the default embedder's
//! shape unless `--embedder` names a folder.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use crate::embed::{Embedder, SIGLIP2_BASE_256_CONFIG};
use crate::index::{Catalog, Flow, run_indexing};
use crate::model::ComputeDevice;
use crate::model::device::DevicePreference;

#[derive(Debug, Clone, Args)]
pub struct BenchIndexArgs {
    /// An embedder folder to measure; without it, random weights of the
    /// google/siglip2-base-patch16-256 shape.
    #[arg(long, value_name = "DIR")]
    pub embedder: Option<PathBuf>,
    /// With random weights: the embedder folder whose tokenizer is used.
    #[arg(long, value_name = "DIR", default_value = "tests/fixtures/tiny-siglip")]
    pub tokenizer_from: PathBuf,
    /// Library sizes to search (synthetic vectors), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    pub vectors: Vec<usize>,
    /// Shortlist length.
    #[arg(long, default_value_t = 200)]
    pub top: usize,
    /// Photos to index (synthetic JPEGs; 0 skips indexing).
    #[arg(long, default_value_t = 64)]
    pub photos: usize,
    /// Photo size, WIDTHxHEIGHT.
    #[arg(long, default_value = "1024x768")]
    pub size: String,
    /// Run on the CPU.
    #[arg(long)]
    pub cpu: bool,
    /// Then both stages, as the window runs them: the first stage over the first of
    /// `--vectors`, the judge on the best `--shortlist` (synthetic JPEG files); reports the
    /// time from the query to the first score and to the last.
    #[arg(long)]
    pub two_stage: bool,
    /// Photos the judge takes in the two-stage run.
    #[arg(long, default_value_t = 200)]
    pub shortlist: usize,
    /// The judge's model folder for the two-stage run; without it, random weights of the
    /// 7B shape with the tokenizer of --judge-tokenizer-from.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    #[arg(long, value_name = "DIR", default_value = "tests/fixtures/tiny-model")]
    pub judge_tokenizer_from: PathBuf,
    /// Also write the report to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

pub fn run(args: BenchIndexArgs) -> ExitCode {
    match bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lychee-rerank bench-index: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The median of `runs` timings of `f` after one warm-up run.
fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e3
}

fn bench(args: &BenchIndexArgs) -> anyhow::Result<()> {
    let preference = if args.cpu {
        DevicePreference::Cpu
    } else {
        DevicePreference::Auto
    };
    let (device, _) = ComputeDevice::select(preference);
    let device_name = device.name.clone();
    let dtype = device.dtype_name();
    let load = Instant::now();
    let (embedder, name) = match &args.embedder {
        Some(dir) => (Embedder::load(dir, device)?, dir.display().to_string()),
        None => (
            Embedder::random(SIGLIP2_BASE_256_CONFIG, &args.tokenizer_from, device)?,
            "random weights, google/siglip2-base-patch16-256 shape".to_owned(),
        ),
    };
    let load_seconds = load.elapsed().as_secs_f64();
    let dim = embedder.dim();
    eprintln!("{name} on {device_name} ({dtype}), {dim} values per vector");
    let query_ms = median_ms(5, || {
        let _ = embedder.embed_texts(&["a red umbrella on a sunny beach"]);
    });
    eprintln!("query embedding: {query_ms:.1} ms");
    let query = embedder
        .embed_texts(&["a red umbrella on a sunny beach"])?
        .remove(0);

    let mut searches = Vec::new();
    let mut two_stage = serde_json::Value::Null;
    for (which, &n) in args.vectors.iter().enumerate() {
        let mut catalog = Catalog::new(vec![PathBuf::new(); n], "bench".into(), dim);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut v = vec![0f32; dim];
        for i in 0..n {
            for x in v.iter_mut() {
                // xorshift: cheap, reproducible pseudo-random values
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *x = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            catalog.set_f32(i, &v);
        }
        let cpu_ms = median_ms(5, || {
            let scores = catalog.cpu_similarities(&query);
            let _ = crate::index::search::top_k_of(&scores, args.top);
        });
        let mib = catalog.vector_bytes() as f64 / (1 << 20) as f64;
        eprintln!(
            "{n} vectors ({mib:.0} MiB): similarity and top {} on the CPU in {cpu_ms:.1} ms, {:.1} ms with the query embedding",
            args.top,
            cpu_ms + query_ms
        );
        let mut gpu_ms = None;
        if embedder.device.is_gpu() {
            catalog.upload(&embedder.device.device)?;
            let ms = median_ms(5, || {
                let _ = catalog.top_k(&query, args.top);
            });
            eprintln!(
                "{n} vectors on the GPU: similarity and top {} in {ms:.2} ms, {:.2} ms with the query embedding",
                args.top,
                ms + query_ms
            );
            gpu_ms = Some(ms);
        }
        searches.push(json!({
            "vectors": n,
            "vector_mib": mib,
            "cpu_search_ms": cpu_ms,
            "gpu_search_ms": gpu_ms,
            "query_embedding_ms": query_ms,
            "cpu_total_ms": cpu_ms + query_ms,
            "gpu_total_ms": gpu_ms.map(|g| g + query_ms),
        }));
        if args.two_stage && which == 0 {
            two_stage = run_two_stages(args, &embedder, catalog)?;
        }
    }

    let mut indexing = serde_json::Value::Null;
    if args.photos > 0 {
        let size = super::bench::parse_size(&args.size)?;
        let dir = tempfile::tempdir()?;
        let photos = super::bench::write_photos(dir.path(), args.photos, size)?;
        // Decoding and resizing alone, on the same threads as indexing.
        let start = Instant::now();
        crate::library::ahead::run_ahead(
            "photo-index",
            &photos,
            8,
            |_, p| {
                crate::library::decode_photo(p)
                    .map(|d| embedder.prepare_image(&d.image))
                    .is_ok()
            },
            |rx| rx.iter().count(),
        )?;
        let decode_rate = photos.len() as f64 / start.elapsed().as_secs_f64();
        // The embedder alone, on photos already prepared: one batch, timed to the results.
        let batch = crate::index::batch_size(&embedder).min(photos.len());
        let prepared: Vec<_> = photos[..batch]
            .iter()
            .map(|p| crate::library::decode_photo(p).map(|d| embedder.prepare_image(&d.image)))
            .collect::<Result<_, _>>()?;
        let refs: Vec<_> = prepared.iter().collect();
        let embed_ms = median_ms(3, || {
            let _ = embedder.embed_images(&refs);
        });
        let embed_rate = batch as f64 / (embed_ms / 1e3);
        eprintln!(
            "the embedder alone: a batch of {batch} prepared photos in {embed_ms:.1} ms ({embed_rate:.0} photos/s)"
        );
        let mut catalog = Catalog::default();
        let summary = run_indexing(&embedder, &photos, None, &mut catalog, |_, _| {
            Flow::Continue
        })?;
        let bound = if summary.photos_per_s < 0.8 * decode_rate {
            "the embedder"
        } else {
            "decoding"
        };
        eprintln!(
            "indexing {} photos of {}: {:.1} photos/s (decoding alone {decode_rate:.1} photos/s: bound by {bound})",
            photos.len(),
            args.size,
            summary.photos_per_s
        );
        indexing = json!({
            "photos": photos.len(),
            "size": args.size,
            "photos_per_s": summary.photos_per_s,
            "decode_photos_per_s": decode_rate,
            "embedder_photos_per_s": embed_rate,
            "bound_by": bound,
            "batch": crate::index::batch_size(&embedder),
            "decode_threads": crate::library::ahead::prepare_threads(),
        });
    }
    let report = json!({
        "embedder": name,
        "device": device_name,
        "dtype": dtype,
        "dim": dim,
        "load_seconds": load_seconds,
        "top": args.top,
        "search": searches,
        "indexing": indexing,
        "two_stage": two_stage,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

/// Both stages over `catalog` (synthetic vectors), the judge on real files: the best
/// `--shortlist` rows get synthetic JPEG photos, then the clock starts at the query.
fn run_two_stages(
    args: &BenchIndexArgs,
    embedder: &Embedder,
    mut catalog: Catalog,
) -> anyhow::Result<serde_json::Value> {
    use crate::worker::{RankEvent, RankRequest, RankSettings, run_ranking};
    let text = "a red umbrella on a sunny beach";
    let dir = tempfile::tempdir()?;
    let size = super::bench::parse_size(&args.size)?;
    let files = super::bench::write_photos(dir.path(), args.shortlist, size)?;
    let query = embedder.embed_texts(&[text])?.remove(0);
    for (hit, file) in catalog.top_k(&query, args.shortlist).iter().zip(&files) {
        catalog.photos[hit.photo] = file.clone();
    }
    let (device, _) = ComputeDevice::select(if args.cpu {
        DevicePreference::Cpu
    } else {
        DevicePreference::Auto
    });
    let judge = match &args.model {
        Some(dir) => crate::model::Reranker::load(dir, device)?,
        None => crate::model::Reranker::random(
            crate::model::lychee_7b_config(),
            &args.judge_tokenizer_from,
            device,
        )?,
    };
    if judge.device.is_gpu() {
        judge.warm_up()?;
    }
    eprintln!(
        "two stages: {} vectors, the judge on the best {}",
        catalog.indexed(),
        args.shortlist
    );
    let start = Instant::now();
    let q = embedder.embed_query(Some(text), None)?;
    let shortlist: Vec<PathBuf> = catalog
        .top_k(&q, args.shortlist)
        .iter()
        .map(|h| catalog.photos[h.photo].clone())
        .collect();
    let first_stage_ms = start.elapsed().as_secs_f64() * 1e3;
    let request = RankRequest::new(text, shortlist);
    let mut first_score_ms = None;
    let mut scored = 0usize;
    run_ranking(
        &judge,
        &request,
        RankSettings::for_model(&judge),
        None,
        &std::sync::atomic::AtomicBool::new(false),
        |event| {
            if let RankEvent::PhotoScored { .. } = event {
                scored += 1;
                first_score_ms.get_or_insert(start.elapsed().as_secs_f64() * 1e3);
            }
        },
    )?;
    let total_s = start.elapsed().as_secs_f64();
    eprintln!(
        "two stages: first stage {first_stage_ms:.1} ms, first score {:.0} ms, {scored} judged in {total_s:.1} s",
        first_score_ms.unwrap_or(f64::NAN)
    );
    Ok(json!({
        "vectors": catalog.indexed(),
        "shortlist": args.shortlist,
        "photo_size": args.size,
        "first_stage_ms": first_stage_ms,
        "first_score_ms": first_score_ms,
        "judged": scored,
        "all_judged_s": total_s,
    }))
}
