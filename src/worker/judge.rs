//! Judging a ranking's batches on the model: queued ahead of the batch before ([`Judge::queue`],
//! [`Judge::finish`]) or at once ([`Judge::batch`]), adapting to the device when it runs out
//! of memory (smaller batches, then lower resolutions), with each photo's share of the
//! device's time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::request::{PhotoScore, RankEvent, RankSettings};
use crate::library::decode_photo;
use crate::model::preprocess::{PreprocessConfig, preprocess};
use crate::model::{ModelError, PendingScores, PhotoInput, PreparedQuery, Reranker, VisualTokens};

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

    /// Most photos judged together from now on (fewer after the device ran out of memory).
    pub(super) fn batch_limit(&self) -> usize {
        self.batch_limit
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
