//! One ranking, start to finish: prepare the query once, decode and resize photos on CPU
//! threads ahead of the model, judge photos in batches, report every step. The window's
//! inference thread and the command line both run rankings through [`run_ranking`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cache::scores::{QueryIdentity, ScoreCache, content_hash};
use crate::library::ahead::{InOrder, run_ahead};
use crate::library::decode_photo;
use crate::model::preprocess::{PreprocessConfig, preprocess};
use crate::model::{
    ModelError, PendingScores, PhotoInput, PreparedQuery, QueryInput, Reranker, VisualTokens,
};

/// What to rank.
#[derive(Debug, Clone, PartialEq)]
pub struct RankRequest {
    pub query_text: String,
    pub query_image: Option<PathBuf>,
    pub instruction: String,
    pub photos: Vec<PathBuf>,
    /// Overrides of the model's pixel bounds (the resolution setting).
    pub min_pixels: Option<usize>,
    pub max_pixels: Option<usize>,
}

impl RankRequest {
    /// `photos` against `query_text`, with the default instruction and the model's own
    /// pixel bounds.
    pub fn new(query_text: impl Into<String>, photos: Vec<PathBuf>) -> Self {
        RankRequest {
            query_text: query_text.into(),
            query_image: None,
            instruction: crate::model::DEFAULT_INSTRUCTION.to_owned(),
            photos,
            min_pixels: None,
            max_pixels: None,
        }
    }

    /// With an example image to search by.
    pub fn with_query_image(mut self, image: Option<PathBuf>) -> Self {
        self.query_image = image;
        self
    }

    /// With another task instruction.
    pub fn with_instruction(mut self, instruction: impl Into<String>) -> Self {
        self.instruction = instruction.into();
        self
    }

    /// With other pixel bounds (None keeps the model's).
    pub fn with_pixels(mut self, min_pixels: Option<usize>, max_pixels: Option<usize>) -> Self {
        self.min_pixels = min_pixels;
        self.max_pixels = max_pixels;
        self
    }
}

/// The model's output for one photo.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PhotoScore {
    pub score: f64,
    pub logit_yes: f32,
    pub logit_no: f32,
    pub visual_tokens: usize,
    /// (width, height) the model read.
    pub input_size: (usize, usize),
    /// (width, height) as displayed.
    pub original_size: (usize, usize),
    /// Model time for this photo (its share of its batch; decoding excluded).
    pub seconds: f64,
    /// Of which in the vision tower, when stage timing was asked for
    /// ([`RankSettings::time_stages`]; it costs a wait for the device).
    pub vision_seconds: Option<f64>,
    /// Judged below the chosen resolution because the device ran out of memory at it
    /// (such scores are not cached: the next ranking tries the full resolution again).
    #[serde(default)]
    pub lowered_resolution: bool,
}

/// Progress of a ranking, reported after every step.
#[derive(Debug, Clone, PartialEq)]
pub enum RankEvent {
    /// The query is ready and `total` photos will be judged.
    Started {
        total: usize,
        prefix_tokens: usize,
        query_tokens: Option<usize>,
    },
    /// The model starts on photo `index` (into the request's list).
    PhotoStarted {
        index: usize,
    },
    PhotoScored {
        index: usize,
        score: PhotoScore,
        /// Taken from the score cache rather than computed now.
        cached: bool,
    },
    PhotoFailed {
        index: usize,
        reason: String,
    },
    /// Something the user should know once, that stops nothing (the device ran out of
    /// memory and the ranking adapted).
    Notice {
        text: String,
    },
}

/// How a ranking ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankOutcome {
    Finished,
    Cancelled,
}

/// Why a ranking could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum RankError {
    #[error("the query image {path} cannot be used: {reason}")]
    QueryImage { path: PathBuf, reason: String },
    #[error(
        "could not start the threads that read the photos ({0}); close other programs and try again"
    )]
    Threads(std::io::Error),
    #[error("{0}")]
    Model(#[from] crate::model::ModelError),
}

