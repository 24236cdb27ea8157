//! The order the grid shows: scored photos best first (filtered by the score threshold
//! and "keep the best N"), then, while a ranking runs, the photos still waiting; before
//! any ranking, the library in the order it was added. Recomputed only when outcomes,
//! photos or filters change.

use std::collections::HashMap;
use std::path::PathBuf;

use super::run::{Outcome, Run};
use super::state::AppState;
use crate::library::Library;

/// The grid's order and its counts.
#[derive(Debug, Default)]
pub struct RankedView {
    dirty: bool,
    key: Option<(u32, usize, u64, bool, bool)>,
    order: Vec<PathBuf>,
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

    /// The photos in the order the grid shows them.
    pub fn order(&self) -> &[PathBuf] {
        &self.order
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
            self.order = library.photos.clone();
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
        let mut order: Vec<PathBuf> = scored
            .iter()
            .filter(|(s, _)| *s >= threshold)
            .take(limit)
            .map(|(_, p)| (*p).clone())
            .collect();
        self.hidden = scored.len() - order.len();
        if active {
            order.extend(
                run.photos
                    .iter()
                    .filter(|p| !outcomes.contains_key(*p) && library.contains(p))
                    .cloned(),
            );
        }
        self.order = order;
    }
}
