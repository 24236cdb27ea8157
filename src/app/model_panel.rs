//! The models' status at the foot of the sidebar. The judge: which model, from where, on
//! which device, how much memory. The index: the embedder, and how far the library's
//! indexing is. For either, a download with size, speed and progress when it is not there
//! yet; a reason and "Try again" when it failed; "Use a local folder…" always.

use super::command::{DialogKind, ModelRole, UiCommand};
use super::index_status::{EmbedderStatus, IndexStatus};
use super::progress::duration;
use super::session::ModelStatus;
use crate::embed::{DEFAULT_EMBEDDER_BYTES, DEFAULT_EMBEDDER_ID};
use crate::hub::download::{HubConfig, ModelDownload};
use crate::hub::{DEFAULT_MODEL_BYTES, DEFAULT_MODEL_ID, ModelSource};
use crate::model::device::GpuInfo;

/// What the model panel shows.
pub struct ModelView<'a> {
    pub status: &'a ModelStatus,
    pub download: Option<&'a ModelDownload>,
    /// The model the settings name (a folder or a Hub id).
    pub spec: &'a str,
    pub hub: &'a HubConfig,
    pub index: &'a IndexStatus,
    pub embedder_download: Option<&'a ModelDownload>,
    /// The embedder the settings name.
    pub embedder_spec: &'a str,
    /// The machine's GPUs, and those the judge is to run on (None: all).
    pub gpus: &'a [GpuInfo],
    pub chosen_gpus: Option<&'a [usize]>,
}

/// The judge.
pub fn model_ui(ui: &mut egui::Ui, view: &ModelView<'_>, out: &mut Vec<UiCommand>) {
    ui.strong("Model");
    match view.status {
        ModelStatus::Ready(info) => {
            egui::Grid::new("model-info").num_columns(2).show(ui, |ui| {
                ui.label("Name");
                ui.label(&info.name);
                ui.end_row();
                ui.label("Folder");
                ui.label(info.folder.display().to_string())
                    .on_hover_text(info.folder.display().to_string());
                ui.end_row();
                ui.label("Device");
                ui.label(format!("{} ({})", info.device, info.dtype));
                ui.end_row();
                if let Some(mib) = info.gpu_memory_used_mib {
                    ui.label("GPU memory");
                    ui.label(format!("{:.1} GB in use", mib as f64 / 1024.0));
                    ui.end_row();
                }
                ui.label("Loaded in");
                ui.label(format!("{:.1} s", info.load_seconds));
                ui.end_row();
            });
            if let Some(note) = &info.note {
                ui.colored_label(ui.visuals().warn_fg_color, note);
            }
        }
        ModelStatus::Loading { name, since } => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!(
                    "Loading {name}… {:.0} s",
                    since.elapsed().as_secs_f64()
                ));
            });
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_millis(500));
        }
        ModelStatus::Missing { name, reason } => missing_ui(
            ui,
            ModelRole::Judge,
            view.download,
            view.spec,
            view.hub,
            (name, reason),
            out,
        ),
        ModelStatus::Failed { name, reason } => {
            ui.label(format!("{name} could not be loaded:"));
            ui.colored_label(ui.visuals().error_fg_color, reason);
            if ui.button("Try again").clicked() {
                out.push(UiCommand::LoadModel(view.spec.to_owned()));
            }
        }
    }
    gpus_ui(ui, view, out);
    ui.add_space(4.0);
    if ui
        .button("Use a local folder…")
        .on_hover_text("A folder with config.json, the safetensors weights, the tokenizer and preprocessor_config.json")
        .clicked()
    {
        out.push(UiCommand::OpenDialog(DialogKind::ModelFolder));
    }
}

/// With several GPUs: which of them the judge runs on (one copy of the model each; a
/// ranking is dealt over them). At least one stays chosen; a change reloads the model.
fn gpus_ui(ui: &mut egui::Ui, view: &ModelView<'_>, out: &mut Vec<UiCommand>) {
    if view.gpus.len() < 2 {
        return;
    }
    let chosen = |g: &GpuInfo| view.chosen_gpus.is_none_or(|c| c.contains(&g.ordinal));
    let count = view.gpus.iter().filter(|g| chosen(g)).count();
    ui.add_space(4.0);
    ui.label("Run on")
        .on_hover_text("One copy of the model per GPU; the photos are dealt to whichever is free");
    for gpu in view.gpus {
        let mut on = chosen(gpu);
        let mut label = format!("GPU {} · {}", gpu.ordinal, gpu.name);
        if gpu.memory_mib > 0 {
            label.push_str(&format!(" · {:.0} GB", gpu.memory_mib as f64 / 1024.0));
        }
        // the last GPU chosen cannot be taken away
        let enabled = !(on && count == 1);
        if ui
            .add_enabled(enabled, egui::Checkbox::new(&mut on, label))
            .changed()
        {
            let list: Vec<usize> = view
                .gpus
                .iter()
                .filter(|g| {
                    if g.ordinal == gpu.ordinal {
                        on
                    } else {
                        chosen(g)
                    }
                })
                .map(|g| g.ordinal)
                .collect();
            let all = list.len() == view.gpus.len();
            out.push(UiCommand::SetGpus((!all).then_some(list)));
        }
    }
}

