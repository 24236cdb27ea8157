//! The inference thread: one named thread owns the model and its device. The window sends
//! it commands and receives events over bounded channels; it never waits on the model.
//! After every event the thread calls the notifier (the window's repaint request).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, bounded};

use super::rank::{RankEvent, RankOutcome, RankRequest, RankSettings, run_ranking};
use crate::cache::scores::ScoreCache;
use crate::hub::{ModelSource, resolve_local};
use crate::model::device::DevicePreference;
use crate::model::{ComputeDevice, Reranker};

/// Identifies a ranking; events of an older job than the current one are stale.
pub type JobId = u64;

/// What the window asks of the inference thread.
#[derive(Debug)]
pub enum Command {
    /// Load (replacing any loaded model).
    LoadModel {
        source: ModelSource,
        device: DevicePreference,
        /// What to call it (a Hub id rather than its cache folder).
        name: Option<String>,
    },
    /// Rank; `cancel` stops the job between batches.
    Rank {
        job: JobId,
        request: RankRequest,
        cancel: Arc<AtomicBool>,
        /// Read and store scores in the score cache.
        use_cache: bool,
    },
    /// Finish the current step and exit.
    Shutdown,
}

/// A loaded model, described for the model panel.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub folder: PathBuf,
    pub device: String,
    pub dtype: String,
    pub gpu_memory_used_mib: Option<u64>,
    pub load_seconds: f64,
    /// The most pixels the model's preprocessor scales a photo to.
    pub max_pixels: usize,
    /// Set when a GPU was wanted but the CPU is used (and why).
    pub note: Option<String>,
}

/// What the inference thread reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    ModelLoading {
        name: String,
    },
    ModelReady(ModelInfo),
    ModelFailed {
        name: String,
        reason: String,
    },
    Rank {
        job: JobId,
        event: RankEvent,
    },
    RankFinished {
        job: JobId,
        outcome: RankOutcome,
        seconds: f64,
    },
    /// The ranking could not start or stopped on an error; scores already sent stay.
    RankFailed {
        job: JobId,
        reason: String,
    },
    /// The thread recovered from an internal fault and is ready for commands again.
    Recovered {
        reason: String,
    },
    /// Something the user should know that stops nothing (e.g. the score cache was reset).
    Warning {
        text: String,
    },
}

/// Handle to the inference thread.
pub struct InferenceThread {
    commands: Sender<Command>,
    events: Receiver<Event>,
    shutdown: Arc<AtomicBool>,
    /// The cancel flag of the last ranking sent, raised on shutdown.
    last_job: Option<Arc<AtomicBool>>,
    handle: Option<JoinHandle<()>>,
}

/// Capacity of the event channel: enough for a burst of scores between two frames.
const EVENT_CAPACITY: usize = 4096;
const COMMAND_CAPACITY: usize = 16;

impl InferenceThread {
    /// Starts the thread. `notify` is called after every event (e.g. to repaint). Scores
    /// are cached in the database at `cache_path` (None: no cache).
    pub fn spawn(notify: impl Fn() + Send + 'static, cache_path: Option<PathBuf>) -> Self {
        // The CPU compute pool (matrix products, resizing) gets names of its own; left to
        // itself it would be named after the thread that first used it.
        let _ = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("compute-{i}"))
            .build_global();
        let (command_tx, command_rx) = bounded(COMMAND_CAPACITY);
        let (event_tx, event_rx) = bounded(EVENT_CAPACITY);
        let shutdown = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            commands: command_rx,
            events: event_tx,
            shutdown: Arc::clone(&shutdown),
            notify: Box::new(notify),
            model: None,
            cache: None,
            cache_path,
        };
        let handle = std::thread::Builder::new()
            .name("inference".into())
            .spawn(move || worker.run())
            .expect("spawning the inference thread");
        InferenceThread {
            commands: command_tx,
            events: event_rx,
            shutdown,
            last_job: None,
            handle: Some(handle),
        }
    }

    /// Queues a command; false when the thread is gone or its queue is full.
    pub fn send(&mut self, command: Command) -> bool {
        if let Command::Rank { cancel, .. } = &command {
            self.last_job = Some(Arc::clone(cancel));
        }
        self.commands.try_send(command).is_ok()
    }

    /// Events received so far, without waiting.
    pub fn try_events(&self) -> impl Iterator<Item = Event> + '_ {
        self.events.try_iter()
    }

    /// The next event, waiting up to `timeout` (for tests and the command line).
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Event> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Asks the thread to stop and waits up to `timeout` for it. Returns true if it ended.
    pub fn shut_down(&mut self, timeout: Duration) -> bool {
        self.shutdown.store(true, Ordering::SeqCst);
        if let Some(cancel) = &self.last_job {
            cancel.store(true, Ordering::SeqCst);
        }
        let _ = self.commands.try_send(Command::Shutdown);
        let Some(handle) = self.handle.take() else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        while !handle.is_finished() {
            if Instant::now() >= deadline {
                // The thread is inside one model step; it exits when that returns, and the
                // process may end without waiting for it.
                return false;
            }
            // Keep draining so that the thread never blocks on a full event channel.
            for _ in self.events.try_iter() {}
            std::thread::sleep(Duration::from_millis(5));
        }
        handle.join().is_ok()
    }
}

