//! `LycheeApp`: the window's runtime (the inference thread, the library, thumbnails, the
//! current ranking) and the events that change it. The panels are drawn by the `*_ui`
//! functions of the sibling modules.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};

use super::dialogs::DialogResult;
use super::photos::Library;
use super::state::AppState;
use super::textures::Thumbnails;
use crate::hub::{ModelSource, resolve_local};
use crate::model::device::DevicePreference;
use crate::worker::rank::{PhotoScore, RankEvent, RankOutcome, RankRequest};
use crate::worker::thread::{Command, Event, InferenceThread, JobId, ModelInfo};

/// How the window is started.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Photos or folders to add at start (`lychee-rerank PATH...`).
    pub paths: Vec<PathBuf>,
    /// Where thumbnails are cached.
    pub cache_dir: PathBuf,
    /// The model to load at start instead of the saved setting.
    pub model: Option<String>,
    /// Whether to load the model at start.
    pub load_model: bool,
    /// Where models are downloaded from and cached (default: the environment's).
    pub hub: crate::hub::download::HubConfig,
    /// The score cache database (None: no cache).
    pub score_cache: Option<PathBuf>,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            paths: Vec::new(),
            cache_dir: crate::cache::dirs::thumbnail_dir(),
            model: None,
            load_model: true,
            hub: crate::hub::download::HubConfig::from_env(),
            score_cache: Some(crate::cache::scores::ScoreCache::default_path()),
        }
    }
}

/// Where the model stands.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelStatus {
    /// Nothing loaded; the reason says what to do.
    Missing {
        name: String,
        reason: String,
    },
    Loading {
        name: String,
        since: Instant,
    },
    Ready(ModelInfo),
    Failed {
        name: String,
        reason: String,
    },
}

/// What happened to one photo in the current ranking.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Scored(PhotoScore),
    Failed(String),
}

/// The current (or last) ranking.
#[derive(Debug)]
pub struct Run {
    pub job: JobId,
    pub photos: Vec<PathBuf>,
    pub query_text: String,
    pub query_image: Option<PathBuf>,
    pub instruction: String,
    pub query_tokens: Option<usize>,
    pub started: Instant,
    pub done: usize,
    pub failed: usize,
    /// Index of the photo the model is on.
    pub current: Option<usize>,
    pub end: Option<RunEnd>,
    pub cancel: Arc<AtomicBool>,
}

/// How a ranking ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    Finished { seconds: f64 },
    Cancelled { seconds: f64 },
    Failed(String),
}

impl Run {
    /// True while the model works on it.
    pub fn active(&self) -> bool {
        self.end.is_none()
    }

    /// Photos per second so far.
    pub fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs > 0.0 {
            (self.done + self.failed) as f64 / secs
        } else {
            0.0
        }
    }
}

/// A line for the status bar.
#[derive(Debug, Clone)]
pub struct Notice {
    pub text: String,
    pub error: bool,
    pub at: Instant,
}

/// A model download running on its own thread.
pub struct Download {
    pub id: String,
    pub revision: String,
    pub cancel: Arc<AtomicBool>,
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub file: String,
    pub rate: crate::hub::download::Rate,
    events: Receiver<DownloadMessage>,
}

enum DownloadMessage {
    Event(crate::hub::download::DownloadEvent),
    Done(Result<PathBuf, String>),
}

/// The app.
pub struct LycheeApp {
    pub state: AppState,
    pub(super) worker: InferenceThread,
    pub model: ModelStatus,
    pub library: Library,
    pub(super) thumbs: Thumbnails,
    /// Outcomes of the current ranking, by photo.
    pub outcomes: HashMap<PathBuf, Outcome>,
    pub run: Option<Run>,
    next_job: JobId,
    pub query_image: Option<PathBuf>,
    /// The photo whose model output is open.
    pub inspect: Option<PathBuf>,
    pub selection: HashSet<PathBuf>,
    pub notices: Vec<Notice>,
    pub(super) dialogs: (Sender<DialogResult>, Receiver<DialogResult>),
    /// Where the query image zone was drawn last frame (files dropped there become the
    /// query image).
    pub(super) query_drop_zone: Option<egui::Rect>,
    /// Ranked view, recomputed when outcomes or the library change.
    pub(super) view: super::results::RankedView,
    /// A model download in progress.
    pub download: Option<Download>,
    /// A copy to a folder in progress: the folder and where its report arrives.
    pub(super) pending_copy: Option<(PathBuf, Receiver<crate::library::export::CopyReport>)>,
    pub(super) ctx: egui::Context,
    pub(super) hub: crate::hub::download::HubConfig,
}

