//! Where the first stage stands, as the window shows it: the embedder (missing, loading,
//! ready, failed), and how far the indexing of the library is ("Indexing 4,210 of 18,000
//! · 85 photos/s · 3 min left"), with the photos that could not be indexed and why.

use std::path::PathBuf;
use std::time::Instant;

use crate::index::IndexSummary;
use crate::worker::{EmbedderInfo, IndexThreadEvent};

/// Where the embedder stands.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbedderStatus {
    /// Nothing loaded; the reason says what to do.
    Missing {
        name: String,
        reason: String,
    },
    Loading {
        name: String,
        since: Instant,
    },
    Ready(EmbedderInfo),
    Failed {
        name: String,
        reason: String,
    },
}

/// The index of the library.
#[derive(Debug, Clone)]
pub struct IndexStatus {
    pub embedder: EmbedderStatus,
    /// True while the library is being indexed.
    pub running: bool,
    /// Photos with a vector, and photos that failed, in the current (or last) run.
    pub indexed: usize,
    pub failed: usize,
    pub total: usize,
    pub started: Instant,
    /// How the last run ended.
    pub last: Option<IndexSummary>,
    /// Photos that could not be indexed, with the reason.
    pub failures: Vec<(PathBuf, String)>,
}

impl Default for IndexStatus {
    fn default() -> Self {
        IndexStatus {
            embedder: EmbedderStatus::Missing {
                name: String::new(),
                reason: "no embedder loaded yet".into(),
            },
            running: false,
            indexed: 0,
            failed: 0,
            total: 0,
            started: Instant::now(),
            last: None,
            failures: Vec::new(),
        }
    }
}

impl IndexStatus {
    /// True when searches can be answered.
    pub fn ready(&self) -> bool {
        matches!(self.embedder, EmbedderStatus::Ready(_))
    }

    /// True when every photo of the library has been handled.
    pub fn complete(&self) -> bool {
        self.ready() && !self.running && self.indexed + self.failed >= self.total
    }

    /// Photos per second in the current run.
    pub fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs > 0.0 {
            (self.indexed + self.failed) as f64 / secs
        } else {
            0.0
        }
    }

    /// Takes in an event of the index thread; returns a notice for the status bar, if any
    /// (and whether it is an error).
    pub fn on_event(&mut self, event: IndexThreadEvent) -> Option<(String, bool)> {
        match event {
            IndexThreadEvent::EmbedderLoading { name } => {
                self.embedder = EmbedderStatus::Loading {
                    name,
                    since: Instant::now(),
                }
            }
            IndexThreadEvent::EmbedderReady(info) => self.embedder = EmbedderStatus::Ready(info),
            IndexThreadEvent::EmbedderFailed { name, reason } => {
                self.embedder = EmbedderStatus::Failed { name, reason }
            }
            IndexThreadEvent::Started { total } => {
                self.running = true;
                self.indexed = 0;
                self.failed = 0;
                self.total = total;
                self.started = Instant::now();
                self.failures.clear();
            }
            IndexThreadEvent::Progress {
                indexed,
                failed,
                total,
            } => {
                self.indexed = indexed;
                self.failed = failed;
                self.total = total;
            }
            IndexThreadEvent::PhotoFailed { path, reason } => self.failures.push((path, reason)),
            IndexThreadEvent::Finished(summary) => {
                self.running = false;
                self.indexed = summary.indexed + summary.reused;
                self.failed = summary.failed;
                self.last = Some(summary);
            }
            IndexThreadEvent::Notice { text } => return Some((text, true)),
            IndexThreadEvent::Recovered { reason } => {
                self.running = false;
                return Some((reason, true));
            }
        }
        None
    }
}