impl Drop for InferenceThread {
    fn drop(&mut self) {
        self.shut_down(Duration::from_secs(2));
    }
}

struct Worker {
    commands: Receiver<Command>,
    events: Sender<Event>,
    shutdown: Arc<AtomicBool>,
    notify: Box<dyn Fn() + Send>,
    model: Option<Reranker>,
    /// The score cache, opened at the first ranking (None when it cannot be used).
    cache: Option<Option<Mutex<ScoreCache>>>,
    cache_path: Option<PathBuf>,
}

impl Worker {
    fn run(mut self) {
        loop {
            let command = match self.commands.recv_timeout(Duration::from_millis(200)) {
                Ok(c) => c,
                Err(RecvTimeoutError::Timeout) if !self.shutdown.load(Ordering::SeqCst) => continue,
                Err(_) => return,
            };
            if matches!(command, Command::Shutdown) || self.shutdown.load(Ordering::SeqCst) {
                return;
            }
            // A panic in model code must not take the thread (and the window's model) down
            // silently: it is reported, and the thread carries on with the next command.
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(command)));
            if let Err(panic) = result {
                let reason = panic_message(&panic);
                self.emit(Event::Recovered {
                    reason: format!(
                        "an internal error interrupted the work ({reason}); please try again"
                    ),
                });
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::LoadModel {
                source,
                device,
                name,
            } => self.load(source, device, name),
            Command::Rank {
                job,
                request,
                cancel,
                use_cache,
            } => self.rank(job, &request, &cancel, use_cache),
            Command::Shutdown => {}
        }
    }

    fn load(&mut self, source: ModelSource, preference: DevicePreference, name: Option<String>) {
        let name = name.unwrap_or_else(|| source.display());
        self.model = None; // free the old model's memory first
        self.emit(Event::ModelLoading { name: name.clone() });
        let start = Instant::now();
        let result = resolve_local(&source)
            .map_err(|e| e.to_string())
            .and_then(|dir| {
                let (device, note) = ComputeDevice::select(preference);
                let model = Reranker::load(&dir, device).map_err(|e| e.to_string())?;
                if model.device.is_gpu() {
                    model.warm_up().map_err(|e| e.to_string())?;
                }
                Ok((dir, model, note))
            });
        match result {
            Ok((folder, model, note)) => {
                let info = ModelInfo {
                    name,
                    folder,
                    device: model.device.name.clone(),
                    dtype: model.device.dtype_name().into(),
                    gpu_memory_used_mib: model
                        .device
                        .memory()
                        .map(|(free, total)| (total - free) >> 20),
                    load_seconds: start.elapsed().as_secs_f64(),
                    max_pixels: model.preprocess.max_pixels,
                    note,
                };
                self.model = Some(model);
                self.emit(Event::ModelReady(info));
            }
            Err(reason) => self.emit(Event::ModelFailed { name, reason }),
        }
    }

    fn rank(&mut self, job: JobId, request: &RankRequest, cancel: &AtomicBool, use_cache: bool) {
        let Some(model) = self.model.as_ref() else {
            self.emit(Event::RankFailed {
                job,
                reason: "no model is loaded".into(),
            });
            return;
        };
        if use_cache && self.cache.is_none() {
            let opened = self
                .cache_path
                .as_deref()
                .and_then(|path| match ScoreCache::open(path) {
                    Ok((cache, warning)) => {
                        if let Some(text) = warning {
                            send(
                                &self.events,
                                &self.notify,
                                &self.shutdown,
                                Event::Warning { text },
                            );
                        }
                        Some(Mutex::new(cache))
                    }
                    Err(e) => {
                        let text = format!("{e}; rankings are not cached");
                        send(
                            &self.events,
                            &self.notify,
                            &self.shutdown,
                            Event::Warning { text },
                        );
                        None
                    }
                });
            self.cache = Some(opened);
        }
        let start = Instant::now();
        let settings = RankSettings::for_model(model);
        let cache = self
            .cache
            .as_ref()
            .and_then(Option::as_ref)
            .filter(|_| use_cache);
        let (events, notify, shutdown) = (&self.events, &self.notify, &self.shutdown);
        let result = run_ranking(model, request, settings, cache, cancel, |event| {
            send(events, notify, shutdown, Event::Rank { job, event });
        });
        let event = match result {
            Ok(outcome) => Event::RankFinished {
                job,
                outcome: if shutdown.load(Ordering::SeqCst) {
                    RankOutcome::Cancelled
                } else {
                    outcome
                },
                seconds: start.elapsed().as_secs_f64(),
            },
            Err(e) => Event::RankFailed {
                job,
                reason: e.to_string(),
            },
        };
        self.emit(event);
    }

    fn emit(&self, event: Event) {
        send(&self.events, &self.notify, &self.shutdown, event);
    }
}

/// Sends an event, waiting while the window catches up, unless shutting down.
fn send(
    events: &Sender<Event>,
    notify: &(dyn Fn() + Send),
    shutdown: &AtomicBool,
    mut event: Event,
) {
    loop {
        match events.send_timeout(event, Duration::from_millis(100)) {
            Ok(()) => break,
            Err(SendTimeoutError::Timeout(e)) if !shutdown.load(Ordering::SeqCst) => event = e,
            Err(_) => return,
        }
    }
    notify();
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into())
}
