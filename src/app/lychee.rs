//! `LycheeApp`: the saved settings ([`AppState`]), the runtime ([`Runtime`]: threads and
//! tasks) and the session ([`Session`]: what the window works on). Each frame it takes in
//! what the threads reported, lets the panels draw from what they borrow, and carries out
//! the commands they returned in [`LycheeApp::apply`], the one place that changes things.

use std::path::PathBuf;
use std::time::Instant;

use super::command::{ModelRole, PhotoAction, UiCommand};
use super::dialogs::Dialogs;
use super::index_status::EmbedderStatus;
use super::model_panel::{ModelView, model_ui};
use super::output::{OutputView, model_output_ui};
use super::results::GridView;
use super::run::{Outcome, Run};
use super::runtime::Runtime;
use super::session::{ModelStatus, NextStep, Session};
use super::sidebar::SidebarView;
use super::state::AppState;
use super::textures::Thumbnails;
use crate::hub::download::{HubConfig, ModelDownload};
use crate::hub::{HubError, ModelSource, resolve_local};
use crate::library::export::{start_copy, start_export};
use crate::model::device::{DevicePreference, GpuChoice, GpuInfo};
use crate::worker::{Command, IndexCommand, IndexThread, InferenceThread, RankRequest};

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
    pub hub: HubConfig,
    /// The score cache database (None: no cache).
    pub score_cache: Option<PathBuf>,
    /// The first-stage embedder to load at start instead of the saved setting.
    pub embedder: Option<String>,
    /// Whether to load the embedder at start.
    pub load_embedder: bool,
    /// The index file (None: photos are indexed for this session only).
    pub index: Option<PathBuf>,
    /// The GPUs to offer in the model panel (None: those the driver lists).
    pub gpus: Option<Vec<GpuInfo>>,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            paths: Vec::new(),
            cache_dir: crate::cache::dirs::thumbnail_dir(),
            model: None,
            load_model: true,
            hub: HubConfig::from_env(),
            score_cache: Some(crate::cache::scores::ScoreCache::default_path()),
            embedder: None,
            load_embedder: true,
            index: Some(crate::index::IndexStore::default_path()),
            gpus: None,
        }
    }
}

