//! The inference side: rankings run here, away from the window's thread.

pub mod cache_first;
pub mod devices;
pub mod index_thread;
pub mod job;
mod judge;
pub mod load;
pub mod rank;
mod request;
pub mod score;
pub mod thread;

pub use devices::run_ranking_on;
pub use index_thread::{
    EmbedderInfo, IndexCommand, IndexThread, IndexThreadEvent, SearchJob, SearchReply,
};
pub use job::{Command, RankHandle, RankJob, RankReply};
pub use load::{LoadedEmbedder, LoadedModel, load_embedder, load_reranker};
pub use rank::{PhotoScore, RankEvent, RankOutcome, RankRequest, RankSettings, run_ranking};
pub use score::{BatchLimits, Content, Dealer, PhotoPreparer, Scheduler, ScoreJob, ScoreReply};
pub use thread::{Event, InferenceThread, ModelInfo};

/// Waits up to `timeout` for a worker thread that was asked to stop, draining its events
/// meanwhile so that it never blocks on a full channel. False if it is still inside a model
/// step when the time is up: it exits when that returns, and the process may end without
/// waiting for it.
fn join_within<T>(
    handle: std::thread::JoinHandle<()>,
    events: &crossbeam_channel::Receiver<T>,
    timeout: std::time::Duration,
) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while !handle.is_finished() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        for _ in events.try_iter() {}
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    handle.join().is_ok()
}

/// A store of the worker's (the score cache, the index) opened at `path`, for the thread
/// that keeps it: None without a path, or when it cannot be opened (then `warn` gets
/// `unusable` of the error); a warning the store gives on opening goes to `warn` too.
fn open_store<T, E>(
    path: Option<&std::path::Path>,
    open: impl FnOnce(&std::path::Path) -> Result<(T, Option<String>), E>,
    unusable: impl FnOnce(E) -> String,
    mut warn: impl FnMut(String),
) -> Option<std::sync::Mutex<T>> {
    match open(path?) {
        Ok((store, warning)) => {
            if let Some(text) = warning {
                warn(text);
            }
            Some(std::sync::Mutex::new(store))
        }
        Err(e) => {
            warn(unusable(e));
            None
        }
    }
}

/// What a caught panic says, for the message that replaces it.
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into())
}
