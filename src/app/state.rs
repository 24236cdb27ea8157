//! What the window remembers between runs (saved by eframe's persistence).

use serde::{Deserialize, Serialize};

use crate::model::DEFAULT_INSTRUCTION;

/// The most visual tokens per photo the user can choose: speed against detail. 1280 is the
/// model card's value.
pub const RESOLUTIONS: [usize; 3] = [256, 640, 1280];
/// Photos the judge takes from the first stage at a time: about ten seconds on a fast GPU.
pub const DEFAULT_SHORTLIST: usize = 200;
/// Pixels per visual token (a 28 x 28 block).
pub const PIXELS_PER_TOKEN: usize = 28 * 28;

/// Saved settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppState {
    pub query: String,
    pub instruction: String,
    /// Most visual tokens per photo.
    pub resolution: usize,
    /// The model: a folder or a Hugging Face id.
    pub model: String,
    /// Show only photos scoring at least this.
    pub threshold: f32,
    /// Show only the best N (0: all).
    pub top_n: usize,
    /// Keep scores in the score cache, so that a repeated search is instant.
    pub remember_scores: bool,
    /// Two stages: the index's best N photos are judged (0: every photo is judged).
    pub shortlist: usize,
    /// The first-stage embedder: a folder or a Hugging Face id.
    pub embedder: String,
    /// The GPUs the judge runs on, one copy each (None: every GPU of the machine).
    pub gpus: Option<Vec<usize>>,
}

impl Default for AppState {
    fn default() -> Self {
        AppState {
            query: String::new(),
            instruction: DEFAULT_INSTRUCTION.to_owned(),
            resolution: 1280,
            model: crate::hub::DEFAULT_MODEL_ID.to_owned(),
            threshold: 0.0,
            top_n: 0,
            remember_scores: true,
            shortlist: DEFAULT_SHORTLIST,
            embedder: crate::embed::DEFAULT_EMBEDDER_ID.to_owned(),
            gpus: None,
        }
    }
}

impl AppState {
    /// The key under which eframe stores it.
    pub const KEY: &'static str = "lychee-rerank-settings";

    /// max_pixels for the chosen resolution.
    pub fn max_pixels(&self) -> usize {
        self.resolution.clamp(4, 16384) * PIXELS_PER_TOKEN
    }
}
