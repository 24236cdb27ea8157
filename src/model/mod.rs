//! Lychee-rerank-mm: a Qwen2.5-VL model fine-tuned to answer "yes" or "no" to "does this
//! document meet the query?". The score of a photo is P(yes) = sigmoid(z_yes - z_no) at the
//! last position of the prompt. See ../shared/reference/MODEL_SPEC.md for the numeric
//! contract; transformers is the reference implementation.
//!
//! Data flows one way: [`preprocess`] turns a decoded photo into patch rows, [`vision`]
//! turns patch rows into visual tokens, [`prompt`] lays out the token ids, and [`text`] runs
//! the language model, once for the query prefix and then once per photo. [`ops`] holds the
//! fused steps both towers use: CUDA kernels ([`cuda`], device code in src/kernels/) on the
//! GPU, plain candle operations elsewhere.
//!
//! The rest of the app uses what this module re-exports, plus the modules that tests and the
//! photo pipeline read directly ([`preprocess`], [`resample`], [`prompt`], [`tokenizer`],
//! [`files`], [`device`]); everything else is private to the model.

mod checkpoint;
mod config;
#[cfg(feature = "cuda")]
mod cuda;
pub mod device;
pub mod files;
mod flash_tiles;
mod layers;
mod memo;
mod ops;
mod ops_bench;
pub mod preprocess;
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
mod product_choices;
mod profile;
pub mod prompt;
mod random;
mod reranker;
pub mod resample;
mod text;
pub mod tokenizer;
mod vision;
mod visual_cache;

use std::path::PathBuf;

pub use checkpoint::{Checkpoint, CheckpointWeights};
pub use config::{ModelConfig, TextConfig, VisionConfig};
pub use device::ComputeDevice;
pub use ops_bench::{OpTiming, bench_ops};
pub use preprocess::{PhotoInput, PreprocessConfig};
pub use profile::{gaps as device_gaps, report as stage_totals, reset as reset_stage_totals};
pub use prompt::{DEFAULT_INSTRUCTION, INSTRUCTION_PRESETS};
pub use random::{RandomWeights, lychee_7b_config};
pub use reranker::{
    DocumentTokens, Judgement, PendingScores, PreparedQuery, QueryInput, Reranker, VisualTokens,
};

/// Why a model folder could not be used, or a model step failed. Each variant names the
/// file involved, so that the message can tell the user what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the model folder {0} does not exist or is not a folder")]
    NoFolder(PathBuf),
    #[error("the model folder has no {file}: {hint}")]
    MissingFile { file: String, hint: String },
    #[error("could not read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config.json is not usable: {0}")]
    BadConfig(String),
    #[error("{file} is damaged or not a model file: {why}")]
    BadWeights { file: String, why: String },
    #[error("the weights lack tensor {name} (looked in {files})")]
    MissingTensor { name: String, files: String },
    #[error("the tokenizer is not usable: {0}")]
    BadTokenizer(String),
    #[error("preprocessor_config.json is not usable: {0}")]
    BadPreprocessor(String),
    #[error("the query needs some text or an image")]
    EmptyQuery,
    #[error("the document needs some text or an image")]
    EmptyDocument,
    #[error("out of device memory: {0}")]
    OutOfMemory(String),
    #[error("{0}")]
    Compute(#[from] candle_core::Error),
}

impl ModelError {
    /// Whether the device ran out of memory, so that fewer photos at once or a lower
    /// resolution may fit. CUDA reports it from the allocator
    /// (`CUDA_ERROR_OUT_OF_MEMORY`) or from cuBLAS (`CUBLAS_STATUS_ALLOC_FAILED`).
    pub fn is_out_of_memory(&self) -> bool {
        match self {
            ModelError::OutOfMemory(_) => true,
            ModelError::Compute(e) => {
                let text = e.to_string().to_ascii_lowercase();
                text.contains("out_of_memory")
                    || text.contains("out of memory")
                    || text.contains("alloc_failed")
            }
            _ => false,
        }
    }
}

/// Shorthand for results of model code.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
