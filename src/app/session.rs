//! What the window is working on now, and forgets when it closes: the model's status, the
//! photos added, the current ranking and its outcomes, the order the grid shows, the
//! selection, the photo being inspected, the query image and the notices. Events of the
//! inference thread change it here; nothing here draws.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::index_status::IndexStatus;
use super::run::{FirstStage, Outcome, Run, RunEnd};
use super::state::AppState;
use super::view::RankedView;
use crate::library::Library;
use crate::library::export::ExportRow;
use crate::worker::{
    Event, IndexThreadEvent, ModelInfo, RankEvent, RankOutcome, RankReply, SearchReply,
};

/// Where the model stands.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelStatus {
    /// Nothing loaded; the reason says what to do.
    Missing {
        name: String,
        reason: String,
    },
    Loading {
        name: String,
        since: Instant,
    },
    Ready(Box<ModelInfo>),
    Failed {
        name: String,
        reason: String,
    },
}

/// A line for the status bar.
#[derive(Debug, Clone)]
pub struct Notice {
    pub text: String,
    pub error: bool,
    pub at: Instant,
}

impl Notice {
    /// How long a notice stays: errors longer, so that they can be read.
    fn lifetime(&self) -> Duration {
        Duration::from_secs(if self.error { 30 } else { 10 })
    }
}

/// What the current ranking needs from the inference thread next.
#[derive(Debug, Clone, PartialEq)]
pub enum NextStep {
    /// Give these photos to the judge.
    Judge(Vec<PathBuf>),
}

/// The window's working state.
#[derive(Debug)]
pub struct Session {
    pub model: ModelStatus,
    /// The first stage: the embedder and the library's index.
    pub index: IndexStatus,
    pub library: Library,
    pub run: Option<Run>,
    /// Outcomes of the current ranking, by photo.
    pub outcomes: HashMap<PathBuf, Outcome>,
    /// The order the grid shows.
    pub view: RankedView,
    pub selection: HashSet<PathBuf>,
    /// The photo whose model output is open.
    pub inspect: Option<PathBuf>,
    pub query_image: Option<PathBuf>,
    pub notices: Vec<Notice>,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            model: ModelStatus::Missing {
                name: String::new(),
                reason: "no model loaded yet".into(),
            },
            index: IndexStatus::default(),
            library: Library::default(),
            run: None,
            outcomes: HashMap::new(),
            view: RankedView::default(),
            selection: HashSet::new(),
            inspect: None,
            query_image: None,
            notices: Vec::new(),
        }
    }
}

impl Session {
    /// Why a ranking cannot start now, if it cannot.
    pub fn cannot_rank_because(&self, state: &AppState) -> Option<String> {
        if self.run.as_ref().is_some_and(Run::active) {
            return Some("a ranking is running".into());
        }
        match &self.model {
            // While the model loads, a question asked before is answered from the score
            // cache, and anything else waits for the model.
            ModelStatus::Ready(_) | ModelStatus::Loading { .. } => {}
            ModelStatus::Missing { .. } | ModelStatus::Failed { .. } => {
                return Some("no model is loaded".into());
            }
        }
        if self.library.is_empty() {
            return Some(if self.library.scanning() {
                "the folders are still being read".into()
            } else {
                "add photos first".into()
            });
        }
        if state.query.trim().is_empty() && self.query_image.is_none() {
            return Some("describe the photo, or give an example image".into());
        }
        None
    }

    /// A ranking was sent to the inference thread: the grid starts over.
    pub fn begin_run(&mut self, run: Run) {
        self.outcomes.clear();
        self.inspect = None;
        self.run = Some(run);
        self.view.invalidate();
    }

    /// Forgets every photo; a ranking still running is stopped, not left to finish.
    pub fn clear_library(&mut self) {
        if let Some(run) = self.run.take()
            && let Some(handle) = &run.handle
        {
            handle.cancel();
            // dropping the handle tells the inference thread no one listens any more
        }
        self.library.clear();
        self.outcomes.clear();
        self.selection.clear();
        self.inspect = None;
        self.view.invalidate();
    }

