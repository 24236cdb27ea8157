//! `lychee-rerank rank`: the headless ranking, through the same code as the window.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::bail;
use serde_json::json;

use super::progress::Progress;
use super::{ModelArgs, RankArgs};
use crate::cache::scores::ScoreCache;
use crate::hub::ModelSource;
use crate::model::Reranker;
use crate::model::device::GpuChoice;
use crate::worker::{
    PhotoScore, RankEvent, RankOutcome, RankRequest, RankSettings, run_ranking_on,
};

/// Runs the command; the exit code is non-zero only when nothing could be ranked.
pub fn run(args: RankArgs) -> ExitCode {
    match rank(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lychee-rerank: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Every photo's score from the cache, when the cache has them all for this model, found
/// from the model's files without loading it; None as soon as one is missing.
fn answered_before(
    args: &ModelArgs,
    request: &RankRequest,
    cache: &std::sync::Mutex<ScoreCache>,
) -> Option<Vec<PhotoScore>> {
    let dir = crate::hub::resolve_local(&ModelSource::parse(&args.model, None).ok()?).ok()?;
    let (identity, preprocess) = crate::model::Reranker::identity_of(&dir).ok()?;
    let (device, _) = args.compute_device();
    crate::worker::rank::all_cached(&identity, &preprocess, device.dtype_name(), request, cache)
}

fn rank(args: RankArgs) -> anyhow::Result<ExitCode> {
    let query_text = args.query.clone().unwrap_or_default();
    if query_text.trim().is_empty() && args.query_image.is_none() {
        bail!("give a --query, a --query-image, or both");
    }
    if let Some(file) = &args.documents {
        return super::documents::rank_documents(&args, file);
    }
    let scan = super::index::scan(&args.paths)?;
    // Two stages: the first ranks every photo by similarity, the model judges the best K.
    let mut first_stage: HashMap<PathBuf, (f32, usize)> = HashMap::new();
    let mut not_indexed: Vec<(PathBuf, String)> = Vec::new();
    let photos = match args.shortlist {
        None => scan.photos.clone(),
        Some(k) => {
            let embedder = super::index::load(&args.embedder, args.model.cpu)?;
            let (catalog, _, failed) =
                super::index::index_photos(&[&embedder], &scan.photos, !args.embedder.no_index)?;
            let query = super::index::query_vector(
                &embedder,
                Some(&query_text),
                args.query_image.as_deref(),
            )?;
            not_indexed = failed
                .into_iter()
                .map(|(i, reason)| (scan.photos[i].clone(), reason))
                .collect();
            let hits = catalog.top_k(&query, k);
            eprintln!(
                "the first stage picked {} of {} photos for the model to judge",
                hits.len(),
                catalog.indexed()
            );
            hits.iter()
                .enumerate()
                .map(|(rank, hit)| {
                    let path = catalog.photos[hit.photo].clone();
                    first_stage.insert(path.clone(), (hit.similarity, rank + 1));
                    path
                })
                .collect()
            // the embedder's memory is freed here, before the judge loads
        }
    };
    let request = RankRequest::new(query_text, photos)
        .with_query_image(args.query_image.clone())
        .with_instruction(args.instruction.clone())
        .with_pixels(args.min_pixels, args.max_pixels);
    let total = request.photos.len();
    let mut results: Vec<Option<Result<(PhotoScore, bool), String>>> = vec![None; total];
    let cache = if args.no_cache {
        None
    } else {
        match ScoreCache::open(&ScoreCache::default_path()) {
            Ok((cache, warning)) => {
                if let Some(w) = warning {
                    eprintln!("warning: {w}");
                }
                Some(std::sync::Mutex::new(cache))
            }
            Err(e) => {
                eprintln!("warning: the score cache cannot be used ({e}); ranking without it");
                None
            }
        }
    };
    // A question answered before needs no model: the cache is asked first.
    if let Some(cache) = &cache
        && let Some(cached) = answered_before(&args.model, &request, cache)
    {
        eprintln!("all {total} scores are in the score cache; the model was not loaded");
        for (slot, score) in results.iter_mut().zip(cached) {
            *slot = Some(Ok((score, true)));
        }
    } else {
        // Every GPU by default, when there are several.
        let gpus = GpuChoice::or_every(args.gpus.clone(), args.model.cpu);
        let models = match &gpus {
            None => vec![super::load::load_model(&args.model)?],
            Some(choice) => super::load::load_on_gpus(&args.model, choice)?,
        };
        let models: Vec<&Reranker> = models.iter().collect();
        let mut progress = Progress::new(total, "ranked");
        // One batch size for every device: the smallest any of them can take.
        let mut settings = models
            .iter()
            .map(|m| RankSettings::for_model(m))
            .min_by_key(|s| s.max_batch)
            .expect("at least one model");
        if let Some(batch) = args.batch {
            settings.max_batch = usize::from(batch);
        }
        let outcome = run_ranking_on(
            &models,
            &request,
            settings,
            cache.as_ref(),
            &AtomicBool::new(false),
            |event| match event {
                RankEvent::PhotoScored {
                    index,
                    score,
                    cached,
                } => {
                    progress.step(&request.photos[index]);
                    results[index] = Some(Ok((score, cached)));
                }
                RankEvent::PhotoFailed { index, reason } => {
                    progress.step(&request.photos[index]);
                    results[index] = Some(Err(reason));
                }
                RankEvent::Notice { text } => progress.note(&text),
                RankEvent::Started { .. } | RankEvent::PhotoStarted { .. } => {}
            },
        )?;
        progress.finish();
        debug_assert_eq!(outcome, RankOutcome::Finished);
    }

    let mut scored: Vec<(&PathBuf, &PhotoScore, bool)> = Vec::new();
    let mut failed: Vec<(&PathBuf, &str)> =
        not_indexed.iter().map(|(p, r)| (p, r.as_str())).collect();
    for (path, result) in request.photos.iter().zip(&results) {
        match result {
            Some(Ok((score, cached))) => scored.push((path, score, *cached)),
            Some(Err(reason)) => failed.push((path, reason)),
            None => failed.push((path, "not scored")),
        }
    }
    scored.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then_with(|| a.0.cmp(b.0)));
    let shown = args.top.unwrap_or(scored.len()).min(scored.len());
    let mut out = std::io::stdout().lock();
    if args.json {
        for (rank, (path, s, cached)) in scored.iter().take(shown).enumerate() {
            let mut line = json!({
                "cached": cached,
                "path": path.to_string_lossy(),
                "rank": rank + 1,
                "score": s.score,
                "logit_yes": s.logit_yes,
                "logit_no": s.logit_no,
                "visual_tokens": s.visual_tokens,
                "input_size": [s.input_size.0, s.input_size.1],
                "original_size": [s.original_size.0, s.original_size.1],
                "seconds": s.seconds,
                "lowered_resolution": s.lowered_resolution,
            });
            if let Some((similarity, first_rank)) = first_stage.get(*path) {
                line["similarity"] = json!(similarity);
                line["first_stage_rank"] = json!(first_rank);
            }
            writeln!(out, "{line}")?;
        }
        for (path, reason) in &failed {
            writeln!(
                out,
                "{}",
                json!({ "path": path.to_string_lossy(), "error": reason })
            )?;
        }
    } else {
        writeln!(out, "{:>5}  {:>6}  photo", "rank", "score")?;
        for (rank, (path, s, _)) in scored.iter().take(shown).enumerate() {
            writeln!(out, "{:>5}  {:>6.4}  {}", rank + 1, s.score, path.display())?;
        }
        for (path, reason) in &failed {
            eprintln!("could not score {}: {reason}", path.display());
        }
    }
    out.flush()?;
    if scored.is_empty() {
        bail!("none of the {total} photos could be scored");
    }
    Ok(ExitCode::SUCCESS)
}
