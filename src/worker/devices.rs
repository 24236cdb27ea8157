//! One ranking over several devices (every GPU of the machine): each device has its own
//! copy of the model and its own prepared query, on a named thread of its own
//! ("judge-N"), and takes the next batch whenever it is free, so that a slower device
//! never holds the others back. Photos are prepared once, ahead, as for one device; the
//! score cache, progress, cancel and the out-of-memory adaptation (per device) behave as
//! with one. A device that fails a whole batch for a reason that is not the photos' (an
//! error from the driver, out of memory that does not clear) is taken out of the rotation
//! with a notice, and its batch goes to the others.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, SendTimeoutError, bounded, unbounded};

use super::rank::{
    Judge, Judged, PhotoScore, Prepared, RankError, RankEvent, RankOutcome, RankRequest,
    RankSettings, Ready, prepare, prepare_photo, query_key, run_ranking, start_batch,
};
use crate::cache::scores::ScoreCache;
use crate::library::ahead::{InOrder, run_ahead};
use crate::model::{PhotoInput, Reranker};

/// A batch on its way to a device.
type Work = Vec<Ready>;

/// What a device reports back.
enum Done {
    Judged {
        results: Vec<(usize, Result<PhotoScore, String>)>,
        hashes: HashMap<usize, String>,
        notices: Vec<String>,
    },
    /// The device failed and left the rotation; its batch is handed back.
    Lost {
        device: usize,
        reason: String,
        work: Work,
    },
}

/// Whether a failure is the device's rather than the photo's.
pub(super) fn device_failure(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("out of device memory") || r.contains("cuda") || r.contains("driver")
}

/// Fails every photo of `work`: no device is left to judge it.
fn fail_all(work: Work, emit: &mut dyn FnMut(RankEvent)) {
    for (index, _, _) in work {
        emit(RankEvent::PhotoFailed {
            index,
            reason: "no device is left to judge it".into(),
        });
    }
}

