//! Documents for other programs (the rerank server) dealt over several devices: two copies
//! of the tiny model (on the CPU here, on two GPUs with `serve --gpus`) give every request
//! the scores one copy gives, to the bit, both take part, a device that stops working
//! hands its batch to the other with a notice (and every document is still scored), and with no working device left every
//! document is answered with a reason instead of waiting forever.

mod common;

use std::sync::Arc;

use lychee_rerank::library::decode_photo;
use lychee_rerank::model::{ComputeDevice, DEFAULT_INSTRUCTION, Reranker};
use lychee_rerank::worker::{
    BatchLimits, Content, Dealer, PhotoPreparer, Scheduler, ScoreJob, ScoreReply,
};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

fn model() -> Reranker {
    let model = Reranker::load(&common::model_dir(), ComputeDevice::cpu()).unwrap();
    model.set_visual_cache_limit(0);
    model
}

/// The fixture photos as image documents, with a caption on every other one, and a few
/// texts.
fn documents(model: &Reranker) -> Vec<Content> {
    let preparer = PhotoPreparer::of(model);
    let paths = common::photos();
    let mut docs: Vec<Content> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| Content {
            text: if i % 2 == 0 {
                String::new()
            } else {
                format!("photo number {i}")
            },
            image: Some(preparer.prepare(&decode_photo(p).unwrap().image).unwrap()),
        })
        .collect();
    for text in [
        "a snowy mountain at dawn",
        "a red umbrella on a beach",
        "grey",
        "a long description of a harbour at night, with boats, lights and a lighthouse",
    ] {
        docs.push(Content {
            text: text.into(),
            image: None,
        });
    }
    docs
}

/// Three requests: two with the same query (they share a prefix and batches), one with
/// another.
fn jobs(model: &Reranker) -> Vec<(ScoreJob, UnboundedReceiver<ScoreReply>)> {
    let docs = documents(model);
    ["a snowy mountain", "a snowy mountain", "a beach"]
        .into_iter()
        .enumerate()
        .map(|(r, query)| {
            let (reply, replies) = unbounded_channel();
            let job = ScoreJob {
                instruction: DEFAULT_INSTRUCTION.into(),
                query: Content {
                    text: query.into(),
                    image: None,
                },
                query_image_key: None,
                // Each request its own share of the documents, in its own order.
                documents: docs.iter().skip(r).step_by(1 + r % 2).cloned().collect(),
                max_text_tokens: 64,
                reply,
            };
            (job, replies)
        })
        .collect()
}

fn limits() -> BatchLimits {
    BatchLimits {
        max_documents: 3,
        max_images: 2,
        max_tokens: 4096,
    }
}

/// Each request's replies: scores by document (P(yes) bits), failures, and whether Done
/// came last.
#[derive(Debug, PartialEq)]
struct Answered {
    scores: Vec<Option<u32>>,
    failures: Vec<Option<String>>,
    done_last: bool,
}

fn answers(mut replies: UnboundedReceiver<ScoreReply>, n: usize) -> Answered {
    let mut a = Answered {
        scores: vec![None; n],
        failures: vec![None; n],
        done_last: false,
    };
    while let Ok(r) = replies.try_recv() {
        assert!(!a.done_last, "a reply after Done: {r:?}");
        match r {
            ScoreReply::Scored {
                index, judgement, ..
            } => {
                assert!(a.scores[index].is_none() && a.failures[index].is_none());
                a.scores[index] = Some((judgement.logit_yes - judgement.logit_no).to_bits());
            }
            ScoreReply::DocumentFailed { index, reason } => {
                assert!(a.scores[index].is_none() && a.failures[index].is_none());
                a.failures[index] = Some(reason);
            }
            ScoreReply::Done { .. } => a.done_last = true,
            ScoreReply::Failed { reason } => panic!("the request failed: {reason}"),
        }
    }
    a
}

/// The requests served by one device, in this thread.
fn alone(model: &Reranker) -> Vec<Answered> {
    let mut scheduler = Scheduler::new(limits(), Default::default());
    let mut waiting = Vec::new();
    for (job, replies) in jobs(model) {
        waiting.push((replies, job.documents.len()));
        scheduler.push(job);
    }
    while !scheduler.is_idle() {
        scheduler.step(model);
    }
    waiting.into_iter().map(|(r, n)| answers(r, n)).collect()
}

