//! The index thread: one named thread ("index") owns the first-stage embedder, the index
//! file and the catalog of the window's library. It indexes the library in the background
//! as soon as photos are added, and between two batches of that work answers searches at
//! once from what is indexed so far, so that a search never waits for indexing to finish.
//! Like the inference thread, it talks over bounded channels and calls the notifier (the
//! window's repaint) after every event; a search carries its own reply channel.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, bounded};

use super::load::load_embedder;
use crate::embed::Embedder;
use crate::hub::ModelSource;
use crate::index::{Catalog, Flow, IndexEvent, IndexStore, IndexSummary, run_indexing};
use crate::model::ComputeDevice;
use crate::model::device::DevicePreference;

/// What the window asks of the index thread.
#[derive(Debug)]
pub enum IndexCommand {
    /// Load the embedder (replacing any loaded one).
    LoadEmbedder {
        source: ModelSource,
        device: DevicePreference,
        name: Option<String>,
    },
    /// Index these photos (the whole library): they replace the catalog, and a run under
    /// way stops after its batch.
    Index {
        photos: Vec<PathBuf>,
    },
    /// Rank the catalog by similarity to a query.
    Search(SearchJob),
    Shutdown,
}

/// A first-stage search and where its answer goes.
#[derive(Debug)]
pub struct SearchJob {
    pub query_text: String,
    pub query_image: Option<PathBuf>,
    pub reply: Sender<SearchReply>,
}

/// The first stage's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum SearchReply {
    Ranked {
        /// Every indexed photo with its similarity, most similar first.
        hits: Vec<(PathBuf, f32)>,
        /// Photos of the library without a vector (not indexed yet, or unreadable).
        unindexed: Vec<PathBuf>,
        /// From the request to the answer, query embedding included.
        seconds: f64,
    },
    Failed {
        reason: String,
    },
}

/// A loaded embedder, described for the window.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedderInfo {
    pub name: String,
    pub folder: PathBuf,
    pub device: String,
    pub load_seconds: f64,
}

/// What the index thread reports.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexThreadEvent {
    EmbedderLoading {
        name: String,
    },
    EmbedderReady(EmbedderInfo),
    EmbedderFailed {
        name: String,
        reason: String,
    },
    /// Indexing of `total` photos began.
    Started {
        total: usize,
    },
    /// After each batch: photos handled so far (with a vector, or failed).
    Progress {
        indexed: usize,
        failed: usize,
        total: usize,
    },
    PhotoFailed {
        path: PathBuf,
        reason: String,
    },
    /// An indexing run ended (`complete` false when a newer one replaced it).
    Finished(IndexSummary),
    /// Something the user should know that stops nothing.
    Notice {
        text: String,
    },
    /// The thread recovered from an internal fault.
    Recovered {
        reason: String,
    },
}

/// Handle to the index thread.
pub struct IndexThread {
    commands: Sender<IndexCommand>,
    events: Receiver<IndexThreadEvent>,
    shutdown: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

const EVENT_CAPACITY: usize = 1024;
const COMMAND_CAPACITY: usize = 32;
/// Query vectors kept for repeated searches.
const QUERY_MEMO: usize = 64;

impl IndexThread {
    /// Starts the thread; vectors are kept in the index file at `index_path` (None: for
    /// this session only).
    pub fn spawn(
        notify: impl Fn() + Send + 'static,
        index_path: Option<PathBuf>,
    ) -> std::io::Result<Self> {
        let (command_tx, command_rx) = bounded(COMMAND_CAPACITY);
        let (event_tx, event_rx) = bounded(EVENT_CAPACITY);
        let shutdown = Arc::new(AtomicBool::new(false));
        let worker = Indexer {
            commands: command_rx,
            events: event_tx,
            shutdown: Arc::clone(&shutdown),
            notify: Box::new(notify),
            embedder: None,
            store: None,
            index_path,
            catalog: Catalog::default(),
            queries: lru::LruCache::new(
                std::num::NonZeroUsize::new(QUERY_MEMO).unwrap_or(std::num::NonZeroUsize::MIN),
            ),
        };
        let handle = std::thread::Builder::new()
            .name("index".into())
            .spawn(move || worker.run())?;
        Ok(IndexThread {
            commands: command_tx,
            events: event_rx,
            shutdown,
            handle: Some(handle),
        })
    }

    /// A handle whose thread never started: every command is refused.
    pub fn stopped() -> Self {
        let (commands, _) = bounded(1);
        let (_, events) = bounded(1);
        IndexThread {
            commands,
            events,
            shutdown: Arc::new(AtomicBool::new(true)),
            handle: None,
        }
    }

    /// Queues a command; false when the thread is gone or its queue is full.
    pub fn send(&self, command: IndexCommand) -> bool {
        self.commands.try_send(command).is_ok()
    }