impl LycheeApp {
    /// Creates the app: restores settings, starts the inference thread, loads the model,
    /// and adds `options.paths`.
    pub fn new(
        ctx: &egui::Context,
        storage: Option<&dyn eframe::Storage>,
        options: AppOptions,
    ) -> Self {
        let mut state: AppState = storage
            .and_then(|s| eframe::get_value(s, AppState::KEY))
            .unwrap_or_default();
        if let Some(model) = &options.model {
            state.model = model.clone();
        }
        let repaint = ctx.clone();
        let worker = InferenceThread::spawn(
            move || repaint.request_repaint(),
            options.score_cache.clone(),
        );
        let mut app = LycheeApp {
            state,
            worker,
            model: ModelStatus::Missing {
                name: String::new(),
                reason: "no model loaded yet".into(),
            },
            library: Library::default(),
            thumbs: Thumbnails::new(options.cache_dir.clone(), ctx),
            outcomes: HashMap::new(),
            run: None,
            next_job: 1,
            query_image: None,
            inspect: None,
            selection: HashSet::new(),
            notices: Vec::new(),
            dialogs: unbounded(),
            query_drop_zone: None,
            view: Default::default(),
            download: None,
            pending_copy: None,
            ctx: ctx.clone(),
            hub: options.hub.clone(),
        };
        if options.load_model {
            app.load_model(app.state.model.clone());
        }
        if !options.paths.is_empty() {
            app.add_paths(options.paths);
        }
        app
    }

    /// Loads the model named by `spec` (a folder or a Hub id) if it is on disk.
    pub fn load_model(&mut self, spec: String) {
        let source = match ModelSource::parse(&spec, None) {
            Ok(s) => s,
            Err(e) => {
                self.model = ModelStatus::Failed {
                    name: spec,
                    reason: e.to_string(),
                };
                return;
            }
        };
        let name = source.display();
        let local = match &source {
            ModelSource::Hub { id, revision } => self
                .hub
                .cache
                .complete_snapshot(id, revision)
                .map(ModelSource::Folder)
                .ok_or_else(|| crate::hub::HubError::NotDownloaded {
                    id: id.clone(),
                    cache: self.hub.cache.root().display().to_string(),
                }),
            ModelSource::Folder(_) => resolve_local(&source).map(ModelSource::Folder),
        };
        let source = match local {
            Ok(folder) => folder,
            Err(e) => {
                self.model = ModelStatus::Missing {
                    name,
                    reason: e.to_string(),
                };
                return;
            }
        };
        if let Err(e) = resolve_local(&source) {
            self.model = ModelStatus::Missing {
                name,
                reason: e.to_string(),
            };
            return;
        }
        self.state.model = spec;
        if self.worker.send(Command::LoadModel {
            source,
            device: DevicePreference::Auto,
            name: Some(name.clone()),
        }) {
            self.model = ModelStatus::Loading {
                name,
                since: Instant::now(),
            };
        } else {
            self.notify_error("the inference thread is busy; try again in a moment");
        }
    }

    /// Starts downloading the model named in the settings (a Hub id) on its own thread.
    pub fn start_download(&mut self) {
        let Ok(ModelSource::Hub { id, revision }) = ModelSource::parse(&self.state.model, None)
        else {
            return;
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx) = unbounded();
        let ctx = self.ctx.clone();
        let (job_id, job_rev, job_cancel) = (id.clone(), revision.clone(), Arc::clone(&cancel));
        let config = self.hub.clone();
        let spawned = std::thread::Builder::new()
            .name("model-download".into())
            .spawn(move || {
                let events = tx.clone();
                let repaint = ctx.clone();
                let result = crate::hub::download::download_model(
                    &config,
                    &job_id,
                    &job_rev,
                    &job_cancel,
                    move |e| {
                        let _ = events.send(DownloadMessage::Event(e));
                        repaint.request_repaint();
                    },
                );
                let _ = tx.send(DownloadMessage::Done(result.map_err(|e| e.to_string())));
                ctx.request_repaint();
            });
        match spawned {
            Ok(_) => {
                self.download = Some(Download {
                    id,
                    revision,
                    cancel,
                    done_bytes: 0,
                    total_bytes: 0,
                    file: String::new(),
                    rate: crate::hub::download::Rate::new(0),
                    events: rx,
                })
            }
            Err(e) => self.notify_error(&format!("could not start the download: {e}")),
        }
    }

