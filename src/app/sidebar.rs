//! The query sidebar: what to look for (text and/or an example image), the Rerank button,
//! the instruction and resolution under "Advanced", and the model's status.

use super::dialogs::DialogKind;
use super::lychee::{LycheeApp, ModelStatus};
use super::state::RESOLUTIONS;
use super::textures::Thumb;
use crate::model::{DEFAULT_INSTRUCTION, INSTRUCTION_PRESETS};

pub fn sidebar_ui(app: &mut LycheeApp, ui: &mut egui::Ui) {
    ui.add_space(8.0);
    ui.heading("Lychee Rerank");
    ui.weak("Put photos in order of how well they match a description.");
    ui.add_space(10.0);

    ui.label("Describe the photo");
    let box_id = egui::Id::unique("query-box");
    // Enter starts the ranking; Shift+Enter makes a new line.
    let enter = ui.memory(|m| m.has_focus(box_id))
        && ui.input_mut(|i| i.consume_key(egui::Modifiers::NONE, egui::Key::Enter));
    ui.add(
        egui::TextEdit::multiline(&mut app.state.query)
            .id(box_id)
            .hint_text("a red umbrella on a sunny beach\n雪山脚下骑马的藏族姑娘，红围巾")
            .desired_rows(3)
            .desired_width(f32::INFINITY),
    );
    if enter {
        app.start_ranking();
    }
    cjk_hint_ui(app, ui);

    ui.add_space(6.0);
    query_image_ui(app, ui);

    ui.add_space(10.0);
    let blocked = app.cannot_rank_because();
    let button = egui::Button::new(egui::RichText::new("Rerank").size(18.0).strong())
        .min_size(egui::vec2(ui.available_width(), 36.0))
        .fill(if blocked.is_none() {
            ui.visuals().selection.bg_fill
        } else {
            ui.visuals().widgets.inactive.bg_fill
        });
    let response = ui.add_enabled(blocked.is_none(), button);
    if let Some(reason) = &blocked {
        response.on_disabled_hover_text(reason.clone());
        ui.weak(format!("Rerank is off: {reason}"));
    } else if response
        .on_hover_text("Rank every photo (or press Enter in the box above)")
        .clicked()
    {
        app.start_ranking();
    }

    ui.add_space(10.0);
    egui::CollapsingHeader::new("Advanced")
        .id_salt("advanced")
        .show(ui, |ui| advanced_ui(app, ui));
    ui.add_space(10.0);
    ui.separator();
    model_ui(app, ui);
}

/// Shown when the query has characters no loaded font can draw.
fn cjk_hint_ui(app: &LycheeApp, ui: &mut egui::Ui) {
    let text = &app.state.query;
    if text.is_ascii() {
        return;
    }
    let font = egui::TextStyle::Body.resolve(ui.style());
    let drawable = ui.fonts_mut(|f| f.has_glyphs(&font, text));
    if !drawable {
        ui.colored_label(
            ui.visuals().warn_fg_color,
            "Some characters have no font on this system (install a CJK font, e.g. Noto Sans CJK); the search still works.",
        );
    }
}

fn query_image_ui(app: &mut LycheeApp, ui: &mut egui::Ui) {
    let frame = egui::Frame::group(ui.style()).inner_margin(6.0);
    let response = frame
        .show(ui, |ui| {
            ui.set_min_width(ui.available_width());
            match app.query_image.clone() {
                Some(path) => {
                    ui.horizontal(|ui| {
                        match app.thumbs.get(&path) {
                            Thumb::Ready(texture, size) => {
                                let scale = 64.0 / size.x.max(size.y);
                                ui.image((texture.id(), size * scale));
                            }
                            _ => {
                                ui.spinner();
                            }
                        }
                        ui.vertical(|ui| {
                            ui.label("Searching by this example image");
                            ui.weak(
                                path.file_name()
                                    .map(|n| n.to_string_lossy().into_owned())
                                    .unwrap_or_default(),
                            );
                            if ui.small_button("Remove").clicked() {
                                app.query_image = None;
                            }
                        });
                    });
                }
                None => {
                    ui.weak("Optional: drop an example image here to search by it");
                    if ui.small_button("Choose image…").clicked() {
                        app.dialog(DialogKind::QueryImage);
                    }
                }
            }
        })
        .response;
    app.query_drop_zone = Some(response.rect);
}

