//! One ranking, start to finish: prepare the query once, decode and resize photos on CPU
//! threads ahead of the model, judge photos in batches, report every step. The window's
//! inference thread and the command line both run rankings through [`run_ranking`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cache::scores::{QueryIdentity, ScoreCache, content_hash};
use crate::library::ahead::{InOrder, run_ahead};
use crate::model::preprocess::PreprocessConfig;
use crate::model::{PhotoInput, PreparedQuery, QueryInput, Reranker};

use super::judge::Queued;
pub(super) use super::judge::{Judge, load_photo};
pub use super::request::{
    PhotoScore, RankError, RankEvent, RankOutcome, RankRequest, RankSettings,
};

/// The score cache's key of `request` for the model of `identity` computing in `dtype`,
/// with pixel bounds `cfg` (the model's, bounded by the request). The query image is read
/// for its hash only when `hash_image`.
pub fn query_key(
    identity: &str,
    dtype: &str,
    request: &RankRequest,
    cfg: &PreprocessConfig,
    hash_image: bool,
) -> String {
    let query_image_hash = match &request.query_image {
        Some(path) if hash_image => crate::cache::scores::hash_file(path).ok(),
        _ => None,
    };
    QueryIdentity {
        model: identity,
        instruction: &request.instruction,
        query_text: request.query_text.trim(),
        query_image: query_image_hash.as_deref(),
        min_pixels: cfg.min_pixels,
        max_pixels: cfg.max_pixels,
        dtype,
    }
    .key()
}

/// Every score of `request` when the score cache has them all, found without the model:
/// from its identity and preparation (`Reranker::identity_of`) and the number format it
/// would compute in. None at the first photo missing (or unreadable), so that a ranking
/// with work left reads no more files here than it must.
pub fn all_cached(
    identity: &str,
    preprocess: &PreprocessConfig,
    dtype: &str,
    request: &RankRequest,
    cache: &Mutex<ScoreCache>,
) -> Option<Vec<PhotoScore>> {
    let cfg = preprocess.with_bounds(request.min_pixels, request.max_pixels);
    let key = query_key(identity, dtype, request, &cfg, true);
    request
        .photos
        .iter()
        .map(|path| {
            let hash = content_hash(cache, path).ok()?;
            cache.lock().ok()?.get(&key, &hash).ok().flatten()
        })
        .collect()
}

/// A photo on its way from the decode threads to the model.
pub(super) enum Prepared {
    /// Its score was in the cache.
    Cached(PhotoScore),
    /// Decoded and resized (or why not), with its content hash when the cache is on.
    Decoded(Option<String>, Result<PhotoInput, String>),
}

/// Runs `request` on `model`, calling `emit` after every step, until done or until
/// `cancel` is set (checked between batches). Scores already reported stay valid. With a
/// `cache`, photos scored before under the same query are not scored again, and new
/// scores are stored as they arrive.
pub fn run_ranking(
    model: &Reranker,
    request: &RankRequest,
    settings: RankSettings,
    cache: Option<&Mutex<ScoreCache>>,
    cancel: &AtomicBool,
    mut emit: impl FnMut(RankEvent),
) -> Result<RankOutcome, RankError> {
    let cfg = model
        .preprocess
        .with_bounds(request.min_pixels, request.max_pixels);
    let query = prepare(model, request, &cfg)?;
    emit(RankEvent::Started {
        total: request.photos.len(),
        prefix_tokens: query.prefix_len(),
        query_tokens: query.query_tokens(),
    });
    let key = query_key(
        &model.identity,
        model.device.dtype_name(),
        request,
        &cfg,
        cache.is_some(),
    );
    let store = Judged::new(cache, &key);
    let max_batch = settings.max_batch.max(1);
    let prepare = |_: usize, path: &PathBuf| prepare_photo(path, model, &cfg, store.cache(), &key);
    let judge_all = |rx: &crossbeam_channel::Receiver<(usize, Prepared)>| {
        let mut judge = Judge::new(model, &query, &cfg, &request.photos, settings);
        let mut in_order = InOrder::new(rx);
        // One batch is queued on the device while the next is being queued behind it: the
        // device goes from one to the next without waiting for the scores to be read.
        let mut queued: Option<(Queued, Hashes)> = None;
        let finish = |queued: Option<(Queued, Hashes)>,
                      judge: &mut Judge<'_>,
                      emit: &mut dyn FnMut(RankEvent)| {
            if let Some((q, hashes)) = queued {
                let results = judge.finish(q, &mut |e| emit(e));
                store.report(results, &hashes, emit);
            }
        };
        while let Some(batch) = in_order.batch(judge.batch_limit()) {
            if cancel.load(Ordering::Relaxed) {
                // What the device is already judging is kept.
                finish(queued.take(), &mut judge, &mut emit);
                return RankOutcome::Cancelled;
            }
            let mut ready = Vec::new();
            let mut hashes = Hashes::new();
            for (index, input, hash) in start_batch(batch, &mut emit) {
                if let Some(h) = hash {
                    hashes.insert(index, h);
                }
                ready.push((index, input));
            }
            let next = judge.queue(ready, &mut emit);
            finish(queued.replace((next, hashes)), &mut judge, &mut emit);
        }
        finish(queued.take(), &mut judge, &mut emit);
        RankOutcome::Finished
    };
    run_ahead(
        "photo-decode",
        &request.photos,
        max_batch,
        prepare,
        judge_all,
    )
    .map_err(RankError::Threads)
}