/// The first stage: the embedder and the library's index.
pub fn index_ui(ui: &mut egui::Ui, view: &ModelView<'_>, out: &mut Vec<UiCommand>) {
    ui.strong("Index (first stage)");
    let index = view.index;
    match &index.embedder {
        EmbedderStatus::Ready(info) => {
            egui::Grid::new("embedder-info")
                .num_columns(2)
                .show(ui, |ui| {
                    ui.label("Embedder");
                    ui.label(&info.name)
                        .on_hover_text(info.folder.display().to_string());
                    ui.end_row();
                    ui.label("Device");
                    ui.label(&info.device);
                    ui.end_row();
                });
            if index.running {
                let handled = index.indexed + index.failed;
                let fraction = if index.total > 0 {
                    handled as f32 / index.total as f32
                } else {
                    0.0
                };
                let rate = index.rate();
                let mut line = format!("Indexing {handled} of {}", index.total);
                if rate > 0.0 && handled > 0 {
                    let left = (index.total - handled.min(index.total)) as f64 / rate;
                    line.push_str(&format!(" · {rate:.0} photos/s · {} left", duration(left)));
                }
                ui.add(egui::ProgressBar::new(fraction).text(line));
                ui.ctx()
                    .request_repaint_after(std::time::Duration::from_millis(250));
            } else if index.total > 0 {
                let mut line = format!("{} of {} photos indexed", index.indexed, index.total);
                if index.failed > 0 {
                    line.push_str(&format!(
                        " · {} unreadable (listed under Skipped)",
                        index.failed
                    ));
                }
                ui.weak(line);
            } else {
                ui.weak("Photos are indexed as soon as they are added.");
            }
        }
        EmbedderStatus::Loading { name, since } => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!(
                    "Loading {name}… {:.0} s",
                    since.elapsed().as_secs_f64()
                ));
            });
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_millis(500));
        }
        EmbedderStatus::Missing { name, reason } => {
            missing_ui(
                ui,
                ModelRole::Embedder,
                view.embedder_download,
                view.embedder_spec,
                view.hub,
                (name, reason),
                out,
            );
            ui.weak("Without it every photo is judged, which takes longer on large libraries.");
        }
        EmbedderStatus::Failed { name, reason } => {
            ui.label(format!("{name} could not be loaded:"));
            ui.colored_label(ui.visuals().error_fg_color, reason);
            if ui.button("Try again").clicked() {
                out.push(UiCommand::LoadEmbedder(view.embedder_spec.to_owned()));
            }
        }
    }
    if ui
        .button("Use a local embedder folder…")
        .on_hover_text("A SigLIP or SigLIP 2 folder with config.json, the safetensors weights, tokenizer.json and preprocessor_config.json")
        .clicked()
    {
        out.push(UiCommand::OpenDialog(DialogKind::EmbedderFolder));
    }
}

/// A model that is not on disk: its download under way, or what a download would fetch
/// with the button that starts it.
fn missing_ui(
    ui: &mut egui::Ui,
    role: ModelRole,
    download: Option<&ModelDownload>,
    spec: &str,
    hub: &HubConfig,
    (name, reason): (&str, &str),
    out: &mut Vec<UiCommand>,
) {
    if let Some(download) = download {
        download_progress_ui(ui, download);
        let label = if download.cancelling() {
            "Cancelling…"
        } else {
            "Cancel download"
        };
        if ui
            .add_enabled(!download.cancelling(), egui::Button::new(label))
            .clicked()
        {
            out.push(UiCommand::CancelDownload(role));
        }
    } else if let Ok(ModelSource::Hub { id, .. }) = ModelSource::parse(spec, None) {
        let (default_id, bytes, what) = match role {
            ModelRole::Judge => (DEFAULT_MODEL_ID, DEFAULT_MODEL_BYTES, "model"),
            ModelRole::Embedder => (DEFAULT_EMBEDDER_ID, DEFAULT_EMBEDDER_BYTES, "embedder"),
        };
        let size = if id == default_id {
            format!("{:.1} GB", bytes as f64 / 1e9)
        } else {
            "several GB".to_owned()
        };
        ui.label(format!(
            "The {what} {id} ({size}) will be downloaded once from {} into {}, and works offline after that.",
            hub.endpoint,
            hub.cache.root().display()
        ));
        if ui.button(format!("Download {size}")).clicked() {
            out.push(UiCommand::StartDownload(role));
        }
    } else {
        if !name.is_empty() {
            ui.label(name);
        }
        ui.colored_label(ui.visuals().warn_fg_color, reason);
    }
}

fn download_progress_ui(ui: &mut egui::Ui, download: &ModelDownload) {
    let p = &download.progress;
    let (speed, left) = p.rate.at(p.done_bytes, p.total_bytes);
    let fraction = if p.total_bytes > 0 {
        p.done_bytes as f32 / p.total_bytes as f32
    } else {
        0.0
    };
    ui.label(format!("Downloading {}", download.id));
    ui.add(egui::ProgressBar::new(fraction).show_percentage());
    let mut line = format!(
        "{:.2} of {:.1} GB · {:.1} MB/s",
        p.done_bytes as f64 / 1e9,
        p.total_bytes as f64 / 1e9,
        speed / 1e6
    );
    if let Some(left) = left {
        line.push_str(&format!(" · {} left", duration(left)));
    }
    ui.weak(line);
    if !p.file.is_empty() {
        ui.weak(&p.file);
    }
    ui.ctx()
        .request_repaint_after(std::time::Duration::from_millis(250));
}
