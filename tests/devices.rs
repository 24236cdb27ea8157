//! One ranking over several devices: two copies of the tiny model (on the CPU here, on
//! two GPUs with `rank --gpus`) give the scores one copy gives, to the bit, both take part, a device
//! that stops working hands its photos to the other with a notice, and a ranking with
//! no working device left fails its photos instead of waiting forever.

mod common;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use lychee_rerank::model::{ComputeDevice, Reranker};
use lychee_rerank::worker::rank::{RankEvent, RankOutcome, RankRequest, RankSettings};
use lychee_rerank::worker::{run_ranking, run_ranking_on};

fn photos() -> Vec<PathBuf> {
    let mut photos: Vec<PathBuf> = common::photos()
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "query_example.png"))
        .collect();
    // Twice over, so that each device gets several batches.
    let again = photos.clone();
    photos.extend(again);
    photos
}

fn model() -> Reranker {
    let model = Reranker::load(&common::model_dir(), ComputeDevice::cpu()).unwrap();
    // Each copy judges every photo itself (no visual tokens kept from the first pass).
    model.set_visual_cache_limit(0);
    model
}

struct Ranked {
    scores: Vec<Option<f64>>,
    failures: Vec<Option<String>>,
    notices: Vec<String>,
    outcome: RankOutcome,
}

fn rank(models: &[&Reranker], request: &RankRequest, cancel: &AtomicBool) -> Ranked {
    let n = request.photos.len();
    let mut out = Ranked {
        scores: vec![None; n],
        failures: vec![None; n],
        notices: Vec::new(),
        outcome: RankOutcome::Finished,
    };
    let settings = RankSettings {
        max_batch: 2,
        time_stages: false,
    };
    let mut seen = 0;
    out.outcome = run_ranking_on(models, request, settings, None, cancel, |e| match e {
        RankEvent::PhotoScored { index, score, .. } => {
            assert!(out.scores[index].is_none(), "photo {index} scored twice");
            assert!(
                out.failures[index].is_none(),
                "photo {index} scored after failing"
            );
            out.scores[index] = Some(score.score);
            seen += 1;
        }
        RankEvent::PhotoFailed { index, reason } => {
            assert!(
                out.scores[index].is_none(),
                "photo {index} failed after scoring"
            );
            out.failures[index] = Some(reason);
            seen += 1;
        }
        RankEvent::Notice { text } => out.notices.push(text),
        _ => {}
    })
    .unwrap();
    out
}

#[test]
fn two_devices_give_the_scores_of_one_and_both_judge() {
    let request = RankRequest::new("a snowy mountain", photos());
    let one = model();
    let mut alone = vec![None; request.photos.len()];
    run_ranking(
        &one,
        &request,
        RankSettings {
            max_batch: 2,
            time_stages: false,
        },
        None,
        &AtomicBool::new(false),
        |e| {
            if let RankEvent::PhotoScored { index, score, .. } = e {
                alone[index] = Some(score.score);
            }
        },
    )
    .unwrap();

    let (a, b) = (model(), model());
    let ranked = rank(&[&a, &b], &request, &AtomicBool::new(false));
    assert_eq!(ranked.outcome, RankOutcome::Finished);
    assert!(ranked.notices.is_empty(), "{:?}", ranked.notices);
    for (i, (two, one)) in ranked.scores.iter().zip(&alone).enumerate() {
        let (two, one) = (
            two.expect("scored by two devices"),
            one.expect("scored by one"),
        );
        // The same batches (fixed windows of the photos' order) give the same bits.
        assert_eq!(
            two.to_bits(),
            one.to_bits(),
            "{}: {two} on two devices, {one} on one",
            request.photos[i].display()
        );
    }
    // Both devices took part: each copy counts the photos it encoded.
    assert!(
        a.photos_encoded() > 0 && b.photos_encoded() > 0,
        "one device did all the work: {} and {}",
        a.photos_encoded(),
        b.photos_encoded()
    );
    assert_eq!(
        a.photos_encoded() + b.photos_encoded(),
        request.photos.len() as u64,
        "every photo is encoded once"
    );
}

#[test]
fn a_device_that_stops_working_hands_its_photos_to_the_other() {
    let request = RankRequest::new("a snowy mountain", photos());
    let good = model();
    let mut full = model();
    // No room at all, as on a GPU another program has filled.
    full.set_activation_budget(Some(0));
    let ranked = rank(&[&full, &good], &request, &AtomicBool::new(false));
    assert_eq!(ranked.outcome, RankOutcome::Finished);
    let unscored: Vec<_> = ranked
        .failures
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            f.as_ref()
                .map(|f| (request.photos[i].display().to_string(), f))
        })
        .collect();
    assert!(unscored.is_empty(), "{unscored:?}");
    assert!(ranked.scores.iter().all(Option::is_some));
    assert_eq!(
        ranked
            .notices
            .iter()
            .filter(|n| n.contains("stopped working") && n.contains("other devices"))
            .count(),
        1,
        "{:?}",
        ranked.notices
    );
    assert_eq!(good.photos_encoded(), request.photos.len() as u64);
}

#[test]
fn with_no_working_device_left_the_photos_fail_with_a_reason() {
    let request = RankRequest::new("a snowy mountain", photos());
    let (mut a, mut b) = (model(), model());
    a.set_activation_budget(Some(0));
    b.set_activation_budget(Some(0));
    let ranked = rank(&[&a, &b], &request, &AtomicBool::new(false));
    assert_eq!(ranked.outcome, RankOutcome::Finished);
    for (i, failure) in ranked.failures.iter().enumerate() {
        let reason = failure
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no outcome", request.photos[i].display()));
        assert!(
            reason.contains("out of device memory") || reason.contains("no device is left"),
            "{reason}"
        );
    }
    assert_eq!(
        ranked
            .notices
            .iter()
            .filter(|n| n.contains("stopped working"))
            .count(),
        2,
        "{:?}",
        ranked.notices
    );
}

#[test]
fn a_cancelled_ranking_on_two_devices_stops_and_keeps_its_scores() {
    let request = RankRequest::new("a snowy mountain", photos());
    let (a, b) = (model(), model());
    let cancel = AtomicBool::new(true);
    let ranked = rank(&[&a, &b], &request, &cancel);
    assert_eq!(ranked.outcome, RankOutcome::Cancelled);
    assert!(
        ranked.scores.iter().filter(|s| s.is_some()).count() < request.photos.len(),
        "a ranking cancelled before it began judged every photo"
    );
}