/// A photo to judge: its index in the request, its input, its content hash (when the
/// cache is on).
pub(super) type Ready = (usize, PhotoInput, Option<String>);

/// The content hashes of a batch's photos, by index (those the cache has hashed).
type Hashes = std::collections::HashMap<usize, String>;

/// Emits what a batch of prepared photos needs no judging for (a cached score, a photo that
/// could not be read) and `PhotoStarted` for the rest, which it returns.
pub(super) fn start_batch(
    batch: Vec<(usize, Prepared)>,
    emit: &mut dyn FnMut(RankEvent),
) -> Vec<Ready> {
    let mut ready = Vec::with_capacity(batch.len());
    for (index, item) in batch {
        match item {
            Prepared::Cached(score) => emit(RankEvent::PhotoScored {
                index,
                score,
                cached: true,
            }),
            Prepared::Decoded(_, Err(reason)) => emit(RankEvent::PhotoFailed { index, reason }),
            Prepared::Decoded(hash, Ok(input)) => ready.push((index, input, hash)),
        }
    }
    for (index, _, _) in &ready {
        emit(RankEvent::PhotoStarted { index: *index });
    }
    ready
}

/// Where judged photos go: their events, and fresh scores into the score cache under the
/// query's key. A cache that fails mid-run is dropped for the rest of it, never the ranking.
pub(super) struct Judged<'a> {
    cache: Option<&'a Mutex<ScoreCache>>,
    cache_ok: AtomicBool,
    key: &'a str,
}

impl<'a> Judged<'a> {
    pub(super) fn new(cache: Option<&'a Mutex<ScoreCache>>, key: &'a str) -> Self {
        Judged {
            cache,
            cache_ok: AtomicBool::new(cache.is_some()),
            key,
        }
    }

    /// The cache while it works.
    pub(super) fn cache(&self) -> Option<&'a Mutex<ScoreCache>> {
        self.cache.filter(|_| self.cache_ok.load(Ordering::Relaxed))
    }

    /// Emits each result, storing the scores of photos whose hash is in `hashes` (not those
    /// judged at a lowered resolution).
    pub(super) fn report(
        &self,
        results: Vec<(usize, Result<PhotoScore, String>)>,
        hashes: &Hashes,
        emit: &mut dyn FnMut(RankEvent),
    ) {
        for (index, result) in results {
            match result {
                Ok(score) => {
                    if let (Some(cache), Some(hash)) = (self.cache(), hashes.get(&index))
                        && !score.lowered_resolution
                        && let Ok(c) = cache.lock()
                        && c.put(self.key, hash, &score).is_err()
                    {
                        self.cache_ok.store(false, Ordering::Relaxed);
                    }
                    emit(RankEvent::PhotoScored {
                        index,
                        score,
                        cached: false,
                    });
                }
                Err(reason) => emit(RankEvent::PhotoFailed { index, reason }),
            }
        }
    }
}

/// On a decode thread: the cached score of `path`, or its decoded input.
pub(super) fn prepare_photo(
    path: &Path,
    model: &Reranker,
    cfg: &PreprocessConfig,
    cache: Option<&Mutex<ScoreCache>>,
    key: &str,
) -> Prepared {
    // The file is read for its hash outside the cache's lock: the other decode threads
    // look up their photos meanwhile.
    let hash = cache.and_then(|c| content_hash(c, path).ok());
    if let (Some(cache), Some(hash)) = (cache, &hash)
        && let Ok(c) = cache.lock()
        && let Ok(Some(score)) = c.get(key, hash)
    {
        return Prepared::Cached(score);
    }
    Prepared::Decoded(hash, load_photo(path, model, cfg))
}

pub(super) fn prepare(
    model: &Reranker,
    request: &RankRequest,
    cfg: &PreprocessConfig,
) -> Result<PreparedQuery, RankError> {
    let image = match &request.query_image {
        Some(path) => {
            Some(
                load_photo(path, model, cfg).map_err(|reason| RankError::QueryImage {
                    path: path.clone(),
                    reason,
                })?,
            )
        }
        None => None,
    };
    let input = QueryInput {
        text: request.query_text.trim().to_owned(),
        image,
    };
    Ok(model.prepare_query(&request.instruction, &input)?)
}