    /// Asks for the first stage's ranking of the library; None when the thread is gone.
    pub fn search(
        &self,
        query_text: String,
        query_image: Option<PathBuf>,
    ) -> Option<Receiver<SearchReply>> {
        let (reply, answer) = bounded(1);
        self.send(IndexCommand::Search(SearchJob {
            query_text,
            query_image,
            reply,
        }))
        .then_some(answer)
    }

    /// Events received so far, without waiting.
    pub fn try_events(&self) -> impl Iterator<Item = IndexThreadEvent> + '_ {
        self.events.try_iter()
    }

    /// The next event, waiting up to `timeout` (for tests).
    pub fn recv_timeout(&self, timeout: Duration) -> Option<IndexThreadEvent> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Asks the thread to stop (after the batch in hand) and waits up to `timeout`.
    pub fn shut_down(&mut self, timeout: Duration) -> bool {
        self.shutdown.store(true, Ordering::SeqCst);
        let _ = self.commands.try_send(IndexCommand::Shutdown);
        let Some(handle) = self.handle.take() else {
            return true;
        };
        super::join_within(handle, &self.events, timeout)
    }
}

impl Drop for IndexThread {
    fn drop(&mut self) {
        self.shut_down(Duration::from_secs(2));
    }
}

/// The key of a remembered query vector: the text, and the example image by path, size
/// and modification time.
type QueryKey = (String, Option<(PathBuf, i64, i64)>);

struct Indexer {
    commands: Receiver<IndexCommand>,
    events: Sender<IndexThreadEvent>,
    shutdown: Arc<AtomicBool>,
    notify: Box<dyn Fn() + Send>,
    embedder: Option<Embedder>,
    /// The index file, opened on first use (None inside when it cannot be used).
    store: Option<Option<Mutex<IndexStore>>>,
    index_path: Option<PathBuf>,
    catalog: Catalog,
    queries: lru::LruCache<QueryKey, Vec<f32>>,
}

impl Indexer {
    fn run(mut self) {
        let mut next: Option<IndexCommand> = None;
        loop {
            let command = match next.take() {
                Some(c) => c,
                None => match self.commands.recv_timeout(Duration::from_millis(200)) {
                    Ok(c) => c,
                    Err(RecvTimeoutError::Timeout) if !self.shutdown.load(Ordering::SeqCst) => {
                        continue;
                    }
                    Err(_) => return,
                },
            };
            if matches!(command, IndexCommand::Shutdown) || self.shutdown.load(Ordering::SeqCst) {
                return;
            }
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(command)));
            match result {
                Ok(pending) => next = pending,
                Err(panic) => {
                    let reason = super::panic_message(&panic);
                    self.catalog = Catalog::default();
                    self.emit(IndexThreadEvent::Recovered {
                        reason: format!(
                            "an internal error interrupted the indexing ({reason}); add the photos again to retry"
                        ),
                    });
                }
            }
        }
    }

    /// Carries out a command; returns one that arrived meanwhile and must run next.
    fn handle(&mut self, command: IndexCommand) -> Option<IndexCommand> {
        match command {
            IndexCommand::LoadEmbedder {
                source,
                device,
                name,
            } => self.load(source, device, name),
            IndexCommand::Index { photos } => return self.index(photos),
            IndexCommand::Search(job) => {
                let answer = self.answer(&job);
                let _ = job.reply.try_send(answer);
                (self.notify)();
            }
            IndexCommand::Shutdown => {}
        }
        None
    }

    fn load(&mut self, source: ModelSource, preference: DevicePreference, name: Option<String>) {
        let name = name.unwrap_or_else(|| source.display());
        self.embedder = None;
        self.catalog = Catalog::default();
        self.queries.clear();
        self.emit(IndexThreadEvent::EmbedderLoading { name: name.clone() });
        let (device, _) = ComputeDevice::select(preference);
        match load_embedder(&source, device) {
            Ok(loaded) => {
                let info = EmbedderInfo {
                    name,
                    folder: loaded.folder,
                    device: format!(
                        "{} ({})",
                        loaded.embedder.device.name,
                        loaded.embedder.device.dtype_name()
                    ),
                    load_seconds: loaded.load_seconds,
                };
                self.embedder = Some(loaded.embedder);
                self.emit(IndexThreadEvent::EmbedderReady(info));
            }
            Err(e) => self.emit(IndexThreadEvent::EmbedderFailed {
                name,
                reason: format!("{e:#}"),
            }),
        }
    }

    fn open_store(&mut self) {
        if self.store.is_some() {
            return;
        }
        let opened = super::open_store(
            self.index_path.as_deref(),
            IndexStore::open,
            |e| format!("The index cannot be used ({e}); photos are indexed for this session only"),
            |text| self.emit(IndexThreadEvent::Notice { text }),
        );
        self.store = Some(opened);
    }

    fn index(&mut self, photos: Vec<PathBuf>) -> Option<IndexCommand> {
        // Without an embedder, the library is indexed once one is loaded (the window
        // asks again then).
        self.embedder.as_ref()?;
        self.open_store();
        let embedder = self.embedder.as_ref()?;
        let store = self.store.as_ref().and_then(Option::as_ref);
        let (events, notify, shutdown, commands) =
            (&self.events, &self.notify, &self.shutdown, &self.commands);
        let emit = |event| {
            send(events, shutdown, event);
            notify();
        };
        let total = photos.len();
        emit(IndexThreadEvent::Started { total });
        let (mut indexed, mut failed) = (0, 0);
        let mut pending = None;
        let queries = &mut self.queries;
        let result = run_indexing(
            embedder,
            &photos,
            store,
            &mut self.catalog,
            |catalog, event| {
                match event {
                    IndexEvent::Indexed { .. } => indexed += 1,
                    IndexEvent::Failed { index, reason } => {
                        failed += 1;
                        emit(IndexThreadEvent::PhotoFailed {
                            path: catalog.photos[index].clone(),
                            reason,
                        });
                    }
                    IndexEvent::Notice { text } => emit(IndexThreadEvent::Notice { text }),
                    IndexEvent::Started { .. } => {}
                    IndexEvent::Batch => {
                        emit(IndexThreadEvent::Progress {
                            indexed,
                            failed,
                            total,
                        });
                        // Between batches: searches are answered now, from what is indexed so
                        // far; anything else ends this run and runs next.
                        while let Ok(command) = commands.try_recv() {
                            match command {
                                IndexCommand::Search(job) => {
                                    let answer = search(embedder, catalog, queries, &job);
                                    let _ = job.reply.try_send(answer);
                                    notify();
                                }
                                other => {
                                    pending = Some(other);
                                    return Flow::Stop;
                                }
                            }
                        }
                        if shutdown.load(Ordering::SeqCst) {
                            return Flow::Stop;
                        }
                    }
                }
                Flow::Continue
            },
        );
        // Searches run on the GPU when there is one (the CPU copy stays for the rows that
        // arrive later).
        if let Err(e) = self.catalog.upload(&embedder.device.device) {
            emit(IndexThreadEvent::Notice {
                text: format!("The index is searched on the CPU ({e})"),
            });
        }
        match result {
            Ok(summary) => emit(IndexThreadEvent::Finished(summary)),
            Err(e) => emit(IndexThreadEvent::Notice {
                text: format!("Indexing stopped: {e}"),
            }),
        }
        pending
    }

    fn answer(&mut self, job: &SearchJob) -> SearchReply {
        match self.embedder.as_ref() {
            Some(embedder) => search(embedder, &self.catalog, &mut self.queries, job),
            None => SearchReply::Failed {
                reason: "no embedder is loaded".into(),
            },
        }
    }

    fn emit(&self, event: IndexThreadEvent) {
        send(&self.events, &self.shutdown, event);
        (self.notify)();
    }
}

