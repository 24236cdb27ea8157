//! The query sidebar: what to look for (text and/or an example image), the Rerank button,
//! the instruction and resolution under "Advanced", and the model's status below.

use std::path::Path;

use super::command::{DialogKind, UiCommand};
use super::state::{AppState, RESOLUTIONS};
use super::textures::{Thumb, Thumbnails};
use crate::model::{DEFAULT_INSTRUCTION, INSTRUCTION_PRESETS};

/// What the sidebar shows besides the settings it edits.
pub struct SidebarView<'a> {
    pub query_image: Option<&'a Path>,
    /// Why Rerank is off, if it is.
    pub blocked: Option<String>,
}

/// Draws the sidebar's query part; returns where the example-image box was drawn (files
/// dropped there become the query image).
pub fn query_ui(
    ui: &mut egui::Ui,
    state: &mut AppState,
    view: &SidebarView<'_>,
    thumbs: &mut Thumbnails,
    out: &mut Vec<UiCommand>,
) -> egui::Rect {
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
        egui::TextEdit::multiline(&mut state.query)
            .id(box_id)
            .hint_text("a red umbrella on a sunny beach\n雪山脚下骑马的藏族姑娘，红围巾")
            .desired_rows(3)
            .desired_width(f32::INFINITY),
    );
    if enter {
        out.push(UiCommand::StartRanking);
    }
    cjk_hint_ui(ui, &state.query);

    ui.add_space(6.0);
    let drop_zone = query_image_ui(ui, view.query_image, thumbs, out);

    ui.add_space(10.0);
    let blocked = &view.blocked;
    let button = egui::Button::new(egui::RichText::new("Rerank").size(18.0).strong())
        .min_size(egui::vec2(ui.available_width(), 36.0))
        .fill(if blocked.is_none() {
            ui.visuals().selection.bg_fill
        } else {
            ui.visuals().widgets.inactive.bg_fill
        });
    let response = ui.add_enabled(blocked.is_none(), button);
    if let Some(reason) = blocked {
        response.on_disabled_hover_text(reason.clone());
        ui.weak(format!("Rerank is off: {reason}"));
    } else if response
        .on_hover_text("Rank the photos (or press Enter in the box above)")
        .clicked()
    {
        out.push(UiCommand::StartRanking);
    }

    ui.add_space(10.0);
    egui::CollapsingHeader::new("Advanced")
        .id_salt("advanced")
        .show(ui, |ui| advanced_ui(ui, state));
    drop_zone
}

/// Shown when the query has characters no loaded font can draw.
fn cjk_hint_ui(ui: &mut egui::Ui, text: &str) {
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

fn query_image_ui(
    ui: &mut egui::Ui,
    query_image: Option<&Path>,
    thumbs: &mut Thumbnails,
    out: &mut Vec<UiCommand>,
) -> egui::Rect {
    let frame = egui::Frame::group(ui.style()).inner_margin(6.0);
    frame
        .show(ui, |ui| {
            ui.set_min_width(ui.available_width());
            match query_image {
                Some(path) => {
                    ui.horizontal(|ui| {
                        match thumbs.get(path) {
                            Thumb::Ready(texture, size) => {
                                let scale = 64.0 / size.x.max(size.y);
                                ui.image((texture.id(), size * scale));
                            }
                            Thumb::Pending => {
                                ui.spinner();
                            }
                            Thumb::Failed(reason) => {
                                ui.weak("no preview").on_hover_text(reason);
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
                                out.push(UiCommand::SetQueryImage(None));
                            }
                        });
                    });
                }
                None => {
                    ui.weak("Optional: drop an example image here to search by it");
                    if ui.small_button("Choose image…").clicked() {
                        out.push(UiCommand::OpenDialog(DialogKind::QueryImage));
                    }
                }
            }
        })
        .response
        .rect
}

fn advanced_ui(ui: &mut egui::Ui, state: &mut AppState) {
    ui.label("Instruction to the model");
    ui.add(
        egui::TextEdit::multiline(&mut state.instruction)
            .desired_rows(2)
            .desired_width(f32::INFINITY),
    );
    ui.horizontal(|ui| {
        egui::ComboBox::from_id_salt("instruction-presets")
            .selected_text("Presets")
            .show_ui(ui, |ui| {
                for (label, text) in INSTRUCTION_PRESETS {
                    if ui
                        .selectable_label(state.instruction == *text, *label)
                        .clicked()
                    {
                        state.instruction = (*text).to_owned();
                    }
                }
            });
        if ui
            .add_enabled(
                state.instruction != DEFAULT_INSTRUCTION,
                egui::Button::new("Reset"),
            )
            .clicked()
        {
            state.instruction = DEFAULT_INSTRUCTION.to_owned();
        }
    });
    ui.add_space(6.0);
    ui.label("Detail per photo (visual tokens)");
    ui.horizontal(|ui| {
        for tokens in RESOLUTIONS {
            ui.radio_value(&mut state.resolution, tokens, tokens.to_string());
        }
    });
    ui.weak("Fewer is faster; 1280 is what the model was tuned with.");
    ui.add_space(6.0);
    ui.horizontal(|ui| {
        ui.label("Judge the best");
        ui.add(
            egui::DragValue::new(&mut state.shortlist)
                .range(0..=1_000_000)
                .speed(10.0),
        )
        .on_hover_text("The index ranks every photo in milliseconds; the model then judges this many of the best. 0 judges every photo.");
        ui.label(if state.shortlist == 0 { "(every photo)" } else { "photos" });
    });
    ui.weak("With the index, photos appear at once and the judge re-sorts the best.");
    ui.add_space(6.0);
    ui.checkbox(&mut state.remember_scores, "Remember scores")
        .on_hover_text(
            "Keep every score on this computer, so that the same search over the same photos is instant next time and only new or changed photos are judged.",
        );
}
