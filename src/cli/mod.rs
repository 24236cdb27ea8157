//! The command line: with no subcommand the window opens (with any photos or folders
//! given as arguments); `rank` ranks from a shell.

pub mod bench;
pub mod bench_index;
pub mod documents;
pub mod download;
pub mod index;
pub mod load;
pub mod ops;
pub mod progress;
pub mod rank;
pub mod serve;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::model::DEFAULT_INSTRUCTION;

/// Lychee Rerank: put photos in order of how well each matches a description.
#[derive(Debug, Parser)]
#[command(
    name = "lychee-rerank",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The model the window uses: a folder or a Hugging Face id (remembered).
    #[arg(long, value_name = "DIR_OR_HUB_ID")]
    pub model: Option<String>,
    /// The first-stage embedder the window uses: a folder or a Hugging Face id (remembered).
    #[arg(long, value_name = "DIR_OR_HUB_ID")]
    pub embedder: Option<String>,
    /// Photos or folders to open in the window.
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Rank photos and folders against a query; results on stdout, progress on stderr.
    Rank(RankArgs),
    /// Build or update the index of photos and folders (the first stage).
    Index(IndexArgs),
    /// Rank photos by the first stage alone (the index), indexing what is not indexed yet.
    Search(SearchArgs),
    /// Measure ranking speed and memory on synthetic photos.
    Bench(bench::BenchArgs),
    /// Answer rerank requests from other programs over HTTP (TEI, Cohere, Jina, vLLM formats).
    Serve(serve::ServeArgs),
    /// Measure the first stage: search over many vectors, and indexing speed.
    BenchIndex(bench_index::BenchIndexArgs),
    /// Download a model from the Hugging Face Hub into the local cache.
    Download(download::DownloadArgs),
}

/// Options shared by the commands that load a model.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A model folder, or a Hugging Face model id (owner/name[@revision]).
    #[arg(long, value_name = "DIR_OR_HUB_ID", default_value = crate::hub::DEFAULT_MODEL_ID)]
    pub model: String,
    /// Run on the CPU even when a GPU is available.
    #[arg(long)]
    pub cpu: bool,
    /// Number format: bf16 (the GPU default) or f32 (the CPU default, and exact on a GPU).
    #[arg(long, value_parser = ["bf16", "f32"])]
    pub dtype: Option<String>,
}

impl ModelArgs {
    /// The device and number format these options ask for, with a note on any fall-back.
    pub fn compute_device(&self) -> (crate::model::ComputeDevice, Option<String>) {
        use crate::model::device::DevicePreference;
        let preference = if self.cpu {
            DevicePreference::Cpu
        } else {
            DevicePreference::Auto
        };
        let (device, note) = crate::model::ComputeDevice::select(preference);
        let device = match self.dtype.as_deref() {
            Some("bf16") => device.with_dtype(candle_core::DType::BF16),
            Some("f32") => device.with_dtype(candle_core::DType::F32),
            _ => device,
        };
        (device, note)
    }
}

/// Options of the first-stage embedder.
#[derive(Debug, Clone, Args)]
pub struct EmbedderArgs {
    /// The embedder: a SigLIP / SigLIP 2 folder, or a Hugging Face id (owner/name[@revision]).
    #[arg(long, value_name = "DIR_OR_HUB_ID", default_value = crate::embed::DEFAULT_EMBEDDER_ID)]
    pub embedder: String,
    /// Neither read nor store vectors in the index file (everything is embedded afresh).
    #[arg(long)]
    pub no_index: bool,
}

#[derive(Debug, Clone, Args)]
pub struct IndexArgs {
    #[command(flatten)]
    pub embedder: EmbedderArgs,
    /// Run on the CPU even when a GPU is available.
    #[arg(long)]
    pub cpu: bool,
    /// Print one JSON summary at the end instead of a sentence.
    #[arg(long)]
    pub json: bool,
    /// GPUs to embed on, each with its own copy of the embedder, batches dealt to whichever
    /// is free: all, or numbers such as 0,1 (default: all, when there are several).
    #[arg(long, value_name = "LIST", conflicts_with = "cpu")]
    pub gpus: Option<crate::model::device::GpuChoice>,
    /// Photos and folders (folders are walked recursively).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub embedder: EmbedderArgs,
    /// Run on the CPU even when a GPU is available.
    #[arg(long)]
    pub cpu: bool,
    /// What the photos should show (any language).
    #[arg(long, value_name = "TEXT")]
    pub query: Option<String>,
    /// An example image to search by, alone or with --query.
    #[arg(long, value_name = "FILE")]
    pub query_image: Option<PathBuf>,
    /// Print only the best K photos.
    #[arg(long, value_name = "K")]
    pub top: Option<usize>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Photos and folders (folders are walked recursively).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct RankArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// What the photos should show (any language).
    #[arg(long, value_name = "TEXT")]
    pub query: Option<String>,
    /// An example image to search by, alone or with --query.
    #[arg(long, value_name = "FILE")]
    pub query_image: Option<PathBuf>,
    /// The task instruction given to the model.
    #[arg(long, value_name = "TEXT", default_value = DEFAULT_INSTRUCTION)]
    pub instruction: String,
    /// Fewest pixels a photo is scaled to.
    #[arg(long, value_name = "N")]
    pub min_pixels: Option<usize>,
    /// Most pixels a photo is scaled to (28 x 28 per visual token; default 1280 tokens).
    #[arg(long, value_name = "N")]
    pub max_pixels: Option<usize>,
    /// GPUs to rank on, each with its own copy of the model: all, or numbers such as 0,1
    /// (default: all that hold the model; a GPU that cannot is left out with a note). A
    /// number given twice loads two copies on that GPU.
    #[arg(long, value_name = "LIST", conflicts_with = "cpu")]
    pub gpus: Option<crate::model::device::GpuChoice>,
    /// Most photos judged together (default: what the GPU's free memory allows, up to 8).
    /// Scores are the same to the bit for the same batch size on the same kind of GPU.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub batch: Option<u16>,
    /// Print only the best K photos.
    #[arg(long, value_name = "K")]
    pub top: Option<usize>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Neither read nor store scores in the score cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Two stages: the index finds the best K photos, the model judges only those.
    #[arg(long, value_name = "K")]
    pub shortlist: Option<usize>,
    #[command(flatten)]
    pub embedder: EmbedderArgs,
    /// Documents to rank, as JSON lines: {"text": ...}, {"image": PATH}, or both (an
    /// image followed by text); photos given as PATH join them as image documents.
    #[arg(long, value_name = "FILE")]
    pub documents: Option<PathBuf>,
    /// Most text tokens of a document (longer texts are cut from the right).
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub max_text_tokens: usize,
    /// Photos and folders (folders are walked recursively).
    #[arg(required_unless_present = "documents", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}
