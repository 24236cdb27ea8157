//! Downloading a model from the Hugging Face Hub with `hf-hub` into the standard cache:
//! the small files first, then the weight shards named by model.safetensors.index.json,
//! with progress per file and overall, a free-space check before the large files, resume
//! of interrupted files (hf-hub continues its `.part` files with range requests), and
//! cancellation. HF_ENDPOINT (mirrors), HF_TOKEN and HF_HUB_OFFLINE are honoured.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Repo, RepoType};
use serde_json::Value;

use super::HubError;
use super::cache::{HfCache, is_complete_model};

/// Files every model folder needs.
const CONFIG_FILES: &[&str] = &["config.json", "preprocessor_config.json"];
/// Tokenizer files: tokenizer.json, or the older vocab.json + merges.txt.
const TOKENIZER_JSON: &str = "tokenizer.json";
const TOKENIZER_EXTRA: &[&str] = &["tokenizer_config.json"];
const TOKENIZER_OLD: &[&str] = &["vocab.json", "merges.txt"];
const INDEX_FILE: &str = "model.safetensors.index.json";
const SINGLE_WEIGHTS: &str = "model.safetensors";
/// Room kept free beyond the download itself.
const FREE_SPACE_MARGIN: u64 = 1 << 30;

/// Where to download from and to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    pub endpoint: String,
    pub cache: HfCache,
    pub token: Option<String>,
    pub offline: bool,
}

impl HubConfig {
    /// From the environment, as huggingface_hub reads it.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let cache = HfCache::from_env();
        let token = var("HF_TOKEN").or_else(|| {
            let home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
                cache
                    .root()
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default()
            });
            std::fs::read_to_string(home.join("token"))
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
        });
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
        });
        HubConfig {
            endpoint: var("HF_ENDPOINT")
                .unwrap_or_else(|| "https://huggingface.co".into())
                .trim_end_matches('/')
                .to_owned(),
            cache,
            token,
            offline,
        }
    }
}

/// Progress of a download, reported as bytes arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadEvent {
    /// The total is known (after the index was read): bytes in all, and already on disk.
    Planned {
        total_bytes: u64,
        files: usize,
    },
    /// A file started (`size` bytes; a resumed file counts its bytes already there as
    /// progress).
    FileStarted {
        name: String,
        size: u64,
    },
    /// Bytes of all files so far.
    Progress {
        done_bytes: u64,
        total_bytes: u64,
    },
    FileDone {
        name: String,
    },
}