/// The app.
pub struct LycheeApp {
    pub state: AppState,
    pub session: Session,
    pub runtime: Runtime,
    /// Where the example-image box was drawn last frame (files dropped there become the
    /// query image).
    query_drop_zone: Option<egui::Rect>,
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
        if let Some(embedder) = &options.embedder {
            state.embedder = embedder.clone();
        }
        let repaint = ctx.clone();
        let mut session = Session::default();
        let worker = InferenceThread::spawn(
            move || repaint.request_repaint(),
            options.score_cache.clone(),
        )
        .unwrap_or_else(|e| {
            session.notify_error(format!(
                "The inference thread could not start ({e}); close other programs and restart the app"
            ));
            InferenceThread::stopped()
        });
        let repaint = ctx.clone();
        let index = IndexThread::spawn(move || repaint.request_repaint(), options.index.clone())
            .unwrap_or_else(|e| {
                session.notify_error(format!(
                    "The index thread could not start ({e}); photos are judged without the first stage"
                ));
                IndexThread::stopped()
            });
        let runtime = Runtime {
            worker,
            index,
            thumbs: Thumbnails::new(options.cache_dir.clone(), ctx),
            dialogs: Dialogs::new(ctx),
            download: None,
            embedder_download: None,
            export: None,
            copy: None,
            hub: options.hub.clone(),
            ctx: ctx.clone(),
            gpus: options
                .gpus
                .clone()
                .unwrap_or_else(crate::model::device::gpu_list),
        };
        let mut app = LycheeApp {
            state,
            session,
            runtime,
            query_drop_zone: None,
        };
        if options.load_model {
            app.apply(UiCommand::LoadModel(app.state.model.clone()));
        }
        if options.load_embedder {
            app.apply(UiCommand::LoadEmbedder(app.state.embedder.clone()));
        }
        if !options.paths.is_empty() {
            app.apply(UiCommand::AddPaths(options.paths));
        }
        app
    }

    /// Carries out what the user asked for.
    pub fn apply(&mut self, command: UiCommand) {
        let session = &mut self.session;
        match command {
            UiCommand::StartRanking => self.start_ranking(),
            UiCommand::CancelRanking => {
                if let Some(run) = session.run.as_mut().filter(|r| r.active()) {
                    match &run.handle {
                        Some(handle) => handle.cancel(),
                        None => {
                            // Still in the first stage: nothing was judged yet.
                            run.search = None;
                            run.end = Some(super::run::RunEnd::Cancelled { seconds: 0.0 });
                        }
                    }
                }
            }
            UiCommand::ClearLibrary => {
                session.clear_library();
                self.runtime.thumbs.clear();
                self.runtime
                    .index
                    .send(IndexCommand::Index { photos: Vec::new() });
            }
            UiCommand::RemoveSource(i) => {
                session.library.remove(i);
                session.view.invalidate();
                self.index_library();
            }
            UiCommand::AddPaths(paths) => {
                let repaint = self.runtime.repaint();
                session.library.add(paths, repaint);
            }
            UiCommand::SetQueryImage(path) => session.query_image = path,
            UiCommand::LoadModel(spec) => self.load_model(spec),
            UiCommand::SetGpus(gpus) => {
                if gpus != self.state.gpus {
                    self.state.gpus = gpus;
                    self.load_model(self.state.model.clone());
                }
            }
            UiCommand::LoadEmbedder(spec) => self.load_embedder(spec),
            UiCommand::StartDownload(role) => self.start_download(role),
            UiCommand::CancelDownload(role) => {
                let download = match role {
                    ModelRole::Judge => &self.runtime.download,
                    ModelRole::Embedder => &self.runtime.embedder_download,
                };
                if let Some(download) = download {
                    download.cancel();
                }
            }
            UiCommand::ShowMore => {
                if let Some(step) = self.session.show_more() {
                    self.next_step(step);
                }
            }
            UiCommand::OpenDialog(kind) => {
                if let Err(e) = self.runtime.dialogs.open(kind) {
                    session.notify_error(format!("Could not open the file dialog: {e}"));
                }
            }
            UiCommand::Export(path, format) => {
                let (query, instruction) = session
                    .run
                    .as_ref()
                    .map(|r| (r.query_text.clone(), r.instruction.clone()))
                    .unwrap_or_default();
                let rows = session.export_rows();
                match start_export(
                    path,
                    format,
                    query,
                    instruction,
                    rows,
                    self.runtime.repaint(),
                ) {
                    Ok(task) => self.runtime.export = Some(task),
                    Err(e) => session.notify_error(format!("Could not start the export: {e}")),
                }
            }
            UiCommand::CopyTo(dir) => {
                let photos = session.photos_to_copy();
                match start_copy(photos, dir, self.runtime.repaint()) {
                    Ok(task) => self.runtime.copy = Some(task),
                    Err(e) => session.notify_error(format!("Could not start the copy: {e}")),
                }
            }
            UiCommand::Inspect(path) => session.inspect = path,
            UiCommand::ToggleSelection(path) => {
                if !session.selection.remove(&path) {
                    session.selection.insert(path);
                }
            }
            UiCommand::ClearSelection => session.selection.clear(),
            UiCommand::Photo(action, path) => {
                let result = match action {
                    PhotoAction::Open => opener::open(&path).map_err(|e| e.to_string()),
                    PhotoAction::ShowInFolder => opener::reveal(&path).map_err(|e| e.to_string()),
                    PhotoAction::CopyPath => {
                        self.runtime
                            .ctx
                            .copy_text(path.to_string_lossy().into_owned());
                        session.notify(format!("Copied {}", path.display()));
                        Ok(())
                    }
                };
                if let Err(e) = result {
                    session.notify_error(format!("Could not show {}: {e}", path.display()));
                }
            }
        }
    }

    /// The folder of the model named by `spec` (a folder or a Hub id) when it is on disk,
    /// with its name for the user; else why not, and whether it can be downloaded.
    fn find_model(&self, spec: &str) -> Result<(PathBuf, String), (String, String, bool)> {
        let source =
            ModelSource::parse(spec, None).map_err(|e| (spec.to_owned(), e.to_string(), false))?;
        let name = source.display();
        let hub = &self.runtime.hub;
        let local = match &source {
            ModelSource::Hub { id, revision } => hub
                .cache
                .complete_snapshot(id, revision)
                .ok_or_else(|| HubError::NotDownloaded {
                    id: id.clone(),
                    cache: hub.cache.root().display().to_string(),
                }),
            ModelSource::Folder(_) => resolve_local(&source),
        };
        local
            .map(|folder| (folder, name.clone()))
            .map_err(|e| (name, e.to_string(), true))
    }

    /// Loads the model named by `spec` (a folder or a Hub id) if it is on disk.
    fn load_model(&mut self, spec: String) {
        let (folder, name) = match self.find_model(&spec) {
            Ok(found) => found,
            Err((name, reason, on_disk_check)) => {
                self.session.model = if on_disk_check {
                    ModelStatus::Missing { name, reason }
                } else {
                    ModelStatus::Failed { name, reason }
                };
                return;
            }
        };
        self.state.model = spec;
        if self.runtime.worker.send(Command::LoadModel {
            source: ModelSource::Folder(folder),
            device: DevicePreference::Auto,
            // every GPU the user has not left out
            gpus: Some(match &self.state.gpus {
                Some(list) => GpuChoice::List(list.clone()),
                None => GpuChoice::All,
            }),
            name: Some(name.clone()),
        }) {
            self.session.model = ModelStatus::Loading {
                name,
                since: Instant::now(),
            };
        } else {
            self.session
                .notify_error("the inference thread is busy; try again in a moment");
        }
    }

    /// Loads the first-stage embedder named by `spec` if it is on disk.
    fn load_embedder(&mut self, spec: String) {
        let (folder, name) = match self.find_model(&spec) {
            Ok(found) => found,
            Err((name, reason, on_disk_check)) => {
                self.session.index.embedder = if on_disk_check {
                    EmbedderStatus::Missing { name, reason }
                } else {
                    EmbedderStatus::Failed { name, reason }
                };
                return;
            }
        };
        self.state.embedder = spec;
        if self.runtime.index.send(IndexCommand::LoadEmbedder {
            source: ModelSource::Folder(folder),
            device: DevicePreference::Auto,
            name: Some(name.clone()),
        }) {
            self.session.index.embedder = EmbedderStatus::Loading {
                name,
                since: Instant::now(),
            };
        } else {
            self.session
                .notify_error("the index thread is busy; try again in a moment");
        }
    }

    /// Starts downloading the model (or embedder) named in the settings (a Hub id).
    fn start_download(&mut self, role: ModelRole) {
        let spec = match role {
            ModelRole::Judge => &self.state.model,
            ModelRole::Embedder => &self.state.embedder,
        };
        let Ok(ModelSource::Hub { id, revision }) = ModelSource::parse(spec, None) else {
            return;
        };
        let config = self.runtime.hub.clone();
        match ModelDownload::start(config, id, revision, self.runtime.repaint()) {
            Ok(download) => match role {
                ModelRole::Judge => self.runtime.download = Some(download),
                ModelRole::Embedder => self.runtime.embedder_download = Some(download),
            },
            Err(e) => self
                .session
                .notify_error(format!("could not start the download: {e}")),
        }
    }

    /// Asks the index thread to index the library as it is now.
    fn index_library(&mut self) {
        if self.session.index.ready() && !self.session.library.scanning() {
            let photos = self.session.library.photos.clone();
            self.runtime.index.send(IndexCommand::Index { photos });
        }
    }

    /// Gives the current ranking's next photos to the judge.
    fn next_step(&mut self, step: NextStep) {
        let NextStep::Judge(photos) = step;
        let Some(run) = self.session.run.as_mut() else {
            return;
        };
        let request = run.request_for(photos.clone());
        // Before the model is ready, the score cache answers what it can at once.
        let loading = !matches!(self.session.model, ModelStatus::Ready(_));
        let handle = if loading {
            self.runtime.worker.rank_cache_first(request, run.use_cache)
        } else {
            self.runtime.worker.rank(request, run.use_cache)
        };
        match handle {
            Some(handle) => {
                run.judge(photos, handle);
                run.waiting_for_model = loading;
            }
            None => {
                run.end = Some(super::run::RunEnd::Failed(
                    "the inference thread is busy; try again in a moment".into(),
                ));
            }
        }
        self.session.view.invalidate();
    }

    /// Starts a ranking: with the index ready and a shortlist set, the first stage ranks
    /// the library at once and the judge takes its best photos; otherwise the judge takes
    /// every photo.
    fn start_ranking(&mut self) {
        let session = &mut self.session;
        if session.cannot_rank_because(&self.state).is_some() {
            return;
        }
        // The resolution setting caps the model's own limit; it never raises it.
        let model_max = match &session.model {
            ModelStatus::Ready(info) => info.max_pixels,
            _ => self.runtime.worker.model_max_pixels().unwrap_or(usize::MAX),
        };
        let request = RankRequest::new(self.state.query.trim(), Vec::new())
            .with_query_image(session.query_image.clone())
            .with_instruction(self.state.instruction.clone())
            .with_pixels(None, Some(self.state.max_pixels().min(model_max)));
        let two_stages = self.state.shortlist > 0 && session.index.ready();
        let mut run = Run::new(request, self.state.remember_scores, self.state.shortlist);
        if two_stages {
            match self
                .runtime
                .index
                .search(run.query_text.clone(), run.query_image.clone())
            {
                Some(answer) => {
                    run.search = Some(answer);
                    session.begin_run(run);
                    return;
                }
                None => session.notify_error("the index thread is busy; judging every photo"),
            }
        }
        let photos = session.library.photos.clone();
        session.begin_run(run);
        self.next_step(NextStep::Judge(photos));
    }

    /// Takes in everything that happened since the last frame.
    pub fn poll(&mut self) {
        let (session, runtime) = (&mut self.session, &mut self.runtime);
        for event in runtime.worker.try_events() {
            session.on_event(event);
        }
        let mut index_again = false;
        for event in runtime.index.try_events() {
            index_again |= matches!(event, crate::worker::IndexThreadEvent::EmbedderReady(_));
            session.on_index_event(event);
        }
        if session.library.poll() {
            session.view.invalidate();
            index_again = true;
        }
        if index_again {
            self.index_library();
        }
        if let Some(step) = self.session.poll_run() {
            self.next_step(step);
        }
        if let Some(download) = self.runtime.download.as_mut()
            && let Some(result) = download.poll()
        {
            self.runtime.download = None;
            match result {
                Ok(_) => {
                    let spec = self.state.model.clone();
                    self.load_model(spec);
                }
                Err(reason) => {
                    self.session.model = ModelStatus::Failed {
                        name: self.state.model.clone(),
                        reason,
                    }
                }
            }
        }
        if let Some(download) = self.runtime.embedder_download.as_mut()
            && let Some(result) = download.poll()
        {
            self.runtime.embedder_download = None;
            match result {
                Ok(_) => {
                    let spec = self.state.embedder.clone();
                    self.load_embedder(spec);
                }
                Err(reason) => {
                    self.session.index.embedder = EmbedderStatus::Failed {
                        name: self.state.embedder.clone(),
                        reason,
                    }
                }
            }
        }
        let answers: Vec<UiCommand> = self.runtime.dialogs.answers().collect();
        for command in answers {
            self.apply(command);
        }
        let (session, runtime) = (&mut self.session, &mut self.runtime);
        if let Some(report) = runtime.export.as_mut().and_then(|t| t.try_take()) {
            runtime.export = None;
            match report {
                Ok((path, photos)) => session.notify(format!(
                    "Saved the ranking of {photos} photos to {}",
                    path.display()
                )),
                Err(e) => session.notify_error(e),
            }
        }
        if let Some(report) = runtime.copy.as_mut().and_then(|t| t.try_take()) {
            runtime.copy = None;
            let mut text = format!(
                "Copied {} photos to {}",
                report.copied.len(),
                report.dir.display()
            );
            if report.failed.is_empty() {
                session.notify(text);
            } else {
                text.push_str(&format!(
                    "; {} could not be copied ({})",
                    report.failed.len(),
                    report.failed[0].1
                ));
                session.notify_error(text);
            }
        }
        session.expire_notices();
        session.refresh_view(&self.state);
    }

    /// Why a ranking cannot start now, if it cannot.
    pub fn cannot_rank_because(&self) -> Option<String> {
        self.session.cannot_rank_because(&self.state)
    }

    /// What the grid shows, in order.
    pub fn ranked(&mut self) -> Vec<PathBuf> {
        self.session.refresh_view(&self.state);
        self.session.view.iter().cloned().collect()
    }

    /// How many thumbnails were asked for: only visible tiles ask.
    pub fn thumbnail_requests(&self) -> usize {
        self.runtime.thumbs.requested()
    }

    /// Draws the whole window into `ui`; what the user asked for is carried out after.
    pub fn draw(&mut self, ui: &mut egui::Ui) {
        let mut out = Vec::new();
        let LycheeApp {
            state,
            session,
            runtime,
            query_drop_zone,
        } = self;
        egui::Panel::left("sidebar")
            .resizable(true)
            .default_size(330.0)
            .min_size(260.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .id_salt("sidebar-scroll")
                    .show(ui, |ui| {
                        let view = SidebarView {
                            query_image: session.query_image.as_deref(),
                            blocked: session.cannot_rank_because(state),
                        };
                        let zone = super::sidebar::query_ui(
                            ui,
                            state,
                            &view,
                            &mut runtime.thumbs,
                            &mut out,
                        );
                        *query_drop_zone = Some(zone);
                        ui.add_space(10.0);
                        ui.separator();
                        let model = ModelView {
                            status: &session.model,
                            download: runtime.download.as_ref(),
                            spec: &state.model,
                            hub: &runtime.hub,
                            index: &session.index,
                            embedder_download: runtime.embedder_download.as_ref(),
                            embedder_spec: &state.embedder,
                            gpus: &runtime.gpus,
                            chosen_gpus: state.gpus.as_deref(),
                        };
                        model_ui(ui, &model, &mut out);
                        ui.add_space(8.0);
                        ui.separator();
                        super::model_panel::index_ui(ui, &model, &mut out);
                    });
            });
        egui::Panel::bottom("status").show(ui, |ui| super::status::status_ui(ui, &session.notices));
        egui::CentralPanel::default().show(ui, |ui| {
            super::upload::upload_ui(ui, &session.library, &session.failures(), &mut out);
            if let Some(run) = &session.run {
                ui.separator();
                super::progress::progress_ui(ui, run, &mut out);
                super::results::toolbar_ui(
                    ui,
                    state,
                    &session.view,
                    run.first_stage.as_ref(),
                    run.active(),
                    session.selection.len(),
                    &mut out,
                );
            }
            ui.separator();
            if !session.library.is_empty() {
                let grid = GridView {
                    view: &session.view,
                    first_stage: session.run.as_ref().and_then(|r| r.first_stage.as_ref()),
                    active: session.run.as_ref().is_some_and(Run::active),
                    outcomes: &session.outcomes,
                    selection: &session.selection,
                    ranking: session.run.is_some(),
                };
                super::results::grid_ui(ui, &grid, &mut runtime.thumbs, &mut out);
            }
        });
        let ctx = ui.ctx().clone();
        if let Some(path) = &session.inspect {
            match (session.outcomes.get(path), &session.run) {
                (Some(Outcome::Scored(score)), Some(run)) => {
                    let view = OutputView {
                        path,
                        score,
                        run,
                        rank: session.view.position(path).map(|i| i + 1),
                        first_stage: run.first_stage.as_ref().and_then(|f| f.place(path)),
                    };
                    model_output_ui(&ctx, &view, &mut out);
                }
                _ => out.push(UiCommand::Inspect(None)),
            }
        }
        super::upload::drop_overlay_ui(&ctx);
        for command in out {
            self.apply(command);
        }
    }
}

impl eframe::App for LycheeApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.poll();
        if let Some(command) = super::upload::dropped_files(ctx, self.query_drop_zone) {
            self.apply(command);
        }
        self.runtime.thumbs.begin_frame(ctx);
        self.session.refresh_view(&self.state);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.draw(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, AppState::KEY, &self.state);
    }
}