fn advanced_ui(app: &mut LycheeApp, ui: &mut egui::Ui) {
    ui.label("Instruction to the model");
    ui.add(
        egui::TextEdit::multiline(&mut app.state.instruction)
            .desired_rows(2)
            .desired_width(f32::INFINITY),
    );
    ui.horizontal(|ui| {
        egui::ComboBox::from_id_salt("instruction-presets")
            .selected_text("Presets")
            .show_ui(ui, |ui| {
                for (label, text) in INSTRUCTION_PRESETS {
                    if ui
                        .selectable_label(app.state.instruction == *text, *label)
                        .clicked()
                    {
                        app.state.instruction = (*text).to_owned();
                    }
                }
            });
        if ui
            .add_enabled(
                app.state.instruction != DEFAULT_INSTRUCTION,
                egui::Button::new("Reset"),
            )
            .clicked()
        {
            app.state.instruction = DEFAULT_INSTRUCTION.to_owned();
        }
    });
    ui.add_space(6.0);
    ui.label("Detail per photo (visual tokens)");
    ui.horizontal(|ui| {
        for tokens in RESOLUTIONS {
            ui.radio_value(&mut app.state.resolution, tokens, tokens.to_string());
        }
    });
    ui.weak("Fewer is faster; 1280 is what the model was tuned with.");
    ui.add_space(6.0);
    ui.checkbox(&mut app.state.remember_scores, "Remember scores")
        .on_hover_text(
            "Keep every score on this computer, so that the same search over the same photos is instant next time and only new or changed photos are judged.",
        );
}

fn model_ui(app: &mut LycheeApp, ui: &mut egui::Ui) {
    ui.strong("Model");
    match app.model.clone() {
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
            if let Some(download) = &app.download {
                download_progress_ui(ui, download);
                if ui.button("Cancel download").clicked() {
                    download
                        .cancel
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                }
            } else if let Ok(crate::hub::ModelSource::Hub { id, .. }) =
                crate::hub::ModelSource::parse(&app.state.model, None)
            {
                let size = if id == crate::hub::DEFAULT_MODEL_ID {
                    format!("{:.1} GB", crate::hub::DEFAULT_MODEL_BYTES as f64 / 1e9)
                } else {
                    "several GB".to_owned()
                };
                let config = &app.hub;
                ui.label(format!(
                    "The model {id} ({size}) will be downloaded once from {} into {}, and works offline after that.",
                    config.endpoint,
                    config.cache.root().display()
                ));
                if ui.button(format!("Download {size}")).clicked() {
                    app.start_download();
                }
            } else {
                if !name.is_empty() {
                    ui.label(&name);
                }
                ui.colored_label(ui.visuals().warn_fg_color, &reason);
            }
        }
        ModelStatus::Failed { name, reason } => {
            ui.label(format!("{name} could not be loaded:"));
            ui.colored_label(ui.visuals().error_fg_color, &reason);
            if ui.button("Try again").clicked() {
                let spec = app.state.model.clone();
                app.load_model(spec);
            }
        }
    }
    ui.add_space(4.0);
    if ui
        .button("Use a local folder…")
        .on_hover_text("A folder with config.json, the safetensors weights, the tokenizer and preprocessor_config.json")
        .clicked()
    {
        app.dialog(DialogKind::ModelFolder);
    }
}

fn download_progress_ui(ui: &mut egui::Ui, download: &super::lychee::Download) {
    let (speed, left) = download.rate.at(download.done_bytes, download.total_bytes);
    let fraction = if download.total_bytes > 0 {
        download.done_bytes as f32 / download.total_bytes as f32
    } else {
        0.0
    };
    ui.label(format!("Downloading {}", download.id));
    ui.add(egui::ProgressBar::new(fraction).show_percentage());
    let mut line = format!(
        "{:.2} of {:.1} GB · {:.1} MB/s",
        download.done_bytes as f64 / 1e9,
        download.total_bytes as f64 / 1e9,
        speed / 1e6
    );
    if let Some(left) = left {
        line.push_str(&format!(" · {} left", super::progress::duration(left)));
    }
    ui.weak(line);
    if !download.file.is_empty() {
        ui.weak(&download.file);
    }
    ui.ctx()
        .request_repaint_after(std::time::Duration::from_millis(250));
}
