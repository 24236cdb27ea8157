//! Adding photos: drop files and folders anywhere on the window, or use the buttons (which
//! also work where dropping does not, such as Wayland). Shows what was found, what was
//! skipped and why, and lets the user remove a source or start over.

use std::path::PathBuf;

use egui_extras::{Column, TableBuilder};

use super::command::{DialogKind, UiCommand};
use crate::library::Library;

/// Files dropped on the window this frame, as a command: an image dropped on the query
/// image zone becomes the query image; everything else joins the library.
pub fn dropped_files(ctx: &egui::Context, query_zone: Option<egui::Rect>) -> Option<UiCommand> {
    let (dropped, pointer) = ctx.input(|i| {
        let paths: Vec<_> = i
            .raw
            .dropped_files
            .iter()
            .map(|f| f.path().to_path_buf())
            .collect();
        (paths, i.pointer.latest_pos())
    });
    if dropped.is_empty() {
        return None;
    }
    let on_query_zone = match (query_zone, pointer) {
        (Some(zone), Some(p)) => zone.contains(p),
        _ => false,
    };
    if on_query_zone && dropped.len() == 1 && crate::library::scan::is_photo_name(&dropped[0]) {
        return Some(UiCommand::SetQueryImage(dropped.into_iter().next()));
    }
    Some(UiCommand::AddPaths(dropped))
}

/// Dims the window while files are dragged over it.
pub fn drop_overlay_ui(ctx: &egui::Context) {
    let hovering = ctx.input(|i| !i.raw.hovered_files.is_empty());
    if !hovering {
        return;
    }
    let screen = ctx.content_rect();
    let painter = ctx.layer_painter(egui::LayerId::new(
        egui::Order::Foreground,
        egui::Id::unique("drop-overlay"),
    ));
    painter.rect_filled(screen, 0.0, egui::Color32::from_black_alpha(160));
    painter.text(
        screen.center(),
        egui::Align2::CENTER_CENTER,
        "Drop photos or folders to add them\n(on the example-image box: search by that image)",
        egui::FontId::proportional(22.0),
        egui::Color32::WHITE,
    );
}

/// The area at the top of the main panel. `failures` are the photos the current ranking
/// could not score, listed with those the scan skipped.
pub fn upload_ui(
    ui: &mut egui::Ui,
    library: &Library,
    failures: &[(PathBuf, String)],
    out: &mut Vec<UiCommand>,
) {
    if library.is_empty() && !library.scanning() {
        empty_ui(ui, out);
        return;
    }
    ui.horizontal_wrapped(|ui| {
        let folders = library.folders;
        let photos = library.len();
        let mut summary = format!("{photos} photo{}", if photos == 1 { "" } else { "s" });
        if folders > 0 {
            summary.push_str(&format!(
                " in {folders} folder{}",
                if folders == 1 { "" } else { "s" }
            ));
        }
        ui.strong(summary);
        if library.scanning() {
            ui.spinner();
            ui.weak("reading folders…");
        }
        if library.ignored > 0 {
            ui.weak(format!(
                "· {} other files (videos, sidecars) left out",
                library.ignored
            ));
        }
        ui.separator();
        if ui.button("Add photos…").clicked() {
            out.push(UiCommand::OpenDialog(DialogKind::AddPhotos));
        }
        if ui.button("Add folder…").clicked() {
            out.push(UiCommand::OpenDialog(DialogKind::AddFolder));
        }
        if ui
            .button("Clear all")
            .on_hover_text("Forget these photos (nothing on disk changes)")
            .clicked()
        {
            out.push(UiCommand::ClearLibrary);
        }
    });
    if library.len() == 1 {
        ui.weak("Ranking needs several photos: add more to compare them.");
    }
    ui.horizontal_wrapped(|ui| {
        egui::CollapsingHeader::new(format!("Sources ({})", library.sources.len()))
            .id_salt("sources")
            .show(ui, |ui| sources_ui(ui, library, out));
        let skipped = library.skipped.len() + failures.len();
        if skipped > 0 {
            egui::CollapsingHeader::new(format!("Skipped ({skipped})"))
                .id_salt("skipped")
                .show(ui, |ui| {
                    let rows: Vec<&(PathBuf, String)> =
                        library.skipped.iter().chain(failures).collect();
                    skipped_ui(ui, &rows);
                });
        }
    });
}

/// The skipped files, one row each: the file, then why. Only visible rows are laid out.
fn skipped_ui(ui: &mut egui::Ui, rows: &[&(PathBuf, String)]) {
    let row_height = ui.text_style_height(&egui::TextStyle::Body) + 4.0;
    TableBuilder::new(ui)
        .id_salt("skipped-list")
        .striped(true)
        .max_scroll_height(160.0)
        .column(Column::auto().at_most(420.0).clip(true))
        .column(Column::remainder())
        .body(|body| {
            body.rows(row_height, rows.len(), |mut row| {
                let (path, reason) = rows[row.index()];
                row.col(|ui| {
                    ui.label(path.display().to_string())
                        .on_hover_text(path.display().to_string());
                });
                row.col(|ui| {
                    ui.weak(reason);
                });
            });
        });
}

fn sources_ui(ui: &mut egui::Ui, library: &Library, out: &mut Vec<UiCommand>) {
    for (i, source) in library.sources.iter().enumerate() {
        ui.horizontal(|ui| {
            let kind = if source.is_folder { "📁" } else { "🖼" };
            ui.label(format!("{kind} {}", source.path.display()));
            if source.scanning {
                ui.spinner();
            } else {
                ui.weak(format!("{} photos", source.photos));
            }
            if ui.small_button("Remove").clicked() {
                out.push(UiCommand::RemoveSource(i));
            }
        });
    }
}

fn empty_ui(ui: &mut egui::Ui, out: &mut Vec<UiCommand>) {
    let height = (ui.available_height() * 0.5).clamp(160.0, 320.0);
    egui::Frame::group(ui.style())
        .inner_margin(24.0)
        .show(ui, |ui| {
            ui.set_min_size(egui::vec2(ui.available_width(), height));
            ui.vertical_centered(|ui| {
                ui.add_space(height * 0.2);
                ui.heading("Drop photos or folders here");
                ui.add_space(6.0);
                ui.label(
                    "Folders are searched inside, too. Your photos are only read, never changed.",
                );
                ui.add_space(12.0);
                ui.horizontal(|ui| {
                    let w = 260.0;
                    ui.add_space(((ui.available_width() - w) / 2.0).max(0.0));
                    if ui.button("Add photos…").clicked() {
                        out.push(UiCommand::OpenDialog(DialogKind::AddPhotos));
                    }
                    if ui.button("Add folder…").clicked() {
                        out.push(UiCommand::OpenDialog(DialogKind::AddFolder));
                    }
                });
                ui.add_space(6.0);
                ui.weak("JPEG, PNG, WebP, GIF, BMP and TIFF photos");
            });
        });
}
