//! The order the grid shows. Judged photos come first, best first (filtered by the score
//! threshold and "keep the best N"), then the photos given to the judge that it has not
//! scored yet; with a first stage, then every other indexed photo in the first stage's
//! order (its first guess) and the photos not indexed yet; before any ranking, the library
//! in the order it was added. Recomputed only when outcomes, photos or filters change;
//! the long first-stage tail only when the judge is given more photos.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::run::{Outcome, Run};
use super::state::AppState;
use crate::library::Library;

/// The grid's order and its counts.
#[derive(Debug, Default)]
pub struct RankedView {
    dirty: bool,
    key: Option<(u32, usize, u64, bool, bool)>,
    /// Scored photos, then the ones waiting for the judge.
    head: Vec<PathBuf>,
    /// The photos the judge was not given: shared, rebuilt only when that set changes.
    tail: Arc<Vec<PathBuf>>,
    tail_key: Option<(usize, usize, u64)>,
    /// Scored photos before filtering.
    pub scored: usize,
    /// Scored photos the filters hide.
    pub hidden: usize,
}

impl RankedView {
    /// Marks the order as stale (an outcome arrived, a photo left).
    pub fn invalidate(&mut self) {
        self.dirty = true;
    }

    /// Photos shown.
    pub fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// True when nothing is shown.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The photo at place `i`.
    pub fn get(&self, i: usize) -> Option<&PathBuf> {
        self.head
            .get(i)
            .or_else(|| self.tail.get(i.checked_sub(self.head.len())?))
    }

    /// The scored and waiting photos, in order (the rest follows them).
    pub fn head(&self) -> &[PathBuf] {
        &self.head
    }

    /// Every photo shown, in order.
    pub fn iter(&self) -> impl Iterator<Item = &PathBuf> {
        self.head.iter().chain(self.tail.iter())
    }

    /// The place of `path` among the scored and waiting photos.
    pub fn position(&self, path: &Path) -> Option<usize> {
        self.head.iter().position(|p| p == path)
    }

    /// Recomputes the order when something it depends on changed.
    pub fn refresh(
        &mut self,
        state: &AppState,
        library: &Library,
        run: Option<&Run>,
        outcomes: &HashMap<PathBuf, Outcome>,
    ) {
        let active = run.is_some_and(Run::active);
        let key = (
            state.threshold.to_bits(),
            state.top_n,
            library.generation,
            active,
            run.is_some(),
        );
        if !self.dirty && self.key == Some(key) {
            return;
        }
        self.dirty = false;
        self.key = Some(key);
        let Some(run) = run else {
            self.scored = 0;
            self.hidden = 0;
            self.head.clear();
            let tail_key = (usize::MAX, library.photos.len(), library.generation);
            if self.tail_key != Some(tail_key) {
                self.tail = Arc::new(library.photos.clone());
                self.tail_key = Some(tail_key);
            }
            return;
        };
        let mut scored: Vec<(f64, &PathBuf)> = outcomes
            .iter()
            .filter_map(|(p, o)| match o {
                Outcome::Scored(s) if library.contains(p) => Some((s.score, p)),
                _ => None,
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        self.scored = scored.len();
        let threshold = f64::from(state.threshold);
        let limit = if state.top_n == 0 {
            usize::MAX
        } else {
            state.top_n
        };
        let mut head: Vec<PathBuf> = scored
            .iter()
            .filter(|(s, _)| *s >= threshold)
            .take(limit)
            .map(|(_, p)| (*p).clone())
            .collect();
        self.hidden = scored.len() - head.len();
        let waiting = |p: &&PathBuf| !outcomes.contains_key(*p) && library.contains(p);
        match &run.first_stage {
            Some(first) => {
                head.extend(first.order[..first.judged].iter().filter(waiting).cloned());
                let tail_key = (first.judged, first.order.len(), library.generation);
                if self.tail_key != Some(tail_key) {
                    self.tail = Arc::new(
                        first.order[first.judged..]
                            .iter()
                            .chain(&first.unindexed)
                            .filter(|p| library.contains(p))
                            .cloned()
                            .collect(),
                    );
                    self.tail_key = Some(tail_key);
                }
            }
            None => {
                if active {
                    head.extend(run.photos.iter().filter(waiting).cloned());
                }
                self.tail = Arc::default();
                self.tail_key = None;
            }
        }
        self.head = head;
    }
}
