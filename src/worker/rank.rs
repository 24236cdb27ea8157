//! One ranking, start to finish: prepare the query once, decode and resize photos on CPU
//! threads ahead of the model, judge each photo, report every step. The window's
//! inference thread and the command line both run rankings through [`run_ranking`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::bounded;

use crate::library::decode_photo;
use crate::model::preprocess::{preprocess, PreprocessConfig};
use crate::model::{PhotoInput, PreparedQuery, QueryInput, Reranker};

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
    /// Time spent on this photo by the model (decoding excluded).
    pub seconds: f64,
}

/// Progress of a ranking, reported after every step.
#[derive(Debug, Clone, PartialEq)]
pub enum RankEvent {
    /// The query is ready and `total` photos will be judged.
    Started { total: usize, prefix_tokens: usize, query_tokens: Option<usize> },
    /// The model starts on photo `index` (into the request's list).
    PhotoStarted { index: usize },
    PhotoScored { index: usize, score: PhotoScore },
    PhotoFailed { index: usize, reason: String },
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
    #[error("{0}")]
    Model(#[from] crate::model::ModelError),
}

/// Decodes and preprocesses one photo (on a CPU thread).
pub fn load_photo(path: &Path, model: &Reranker, cfg: &PreprocessConfig) -> Result<PhotoInput, String> {
    let photo = decode_photo(path).map_err(|e| e.to_string())?;
    preprocess(&photo.image, &model.config.vision, cfg).map_err(|e| e.to_string())
}

/// Number of CPU threads decoding photos ahead of the model.
fn decode_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 8)
}

/// Runs `request` on `model`, calling `emit` after every step, until done or until
/// `cancel` is set (checked between photos). Scores already reported stay valid.
pub fn run_ranking(
    model: &Reranker,
    request: &RankRequest,
    cancel: &AtomicBool,
    mut emit: impl FnMut(RankEvent),
) -> Result<RankOutcome, RankError> {
    let cfg = model.preprocess.with_bounds(request.min_pixels, request.max_pixels);
    let query = prepare(model, request, &cfg)?;
    emit(RankEvent::Started {
        total: request.photos.len(),
        prefix_tokens: query.prefix_len(),
        query_tokens: query.query_tokens(),
    });

    let threads = decode_threads();
    let (tx, rx) = bounded::<(usize, Result<PhotoInput, String>)>(threads * 2);
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let outcome = std::thread::scope(|scope| {
        for t in 0..threads {
            let tx = tx.clone();
            let next = Arc::clone(&next);
            let stop = Arc::clone(&stop);
            let cfg = &cfg;
            std::thread::Builder::new()
                .name(format!("photo-decode-{t}"))
                .spawn_scoped(scope, move || {
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = request.photos.get(i) else { break };
                        let input = load_photo(path, model, cfg);
                        if tx.send((i, input)).is_err() {
                            break;
                        }
                    }
                })
                .expect("spawning a decode thread");
        }
        drop(tx);
        let mut outcome = RankOutcome::Finished;
        for (index, input) in rx.iter() {
            if cancel.load(Ordering::Relaxed) {
                outcome = RankOutcome::Cancelled;
                break;
            }
            emit(RankEvent::PhotoStarted { index });
            match input.and_then(|input| judge_one(model, &query, &input)) {
                Ok(score) => emit(RankEvent::PhotoScored { index, score }),
                Err(reason) => emit(RankEvent::PhotoFailed { index, reason }),
            }
        }
        stop.store(true, Ordering::Relaxed);
        // Unblock decoders waiting on a full channel.
        for _ in rx.try_iter() {}
        outcome
    });
    Ok(outcome)
}

fn prepare(model: &Reranker, request: &RankRequest, cfg: &PreprocessConfig) -> Result<PreparedQuery, RankError> {
    let image = match &request.query_image {
        Some(path) => Some(load_photo(path, model, cfg).map_err(|reason| RankError::QueryImage {
            path: path.clone(),
            reason,
        })?),
        None => None,
    };
    let input = QueryInput {
        text: request.query_text.trim().to_owned(),
        image,
    };
    Ok(model.prepare_query(&request.instruction, &input)?)
}

fn judge_one(model: &Reranker, query: &PreparedQuery, input: &PhotoInput) -> Result<PhotoScore, String> {
    let start = Instant::now();
    let tokens = model.encode_photos(&[input]).map_err(|e| e.to_string())?.remove(0);
    let judgement = model.judge(query, &tokens).map_err(|e| e.to_string())?;
    Ok(PhotoScore {
        score: judgement.score(),
        logit_yes: judgement.logit_yes,
        logit_no: judgement.logit_no,
        visual_tokens: tokens.count(),
        input_size: input.input_size,
        original_size: input.original_size,
        seconds: start.elapsed().as_secs_f64(),
    })
}