    fn poll_download(&mut self) {
        let Some(download) = self.download.as_mut() else {
            return;
        };
        let mut finished = None;
        while let Ok(message) = download.events.try_recv() {
            match message {
                DownloadMessage::Event(crate::hub::download::DownloadEvent::Planned {
                    total_bytes,
                    ..
                }) => {
                    download.total_bytes = total_bytes;
                }
                DownloadMessage::Event(crate::hub::download::DownloadEvent::FileStarted {
                    name,
                    ..
                }) => download.file = name,
                DownloadMessage::Event(crate::hub::download::DownloadEvent::Progress {
                    done_bytes,
                    ..
                }) => {
                    download.done_bytes = done_bytes;
                }
                DownloadMessage::Event(_) => {}
                DownloadMessage::Done(result) => finished = Some(result),
            }
        }
        match finished {
            Some(Ok(_)) => {
                self.download = None;
                let spec = self.state.model.clone();
                self.load_model(spec);
            }
            Some(Err(e)) => {
                self.download = None;
                self.model = ModelStatus::Failed {
                    name: self.state.model.clone(),
                    reason: e,
                };
            }
            None => {}
        }
    }

    /// Adds photos and folders (walked in the background).
    pub fn add_paths(&mut self, paths: Vec<PathBuf>) {
        let ctx = self.ctx.clone();
        self.library.add(paths, move || ctx.request_repaint());
    }

    /// How many thumbnails were asked for: only visible tiles ask.
    pub fn thumbnail_requests(&self) -> usize {
        self.thumbs.requested()
    }

    /// Why a ranking cannot start now, if it cannot.
    pub fn cannot_rank_because(&self) -> Option<String> {
        if self.run.as_ref().is_some_and(Run::active) {
            return Some("a ranking is running".into());
        }
        match &self.model {
            ModelStatus::Ready(_) => {}
            ModelStatus::Loading { .. } => return Some("the model is still loading".into()),
            ModelStatus::Missing { .. } | ModelStatus::Failed { .. } => {
                return Some("no model is loaded".into());
            }
        }
        if self.library.is_empty() {
            return Some(if self.library.scanning() {
                "the folders are still being read".into()
            } else {
                "add photos first".into()
            });
        }
        if self.state.query.trim().is_empty() && self.query_image.is_none() {
            return Some("describe the photo, or give an example image".into());
        }
        None
    }

    /// Starts ranking every photo of the library against the query.
    pub fn start_ranking(&mut self) {
        if self.cannot_rank_because().is_some() {
            return;
        }
        let job = self.next_job;
        self.next_job += 1;
        // The resolution setting caps the model's own limit; it never raises it.
        let model_max = match &self.model {
            ModelStatus::Ready(info) => info.max_pixels,
            _ => usize::MAX,
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let request = RankRequest {
            query_text: self.state.query.trim().to_owned(),
            query_image: self.query_image.clone(),
            instruction: self.state.instruction.clone(),
            photos: self.library.photos.clone(),
            min_pixels: None,
            max_pixels: Some(self.state.max_pixels().min(model_max)),
        };
        let run = Run {
            job,
            photos: request.photos.clone(),
            query_text: request.query_text.clone(),
            query_image: request.query_image.clone(),
            instruction: request.instruction.clone(),
            query_tokens: None,
            started: Instant::now(),
            done: 0,
            failed: 0,
            current: None,
            end: None,
            cancel: Arc::clone(&cancel),
        };
        if !self.worker.send(Command::Rank {
            job,
            request,
            cancel,
            use_cache: self.state.remember_scores,
        }) {
            self.notify_error("the inference thread is busy; try again in a moment");
            return;
        }
        self.outcomes.clear();
        self.inspect = None;
        self.run = Some(run);
        self.view.invalidate();
    }

    /// Asks the running ranking to stop after the current photo.
    pub fn cancel_ranking(&mut self) {
        if let Some(run) = &self.run {
            run.cancel.store(true, Ordering::SeqCst);
        }
    }

    /// Takes in everything that happened since the last frame.
    pub fn poll(&mut self) {
        let events: Vec<Event> = self.worker.try_events().collect();
        for event in events {
            self.on_event(event);
        }
        if self.library.poll() {
            self.view.invalidate();
        }
        self.poll_download();
        while let Ok(result) = self.dialogs.1.try_recv() {
            self.on_dialog(result);
        }
        if let Some((dir, rx)) = &self.pending_copy
            && let Ok(report) = rx.try_recv()
        {
            let dir = dir.clone();
            self.pending_copy = None;
            let mut text = format!("Copied {} photos to {}", report.copied.len(), dir.display());
            if !report.failed.is_empty() {
                text.push_str(&format!(
                    "; {} could not be copied ({})",
                    report.failed.len(),
                    report.failed[0].1
                ));
                self.notify_error(&text);
            } else {
                self.notify(text);
            }
        }
        self.notices
            .retain(|n| n.at.elapsed() < Duration::from_secs(if n.error { 30 } else { 10 }));
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::ModelLoading { name } => {
                self.model = ModelStatus::Loading {
                    name,
                    since: Instant::now(),
                }
            }
            Event::ModelReady(info) => self.model = ModelStatus::Ready(info),
            Event::ModelFailed { name, reason } => {
                self.model = ModelStatus::Failed { name, reason }
            }
            Event::Warning { text } => self.notify_error(&text),
            Event::Recovered { reason } => {
                self.notify_error(&reason);
                if let Some(run) = self.run.as_mut().filter(|r| r.active()) {
                    run.end = Some(RunEnd::Failed(reason));
                }
            }
            Event::Rank { job, event } => self.on_rank_event(job, event),
            Event::RankFinished {
                job,
                outcome,
                seconds,
            } => {
                if let Some(run) = self.run.as_mut().filter(|r| r.job == job) {
                    run.current = None;
                    run.end = Some(match outcome {
                        RankOutcome::Finished => RunEnd::Finished { seconds },
                        RankOutcome::Cancelled => RunEnd::Cancelled { seconds },
                    });
                }
            }
            Event::RankFailed { job, reason } => {
                if let Some(run) = self.run.as_mut().filter(|r| r.job == job) {
                    run.current = None;
                    run.end = Some(RunEnd::Failed(reason));
                }
            }
        }
    }