    /// Takes in an event of the inference thread.
    pub fn on_event(&mut self, event: Event) {
        match event {
            Event::ModelLoading { name } => {
                self.model = ModelStatus::Loading {
                    name,
                    since: Instant::now(),
                }
            }
            Event::ModelReady(info) => self.model = ModelStatus::Ready(info),
            Event::ModelFailed { name, reason } => {
                self.model = ModelStatus::Failed { name, reason }
            }
            Event::Warning { text } => self.notify_error(text),
            Event::Recovered { reason } => {
                if let Some(run) = self.run.as_mut().filter(|r| r.active()) {
                    run.current = None;
                    run.end = Some(RunEnd::Failed(reason.clone()));
                }
                self.notify_error(reason);
            }
        }
    }

    /// Takes in an event of the index thread.
    pub fn on_index_event(&mut self, event: IndexThreadEvent) {
        if let Some((text, error)) = self.index.on_event(event) {
            if error {
                self.notify_error(text);
            } else {
                self.notify(text);
            }
        }
    }

    /// Takes in what the current ranking's first stage and judge replied since the last
    /// frame; returns what the inference thread must do next, if anything.
    pub fn poll_run(&mut self) -> Option<NextStep> {
        let run = self.run.as_mut().filter(|r| r.active())?;
        if let Some(search) = &run.search {
            let answer = match search.try_recv() {
                Ok(answer) => answer,
                Err(crossbeam_channel::TryRecvError::Empty) => return None,
                Err(crossbeam_channel::TryRecvError::Disconnected) => SearchReply::Failed {
                    reason: "the index thread stopped".into(),
                },
            };
            run.search = None;
            return Some(self.on_first_stage(answer));
        }
        let handle = run.handle.as_ref()?;
        let mut replies = Vec::new();
        let gone = loop {
            match handle.replies.try_recv() {
                Ok(r) => replies.push(r),
                Err(crossbeam_channel::TryRecvError::Empty) => break false,
                Err(crossbeam_channel::TryRecvError::Disconnected) => break true,
            }
        };
        for reply in replies {
            self.on_rank_reply(reply);
        }
        if gone && let Some(run) = self.run.as_mut().filter(|r| r.active()) {
            // The thread dropped the job without a last word (it recovered from a fault;
            // its own event says why).
            run.current = None;
            run.end = Some(RunEnd::Failed(
                "the ranking was interrupted; please try again".into(),
            ));
        }
        None
    }

    /// The first stage answered: the grid shows its order at once, and the judge gets the
    /// best `shortlist` (every photo when the index could not help).
    fn on_first_stage(&mut self, answer: SearchReply) -> NextStep {
        let shortlist = self.run.as_ref().map_or(1, |r| r.shortlist);
        match answer {
            SearchReply::Ranked {
                hits,
                unindexed,
                seconds,
            } if !hits.is_empty() => {
                let mut first = FirstStage::new(hits, unindexed, shortlist, seconds);
                let next = first.take_next();
                if let Some(run) = self.run.as_mut() {
                    run.first_stage = Some(first);
                }
                self.view.invalidate();
                NextStep::Judge(next)
            }
            SearchReply::Ranked { .. } => {
                self.notify("No photo is indexed yet: judging every photo");
                NextStep::Judge(self.library.photos.clone())
            }
            SearchReply::Failed { reason } => {
                self.notify_error(format!(
                    "The first stage failed ({reason}); judging every photo"
                ));
                NextStep::Judge(self.library.photos.clone())
            }
        }
    }

    /// The next `shortlist` photos of the first stage for the judge ("show more").
    pub fn show_more(&mut self) -> Option<NextStep> {
        let run = self.run.as_mut().filter(|r| !r.active())?;
        let first = run.first_stage.as_mut().filter(|f| f.remaining() > 0)?;
        let next = first.take_next();
        self.view.invalidate();
        Some(NextStep::Judge(next))
    }