/// Ranks `catalog` for `job`, embedding the query unless it was embedded before.
fn search(
    embedder: &Embedder,
    catalog: &Catalog,
    queries: &mut lru::LruCache<QueryKey, Vec<f32>>,
    job: &SearchJob,
) -> SearchReply {
    let start = Instant::now();
    let image_key = job.query_image.as_ref().map(|p| {
        let stamp = crate::cache::db::FileStamp::of(p).ok();
        (
            p.clone(),
            stamp.map_or(0, |s| s.size),
            stamp.map_or(0, |s| s.mtime_ns),
        )
    });
    let key = (job.query_text.trim().to_owned(), image_key);
    let query = match queries.get(&key) {
        Some(q) => q.clone(),
        None => {
            let text = Some(job.query_text.as_str()).filter(|t| !t.trim().is_empty());
            match embedder.embed_query(text, job.query_image.as_deref()) {
                Ok(q) => {
                    queries.put(key, q.clone());
                    q
                }
                Err(e) => {
                    return SearchReply::Failed {
                        reason: e.to_string(),
                    };
                }
            }
        }
    };
    let hits = catalog
        .search(&query)
        .into_iter()
        .map(|h| (catalog.photos[h.photo].clone(), h.similarity))
        .collect();
    let unindexed = (0..catalog.photos.len())
        .filter(|&i| !catalog.is_indexed(i))
        .map(|i| catalog.photos[i].clone())
        .collect();
    SearchReply::Ranked {
        hits,
        unindexed,
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// Sends on `channel`, waiting while the reader catches up, unless shutting down.
fn send<T>(channel: &Sender<T>, shutdown: &AtomicBool, mut message: T) {
    loop {
        match channel.send_timeout(message, Duration::from_millis(100)) {
            Ok(()) => return,
            Err(SendTimeoutError::Timeout(m)) if !shutdown.load(Ordering::SeqCst) => message = m,
            Err(_) => return,
        }
    }
}
