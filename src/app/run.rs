//! One ranking as the window follows it: what was asked, the first stage's order when the
//! index found the candidates, how far the judge is, how it ended, and what happened to
//! each photo.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crossbeam_channel::Receiver;

use crate::worker::{PhotoScore, RankHandle, RankRequest, SearchReply};

/// What happened to one photo in the current ranking.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Scored(PhotoScore),
    Failed(String),
}

/// The first stage of a two-stage ranking: every indexed photo by similarity; the judge
/// takes them `shortlist` at a time, best first.
#[derive(Debug, Clone)]
pub struct FirstStage {
    /// Indexed photos, most similar first.
    pub order: Vec<PathBuf>,
    /// Similarity and first-stage rank (from 1) of each indexed photo.
    pub by_photo: HashMap<PathBuf, (f32, usize)>,
    /// Photos without a vector (not indexed yet, or unreadable).
    pub unindexed: Vec<PathBuf>,
    /// How many of `order` were given to the judge so far.
    pub judged: usize,
    /// Photos the judge takes at a time.
    pub shortlist: usize,
    /// From the request to the first stage's answer.
    pub seconds: f64,
}

impl FirstStage {
    /// From the index thread's answer.
    pub fn new(
        hits: Vec<(PathBuf, f32)>,
        unindexed: Vec<PathBuf>,
        shortlist: usize,
        seconds: f64,
    ) -> Self {
        let by_photo = hits
            .iter()
            .enumerate()
            .map(|(i, (p, s))| (p.clone(), (*s, i + 1)))
            .collect();
        FirstStage {
            order: hits.into_iter().map(|(p, _)| p).collect(),
            by_photo,
            unindexed,
            judged: 0,
            shortlist: shortlist.max(1),
            seconds,
        }
    }

    /// The next photos for the judge ("show more"), marked as given.
    pub fn take_next(&mut self) -> Vec<PathBuf> {
        let end = (self.judged + self.shortlist).min(self.order.len());
        let next = self.order[self.judged..end].to_vec();
        self.judged = end;
        next
    }

    /// Photos the judge has not been given yet.
    pub fn remaining(&self) -> usize {
        self.order.len() - self.judged
    }

    /// Similarity and rank of `path` in the first stage, with whether the judge has it.
    pub fn place(&self, path: &Path) -> Option<(f32, usize, bool)> {
        self.by_photo
            .get(path)
            .map(|&(s, r)| (s, r, r <= self.judged))
    }
}

/// The current (or last) ranking.
#[derive(Debug)]
pub struct Run {
    /// The photos given to the judge, in the order they were given.
    pub photos: Vec<PathBuf>,
    pub query_text: String,
    pub query_image: Option<PathBuf>,
    pub instruction: String,
    pub query_tokens: Option<usize>,
    pub started: Instant,
    pub done: usize,
    pub failed: usize,
    /// Index of the photo the model is on.
    pub current: Option<usize>,
    pub end: Option<RunEnd>,
    /// The request, for more photos under the same query ("show more").
    pub request: RankRequest,
    /// Whether scores are read from and stored in the score cache.
    pub use_cache: bool,
    /// Photos the judge takes from the first stage at a time (0: it judges every photo).
    pub shortlist: usize,
    /// The first stage's answer, awaited.
    pub search: Option<Receiver<SearchReply>>,
    /// The first stage, once it answered (None: every photo is judged).
    pub first_stage: Option<FirstStage>,
    /// Where the judge's replies arrive; dropping it stops the judge.
    pub handle: Option<RankHandle>,
    /// Where the judge's current job starts in `photos`.
    pub job_offset: usize,
    /// Sent while the model was loading, and not started yet.
    pub waiting_for_model: bool,
}

/// How a ranking ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    Finished { seconds: f64 },
    Cancelled { seconds: f64 },
    Failed(String),
}

impl Run {
    /// A ranking of `request`, not started yet.
    pub fn new(request: RankRequest, use_cache: bool, shortlist: usize) -> Self {
        Run {
            photos: Vec::new(),
            query_text: request.query_text.clone(),
            query_image: request.query_image.clone(),
            instruction: request.instruction.clone(),
            query_tokens: None,
            started: Instant::now(),
            done: 0,
            failed: 0,
            current: None,
            end: None,
            request,
            use_cache,
            shortlist,
            search: None,
            first_stage: None,
            handle: None,
            job_offset: 0,
            waiting_for_model: false,
        }
    }

    /// True while the first stage or the model works on it.
    pub fn active(&self) -> bool {
        self.end.is_none()
    }

    /// True while the first stage is being asked.
    pub fn searching(&self) -> bool {
        self.active() && self.search.is_some()
    }

    /// True once Cancel was pressed and the ranking has not stopped yet.
    pub fn stopping(&self) -> bool {
        self.active()
            && self
                .handle
                .as_ref()
                .is_some_and(|h| h.cancel.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Photos per second so far.
    pub fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs > 0.0 {
            (self.done + self.failed) as f64 / secs
        } else {
            0.0
        }
    }

    /// Gives the judge's job for `photos` to this run: its replies arrive on `handle`.
    pub fn judge(&mut self, photos: Vec<PathBuf>, handle: RankHandle) {
        self.job_offset = self.photos.len();
        self.photos.extend(photos);
        self.handle = Some(handle);
        self.end = None;
        self.current = None;
    }

    /// The request of a job for `photos` under this run's query.
    pub fn request_for(&self, photos: Vec<PathBuf>) -> RankRequest {
        RankRequest {
            photos,
            ..self.request.clone()
        }
    }
}