    fn on_rank_event(&mut self, job: JobId, event: RankEvent) {
        // Events of an older ranking are stale.
        let Some(run) = self.run.as_mut().filter(|r| r.job == job) else {
            return;
        };
        match event {
            RankEvent::Started { query_tokens, .. } => run.query_tokens = query_tokens,
            RankEvent::PhotoStarted { index } => run.current = Some(index),
            RankEvent::PhotoScored { index, score, .. } => {
                run.done += 1;
                if let Some(path) = run.photos.get(index) {
                    self.outcomes.insert(path.clone(), Outcome::Scored(score));
                    self.view.invalidate();
                }
            }
            RankEvent::PhotoFailed { index, reason } => {
                run.failed += 1;
                if let Some(path) = run.photos.get(index) {
                    self.outcomes.insert(path.clone(), Outcome::Failed(reason));
                    self.view.invalidate();
                }
            }
            RankEvent::Notice { text } => self.notify(text),
        }
    }

    pub fn notify(&mut self, text: impl Into<String>) {
        self.notices.push(Notice {
            text: text.into(),
            error: false,
            at: Instant::now(),
        });
    }

    pub fn notify_error(&mut self, text: &str) {
        self.notices.push(Notice {
            text: text.to_owned(),
            error: true,
            at: Instant::now(),
        });
    }
}

impl eframe::App for LycheeApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.poll();
        super::upload::handle_drops(self, ctx);
        self.thumbs.begin_frame(ctx);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.draw(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, AppState::KEY, &self.state);
    }
}

impl LycheeApp {
    /// Draws the whole window into `ui`.
    pub fn draw(&mut self, ui: &mut egui::Ui) {
        egui::Panel::left("sidebar")
            .resizable(true)
            .default_size(330.0)
            .min_size(260.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .id_salt("sidebar-scroll")
                    .show(ui, |ui| super::sidebar::sidebar_ui(self, ui));
            });
        egui::Panel::bottom("status").show(ui, |ui| self.status_ui(ui));
        egui::CentralPanel::default().show(ui, |ui| {
            super::upload::upload_ui(self, ui);
            if self.run.is_some() {
                ui.separator();
                super::progress::progress_ui(self, ui);
                super::results::toolbar_ui(self, ui);
            }
            ui.separator();
            if !self.library.is_empty() {
                super::results::grid_ui(self, ui);
            }
        });
        let ctx = ui.ctx().clone();
        super::output::model_output_ui(self, &ctx);
        super::upload::drop_overlay_ui(&ctx);
    }

    fn status_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| match self.notices.last() {
            Some(n) if n.error => {
                ui.colored_label(ui.visuals().error_fg_color, &n.text);
            }
            Some(n) => {
                ui.label(&n.text);
            }
            None => {
                ui.weak("Your photos are only read: nothing is moved, changed or uploaded.");
            }
        });
    }
}
