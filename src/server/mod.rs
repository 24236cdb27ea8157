//! `lychee-rerank serve`: a local rerank server that RAG tools can point at, for text,
//! image and image+text documents, in the wire formats they already speak
//! (text-embeddings-inference, Cohere, Jina, vLLM). One inference thread owns the model,
//! as in the window; requests from many clients queue into it and share batches
//! (`worker::score`). axum on a small tokio runtime; every route behind [`guard`].

mod error;
mod guard;
mod images;
mod metrics;
pub mod parse;
mod rerank;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use crossbeam_channel::Sender;
use serde_json::json;

pub use error::ApiError;
use metrics::Metrics;

use crate::hub::ModelSource;
use crate::model::device::{DevicePreference, GpuChoice};
use crate::worker::{Command, Event, InferenceThread, ModelInfo, PhotoPreparer};

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub api_key: Option<String>,
    /// Most documents in one request (reported as `max_client_batch_size`).
    pub max_batch_documents: usize,
    /// Requests served at once; more are answered 429 at once.
    pub max_concurrent: usize,
    /// Folders whose files may be named as images.
    pub allow_local_files: Vec<PathBuf>,
    /// Host names accepted beside the loopback names and the bound address.
    pub allow_hosts: Vec<String>,
    /// Web page origins allowed to call the server (CORS); none by default.
    pub cors_origins: Vec<String>,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Largest image, in pixels (checked before it is decoded).
    pub max_image_pixels: u64,
    /// Most text tokens of a document; longer texts are cut (or refused with
    /// `truncate: false`).
    pub max_text_tokens: usize,
    pub instruction: String,
    /// The model's name in answers and `/info`.
    pub served_model_name: String,
    /// GPUs to serve on, each with its own copy of the model, the requests' batches dealt
    /// to whichever is free (None: one device, the GPU when there is one).
    pub gpus: Option<GpuChoice>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            max_batch_documents: 1000,
            max_concurrent: 64,
            allow_local_files: Vec::new(),
            allow_hosts: Vec::new(),
            cors_origins: Vec::new(),
            body_limit: 32 << 20,
            max_image_pixels: 50_000_000,
            max_text_tokens: 2048,
            instruction: crate::model::DEFAULT_INSTRUCTION.into(),
            served_model_name: crate::hub::DEFAULT_MODEL_ID.into(),
            gpus: None,
        }
    }
}

/// Where the model stands, for `/health` and `/info`.
#[derive(Debug, Clone)]
enum ModelState {
    Loading,
    Ready(Box<ModelInfo>),
    Failed(String),
}

/// What the routes share.
pub struct ServerState {
    config: ServerConfig,
    commands: Sender<Command>,
    model: RwLock<ModelState>,
    permits: Arc<tokio::sync::Semaphore>,
    metrics: Metrics,
    allowed_hosts: Vec<String>,
    policy: parse::Policy,
}

impl ServerState {
    /// The model's image preparer when it is ready; 503 otherwise.
    fn ready_model(&self) -> Result<PhotoPreparer, ApiError> {
        match &*self.model.read().unwrap_or_else(|e| e.into_inner()) {
            ModelState::Ready(info) => Ok(info.inputs.clone()),
            ModelState::Loading => Err(ApiError::unhealthy(
                "the model is still loading; try again shortly",
            )),
            ModelState::Failed(reason) => Err(ApiError::unhealthy(format!(
                "the model is not usable: {reason}"
            ))),
        }
    }
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pump_stop: Arc<AtomicBool>,
    pump: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets the requests under way finish (at most `grace`), stops the
    /// model's thread, and returns.
    pub fn shut_down(mut self, grace: Duration) {
        self.stop_now(grace);
    }

    fn stop_now(&mut self, grace: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let deadline = std::time::Instant::now() + grace;
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        self.pump_stop.store(true, Ordering::SeqCst);
        if let Some(p) = self.pump.take() {
            let _ = p.join();
        }
    }

    /// Waits until the server stops by itself (it does not, but for a signal).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.pump_stop.store(true, Ordering::SeqCst);
        if let Some(p) = self.pump.take() {
            let _ = p.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_now(Duration::from_secs(10));
    }
}

/// Names the server answers to: the loopback names, the bound address, and `extra`.
fn allowed_hosts(config: &ServerConfig) -> Vec<String> {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .map(String::from)
        .collect();
    hosts.push(guard::host_name(&config.host));
    hosts.extend(config.allow_hosts.iter().map(|h| guard::host_name(h)));
    hosts.sort();
    hosts.dedup();
    hosts
}