    fn on_rank_reply(&mut self, reply: RankReply) {
        let Some(run) = self.run.as_mut() else {
            return;
        };
        match reply {
            RankReply::Progress(RankEvent::Started { query_tokens, .. }) => {
                run.query_tokens = query_tokens;
                run.waiting_for_model = false;
            }
            RankReply::Progress(RankEvent::PhotoStarted { index }) => {
                run.current = Some(run.job_offset + index)
            }
            RankReply::Progress(RankEvent::PhotoScored { index, score, .. }) => {
                run.done += 1;
                if let Some(path) = run.photos.get(run.job_offset + index) {
                    self.outcomes.insert(path.clone(), Outcome::Scored(score));
                    self.view.invalidate();
                }
            }
            RankReply::Progress(RankEvent::PhotoFailed { index, reason }) => {
                run.failed += 1;
                if let Some(path) = run.photos.get(run.job_offset + index) {
                    self.outcomes.insert(path.clone(), Outcome::Failed(reason));
                    self.view.invalidate();
                }
            }
            RankReply::Progress(RankEvent::Notice { text }) => self.notify(text),
            RankReply::Finished { outcome, seconds } => {
                run.current = None;
                run.end = Some(match outcome {
                    RankOutcome::Finished => RunEnd::Finished { seconds },
                    RankOutcome::Cancelled => RunEnd::Cancelled { seconds },
                });
            }
            RankReply::Failed { reason } => {
                run.current = None;
                run.end = Some(RunEnd::Failed(reason));
            }
        }
    }

    /// Photos that could not be indexed or scored, with the reason.
    pub fn failures(&self) -> Vec<(PathBuf, String)> {
        let mut failed: Vec<(PathBuf, String)> = self
            .index
            .failures
            .iter()
            .filter(|(p, _)| !self.outcomes.contains_key(p))
            .cloned()
            .chain(self.outcomes.iter().filter_map(|(p, o)| match o {
                Outcome::Failed(r) => Some((p.clone(), r.clone())),
                Outcome::Scored(_) => None,
            }))
            .collect();
        failed.sort();
        failed
    }

    /// The ranked photos as exported: what the grid shows, best first.
    pub fn export_rows(&self) -> Vec<ExportRow> {
        self.view
            .head()
            .iter()
            .enumerate()
            .filter_map(|(i, path)| match self.outcomes.get(path) {
                Some(Outcome::Scored(s)) => Some(ExportRow {
                    rank: i + 1,
                    path: path.clone(),
                    score: s.score,
                    logit_yes: s.logit_yes,
                    logit_no: s.logit_no,
                    visual_tokens: s.visual_tokens,
                    width: s.original_size.0,
                    height: s.original_size.1,
                }),
                _ => None,
            })
            .collect()
    }

    /// The photos a copy takes: the selection, else what the grid shows.
    pub fn photos_to_copy(&self) -> Vec<PathBuf> {
        self.view
            .head()
            .iter()
            .filter(|p| matches!(self.outcomes.get(*p), Some(Outcome::Scored(_))))
            .filter(|p| self.selection.is_empty() || self.selection.contains(*p))
            .cloned()
            .collect()
    }

    /// Refreshes the grid's order if photos, outcomes or filters changed.
    pub fn refresh_view(&mut self, state: &AppState) {
        self.view
            .refresh(state, &self.library, self.run.as_ref(), &self.outcomes);
    }

    pub fn notify(&mut self, text: impl Into<String>) {
        self.notices.push(Notice {
            text: text.into(),
            error: false,
            at: Instant::now(),
        });
    }

    pub fn notify_error(&mut self, text: impl Into<String>) {
        self.notices.push(Notice {
            text: text.into(),
            error: true,
            at: Instant::now(),
        });
    }

    /// Drops notices that have been shown long enough.
    pub fn expire_notices(&mut self) {
        self.notices.retain(|n| n.at.elapsed() < n.lifetime());
    }
}
