//! Ranking the same photos again under another query: their visual tokens come from
//! memory instead of the vision tower, and the scores are exactly those a model that never
//! saw the photos gives. A photo at another resolution is not taken for the one seen.

mod common;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use lychee_rerank::model::{ComputeDevice, Reranker};
use lychee_rerank::worker::rank::{RankEvent, RankRequest, RankSettings, run_ranking};

fn photos() -> Vec<PathBuf> {
    common::photos()
}

fn request(query: &str, max_pixels: Option<usize>) -> RankRequest {
    RankRequest::new(query, photos()).with_pixels(None, max_pixels)
}

/// (logit_yes, logit_no) per photo, None where a photo failed.
fn rank(model: &Reranker, request: &RankRequest) -> Vec<Option<(f32, f32)>> {
    ranked(model, request)
        .into_iter()
        .map(|r| r.map(|(l, _)| l))
        .collect()
}

/// The logits and the size the model saw, per photo.
#[allow(clippy::type_complexity)]
fn ranked(model: &Reranker, request: &RankRequest) -> Vec<Option<((f32, f32), (usize, usize))>> {
    let mut out = vec![None; request.photos.len()];
    run_ranking(
        model,
        request,
        // One photo at a time: batches formed by decode order would change the
        // floating-point sums in the last bits and hide what is compared.
        RankSettings {
            max_batch: 1,
            time_stages: false,
        },
        None,
        &AtomicBool::new(false),
        |e| {
            if let RankEvent::PhotoScored { index, score, .. } = e {
                out[index] = Some(((score.logit_yes, score.logit_no), score.input_size));
            }
        },
    )
    .unwrap();
    out
}

#[test]
fn a_second_query_reuses_the_visual_tokens_and_scores_the_same() {
    let model = Reranker::load(&common::model_dir(), ComputeDevice::cpu()).unwrap();
    let first = rank(&model, &request("a snowy mountain", None));
    let scored = first.iter().flatten().count();
    assert!(scored >= 10, "the fixture photos score: {first:?}");
    let (kept, bytes, hits) = model.visual_cache_stats();
    assert_eq!((kept, hits), (scored, 0));
    assert!(bytes > 0);

    let second = rank(&model, &request("a red umbrella on a beach", None));
    let (_, _, hits) = model.visual_cache_stats();
    assert_eq!(
        hits as usize, scored,
        "every photo's tokens came from memory"
    );
    let _ = hits;

    let fresh_model = Reranker::load(&common::model_dir(), ComputeDevice::cpu()).unwrap();
    fresh_model.set_visual_cache_limit(0);
    let fresh = rank(&fresh_model, &request("a red umbrella on a beach", None));
    assert_eq!(fresh_model.visual_cache_stats(), (0, 0, 0));
    assert_eq!(
        second, fresh,
        "scores from kept tokens equal scores computed afresh"
    );
    assert_ne!(first, second, "the query changed the scores");

    // Another resolution is another input: only photos whose resized pixels come out the
    // same (those already at the smallest size) are taken from memory.
    let sizes = ranked(&model, &request("a red umbrella on a beach", None));
    let before = model.visual_cache_stats().2;
    let small = ranked(&model, &request("a red umbrella on a beach", Some(56 * 56)));
    let unchanged = sizes
        .iter()
        .zip(&small)
        .filter(|(a, b)| matches!((a, b), (Some((_, x)), Some((_, y))) if x == y))
        .count();
    assert!(
        unchanged < scored,
        "the lower resolution changes most photos"
    );
    let (_, _, hits_after) = model.visual_cache_stats();
    assert_eq!(
        hits_after - before,
        unchanged as u64,
        "photos at another resolution are encoded again"
    );

    // Memory runs out: what was kept is let go.
    model.release_cached_memory();
    assert_eq!(model.visual_cache_stats().0, 0);
}
