//! The inference thread: one named thread owns the model and its device. The window sends
//! it commands and receives events over bounded channels; it never waits on the model.
//! A ranking carries its own reply channel ([`RankJob`]): its progress goes there, and
//! dropping the receiver cancels it at once (the window's "Clear all", a closed window, a
//! client that went away). After every event the thread calls the notifier (the window's
//! repaint request).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, bounded};

use super::cache_first::{CacheFirst, ModelKey, SharedKey};
use super::devices::run_ranking_on;
use super::job::{Command, RankHandle, RankJob, RankReply};
use super::load::load_reranker;
use super::rank::{RankOutcome, RankRequest, RankSettings};
use super::score::{BatchLimits, Dealer, PhotoPreparer, Scheduler, ScoreReply};
use crate::cache::scores::ScoreCache;
use crate::hub::ModelSource;
use crate::model::device::{DevicePreference, GpuChoice};
use crate::model::{ComputeDevice, Reranker};

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
    /// How images are prepared for this model.
    pub inputs: PhotoPreparer,
}

/// What the inference thread reports beside the rankings' own replies.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    ModelLoading {
        name: String,
    },
    ModelReady(Box<ModelInfo>),
    ModelFailed {
        name: String,
        reason: String,
    },
    /// The thread recovered from an internal fault and is ready for commands again (the
    /// job it was on, if any, ended without a final reply).
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
    /// Documents of score jobs waiting (for the server's metrics).
    queued: Arc<AtomicUsize>,
    shutdown: Arc<AtomicBool>,
    /// The cancel flag of the last ranking sent, raised on shutdown.
    last_job: Option<Arc<AtomicBool>>,
    handle: Option<JoinHandle<()>>,
    /// The model the thread has or is loading, for answers from the score cache alone.
    model_key: SharedKey,
    cache_path: Option<PathBuf>,
    notify: Arc<dyn Fn() + Send + Sync>,
}

const EVENT_CAPACITY: usize = 256;
/// Commands waiting: a server's clients send one each.
const COMMAND_CAPACITY: usize = 1024;