/// Starts the model's thread (loading `model`) and the server; the server answers at
/// once (`/health` says 503 until the model is ready). With `stop_on_signal`, Ctrl-C or
/// SIGTERM stops it.
pub fn start(
    config: ServerConfig,
    model: ModelSource,
    device: DevicePreference,
    stop_on_signal: bool,
) -> anyhow::Result<Server> {
    use anyhow::Context;
    let mut roots = Vec::new();
    for dir in &config.allow_local_files {
        let real = dir
            .canonicalize()
            .with_context(|| format!("--allow-local-files {}: no such folder", dir.display()))?;
        anyhow::ensure!(
            real.is_dir(),
            "--allow-local-files {}: not a folder",
            dir.display()
        );
        roots.push(real);
    }
    let mut worker =
        InferenceThread::spawn(|| {}, None).context("starting the inference thread")?;
    let name = model.display();
    anyhow::ensure!(
        worker.send(Command::LoadModel {
            gpus: config.gpus.clone(),
            source: model,
            device,
            name: Some(name),
        }),
        "the inference thread did not take the model"
    );
    let state = Arc::new(ServerState {
        commands: worker.commands(),
        model: RwLock::new(ModelState::Loading),
        permits: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent.max(1))),
        metrics: Metrics::new(worker.queued()),
        allowed_hosts: allowed_hosts(&config),
        policy: parse::Policy {
            local_roots: roots,
            max_documents: config.max_batch_documents.max(1),
        },
        config,
    });
    // The model's events: ready, failed, recovered.
    let pump_stop = Arc::new(AtomicBool::new(false));
    let pump = {
        let (state, stop) = (Arc::clone(&state), Arc::clone(&pump_stop));
        std::thread::Builder::new()
            .name("server-events".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Some(event) = worker.recv_timeout(Duration::from_millis(100)) else {
                        continue;
                    };
                    let mut model = state.model.write().unwrap_or_else(|e| e.into_inner());
                    match event {
                        Event::ModelReady(info) => {
                            eprintln!(
                                "model ready on {} ({}) in {:.1} s",
                                info.device, info.dtype, info.load_seconds
                            );
                            *model = ModelState::Ready(info);
                        }
                        Event::ModelFailed { reason, .. } => {
                            eprintln!("the model could not be loaded: {reason}");
                            *model = ModelState::Failed(reason);
                        }
                        Event::ModelLoading { .. } => *model = ModelState::Loading,
                        Event::Recovered { reason } | Event::Warning { text: reason } => {
                            eprintln!("note: {reason}");
                        }
                    }
                }
                worker.shut_down(Duration::from_secs(5));
            })?
    };
    let listener = std::net::TcpListener::bind((state.config.host.as_str(), state.config.port))
        .with_context(|| {
            format!(
                "cannot listen on {}:{}",
                state.config.host, state.config.port
            )
        })?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(Arc::clone(&state));
    let thread =
        std::thread::Builder::new()
            .name("server".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("server-io")
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("lychee-rerank serve: cannot start ({e})");
                        return;
                    }
                };
                runtime.block_on(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("lychee-rerank serve: cannot listen ({e})");
                    return;
                }
            };
            let shutdown = async move {
                if stop_on_signal {
                    tokio::select! {
                        _ = stop_rx => {}
                        _ = signal() => eprintln!("stopping: finishing the requests under way"),
                    }
                } else {
                    let _ = stop_rx.await;
                }
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                eprintln!("lychee-rerank serve: {e}");
            }
        });
                // Requests still under way after the grace period end with the runtime.
                runtime.shutdown_timeout(Duration::from_secs(30));
            })?;
    Ok(Server {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
        pump_stop,
        pump: Some(pump),
    })
}

/// Ctrl-C, or SIGTERM on Unix.
async fn signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn router(state: Arc<ServerState>) -> Router {
    let limit = state.config.body_limit;
    Router::new()
        .route("/rerank", post(rerank::rerank))
        .route("/v1/rerank", post(rerank::rerank_v1))
        .route("/v2/rerank", post(rerank::rerank_v2))
        .route("/info", get(info))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/api-doc/openapi.json", get(openapi))
        .route("/docs", get(docs))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            guard::guard,
        ))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "there is no {uri} here; the routes are POST /rerank, /v1/rerank, /v2/rerank and GET /info, /health, /metrics, /docs"
    ))
}

/// `GET /health`: 200 when the model answers, 503 (with the reason) otherwise.
async fn health(State(state): State<Arc<ServerState>>) -> Response {
    match state.ready_model() {
        Ok(_) => (StatusCode::OK, axum::Json(json!({ "status": "ok" }))).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /info`: text-embeddings-inference's shape, which Dify reads to see a reranker.
async fn info(State(state): State<Arc<ServerState>>) -> Response {
    let c = &state.config;
    let dtype = match &*state.model.read().unwrap_or_else(|e| e.into_inner()) {
        ModelState::Ready(info) => match info.dtype.as_str() {
            "bf16" => "bfloat16",
            "f32" => "float32",
            other => other,
        }
        .to_owned(),
        _ => "unknown".to_owned(),
    };
    axum::Json(json!({
        "model_id": c.served_model_name,
        "model_sha": null,
        "model_dtype": dtype,
        "served_model_name": c.served_model_name,
        "model_type": { "reranker": { "id2label": { "0": "yes" }, "label2id": { "yes": 0 } } },
        "max_concurrent_requests": c.max_concurrent,
        "max_input_length": c.max_text_tokens,
        "max_batch_tokens": c.max_text_tokens * 16,
        "max_batch_requests": null,
        "max_client_batch_size": c.max_batch_documents,
        "auto_truncate": true,
        "tokenization_workers": 1,
        "version": env!("CARGO_PKG_VERSION"),
        "sha": null,
        "docker_label": null,
    }))
    .into_response()
}

async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

const OPENAPI: &str = include_str!("../../assets/openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// `GET /docs`: the routes, from the OpenAPI description, as a page that needs nothing
/// from the network.
async fn docs() -> Response {
    let spec: serde_json::Value = serde_json::from_str(OPENAPI).unwrap_or_default();
    let mut rows = String::new();
    if let Some(paths) = spec["paths"].as_object() {
        for (path, ops) in paths {
            if let Some(ops) = ops.as_object() {
                for (method, op) in ops {
                    rows.push_str(&format!(
                        "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>\n",
                        method.to_uppercase(),
                        html_escape(path),
                        html_escape(op["summary"].as_str().unwrap_or(""))
                    ));
                }
            }
        }
    }
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Lychee Rerank server</title>\
         <style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td{{padding:.3em .8em;vertical-align:top}}</style></head>\
         <body><h1>Lychee Rerank server</h1><p>{}</p><table>{rows}</table>\
         <p>The full description: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI 3.1).</p></body></html>",
        html_escape(spec["info"]["description"].as_str().unwrap_or(""))
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
