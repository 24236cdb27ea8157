//! What a ranking is asked and what it reports: the request, the settings it runs with,
//! each photo's score, the events after every step, and how it ended or why it could not
//! run.

use std::path::PathBuf;

use crate::model::Reranker;

/// What to rank.
#[derive(Debug, Clone, PartialEq)]
pub struct RankRequest {
    pub query_text: String,
    pub query_image: Option<PathBuf>,
    pub instruction: String,
    pub photos: Vec<PathBuf>,
    /// Overrides of the model's pixel bounds (the resolution setting).
    pub min_pixels: Option<usize>,
    pub max_pixels: Option<usize>,
}

impl RankRequest {
    /// `photos` against `query_text`, with the default instruction and the model's own
    /// pixel bounds.
    pub fn new(query_text: impl Into<String>, photos: Vec<PathBuf>) -> Self {
        RankRequest {
            query_text: query_text.into(),
            query_image: None,
            instruction: crate::model::DEFAULT_INSTRUCTION.to_owned(),
            photos,
            min_pixels: None,
            max_pixels: None,
        }
    }

    /// With an example image to search by.
    pub fn with_query_image(mut self, image: Option<PathBuf>) -> Self {
        self.query_image = image;
        self
    }

    /// With another task instruction.
    pub fn with_instruction(mut self, instruction: impl Into<String>) -> Self {
        self.instruction = instruction.into();
        self
    }

    /// With other pixel bounds (None keeps the model's).
    pub fn with_pixels(mut self, min_pixels: Option<usize>, max_pixels: Option<usize>) -> Self {
        self.min_pixels = min_pixels;
        self.max_pixels = max_pixels;
        self
    }
}

/// The model's output for one photo.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PhotoScore {
    pub score: f64,
    pub logit_yes: f32,
    pub logit_no: f32,
    pub visual_tokens: usize,
    /// (width, height) the model read.
    pub input_size: (usize, usize),
    /// (width, height) as displayed.
    pub original_size: (usize, usize),
    /// Model time for this photo (its share of its batch; decoding excluded).
    pub seconds: f64,
    /// Of which in the vision tower, when stage timing was asked for
    /// ([`RankSettings::time_stages`]; it costs a wait for the device).
    pub vision_seconds: Option<f64>,
    /// Judged below the chosen resolution because the device ran out of memory at it
    /// (such scores are not cached: the next ranking tries the full resolution again).
    #[serde(default)]
    pub lowered_resolution: bool,
}

/// Progress of a ranking, reported after every step.
#[derive(Debug, Clone, PartialEq)]
pub enum RankEvent {
    /// The query is ready and `total` photos will be judged.
    Started {
        total: usize,
        prefix_tokens: usize,
        query_tokens: Option<usize>,
    },
    /// The model starts on photo `index` (into the request's list).
    PhotoStarted {
        index: usize,
    },
    PhotoScored {
        index: usize,
        score: PhotoScore,
        /// Taken from the score cache rather than computed now.
        cached: bool,
    },
    PhotoFailed {
        index: usize,
        reason: String,
    },
    /// Something the user should know once, that stops nothing (the device ran out of
    /// memory and the ranking adapted).
    Notice {
        text: String,
    },
}

/// How a ranking ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankOutcome {
    Finished,
    Cancelled,
}

/// Why a ranking could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum RankError {
    #[error("the query image {path} cannot be used: {reason}")]
    QueryImage { path: PathBuf, reason: String },
    #[error(
        "could not start the threads that read the photos ({0}); close other programs and try again"
    )]
    Threads(std::io::Error),
    #[error("{0}")]
    Model(#[from] crate::model::ModelError),
}

/// How the engine runs a ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankSettings {
    /// Most photos judged together.
    pub max_batch: usize,
    /// Measure the vision tower's share of each batch (waits for the device once more).
    pub time_stages: bool,
}

impl RankSettings {
    /// Batches sized for `model`'s device (one photo at a time on the CPU).
    pub fn for_model(model: &Reranker) -> Self {
        RankSettings {
            max_batch: model.suggested_batch(),
            time_stages: false,
        }
    }
}