/// Downloads (or completes) `id` at `revision` into the cache and returns the folder.
/// A model already complete in the cache returns at once, with no network call.
pub fn download_model(
    config: &HubConfig,
    id: &str,
    revision: &str,
    cancel: &AtomicBool,
    mut on_event: impl FnMut(DownloadEvent) + Send,
) -> Result<PathBuf, HubError> {
    if let Some(dir) = config.cache.complete_snapshot(id, revision) {
        return Ok(dir);
    }
    if config.offline {
        return Err(HubError::Download(format!(
            "{id} is not in the cache ({}) and HF_HUB_OFFLINE is set; connect once to download it",
            config.cache.root().display()
        )));
    }
    std::fs::create_dir_all(config.cache.root()).map_err(|e| {
        HubError::Download(format!(
            "cannot create the model cache {}: {e}",
            config.cache.root().display()
        ))
    })?;
    let api = ApiBuilder::new()
        .with_cache_dir(config.cache.root().to_path_buf())
        .with_endpoint(config.endpoint.clone())
        .with_token(config.token.clone())
        .with_progress(false)
        .with_retries(3)
        .build()
        .map_err(|e| HubError::Download(format!("cannot set up the download: {e}")))?;
    let repo = api.repo(Repo::with_revision(
        id.to_owned(),
        RepoType::Model,
        revision.to_owned(),
    ));

    let state = std::sync::Mutex::new(Counters::default());
    let events = std::sync::Mutex::new(&mut on_event);
    let emit = |e: DownloadEvent| {
        if let Ok(mut f) = events.lock() {
            (*f)(e);
        }
    };
    let fetch = |name: &str| -> Result<PathBuf, FetchError> {
        if cancel.load(Ordering::SeqCst) {
            return Err(FetchError::Cancelled);
        }
        // Files a previous, interrupted download finished are not fetched again.
        if let Some(commit) = config.cache.commit(id, revision) {
            let cached = config.cache.snapshot_dir(id, &commit).join(name);
            if cached.is_file() {
                if let Ok(mut c) = state.lock() {
                    c.finished += file_len(&cached);
                }
                return Ok(cached);
            }
        }
        let progress = ProgressReport {
            name: name.to_owned(),
            cancel,
            counters: &state,
            emit: &emit,
            size: 0,
            done: 0,
            last: None,
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            repo.download_with_progress(name, progress)
        }));
        match outcome {
            Ok(Ok(path)) => {
                verify_size(&path, name, &state)?;
                emit(DownloadEvent::FileDone {
                    name: name.to_owned(),
                });
                Ok(path)
            }
            Ok(Err(e)) => Err(FetchError::Api(name.to_owned(), e)),
            Err(payload) if payload.is::<Cancelled>() => Err(FetchError::Cancelled),
            Err(payload) => std::panic::resume_unwind(payload),
        }
    };
    let describe = |e: FetchError| -> HubError {
        match e {
            FetchError::Cancelled => HubError::Download(
                "the download was cancelled; it resumes where it stopped next time".into(),
            ),
            FetchError::Api(name, e) => {
                HubError::Download(explain(id, &name, &config.endpoint, &e))
            }
            FetchError::Damaged(name, why) => HubError::Download(format!(
                "{name} arrived damaged ({why}); it will be downloaded again"
            )),
        }
    };

    // The small files first: they say what else is needed.
    let mut paths = Vec::new();
    for name in CONFIG_FILES {
        paths.push(fetch(name).map_err(describe)?);
    }
    match fetch(TOKENIZER_JSON) {
        Ok(p) => paths.push(p),
        Err(FetchError::Api(_, e)) if is_not_found(&e) => {
            for name in TOKENIZER_OLD {
                paths.push(fetch(name).map_err(describe)?);
            }
        }
        Err(e) => return Err(describe(e)),
    }
    for name in TOKENIZER_EXTRA {
        match fetch(name) {
            Ok(p) => paths.push(p),
            Err(FetchError::Api(_, e)) if is_not_found(&e) => {}
            Err(e) => return Err(describe(e)),
        }
    }
    let (shards, total) = match fetch(INDEX_FILE) {
        Ok(index) => shards_of(&index)?,
        Err(FetchError::Api(_, e)) if is_not_found(&e) => (vec![SINGLE_WEIGHTS.to_owned()], None),
        Err(e) => return Err(describe(e)),
    };
    if let Some(total) = total {
        let snapshot = paths[0]
            .parent()
            .unwrap_or(config.cache.root())
            .to_path_buf();
        let present = shards
            .iter()
            .map(|s| file_len(&snapshot.join(s)))
            .sum::<u64>();
        check_free_space(config.cache.root(), total.saturating_sub(present))?;
        emit(DownloadEvent::Planned {
            total_bytes: total,
            files: shards.len(),
        });
        state.lock().map(|mut c| c.total = total).ok();
    }
    for shard in &shards {
        paths.push(fetch(shard).map_err(describe)?);
    }
    let dir = paths[0]
        .parent()
        .ok_or_else(|| HubError::Download("the cache returned a file outside a folder".into()))?
        .to_path_buf();
    if !is_complete_model(&dir) {
        return Err(HubError::Download(format!(
            "the download of {id} finished but {} is not a complete model folder",
            dir.display()
        )));
    }
    Ok(dir)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The shard names and total size from model.safetensors.index.json.
