//! One ranking as the window follows it: what was asked, how far it is, how it ended, and
//! what happened to each photo.

use std::path::PathBuf;
use std::time::Instant;

use crate::worker::{PhotoScore, RankHandle};

/// What happened to one photo in the current ranking.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Scored(PhotoScore),
    Failed(String),
}

/// The current (or last) ranking.
#[derive(Debug)]
pub struct Run {
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
    /// Where the ranking's replies arrive; dropping it stops the ranking.
    pub handle: RankHandle,
}

/// How a ranking ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    Finished { seconds: f64 },
    Cancelled { seconds: f64 },
    Failed(String),
}

impl Run {
    /// True while the model works on it.
    pub fn active(&self) -> bool {
        self.end.is_none()
    }

    /// True once Cancel was pressed and the ranking has not stopped yet.
    pub fn stopping(&self) -> bool {
        self.active()
            && self
                .handle
                .cancel
                .load(std::sync::atomic::Ordering::Relaxed)
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
}
