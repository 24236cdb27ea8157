//! The inference side: rankings run here, away from the window's thread.

pub mod cache_first;
pub mod devices;
pub mod index_thread;
pub mod job;
pub mod load;
pub mod rank;
pub mod score;
pub mod thread;

pub use devices::run_ranking_on;
pub use index_thread::{
    EmbedderInfo, IndexCommand, IndexThread, IndexThreadEvent, SearchJob, SearchReply,
};
pub use job::{Command, RankHandle, RankJob, RankReply};
pub use load::{LoadedEmbedder, LoadedModel, load_embedder, load_reranker};
pub use rank::{PhotoScore, RankEvent, RankOutcome, RankRequest, RankSettings, run_ranking};
pub use score::{BatchLimits, Content, PhotoPreparer, Scheduler, ScoreJob, ScoreReply};
pub use thread::{Event, InferenceThread, ModelInfo};