impl InferenceThread {
    /// Starts the thread. `notify` is called after every event (e.g. to repaint). Scores
    /// are cached in the database at `cache_path` (None: no cache).
    pub fn spawn(
        notify: impl Fn() + Send + Sync + 'static,
        cache_path: Option<PathBuf>,
    ) -> std::io::Result<Self> {
        let notify: Arc<dyn Fn() + Send + Sync> = Arc::new(notify);
        let model_key = SharedKey::default();
        // The CPU compute pool (matrix products, resizing) gets names of its own; left to
        // itself it would be named after the thread that first used it.
        let _ = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("compute-{i}"))
            .build_global();
        let (command_tx, command_rx) = bounded(COMMAND_CAPACITY);
        let (event_tx, event_rx) = bounded(EVENT_CAPACITY);
        let shutdown = Arc::new(AtomicBool::new(false));
        let queued = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            commands: command_rx,
            events: event_tx,
            shutdown: Arc::clone(&shutdown),
            notify: Arc::clone(&notify),
            model: None,
            copies: Vec::new(),
            dealer: None,
            model_key: Arc::clone(&model_key),
            cache: None,
            cache_path: cache_path.clone(),
            scheduler: None,
            queued: Arc::clone(&queued),
        };
        let handle = std::thread::Builder::new()
            .name("inference".into())
            .spawn(move || worker.run())?;
        Ok(InferenceThread {
            commands: command_tx,
            events: event_rx,
            queued,
            shutdown,
            last_job: None,
            handle: Some(handle),
            model_key,
            cache_path,
            notify,
        })
    }

    /// A handle whose thread never started (spawning it failed): every command is refused.
    pub fn stopped() -> Self {
        let (commands, _) = bounded(1);
        let (_, events) = bounded(1);
        InferenceThread {
            commands,
            events,
            queued: Arc::new(AtomicUsize::new(0)),
            shutdown: Arc::new(AtomicBool::new(true)),
            last_job: None,
            handle: None,
            model_key: SharedKey::default(),
            cache_path: None,
            notify: Arc::new(|| {}),
        }
    }

    /// Queues a command; false when the thread is gone or its queue is full.
    pub fn send(&mut self, command: Command) -> bool {
        if let Command::Rank(job) = &command {
            self.last_job = Some(Arc::clone(&job.cancel));
        }
        self.commands.try_send(command).is_ok()
    }

    /// Queues a ranking of `request`; its replies arrive on the returned handle. None when
    /// the thread is gone or busy with a full queue.
    pub fn rank(&mut self, request: RankRequest, use_cache: bool) -> Option<RankHandle> {
        let (job, handle) = RankJob::new(request, use_cache);
        self.send(Command::Rank(job)).then_some(handle)
    }

    /// Like [`InferenceThread::rank`], but a ranking whose every score is in the score
    /// cache is answered from there at once, without waiting for the model (still loading,
    /// or busy): the answer of a question asked before never waits on the GPU. With
    /// anything left to score the job goes to the thread, and waits there for the model.
    pub fn rank_cache_first(
        &mut self,
        request: RankRequest,
        use_cache: bool,
    ) -> Option<RankHandle> {
        let (job, handle) = RankJob::new(request, use_cache);
        self.last_job = Some(Arc::clone(&job.cancel));
        let side = CacheFirst {
            key: self.model_key.lock().ok().and_then(|k| k.clone()),
            cache_path: self.cache_path.clone(),
            commands: self.commands.clone(),
            notify: Arc::clone(&self.notify),
        };
        side.start(job).then_some(handle)
    }

    /// The most pixels the model the thread has or is loading scales a photo to, once its
    /// files were read (before its weights are loaded).
    pub fn model_max_pixels(&self) -> Option<usize> {
        let key = self.model_key.lock().ok()?;
        key.as_ref().map(|k| k.preprocess.max_pixels)
    }

    /// A sender of commands for other threads (the server's handlers), which need no
    /// handle of their own.
    pub fn commands(&self) -> Sender<Command> {
        self.commands.clone()
    }

    /// Documents of score jobs waiting for the model.
    pub fn queued(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.queued)
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
        super::join_within(handle, &self.events, timeout)
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
    notify: Arc<dyn Fn() + Send + Sync>,
    model: Option<Arc<Reranker>>,
    /// Copies of `model` on further GPUs; a ranking is dealt over all of them.
    copies: Vec<Arc<Reranker>>,
    /// With copies: the score jobs' batches dealt over all of them (one thread a device).
    dealer: Option<Dealer>,
    /// What the score cache needs to know of `model`, or of the model being loaded.
    model_key: SharedKey,
    /// The score cache, opened at the first ranking (None when it cannot be used).
    cache: Option<Option<Mutex<ScoreCache>>>,
    cache_path: Option<PathBuf>,
    /// Score jobs under way (made when a model is loaded).
    scheduler: Option<Scheduler>,
    queued: Arc<AtomicUsize>,
}