fn shards_of(index: &Path) -> Result<(Vec<String>, Option<u64>), HubError> {
    let text = std::fs::read_to_string(index)
        .map_err(|e| HubError::Download(format!("cannot read {INDEX_FILE}: {e}")))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| HubError::Download(format!("{INDEX_FILE} is damaged: {e}")))?;
    let mut shards: Vec<String> = value
        .get("weight_map")
        .and_then(Value::as_object)
        .map(|m| {
            m.values()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    shards.sort();
    shards.dedup();
    if shards.is_empty() {
        return Err(HubError::Download(format!(
            "{INDEX_FILE} names no weight files"
        )));
    }
    let total = value
        .pointer("/metadata/total_size")
        .and_then(Value::as_u64);
    Ok((shards, total))
}

/// Fails when the cache's disk lacks room for `needed` bytes (plus a margin). The cache
/// folder may not exist yet: its nearest existing parent is on the same disk.
pub fn check_free_space(dir: &Path, needed: u64) -> Result<(), HubError> {
    let Some(existing) = dir.ancestors().find(|a| a.exists()) else {
        return Ok(());
    };
    // a disk that cannot say how much room it has gets the download attempted
    let Ok(free) = fs4::available_space(existing) else {
        return Ok(());
    };
    if free < needed.saturating_add(FREE_SPACE_MARGIN) {
        return Err(HubError::Download(format!(
            "the model needs {:.1} GB more on the disk of {}, which has {:.1} GB free; free some space or set HF_HUB_CACHE to a larger disk",
            (needed.saturating_add(FREE_SPACE_MARGIN)) as f64 / 1e9,
            dir.display(),
            free as f64 / 1e9
        )));
    }
    Ok(())
}

fn is_not_found(e: &ApiError) -> bool {
    matches!(e, ApiError::RequestError(r) if matches!(r.as_ref(), ureq::Error::Status(404, _)))
}

fn explain(id: &str, file: &str, endpoint: &str, e: &ApiError) -> String {
    match e {
        ApiError::RequestError(r) => match r.as_ref() {
            ureq::Error::Status(401 | 403, _) => format!(
                "{endpoint} refused {id}/{file}: the model needs an access token (set HF_TOKEN)"
            ),
            ureq::Error::Status(404, _) => format!("{endpoint} has no {id}/{file}"),
            ureq::Error::Status(code, _) => format!("{endpoint} answered {code} for {id}/{file}"),
            ureq::Error::Transport(t) => format!(
                "cannot reach {endpoint} ({t}); check the connection, or set HF_ENDPOINT to a mirror (e.g. for users in China), or HTTPS_PROXY"
            ),
        },
        other => format!("downloading {id}/{file} failed: {other}"),
    }
}

#[derive(Default)]
struct Counters {
    total: u64,
    /// Bytes of finished files.
    finished: u64,
    /// Expected size of the file in progress.
    current_size: u64,
}

enum FetchError {
    Cancelled,
    Api(String, ApiError),
    Damaged(String, String),
}

/// The payload of the unwind that stops a transfer when the user cancels (hf-hub's
/// progress callback has no way to stop it; the partial file stays for resuming).
struct Cancelled;

struct ProgressReport<'a, F: Fn(DownloadEvent)> {
    name: String,
    cancel: &'a AtomicBool,
    counters: &'a std::sync::Mutex<Counters>,
    emit: &'a F,
    size: u64,
    done: u64,
    last: Option<Instant>,
}

impl<F: Fn(DownloadEvent)> hf_hub::api::Progress for ProgressReport<'_, F> {
    fn init(&mut self, size: usize, _filename: &str) {
        if self.size == 0 {
            self.size = size as u64;
            if let Ok(mut c) = self.counters.lock() {
                c.current_size = size as u64;
            }
            (self.emit)(DownloadEvent::FileStarted {
                name: self.name.clone(),
                size: size as u64,
            });
        }
    }

    fn update(&mut self, size: usize) {
        if self.cancel.load(Ordering::SeqCst) {
            std::panic::panic_any(Cancelled);
        }
        self.done += size as u64;
        // A few reports a second are enough for any display.
        if self
            .last
            .is_some_and(|t| t.elapsed() < std::time::Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(Instant::now());
        let (finished, total) = self
            .counters
            .lock()
            .map(|c| (c.finished, c.total))
            .unwrap_or((0, 0));
        (self.emit)(DownloadEvent::Progress {
            done_bytes: finished + self.done,
            total_bytes: total,
        });
    }

    fn finish(&mut self) {}
}

