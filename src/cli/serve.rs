//! `lychee-rerank serve`: the rerank server from a shell (see `crate::server`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::ModelArgs;
use crate::hub::ModelSource;
use crate::model::device::{DevicePreference, GpuChoice};
use crate::server::{ServerConfig, start};

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The address to listen on (127.0.0.1: this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// An API key every route but /health then needs (Authorization: Bearer KEY).
    #[arg(long, value_name = "KEY", conflicts_with = "api_key_file")]
    pub api_key: Option<String>,
    /// The API key, read from a file (its first line).
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Most documents in one request.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_batch_documents: usize,
    /// Requests served at once; more are answered 429 at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_concurrent: usize,
    /// A folder whose files requests may name as images (repeatable); none by default.
    #[arg(long, value_name = "DIR")]
    pub allow_local_files: Vec<PathBuf>,
    /// A host name to accept in the Host header beside the loopback names (repeatable),
    /// e.g. host.docker.internal for tools running in Docker.
    #[arg(long, value_name = "NAME")]
    pub allow_host: Vec<String>,
    /// A web page origin allowed to call the server (CORS, repeatable); none by default.
    #[arg(long, value_name = "ORIGIN")]
    pub cors_origin: Vec<String>,
    /// Largest request body in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 32 << 20)]
    pub body_limit: usize,
    /// Largest image in pixels, checked before it is decoded.
    #[arg(long, value_name = "N", default_value_t = 50_000_000)]
    pub max_image_pixels: u64,
    /// Most text tokens of a document; longer texts are cut from the right.
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub max_text_tokens: usize,
    /// The task instruction given to the model (a request may give its own).
    #[arg(long, value_name = "TEXT", default_value = crate::model::DEFAULT_INSTRUCTION)]
    pub instruction: String,
    /// The model's name in answers and /info (default: the --model given).
    #[arg(long, value_name = "NAME")]
    pub served_model_name: Option<String>,
    /// GPUs to serve on, each with its own copy of the model, batches dealt to whichever
    /// is free: all, or numbers such as 0,1 (default: all that hold the model, when there
    /// are several; a GPU that cannot is left out with a note).
    #[arg(long, value_name = "LIST", conflicts_with = "cpu")]
    pub gpus: Option<crate::model::device::GpuChoice>,
}

fn is_loopback(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "localhost" | "::1" | "[::1]") || host.starts_with("127.")
}

pub fn run(args: ServeArgs) -> ExitCode {
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lychee-rerank serve: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let source = ModelSource::parse(&args.model.model, None)?;
    let api_key = match (&args.api_key, &args.api_key_file) {
        (Some(k), _) => Some(k.trim().to_owned()),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the API key file {}", f.display()))?;
            let key = text.lines().next().unwrap_or("").trim().to_owned();
            anyhow::ensure!(!key.is_empty(), "the API key file {} is empty", f.display());
            Some(key)
        }
        (None, None) => None,
    };
    if !is_loopback(&args.host) && api_key.is_none() {
        eprintln!(
            "WARNING: listening on {} without an API key: anyone who can reach this address can use the model. Give --api-key or --api-key-file.",
            args.host
        );
    }
    let config = ServerConfig {
        host: args.host.clone(),
        port: args.port,
        api_key,
        max_batch_documents: args.max_batch_documents,
        max_concurrent: args.max_concurrent,
        allow_local_files: args.allow_local_files.clone(),
        allow_hosts: args.allow_host.clone(),
        cors_origins: args.cors_origin.clone(),
        body_limit: args.body_limit,
        max_image_pixels: args.max_image_pixels,
        max_text_tokens: args.max_text_tokens,
        instruction: args.instruction.clone(),
        served_model_name: args
            .served_model_name
            .clone()
            .unwrap_or_else(|| source.display()),
        // Every GPU by default, when there are several.
        gpus: GpuChoice::or_every(args.gpus.clone(), args.model.cpu),
    };
    let source = ModelSource::Folder(crate::hub::resolve_local(&source)?);
    let device = if args.model.cpu {
        DevicePreference::Cpu
    } else {
        DevicePreference::Auto
    };
    let server = start(config, source, device, true)?;
    eprintln!(
        "listening on http://{} (POST /rerank, /v1/rerank, /v2/rerank; GET /info, /health, /metrics, /docs); the model is loading",
        server.addr()
    );
    server.wait();
    Ok(())
}
