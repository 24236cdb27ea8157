//! `LycheeApp`: the saved settings ([`AppState`]), the runtime ([`Runtime`]: threads and
//! tasks) and the session ([`Session`]: what the window works on). Each frame it takes in
//! what the threads reported, lets the panels draw from what they borrow, and carries out
//! the commands they returned in [`LycheeApp::apply`], the one place that changes things.

use std::path::PathBuf;
use std::time::Instant;

use super::command::{PhotoAction, UiCommand};
use super::dialogs::Dialogs;
use super::model_panel::{ModelView, model_ui};
use super::output::{OutputView, model_output_ui};
use super::results::GridView;
use super::run::{Outcome, Run};
use super::runtime::Runtime;
use super::session::{ModelStatus, Session};
use super::sidebar::SidebarView;
use super::state::AppState;
use super::textures::Thumbnails;
use crate::hub::download::{HubConfig, ModelDownload};
use crate::hub::{HubError, ModelSource, resolve_local};
use crate::library::export::{start_copy, start_export};
use crate::model::device::DevicePreference;
use crate::worker::{Command, InferenceThread, RankRequest};

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
        let runtime = Runtime {
            worker,
            thumbs: Thumbnails::new(options.cache_dir.clone(), ctx),
            dialogs: Dialogs::new(ctx),
            download: None,
            export: None,
            copy: None,
            hub: options.hub.clone(),
            ctx: ctx.clone(),
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
                if let Some(run) = &session.run {
                    run.handle.cancel();
                }
            }
            UiCommand::ClearLibrary => {
                session.clear_library();
                self.runtime.thumbs.clear();
            }
            UiCommand::RemoveSource(i) => {
                session.library.remove(i);
                session.view.invalidate();
            }
            UiCommand::AddPaths(paths) => {
                let repaint = self.runtime.repaint();
                session.library.add(paths, repaint);
            }
            UiCommand::SetQueryImage(path) => session.query_image = path,
            UiCommand::LoadModel(spec) => self.load_model(spec),
            UiCommand::StartDownload => self.start_download(),
            UiCommand::CancelDownload => {
                if let Some(download) = &self.runtime.download {
                    download.cancel();
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

    /// Loads the model named by `spec` (a folder or a Hub id) if it is on disk.
    fn load_model(&mut self, spec: String) {
        let session = &mut self.session;
        let source = match ModelSource::parse(&spec, None) {
            Ok(s) => s,
            Err(e) => {
                session.model = ModelStatus::Failed {
                    name: spec,
                    reason: e.to_string(),
                };
                return;
            }
        };
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
        let folder = match local {
            Ok(folder) => folder,
            Err(e) => {
                session.model = ModelStatus::Missing {
                    name,
                    reason: e.to_string(),
                };
                return;
            }
        };
        self.state.model = spec;
        if self.runtime.worker.send(Command::LoadModel {
            source: ModelSource::Folder(folder),
            device: DevicePreference::Auto,
            name: Some(name.clone()),
        }) {
            session.model = ModelStatus::Loading {
                name,
                since: Instant::now(),
            };
        } else {
            session.notify_error("the inference thread is busy; try again in a moment");
        }
    }

    /// Starts downloading the model named in the settings (a Hub id).
    fn start_download(&mut self) {
        let Ok(ModelSource::Hub { id, revision }) = ModelSource::parse(&self.state.model, None)
        else {
            return;
        };
        let config = self.runtime.hub.clone();
        match ModelDownload::start(config, id, revision, self.runtime.repaint()) {
            Ok(download) => self.runtime.download = Some(download),
            Err(e) => self
                .session
                .notify_error(format!("could not start the download: {e}")),
        }
    }

    /// Starts ranking every photo of the library against the query.
    fn start_ranking(&mut self) {
        let session = &mut self.session;
        if session.cannot_rank_because(&self.state).is_some() {
            return;
        }
        // The resolution setting caps the model's own limit; it never raises it.
        let model_max = match &session.model {
            ModelStatus::Ready(info) => info.max_pixels,
            _ => usize::MAX,
        };
        let request = RankRequest::new(self.state.query.trim(), session.library.photos.clone())
            .with_query_image(session.query_image.clone())
            .with_instruction(self.state.instruction.clone())
            .with_pixels(None, Some(self.state.max_pixels().min(model_max)));
        let run = |handle| Run {
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
            handle,
        };
        let run = match self
            .runtime
            .worker
            .rank(request.clone(), self.state.remember_scores)
        {
            Some(handle) => run(handle),
            None => {
                session.notify_error("the inference thread is busy; try again in a moment");
                return;
            }
        };
        session.begin_run(run);
    }

    /// Takes in everything that happened since the last frame.
    pub fn poll(&mut self) {
        let session = &mut self.session;
        let runtime = &mut self.runtime;
        for event in runtime.worker.try_events() {
            session.on_event(event);
        }
        session.poll_run();
        if session.library.poll() {
            session.view.invalidate();
        }
        if let Some(download) = runtime.download.as_mut()
            && let Some(result) = download.poll()
        {
            runtime.download = None;
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
    pub fn ranked(&mut self) -> &[PathBuf] {
        self.session.refresh_view(&self.state);
        self.session.view.order()
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
                        };
                        model_ui(ui, &model, &mut out);
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
                    session.selection.len(),
                    &mut out,
                );
            }
            ui.separator();
            if !session.library.is_empty() {
                let grid = GridView {
                    order: session.view.order(),
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
                        rank: session
                            .view
                            .order()
                            .iter()
                            .position(|p| p == path)
                            .map(|i| i + 1),
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
