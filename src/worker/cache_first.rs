//! Answering a ranking from the score cache alone, beside the inference thread: while the
//! model is still loading (or the thread is busy with other work), a question asked before
//! over the same photos is answered at once, without the model; a question with anything
//! left to score goes to the inference thread as usual and waits its turn there.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::Sender;

use super::job::{Command, RankJob, RankReply};
use super::rank::{RankEvent, RankOutcome, all_cached};
use crate::cache::scores::ScoreCache;
use crate::model::preprocess::PreprocessConfig;

/// What the score cache needs to know of a model to find its scores: its identity (from
/// its files), how it prepares photos, and the number format it computes in on the device
/// chosen for it. Known as soon as a load starts, long before the model is ready.
#[derive(Debug, Clone)]
pub struct ModelKey {
    pub identity: String,
    pub preprocess: PreprocessConfig,
    pub dtype: &'static str,
}

/// The model the inference thread has or is loading, shared with its handle.
pub(super) type SharedKey = Arc<Mutex<Option<ModelKey>>>;

/// Where a cache-first ranking needs to reach.
pub(super) struct CacheFirst {
    pub key: Option<ModelKey>,
    pub cache_path: Option<PathBuf>,
    pub commands: Sender<Command>,
    pub notify: Arc<dyn Fn() + Send + Sync>,
}

impl CacheFirst {
    /// Answers `job` from the cache when every photo's score is there (on a thread of its
    /// own, so the caller never waits on the disk); otherwise hands it to the inference
    /// thread. False when no thread could be started and the job was not handed on.
    pub fn start(self, job: RankJob) -> bool {
        let spawned = std::thread::Builder::new()
            .name("cache-answer".into())
            .spawn(move || self.answer_or_forward(job));
        spawned.is_ok()
    }

    fn answer_or_forward(self, job: RankJob) {
        let start = Instant::now();
        let answer = match (&self.key, &self.cache_path) {
            (Some(key), Some(path)) if job.use_cache => answer_from(key, path, &job),
            _ => None,
        };
        let Some(scores) = answer else {
            if let Err(e) = self.commands.try_send(Command::Rank(job)) {
                let job = match e {
                    crossbeam_channel::TrySendError::Full(Command::Rank(j))
                    | crossbeam_channel::TrySendError::Disconnected(Command::Rank(j)) => j,
                    _ => return,
                };
                let _ = job.reply.send(RankReply::Failed {
                    reason: "the inference thread is busy or stopped; try again in a moment".into(),
                });
                (self.notify)();
            }
            return;
        };
        let mut replies = vec![RankReply::Progress(RankEvent::Started {
            total: scores.len(),
            prefix_tokens: 0,
            query_tokens: None,
        })];
        replies.extend(scores.into_iter().enumerate().map(|(index, score)| {
            RankReply::Progress(RankEvent::PhotoScored {
                index,
                score,
                cached: true,
            })
        }));
        replies.push(RankReply::Finished {
            outcome: RankOutcome::Finished,
            seconds: start.elapsed().as_secs_f64(),
        });
        for (i, reply) in replies.into_iter().enumerate() {
            // Whoever asked may have gone away (Clear all): then there is no one to tell.
            if job.reply.send(reply).is_err() {
                break;
            }
            // The reader drains the channel when it is woken: wake it as it fills.
            if i % 512 == 511 {
                (self.notify)();
            }
        }
        (self.notify)();
    }
}

/// Every score of `job` from the cache at `path`, or None at the first one missing (or
/// when the cache cannot be opened: the inference thread then says why).
fn answer_from(key: &ModelKey, path: &Path, job: &RankJob) -> Option<Vec<super::PhotoScore>> {
    if !path.exists() {
        return None;
    }
    let (cache, _) = ScoreCache::open(path).ok()?;
    let cache = Mutex::new(cache);
    all_cached(
        &key.identity,
        &key.preprocess,
        key.dtype,
        &job.request,
        &cache,
    )
}