/// [`run_ranking`] over every model of `models` (copies of one model on several devices).
pub fn run_ranking_on(
    models: &[&Reranker],
    request: &RankRequest,
    settings: RankSettings,
    cache: Option<&Mutex<ScoreCache>>,
    cancel: &AtomicBool,
    mut emit: impl FnMut(RankEvent),
) -> Result<RankOutcome, RankError> {
    let Some(&lead) = models.first() else {
        return Err(RankError::Model(crate::model::ModelError::Compute(
            candle_core::Error::Msg("no device to rank on".into()),
        )));
    };
    if models.len() == 1 {
        return run_ranking(lead, request, settings, cache, cancel, emit);
    }
    let cfg = lead
        .preprocess
        .with_bounds(request.min_pixels, request.max_pixels);
    // Every device prepares the query on itself (its keys and values stay there).
    let queries = models
        .iter()
        .map(|m| prepare(m, request, &cfg))
        .collect::<Result<Vec<_>, _>>()?;
    emit(RankEvent::Started {
        total: request.photos.len(),
        prefix_tokens: queries[0].prefix_len(),
        query_tokens: queries[0].query_tokens(),
    });
    let key = query_key(
        &lead.identity,
        lead.device.dtype_name(),
        request,
        &cfg,
        cache.is_some(),
    );
    let store = Judged::new(cache, &key);
    let max_batch = settings.max_batch.max(1);
    let prepare_one =
        |_: usize, path: &PathBuf| prepare_photo(path, lead, &cfg, store.cache(), &key);
    let judge_all = |rx: &crossbeam_channel::Receiver<(usize, Prepared)>| {
        let (work_tx, work_rx) = bounded::<Work>(models.len());
        let (done_tx, done_rx) = unbounded::<Done>();
        std::thread::scope(|s| {
            let mut handles = Vec::new();
            for (d, (model, query)) in models.iter().zip(&queries).enumerate() {
                let (work_rx, done_tx, cfg) = (work_rx.clone(), done_tx.clone(), &cfg);
                let spawned = std::thread::Builder::new()
                    .name(format!("judge-{d}"))
                    .spawn_scoped(s, move || {
                        let mut judge = Judge::new(model, query, cfg, &request.photos, settings);
                        while let Ok(work) = work_rx.recv() {
                            let photos: Vec<(usize, PhotoInput)> =
                                work.iter().map(|(i, p, _)| (*i, p.clone())).collect();
                            let mut notices = Vec::new();
                            let results = judge.batch(&photos, &mut |e| {
                                if let RankEvent::Notice { text } = e {
                                    notices.push(text);
                                }
                            });
                            let lost = results.iter().all(|(_, r)| {
                                r.as_ref().is_err_and(|reason| device_failure(reason))
                            });
                            if lost && !results.is_empty() {
                                let reason = results[0].1.clone().err().unwrap_or_default();
                                let _ = done_tx.send(Done::Lost {
                                    device: d,
                                    reason,
                                    work,
                                });
                                return;
                            }
                            let hashes = work
                                .into_iter()
                                .filter_map(|(i, _, h)| h.map(|h| (i, h)))
                                .collect();
                            let _ = done_tx.send(Done::Judged {
                                results,
                                hashes,
                                notices,
                            });
                        }
                    });
                // A device whose thread cannot start is left out: the others take its share.
                if let Ok(h) = spawned {
                    handles.push(h);
                }
            }
            drop(done_tx);
            // The dealer keeps a receiver: batches still queued when the last device
            // stops are taken back and failed with a reason rather than left unanswered.
            let queued = work_rx;
            let mut alive = handles.len();
            let mut in_flight = 0usize;
            let mut handed_back: Vec<Work> = Vec::new();
            let mut outcome = RankOutcome::Finished;
            let take = |d: Done,
                        alive: &mut usize,
                        handed_back: &mut Vec<Work>,
                        emit: &mut dyn FnMut(RankEvent)| match d {
                Done::Judged {
                    results,
                    hashes,
                    notices,
                } => {
                    for text in notices {
                        emit(RankEvent::Notice { text });
                    }
                    store.report(results, &hashes, emit);
                }
                Done::Lost {
                    device,
                    reason,
                    work,
                } => {
                    *alive -= 1;
                    emit(RankEvent::Notice {
                        text: format!(
                            "{} stopped working ({reason}); its photos go to the other devices",
                            models[device].device.name
                        ),
                    });
                    handed_back.push(work);
                }
            };
            // Hands `work` to the next free device; false when none is left.
            let send = |work: Work,
                        alive: &mut usize,
                        in_flight: &mut usize,
                        handed_back: &mut Vec<Work>,
                        emit: &mut dyn FnMut(RankEvent)|
             -> bool {
                let mut work = work;
                loop {
                    if *alive == 0 {
                        while let Ok(w) = queued.try_recv() {
                            *in_flight -= 1;
                            fail_all(w, emit);
                        }
                        fail_all(work, emit);
                        return false;
                    }
                    match work_tx.send_timeout(work, Duration::from_millis(20)) {
                        Ok(()) => {
                            *in_flight += 1;
                            return true;
                        }
                        Err(SendTimeoutError::Timeout(w)) => work = w,
                        Err(SendTimeoutError::Disconnected(w)) => {
                            *alive = 0;
                            work = w;
                            continue;
                        }
                    }
                    while let Ok(d) = done_rx.try_recv() {
                        *in_flight -= 1;
                        take(d, alive, handed_back, emit);
                    }
                }
            };
            let mut in_order = InOrder::new(rx);
            while let Some(batch) = in_order.batch(max_batch) {
                if cancel.load(Ordering::Relaxed) {
                    outcome = RankOutcome::Cancelled;
                    break;
                }
                let work: Work = start_batch(batch, &mut emit);
                if !work.is_empty() {
                    send(
                        work,
                        &mut alive,
                        &mut in_flight,
                        &mut handed_back,
                        &mut emit,
                    );
                }
                while let Some(w) = handed_back.pop() {
                    send(w, &mut alive, &mut in_flight, &mut handed_back, &mut emit);
                }
                while let Ok(d) = done_rx.try_recv() {
                    in_flight -= 1;
                    take(d, &mut alive, &mut handed_back, &mut emit);
                }
            }
            // What is under way finishes (a cancelled ranking keeps those scores too).
            while in_flight > 0 || !handed_back.is_empty() {
                while let Some(w) = handed_back.pop() {
                    if outcome == RankOutcome::Cancelled {
                        continue;
                    }
                    send(w, &mut alive, &mut in_flight, &mut handed_back, &mut emit);
                }
                if in_flight == 0 {
                    break;
                }
                if alive == 0 {
                    while let Ok(w) = queued.try_recv() {
                        in_flight -= 1;
                        fail_all(w, &mut emit);
                    }
                    if in_flight == 0 {
                        break;
                    }
                }
                match done_rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(d) => {
                        in_flight -= 1;
                        take(d, &mut alive, &mut handed_back, &mut emit);
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        // A device thread that ended without a word (it panicked): its
                        // batch will not come back; the panic ends the ranking below.
                        let ended = handles.iter().filter(|h| h.is_finished()).count();
                        if ended > handles.len() - alive {
                            break;
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            drop(work_tx);
            outcome
        })
    };
    run_ahead(
        "photo-decode",
        &request.photos,
        max_batch * models.len(),
        prepare_one,
        judge_all,
    )
    .map_err(RankError::Threads)
}
