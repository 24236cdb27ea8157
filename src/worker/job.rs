//! What the inference thread is asked, and a ranking's job: its request, its cancel flag
//! and the channel its replies go to, with the asking side's handle. Shared by the thread
//! and by whatever answers a job beside it (the score cache, [`super::cache_first`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, bounded};

use super::rank::{RankEvent, RankOutcome, RankRequest};
use super::score::ScoreJob;
use crate::hub::ModelSource;
use crate::model::device::{DevicePreference, GpuChoice};

/// Capacity of a ranking's reply channel: enough for a burst of scores between two frames.
const REPLY_CAPACITY: usize = 4096;

/// What the window asks of the inference thread.
#[derive(Debug)]
pub enum Command {
    /// Load (replacing any loaded model).
    LoadModel {
        source: ModelSource,
        device: DevicePreference,
        /// One copy per GPU of these, rankings dealt over them (None, or a choice of
        /// fewer than two GPUs: one copy on `device`).
        gpus: Option<GpuChoice>,
        /// What to call it (a Hub id rather than its cache folder).
        name: Option<String>,
    },
    /// Rank, replying on the job's own channel.
    Rank(RankJob),
    /// Score documents for another program (the server), replying on the job's channel;
    /// several such jobs are served at once, a batch at a time.
    Score(ScoreJob),
    /// Finish the current step and exit.
    Shutdown,
}

/// A ranking and where its progress goes.
#[derive(Debug)]
pub struct RankJob {
    pub request: RankRequest,
    /// Read and store scores in the score cache.
    pub use_cache: bool,
    /// Raised by Cancel: the ranking stops after the current batch and says so.
    pub cancel: Arc<AtomicBool>,
    pub reply: Sender<RankReply>,
}

/// The asking side of a [`RankJob`]: dropping it cancels the ranking without a reply.
#[derive(Debug)]
pub struct RankHandle {
    pub cancel: Arc<AtomicBool>,
    pub replies: Receiver<RankReply>,
}

impl RankJob {
    /// A job for `request` and the handle its replies arrive on.
    pub fn new(request: RankRequest, use_cache: bool) -> (Self, RankHandle) {
        let (reply, replies) = bounded(REPLY_CAPACITY);
        let cancel = Arc::new(AtomicBool::new(false));
        let job = RankJob {
            request,
            use_cache,
            cancel: Arc::clone(&cancel),
            reply,
        };
        (job, RankHandle { cancel, replies })
    }
}

impl RankHandle {
    /// Asks the ranking to stop after the current batch; it then replies `Finished` with
    /// `Cancelled`, and every score sent before stays valid.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }
}

/// What a ranking reports on its own channel, in order; `Finished` or `Failed` is last.
#[derive(Debug, Clone, PartialEq)]
pub enum RankReply {
    Progress(RankEvent),
    Finished {
        outcome: RankOutcome,
        seconds: f64,
    },
    /// The ranking could not start or stopped on an error; scores already sent stay.
    Failed {
        reason: String,
    },
}
