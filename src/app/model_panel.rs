//! The model's status at the foot of the sidebar: which model, from where, on which device,
//! how much memory; a download with size, speed and progress when it is not there yet; a
//! reason and "Try again" when it failed; "Use a local folder…" always.

use super::command::{DialogKind, UiCommand};
use super::progress::duration;
use super::session::ModelStatus;
use crate::hub::download::{HubConfig, ModelDownload};
use crate::hub::{DEFAULT_MODEL_BYTES, DEFAULT_MODEL_ID, ModelSource};

/// What the model panel shows.
pub struct ModelView<'a> {
    pub status: &'a ModelStatus,
    pub download: Option<&'a ModelDownload>,
    /// The model the settings name (a folder or a Hub id).
    pub spec: &'a str,
    pub hub: &'a HubConfig,
}

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
        ModelStatus::Missing { name, reason } => {
            if let Some(download) = view.download {
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
                    out.push(UiCommand::CancelDownload);
                }
            } else if let Ok(ModelSource::Hub { id, .. }) = ModelSource::parse(view.spec, None) {
                let size = if id == DEFAULT_MODEL_ID {
                    format!("{:.1} GB", DEFAULT_MODEL_BYTES as f64 / 1e9)
                } else {
                    "several GB".to_owned()
                };
                ui.label(format!(
                    "The model {id} ({size}) will be downloaded once from {} into {}, and works offline after that.",
                    view.hub.endpoint,
                    view.hub.cache.root().display()
                ));
                if ui.button(format!("Download {size}")).clicked() {
                    out.push(UiCommand::StartDownload);
                }
            } else {
                if !name.is_empty() {
                    ui.label(name);
                }
                ui.colored_label(ui.visuals().warn_fg_color, reason);
            }
        }
        ModelStatus::Failed { name, reason } => {
            ui.label(format!("{name} could not be loaded:"));
            ui.colored_label(ui.visuals().error_fg_color, reason);
            if ui.button("Try again").clicked() {
                out.push(UiCommand::LoadModel(view.spec.to_owned()));
            }
        }
    }
    ui.add_space(4.0);
    if ui
        .button("Use a local folder…")
        .on_hover_text("A folder with config.json, the safetensors weights, the tokenizer and preprocessor_config.json")
        .clicked()
    {
        out.push(UiCommand::OpenDialog(DialogKind::ModelFolder));
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