/// The requests served by `models`, one thread a device; with the notices. The client
/// of request `left` (if any) goes away before anything is judged; the others' answers
/// are returned in order.
fn dealt(models: &[Arc<Reranker>], left: Option<usize>) -> (Vec<Answered>, Vec<String>) {
    let mut scheduler = Scheduler::new(limits(), Default::default());
    let mut waiting = Vec::new();
    for (r, (job, replies)) in jobs(&models[0]).into_iter().enumerate() {
        if Some(r) != left {
            waiting.push((replies, job.documents.len()));
        }
        scheduler.push(job);
    }
    let mut dealer = Dealer::spawn(models).unwrap();
    let mut notices = Vec::new();
    dealer.serve_to_end(&mut scheduler, |text| notices.push(text));
    assert!(!dealer.in_flight());
    let answered = waiting.into_iter().map(|(r, n)| answers(r, n)).collect();
    (answered, notices)
}

/// Every request was told it is done, and every document got a score.
fn assert_all_scored(answered: &[Answered]) {
    for (r, a) in answered.iter().enumerate() {
        assert!(a.done_last, "request {r} was not told it is done");
        assert!(
            a.failures.iter().all(Option::is_none),
            "request {r}: {:?}",
            a.failures
        );
        assert!(a.scores.iter().all(Option::is_some), "request {r}");
    }
}

#[test]
fn two_devices_give_every_request_the_scores_of_one_and_both_judge() {
    let one = alone(&model());
    let (a, b) = (Arc::new(model()), Arc::new(model()));
    let (two, notices) = dealt(&[Arc::clone(&a), Arc::clone(&b)], None);
    assert!(notices.is_empty(), "{notices:?}");
    assert_all_scored(&two);
    // The same batches (the scheduler decides them, not the devices) give the same bits.
    assert_eq!(two, one);
    assert!(
        a.photos_encoded() > 0 && b.photos_encoded() > 0,
        "one device did all the work: {} and {}",
        a.photos_encoded(),
        b.photos_encoded()
    );
    let images: usize = jobs(&a)
        .iter()
        .map(|(j, _)| j.documents.iter().filter(|d| d.image.is_some()).count())
        .sum();
    assert_eq!(
        (a.photos_encoded() + b.photos_encoded()) as usize,
        images,
        "every image is encoded once"
    );
}

#[test]
fn a_device_that_stops_working_hands_its_batch_to_the_other() {
    let mut full = model();
    // No room at all, as on a GPU another program has filled.
    full.set_activation_budget(Some(0));
    let good = Arc::new(model());
    let (answered, notices) = dealt(&[Arc::new(full), Arc::clone(&good)], None);
    assert_all_scored(&answered);
    assert_eq!(
        notices
            .iter()
            .filter(|n| n.contains("stopped working") && n.contains("other devices"))
            .count(),
        1,
        "{notices:?}"
    );
}

#[test]
fn with_no_working_device_left_every_document_is_answered_with_a_reason() {
    let (mut a, mut b) = (model(), model());
    a.set_activation_budget(Some(0));
    b.set_activation_budget(Some(0));
    let (answered, notices) = dealt(&[Arc::new(a), Arc::new(b)], None);
    assert_eq!(
        notices
            .iter()
            .filter(|n| n.contains("stopped working"))
            .count(),
        1,
        "the last device stays and reports the failures: {notices:?}"
    );
    for (r, a) in answered.iter().enumerate() {
        assert!(a.done_last, "request {r}");
        for (i, f) in a.failures.iter().enumerate() {
            let reason = f
                .as_ref()
                .unwrap_or_else(|| panic!("request {r}, document {i} has no answer"));
            assert!(reason.contains("out of device memory"), "{reason}");
        }
    }
}

#[test]
fn a_request_whose_client_left_is_dropped_and_the_others_go_on() {
    let (a, b) = (Arc::new(model()), Arc::new(model()));
    let (answered, notices) = dealt(&[Arc::clone(&a), Arc::clone(&b)], Some(1));
    assert!(notices.is_empty(), "{notices:?}");
    assert_eq!(answered.len(), 2);
    assert_all_scored(&answered);
    // None of the departed client's images was judged.
    let images: usize = jobs(&a)
        .iter()
        .enumerate()
        .filter(|(r, _)| *r != 1)
        .map(|(_, (j, _))| j.documents.iter().filter(|d| d.image.is_some()).count())
        .sum();
    assert_eq!((a.photos_encoded() + b.photos_encoded()) as usize, images);
}
