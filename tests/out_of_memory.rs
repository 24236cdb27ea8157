//! Running out of device memory in the middle of a ranking: the batch is made smaller, a
//! photo too large for the room left is judged at a lower resolution, the user is told
//! once of each, and nothing else is lost. The device's memory is made small with
//! `Reranker::set_activation_budget`, which fails a step with the same error a full GPU
//! gives; docs/PERFORMANCE.md records the same run on a GPU whose memory is really full.

mod common;

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use lychee_rerank::cache::scores::ScoreCache;
use lychee_rerank::model::{ComputeDevice, Reranker};
use lychee_rerank::worker::rank::{
    PhotoScore, RankEvent, RankOutcome, RankRequest, RankSettings, run_ranking,
};

fn request(photos: Vec<PathBuf>, max_pixels: Option<usize>) -> RankRequest {
    RankRequest::new("a snowy mountain", photos).with_pixels(None, max_pixels)
}

struct Ranked {
    scores: Vec<Option<PhotoScore>>,
    failures: Vec<Option<String>>,
    notices: Vec<String>,
    cached: usize,
}

fn rank(
    model: &Reranker,
    request: &RankRequest,
    max_batch: usize,
    cache: Option<&Mutex<ScoreCache>>,
) -> Ranked {
    let n = request.photos.len();
    let mut out = Ranked {
        scores: vec![None; n],
        failures: vec![None; n],
        notices: Vec::new(),
        cached: 0,
    };
    let settings = RankSettings {
        max_batch,
        time_stages: false,
    };
    let outcome = run_ranking(
        model,
        request,
        settings,
        cache,
        &AtomicBool::new(false),
        |e| match e {
            RankEvent::PhotoScored {
                index,
                score,
                cached,
            } => {
                assert!(out.scores[index].is_none(), "photo {index} scored twice");
                out.cached += usize::from(cached);
                out.scores[index] = Some(score);
            }
            RankEvent::PhotoFailed { index, reason } => out.failures[index] = Some(reason),
            RankEvent::Notice { text } => out.notices.push(text),
            _ => {}
        },
    )
    .unwrap();
    assert_eq!(outcome, RankOutcome::Finished);
    out
}

#[test]
fn batches_shrink_and_large_photos_are_lowered_when_memory_runs_out() {
    let mut model = Reranker::load(&common::model_dir(), ComputeDevice::cpu()).unwrap();
    let full = model.preprocess.max_pixels;
    // Room for one photo at half the model's resolution, not for a full one nor for two
    // photos at once.
    model.set_activation_budget(Some(model.bytes_per_photo(full / 2)));
    let large = common::photo_dir().join("large_photo.jpg");
    let small = common::photo_dir().join("tiny_icon.png");
    let mut photos = vec![large.clone(), large.clone()];
    photos.extend(std::iter::repeat_n(small.clone(), 40));
    let cache_dir = tempfile::tempdir().unwrap();
    let (cache, _) = ScoreCache::open(&cache_dir.path().join("scores.sqlite3")).unwrap();
    let cache = Mutex::new(cache);
    let out = rank(&model, &request(photos.clone(), None), 4, Some(&cache));

    assert!(
        out.failures.iter().all(Option::is_none),
        "{:?}",
        out.failures
    );
    assert_eq!(out.notices.len(), 2, "told once of each: {:?}", out.notices);
    assert!(
        out.notices
            .iter()
            .any(|n| n.contains("at a time from now on")),
        "{:?}",
        out.notices
    );
    assert!(
        out.notices
            .iter()
            .any(|n| n.contains("large_photo.jpg") && n.contains("judged at")),
        "{:?}",
        out.notices
    );
    let scores: Vec<PhotoScore> = out.scores.into_iter().map(Option::unwrap).collect();
    // The large photo, lowered: the score is the one the model gives at that resolution.
    let plenty = Reranker::load(&common::model_dir(), ComputeDevice::cpu()).unwrap();
    let at_full = rank(&plenty, &request(vec![large.clone()], None), 1, None);
    let at_full = at_full.scores[0].as_ref().unwrap().input_size;
    let halved = at_full.0 * at_full.1 / 2;
    let direct = rank(
        &plenty,
        &request(vec![large.clone()], Some(halved)),
        1,
        None,
    );
    let direct = direct.scores[0].as_ref().unwrap();
    for s in &scores[..2] {
        assert!(s.lowered_resolution);
        assert_eq!(s.input_size, direct.input_size);
        assert!(s.input_size.0 * s.input_size.1 <= halved);
        assert!(
            (direct.score - s.score).abs() < 1e-6,
            "{} vs {}",
            direct.score,
            s.score
        );
    }
    // The small photos fit: judged as usual.
    let reference = rank(&plenty, &request(vec![small.clone()], None), 1, None);
    let reference = reference.scores[0].as_ref().unwrap();
    for s in &scores[2..] {
        assert!(!s.lowered_resolution);
        assert_eq!(s.input_size, reference.input_size);
        assert!((s.score - reference.score).abs() < 1e-6);
    }
    // A lowered score is not kept: the next ranking tries the full resolution again.
    let again = rank(&plenty, &request(photos, None), 4, Some(&cache));
    assert_eq!(
        again.cached, 40,
        "only the small photos came from the cache"
    );
    for s in again.scores[..2].iter().map(|s| s.as_ref().unwrap()) {
        assert!(!s.lowered_resolution);
        assert!(s.input_size.0 * s.input_size.1 > full / 2);
    }
}

#[test]
fn a_photo_that_fits_at_no_resolution_fails_alone_with_what_to_do() {
    let mut model = Reranker::load(&common::model_dir(), ComputeDevice::cpu()).unwrap();
    model.set_activation_budget(Some(1 << 20));
    let photos = vec![
        common::photo_dir().join("beach_landscape.jpg"),
        common::photo_dir().join("portrait.png"),
    ];
    let out = rank(&model, &request(photos, None), 2, None);
    for failure in &out.failures {
        let failure = failure.as_deref().expect("no photo fits");
        assert!(failure.contains("out of device memory"), "{failure}");
        assert!(failure.contains("Close other programs"), "{failure}");
        assert!(!failure.contains('\n'));
    }
    // the query is prepared before the budget matters: no room for even one photo is
    // reported per photo, and the ranking still finishes
    assert!(out.scores.iter().all(Option::is_none));
}
