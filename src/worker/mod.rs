//! The inference side: rankings run here, away from the window's thread.

pub mod load;
pub mod rank;
pub mod thread;

pub use load::{LoadedEmbedder, LoadedModel, load_embedder, load_reranker};
pub use rank::{PhotoScore, RankEvent, RankOutcome, RankRequest, RankSettings, run_ranking};
pub use thread::{Command, Event, InferenceThread, ModelInfo, RankHandle, RankJob, RankReply};