/// How the engine runs a ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankSettings {
    /// Most photos judged together.
    pub max_batch: usize,
    /// Measure the vision tower's share of each batch (waits for the device once more).
    pub time_stages: bool,
}

impl RankSettings {
    /// Batches sized for `model`'s device (one photo at a time on the CPU).
    pub fn for_model(model: &Reranker) -> Self {
        RankSettings {
            max_batch: model.suggested_batch(),
            time_stages: false,
        }
    }
}

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

/// Decodes and preprocesses one photo (on a CPU thread).
pub fn load_photo(
    path: &Path,
    model: &Reranker,
    cfg: &PreprocessConfig,
) -> Result<PhotoInput, String> {
    let photo = decode_photo(path).map_err(|e| e.to_string())?;
    let mut input =
        preprocess(&photo.image, &model.config.vision, cfg).map_err(|e| e.to_string())?;
    if model.takes_bf16_pixels() {
        input.pack_bf16();
    }
    Ok(input)
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
        while let Some(batch) = in_order.batch(judge.batch_limit) {
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

/// Judges photos, adapting to the device: when a batch runs out of memory, the rest of
/// the ranking uses smaller batches and the batch's photos are judged one by one; when a
/// single photo runs out of memory, it is decoded again at a lower resolution and retried.
/// The user is told once of each. Any other failure costs only the photo it concerns.
pub(super) struct Judge<'a> {
    model: &'a Reranker,
    query: &'a PreparedQuery,
    cfg: &'a PreprocessConfig,
    paths: &'a [PathBuf],
    time_stages: bool,
    /// Most photos judged together from now on.
    batch_limit: usize,
    told_batch: bool,
    told_resolution: bool,
    /// When the scores of the last queued batch were read.
    last_finished: Option<Instant>,
}

/// A batch handed to [`Judge::queue`], for [`Judge::finish`].
pub(super) enum Queued {
    /// Judged already (with stage timing, or no photos).
    Judged(Vec<(usize, Result<PhotoScore, String>)>),
    /// On the device.
    InFlight(Vec<(usize, PhotoInput)>, InFlight),
    /// Could not be queued (out of memory with the batch before still on the device, for
    /// one): judged again on its own.
    Again(Vec<(usize, PhotoInput)>),
}

/// The fewest visual tokens a photo is lowered to before it is given up.
const LOWEST_TOKENS: usize = 64;

impl<'a> Judge<'a> {
    /// A judge of `model` for the photos `paths` of a ranking, under `query`.
    pub(super) fn new(
        model: &'a Reranker,
        query: &'a PreparedQuery,
        cfg: &'a PreprocessConfig,
        paths: &'a [PathBuf],
        settings: RankSettings,
    ) -> Self {
        Judge {
            model,
            query,
            cfg,
            paths,
            time_stages: settings.time_stages,
            batch_limit: settings.max_batch.max(1),
            told_batch: false,
            told_resolution: false,
            last_finished: None,
        }
    }

    /// Queues `photos` on the device without waiting for their scores: the batch queued
    /// before them is still being judged meanwhile. With stage timing (which waits for the
    /// device) they are judged at once.
    pub(super) fn queue(
        &mut self,
        photos: Vec<(usize, PhotoInput)>,
        emit: &mut impl FnMut(RankEvent),
    ) -> Queued {
        if photos.is_empty() || self.time_stages {
            return Queued::Judged(self.batch(&photos, emit));
        }
        match queue_together(self.model, self.query, &photos, false) {
            Ok(flight) => Queued::InFlight(photos, flight),
            Err(_) => Queued::Again(photos),
        }
    }

    /// The results of a queued batch. A batch whose queued work failed is judged again as
    /// [`Judge::batch`] judges, adapting to the device.
    pub(super) fn finish(
        &mut self,
        queued: Queued,
        emit: &mut impl FnMut(RankEvent),
    ) -> Vec<(usize, Result<PhotoScore, String>)> {
        let results = match queued {
            Queued::Judged(results) => results,
            Queued::Again(photos) => self.batch(&photos, emit),
            Queued::InFlight(photos, flight) => {
                // A photo's time is its share of the device's time since the batch before
                // was read (or since this one was queued, if later).
                let since = self
                    .last_finished
                    .map_or(flight.queued_at, |t| t.max(flight.queued_at));
                match collect_together(self.model, &photos, flight, since) {
                    Ok(scores) => photos
                        .iter()
                        .map(|(i, _)| *i)
                        .zip(scores.into_iter().map(Ok))
                        .collect(),
                    Err(_) => self.batch(&photos, emit),
                }
            }
        };
        self.last_finished = Some(Instant::now());
        results
    }

    pub(super) fn batch(
        &mut self,
        photos: &[(usize, PhotoInput)],
        emit: &mut impl FnMut(RankEvent),
    ) -> Vec<(usize, Result<PhotoScore, String>)> {
        if photos.is_empty() {
            return Vec::new();
        }
        let e = match judge_together(self.model, self.query, photos, self.time_stages) {
            Ok(scores) => {
                return photos
                    .iter()
                    .map(|(i, _)| *i)
                    .zip(scores.into_iter().map(Ok))
                    .collect();
            }
            Err(e) => e,
        };
        if photos.len() == 1 {
            return vec![(photos[0].0, self.one(&photos[0], e, emit))];
        }
        if e.is_out_of_memory() {
            // Visual tokens kept for later queries give their memory back first.
            self.model.release_cached_memory();
            self.batch_limit = (photos.len() / 2).max(1);
            if !self.told_batch {
                self.told_batch = true;
                emit(RankEvent::Notice {
                    text: format!(
                        "The GPU ran out of memory judging {} photos at once; judging {} at a time from now on.",
                        photos.len(),
                        self.batch_limit
                    ),
                });
            }
        }
        photos
            .iter()
            .map(|p| {
                let result = match judge_together(
                    self.model,
                    self.query,
                    std::slice::from_ref(p),
                    self.time_stages,
                ) {
                    Ok(mut s) => Ok(s.remove(0)),
                    Err(e) => self.one(p, e, emit),
                };
                (p.0, result)
            })
            .collect()
    }

    /// A photo judged alone failed with `e`: on out-of-memory, retries it at lower
    /// resolutions, halving its pixels each time.
    fn one(
        &mut self,
        pair: &(usize, PhotoInput),
        e: ModelError,
        emit: &mut impl FnMut(RankEvent),
    ) -> Result<PhotoScore, String> {
        if !e.is_out_of_memory() {
            return Err(e.to_string());
        }
        // Visual tokens kept for later queries give their memory back, and the photo is
        // tried again as it is before its resolution is lowered.
        if self.model.visual_cache_stats().1 > 0 {
            self.model.release_cached_memory();
            match judge_together(
                self.model,
                self.query,
                std::slice::from_ref(pair),
                self.time_stages,
            ) {
                Ok(mut s) => return Ok(s.remove(0)),
                Err(e) if e.is_out_of_memory() => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        let (index, input) = pair;
        let path = &self.paths[*index];
        let factor = self.model.config.vision.resize_factor();
        let lowest = self.cfg.min_pixels.max(LOWEST_TOKENS * factor * factor);
        let tokens_at = |pixels: usize| pixels / (factor * factor);
        let first_pixels = input.input_size.0 * input.input_size.1;
        let mut pixels = first_pixels;
        let mut last = e;
        while pixels / 2 >= lowest {
            pixels /= 2;
            let cfg = self
                .cfg
                .with_bounds(Some(self.cfg.min_pixels), Some(pixels));
            let lower = load_photo(path, self.model, &cfg)?;
            match judge_together(self.model, self.query, &[(*index, lower)], self.time_stages) {
                Ok(mut s) => {
                    let mut score = s.remove(0);
                    score.lowered_resolution = true;
                    if !self.told_resolution {
                        self.told_resolution = true;
                        emit(RankEvent::Notice {
                            text: format!(
                                "The GPU ran out of memory on {} at {} visual tokens; it was judged at {} instead (marked in its model output). Photos like it may score differently: choose a lower resolution or close other programs that use the GPU.",
                                display_name(path),
                                tokens_at(first_pixels),
                                score.visual_tokens
                            ),
                        });
                    }
                    return Ok(score);
                }
                Err(e) if e.is_out_of_memory() => last = e,
                Err(e) => return Err(e.to_string()),
            }
        }
        Err(format!(
            "{last}; even at {} visual tokens. Close other programs that use the GPU, or choose a lower resolution",
            tokens_at(pixels)
        ))
    }
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy()
        .into_owned()
}

/// A batch's work queued on the device: its visual tokens and, per merged grid, the
/// language model's pending scores.
pub(super) struct InFlight {
    tokens: Vec<VisualTokens>,
    groups: Vec<(Vec<usize>, PendingScores)>,
    queued_at: Instant,
    /// The vision tower's time, when stage timing waited for it.
    vision: Option<Duration>,
}

/// Judges photos together and waits for their scores.
fn judge_together(
    model: &Reranker,
    query: &PreparedQuery,
    photos: &[(usize, PhotoInput)],
    time_stages: bool,
) -> Result<Vec<PhotoScore>, ModelError> {
    let flight = queue_together(model, query, photos, time_stages)?;
    let since = flight.queued_at;
    collect_together(model, photos, flight, since)
}

/// Queues photos' vision tower and language model on the device (with `time_stages`,
/// waiting once for the vision tower to time it).
fn queue_together(
    model: &Reranker,
    query: &PreparedQuery,
    photos: &[(usize, PhotoInput)],
    time_stages: bool,
) -> Result<InFlight, ModelError> {
    let queued_at = Instant::now();
    let inputs: Vec<&PhotoInput> = photos.iter().map(|(_, p)| p).collect();
    let tokens = model.encode_photos(&inputs)?;
    let vision = if time_stages {
        model.synchronize()?;
        Some(queued_at.elapsed())
    } else {
        None
    };
    // Photos of the same grid share one language-model batch.
    let mut members: Vec<((usize, usize), Vec<usize>)> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        match members.iter_mut().find(|(g, _)| *g == t.merged) {
            Some((_, m)) => m.push(i),
            None => members.push((t.merged, vec![i])),
        }
    }
    let groups = members
        .into_iter()
        .map(|(_, m)| {
            let group: Vec<&VisualTokens> = m.iter().map(|&i| &tokens[i]).collect();
            Ok((m.clone(), model.queue_batch(query, &group)?))
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    Ok(InFlight {
        tokens,
        groups,
        queued_at,
        vision,
    })
}

/// Waits for a queued batch's scores; each photo's time is its share of the time since
/// `since`.
fn collect_together(
    model: &Reranker,
    photos: &[(usize, PhotoInput)],
    flight: InFlight,
    since: Instant,
) -> Result<Vec<PhotoScore>, ModelError> {
    let mut judgements = vec![None; photos.len()];
    for (members, pending) in flight.groups {
        let out = model.collect(pending)?;
        if out.len() != members.len() {
            return Err(ModelError::Compute(candle_core::Error::Msg(format!(
                "{} scores for a batch of {}",
                out.len(),
                members.len()
            ))));
        }
        for (&i, j) in members.iter().zip(out) {
            judgements[i] = Some(j);
        }
    }
    let per_photo = |d: Duration| d.as_secs_f64() / photos.len() as f64;
    let total = since.elapsed();
    Ok(photos
        .iter()
        .zip(judgements)
        .zip(&flight.tokens)
        .map(|(((_, input), j), t)| {
            let j = j.expect("every photo is in a group");
            PhotoScore {
                score: j.score(),
                logit_yes: j.logit_yes,
                logit_no: j.logit_no,
                visual_tokens: t.count(),
                input_size: input.input_size,
                original_size: input.original_size,
                seconds: per_photo(total),
                vision_seconds: flight.vision.map(per_photo),
                lowered_resolution: false,
            }
        })
        .collect())
}