impl Worker {
    fn run(mut self) {
        loop {
            let busy = self.scheduler.as_ref().is_some_and(|s| !s.is_idle());
            // With score jobs waiting, commands are taken between batches without waiting;
            // with several devices, batches are dealt and their results taken as they come.
            let command = if busy && self.dealer.is_some() {
                let results = self.deal();
                crossbeam_channel::select! {
                    recv(self.commands) -> c => match c {
                        Ok(c) => Some(c),
                        Err(_) => return,
                    },
                    recv(results) -> r => {
                        if let Ok(r) = r {
                            self.take_result(r);
                        }
                        continue;
                    }
                    default(Duration::from_millis(200)) => None,
                }
            } else if busy {
                match self.commands.try_recv() {
                    Ok(c) => Some(c),
                    Err(crossbeam_channel::TryRecvError::Empty) => None,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => return,
                }
            } else {
                match self.commands.recv_timeout(Duration::from_millis(200)) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            };
            if self.shutdown.load(Ordering::SeqCst) || matches!(command, Some(Command::Shutdown)) {
                if let Some(s) = self.scheduler.as_mut() {
                    s.fail_all("the server is shutting down");
                }
                return;
            }
            // A panic in model code must not take the thread (and the window's model) down
            // silently: it is reported, and the thread carries on with the next command.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match command {
                Some(command) => self.handle(command),
                None => self.score_step(),
            }));
            if let Err(panic) = result {
                let reason = super::panic_message(&panic);
                // The batch in hand is lost: its requests are told, the others go on.
                if let Some(s) = self.scheduler.as_mut() {
                    s.fail_all(&format!(
                        "an internal error interrupted the scoring ({reason})"
                    ));
                }
                self.emit(Event::Recovered {
                    reason: format!(
                        "an internal error interrupted the work ({reason}); please try again"
                    ),
                });
            }
        }
    }

    /// One batch of the score jobs under way, on the one device (with several, the
    /// dealer's threads judge them).
    fn score_step(&mut self) {
        if self.dealer.is_some() {
            return;
        }
        if let (Some(scheduler), Some(model)) = (self.scheduler.as_mut(), self.model.as_ref()) {
            scheduler.step(model);
        }
    }

    /// Hands batches to the free devices; where their results arrive.
    fn deal(&mut self) -> super::score::dealer::Results {
        let (Some(dealer), Some(scheduler)) = (self.dealer.as_mut(), self.scheduler.as_mut())
        else {
            return crossbeam_channel::never();
        };
        dealer.deal(scheduler);
        dealer.results()
    }

    /// A device's results, to the requests (or back in line, when the device failed).
    fn take_result(&mut self, result: (usize, super::score::BatchResult)) {
        let (Some(dealer), Some(scheduler)) = (self.dealer.as_mut(), self.scheduler.as_mut())
        else {
            return;
        };
        if let Some(text) = dealer.take(scheduler, result) {
            self.emit(Event::Warning { text });
        }
    }

    /// Waits for the batches under way on the devices (before a ranking or a new model
    /// takes them).
    fn settle_devices(&mut self) {
        let (Some(dealer), Some(scheduler)) = (self.dealer.as_mut(), self.scheduler.as_mut())
        else {
            return;
        };
        for text in dealer.wait_all(scheduler) {
            self.emit(Event::Warning { text });
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::LoadModel {
                source,
                device,
                gpus,
                name,
            } => self.load(source, device, gpus, name),
            Command::Rank(job) => self.rank(job),
            Command::Score(job) => match self.scheduler.as_mut() {
                Some(s) if self.model.is_some() => s.push(job),
                _ => {
                    let _ = job.reply.send(ScoreReply::Failed {
                        reason: "no model is loaded yet".into(),
                    });
                }
            },
            Command::Shutdown => {}
        }
    }

    fn load(
        &mut self,
        source: ModelSource,
        preference: DevicePreference,
        gpus: Option<GpuChoice>,
        name: Option<String>,
    ) {
        let name = name.unwrap_or_else(|| source.display());
        if let Some(s) = self.scheduler.as_mut() {
            s.fail_all("the model is being replaced; send the request again");
        }
        // The device threads end before the models they hold are freed.
        self.dealer = None;
        self.scheduler = None;
        self.model = None; // free the old model's memory first
        self.copies.clear();
        let gpus = gpus.filter(|_| preference != DevicePreference::Cpu);
        let ordinals = gpus.as_ref().map(GpuChoice::ordinals).unwrap_or_default();
        if ordinals.len() > 1 {
            return self.load_copies(source, &ordinals, name);
        }
        // One GPU named: that one; otherwise the GPU when there is one, else the CPU.
        let named = match (&gpus, ordinals.first()) {
            (Some(GpuChoice::List(_)), Some(&ordinal)) => Some(ordinal),
            _ => None,
        };
        let (device, note) = match named {
            Some(ordinal) => match ComputeDevice::gpu(ordinal) {
                Ok(device) => (device, None),
                Err(e) => {
                    self.emit(Event::ModelFailed {
                        name,
                        reason: format!(
                            "GPU {ordinal} cannot be used: {e}; choose another GPU in the model panel"
                        ),
                    });
                    return;
                }
            },
            None => ComputeDevice::select(preference),
        };
        self.know_model(&source, device.dtype_name());
        self.emit(Event::ModelLoading { name: name.clone() });
        match load_reranker(&source, device) {
            Ok(loaded) => {
                let model = loaded.model;
                let note = note.or_else(|| first_start_note(loaded.warm_up));
                let info = ModelInfo {
                    name,
                    folder: loaded.folder,
                    device: model.device.name.clone(),
                    dtype: model.device.dtype_name().into(),
                    gpu_memory_used_mib: model
                        .device
                        .memory()
                        .map(|(free, total)| (total - free) >> 20),
                    load_seconds: loaded.load_seconds,
                    max_pixels: model.preprocess.max_pixels,
                    note,
                    inputs: PhotoPreparer::of(&model),
                };
                self.ready(model, Vec::new(), info);
            }
            Err(e) => self.emit(Event::ModelFailed {
                name,
                reason: format!("{e:#}"),
            }),
        }
    }

    /// Records what the score cache needs to know of the model in `source`, computing in
    /// `dtype`: known from its files alone, so that questions asked before are answered
    /// from the cache while the weights load.
    fn know_model(&self, source: &ModelSource, dtype: &'static str) {
        let key = crate::hub::resolve_local(source)
            .ok()
            .and_then(|dir| Reranker::identity_of(&dir).ok())
            .map(|(identity, preprocess)| ModelKey {
                identity,
                preprocess,
                dtype,
            });
        if let Ok(mut slot) = self.model_key.lock() {
            *slot = key;
        }
    }

    /// `model` (and its `copies` on further GPUs) is ready: the scheduler and the window
    /// are told.
    fn ready(&mut self, model: Reranker, copies: Vec<Reranker>, mut info: ModelInfo) {
        let models: Vec<Arc<Reranker>> =
            std::iter::once(model).chain(copies).map(Arc::new).collect();
        let limits = BatchLimits::for_models(models.iter().map(|m| &**m));
        self.scheduler = Some(Scheduler::new(limits, Arc::clone(&self.queued)));
        if models.len() > 1 {
            match Dealer::spawn(&models) {
                Ok(dealer) => self.dealer = Some(dealer),
                Err(e) => {
                    let note = format!(
                        "documents are judged on one GPU only: its threads could not start ({e})"
                    );
                    info.note = Some(match info.note.take() {
                        Some(n) => format!("{n}; {note}"),
                        None => note,
                    });
                }
            }
        }
        let mut models = models.into_iter();
        self.model = models.next();
        self.copies = models.collect();
        self.emit(Event::ModelReady(Box::new(info)));
    }

    /// One copy of the model per GPU of `ordinals`, loaded side by side; a GPU that cannot
    /// take it is left out with a note, and only when none can is the load a failure.
    fn load_copies(&mut self, source: ModelSource, ordinals: &[usize], name: String) {
        self.know_model(&source, "bf16");
        self.emit(Event::ModelLoading { name: name.clone() });
        let start = Instant::now();
        let mut loaded = Vec::new();
        let mut left_out = Vec::new();
        for (ordinal, result) in super::load::load_on_gpus(&source, ordinals, false) {
            match result {
                Ok(l) => loaded.push((ordinal, l)),
                Err(e) => left_out.push(format!("GPU {ordinal} is left out: {e:#}")),
            }
        }
        if loaded.is_empty() {
            self.emit(Event::ModelFailed {
                name,
                reason: left_out.join("; "),
            });
            return;
        }
        let (_, first) = loaded.remove(0);
        let gpus: Vec<String> = std::iter::once(first.model.device.name.clone())
            .chain(loaded.iter().map(|(_, l)| l.model.device.name.clone()))
            .collect();
        let used: u64 = std::iter::once(&first.model)
            .chain(loaded.iter().map(|(_, l)| &l.model))
            .filter_map(|m| m.device.memory().map(|(free, total)| (total - free) >> 20))
            .sum();
        let slowest = loaded
            .iter()
            .map(|(_, l)| l.warm_up)
            .fold(first.warm_up, Duration::max);
        left_out.extend(first_start_note(slowest));
        let model = first.model;
        let info = ModelInfo {
            name,
            folder: first.folder,
            device: if gpus.len() > 1 {
                format!("{} GPUs: {}", gpus.len(), gpus.join(", "))
            } else {
                gpus.join("")
            },
            dtype: model.device.dtype_name().into(),
            gpu_memory_used_mib: Some(used),
            load_seconds: start.elapsed().as_secs_f64(),
            max_pixels: model.preprocess.max_pixels,
            note: (!left_out.is_empty()).then(|| left_out.join("; ")),
            inputs: PhotoPreparer::of(&model),
        };
        let copies = loaded.into_iter().map(|(_, l)| l.model).collect();
        self.ready(model, copies, info);
    }

    /// The score cache, opened on first use; a warning says why when it cannot be.
    fn open_cache(&mut self) {
        if self.cache.is_some() {
            return;
        }
        let opened = super::open_store(
            self.cache_path.as_deref(),
            ScoreCache::open,
            |e| format!("The score cache cannot be used ({e}); rankings are not cached"),
            |text| self.emit(Event::Warning { text }),
        );
        self.cache = Some(opened);
    }

    fn rank(&mut self, job: RankJob) {
        self.settle_devices();
        if job.use_cache && self.model.is_some() {
            self.open_cache();
        }
        let reply = JobReply {
            reply: &job.reply,
            cancel: &job.cancel,
            notify: &*self.notify,
            shutdown: &self.shutdown,
        };
        let Some(model) = self.model.as_ref() else {
            reply.send(RankReply::Failed {
                reason: "no model is loaded".into(),
            });
            return;
        };
        let start = Instant::now();
        let models: Vec<&Reranker> = std::iter::once(&**model)
            .chain(self.copies.iter().map(|m| &**m))
            .collect();
        // Every copy judges batches of the same size (the smallest that fits them all), so
        // that the scores are those of one GPU to the bit.
        let settings = models
            .iter()
            .map(|m| RankSettings::for_model(m))
            .min_by_key(|s| s.max_batch)
            .expect("at least one model");
        let cache = self
            .cache
            .as_ref()
            .and_then(Option::as_ref)
            .filter(|_| job.use_cache);
        let result = run_ranking_on(
            &models,
            &job.request,
            settings,
            cache,
            &job.cancel,
            |event| {
                reply.send(RankReply::Progress(event));
            },
        );
        let last = match result {
            Ok(outcome) => RankReply::Finished {
                outcome: if self.shutdown.load(Ordering::SeqCst) {
                    RankOutcome::Cancelled
                } else {
                    outcome
                },
                seconds: start.elapsed().as_secs_f64(),
            },
            Err(e) => RankReply::Failed {
                reason: e.to_string(),
            },
        };
        reply.send(last);
    }

    fn emit(&self, event: Event) {
        send(&self.events, &self.shutdown, event);
        (self.notify)();
    }
}