/// The downloaded file must have the size the server announced.
fn verify_size(
    path: &Path,
    name: &str,
    counters: &std::sync::Mutex<Counters>,
) -> Result<(), FetchError> {
    let len = file_len(path);
    let mut c = counters
        .lock()
        .map_err(|_| FetchError::Damaged(name.into(), "internal lock".into()))?;
    if c.current_size > 0 && len != c.current_size {
        // Remove it so that the next attempt starts clean.
        if let Ok(target) = std::fs::canonicalize(path) {
            let _ = std::fs::remove_file(target);
        }
        let _ = std::fs::remove_file(path);
        return Err(FetchError::Damaged(
            name.into(),
            format!("{len} bytes instead of {}", c.current_size),
        ));
    }
    c.finished += len;
    c.current_size = 0;
    Ok(())
}

/// Throughput and time left, for progress displays.
#[derive(Debug, Clone)]
pub struct Rate {
    started: Instant,
    start_bytes: u64,
}

impl Rate {
    pub fn new(start_bytes: u64) -> Self {
        Rate {
            started: Instant::now(),
            start_bytes,
        }
    }

    /// (bytes per second, seconds left) at `done` of `total`.
    pub fn at(&self, done: u64, total: u64) -> (f64, Option<f64>) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let speed = done.saturating_sub(self.start_bytes) as f64 / secs;
        let left = (speed > 0.0 && total > done).then(|| (total - done) as f64 / speed);
        (speed, left)
    }
}

/// How far a [`ModelDownload`] is.
#[derive(Debug, Clone)]
pub struct DownloadProgress {
    pub done_bytes: u64,
    pub total_bytes: u64,
    /// The file being fetched.
    pub file: String,
    pub rate: Rate,
}

/// A model download on a thread of its own ("model-download"), polled by the window.
pub struct ModelDownload {
    pub id: String,
    pub revision: String,
    pub progress: DownloadProgress,
    cancel: std::sync::Arc<AtomicBool>,
    events: crossbeam_channel::Receiver<DownloadEvent>,
    task: crate::background::Task<Result<PathBuf, String>>,
}

impl ModelDownload {
    /// Starts fetching `id` at `revision`; `notify` runs after every step.
    pub fn start(
        config: HubConfig,
        id: String,
        revision: String,
        notify: impl Fn() + Send + Clone + 'static,
    ) -> std::io::Result<Self> {
        let cancel = std::sync::Arc::new(AtomicBool::new(false));
        // Unbounded: progress events are small and the window drains them every frame.
        let (tx, events) = crossbeam_channel::unbounded();
        let (job_id, job_rev, job_cancel) = (id.clone(), revision.clone(), cancel.clone());
        let on_event = notify.clone();
        let task = crate::background::Task::start("model-download", notify, move || {
            download_model(&config, &job_id, &job_rev, &job_cancel, move |e| {
                let _ = tx.send(e);
                on_event();
            })
            .map_err(|e| e.to_string())
        })?;
        Ok(ModelDownload {
            id,
            revision,
            progress: DownloadProgress {
                done_bytes: 0,
                total_bytes: 0,
                file: String::new(),
                rate: Rate::new(0),
            },
            cancel,
            events,
            task,
        })
    }

    /// Takes in the progress so far; the model's folder (or why not) once it ended.
    pub fn poll(&mut self) -> Option<Result<PathBuf, String>> {
        for event in self.events.try_iter() {
            match event {
                DownloadEvent::Planned { total_bytes, .. } => {
                    self.progress.total_bytes = total_bytes
                }
                DownloadEvent::FileStarted { name, .. } => self.progress.file = name,
                DownloadEvent::Progress { done_bytes, .. } => self.progress.done_bytes = done_bytes,
                DownloadEvent::FileDone { .. } => {}
            }
        }
        self.task.try_take()
    }

    /// Asks the download to stop; it ends with an error saying it was cancelled, and what
    /// was fetched stays for the next try.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// True once cancel was asked for.
    pub fn cancelling(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}