/// What to say when loading the GPU's kernels took long: the driver compiled them for
/// this GPU, once (it keeps them in its cache for the next starts).
fn first_start_note(warm_up: Duration) -> Option<String> {
    (warm_up > Duration::from_secs(5)).then(|| {
        format!(
            "The first start on this GPU prepared its kernels ({:.0} s); the next starts skip this.",
            warm_up.as_secs_f64()
        )
    })
}

/// The inference thread's end of a job's reply channel.
struct JobReply<'a> {
    reply: &'a Sender<RankReply>,
    cancel: &'a AtomicBool,
    notify: &'a (dyn Fn() + Send),
    shutdown: &'a AtomicBool,
}

impl JobReply<'_> {
    /// Sends a reply; when no one listens any more, cancels the job.
    fn send(&self, reply: RankReply) {
        if !send(self.reply, self.shutdown, reply) {
            self.cancel.store(true, Ordering::SeqCst);
        }
        (self.notify)();
    }
}

/// Sends on `channel`, waiting while the reader catches up, unless shutting down. False
/// when the message was not delivered.
fn send<T>(channel: &Sender<T>, shutdown: &AtomicBool, mut message: T) -> bool {
    loop {
        match channel.send_timeout(message, Duration::from_millis(100)) {
            Ok(()) => return true,
            Err(SendTimeoutError::Timeout(m)) if !shutdown.load(Ordering::SeqCst) => message = m,
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests;
