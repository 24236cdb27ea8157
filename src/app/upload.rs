//! Adding photos: drop files and folders anywhere on the window, or use the buttons (which
//! also work where dropping does not, such as Wayland). Shows what was found, what was
//! skipped and why, and lets the user remove a source or start over.

use super::dialogs::DialogKind;
use super::lychee::{LycheeApp, Outcome};

/// Takes in files dropped on the window: an image dropped on the query image zone becomes
/// the query image; everything else joins the library.
pub fn handle_drops(app: &mut LycheeApp, ctx: &egui::Context) {
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
        return;
    }
    let on_query_zone = match (app.query_drop_zone, pointer) {
        (Some(zone), Some(p)) => zone.contains(p),
        _ => false,
    };
    if on_query_zone && dropped.len() == 1 && crate::library::scan::is_photo_name(&dropped[0]) {
        app.query_image = dropped.into_iter().next();
        return;
    }
    app.add_paths(dropped);
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

/// The area at the top of the main panel.
pub fn upload_ui(app: &mut LycheeApp, ui: &mut egui::Ui) {
    if app.library.is_empty() && !app.library.scanning() {
        empty_ui(app, ui);
        return;
    }
    ui.horizontal_wrapped(|ui| {
        let folders = app.library.folders;
        let photos = app.library.len();
        let mut summary = format!("{photos} photo{}", if photos == 1 { "" } else { "s" });
        if folders > 0 {
            summary.push_str(&format!(
                " in {folders} folder{}",
                if folders == 1 { "" } else { "s" }
            ));
        }
        ui.strong(summary);
        if app.library.scanning() {
            ui.spinner();
            ui.weak("reading folders…");
        }
        if app.library.ignored > 0 {
            ui.weak(format!(
                "· {} other files (videos, sidecars) left out",
                app.library.ignored
            ));
        }
        ui.separator();
        if ui.button("Add photos…").clicked() {
            app.dialog(DialogKind::AddPhotos);
        }
        if ui.button("Add folder…").clicked() {
            app.dialog(DialogKind::AddFolder);
        }
        if ui
            .button("Clear all")
            .on_hover_text("Forget these photos (nothing on disk changes)")
            .clicked()
        {
            app.library.clear();
            app.thumbs.clear();
            app.outcomes.clear();
            app.selection.clear();
            app.run = None;
            app.view.invalidate();
        }
    });
    if app.library.len() == 1 {
        ui.weak("Ranking needs several photos: add more to compare them.");
    }
    ui.horizontal_wrapped(|ui| {
        egui::CollapsingHeader::new(format!("Sources ({})", app.library.sources.len()))
            .id_salt("sources")
            .show(ui, |ui| sources_ui(app, ui));
        let failed: Vec<(std::path::PathBuf, String)> = app
            .outcomes
            .iter()
            .filter_map(|(p, o)| match o {
                Outcome::Failed(r) => Some((p.clone(), r.clone())),
                _ => None,
            })
            .collect();
        let skipped = app.library.skipped.len() + failed.len();
        if skipped > 0 {
            egui::CollapsingHeader::new(format!("Skipped ({skipped})"))
                .id_salt("skipped")
                .show(ui, |ui| {
                    egui::ScrollArea::vertical()
                        .max_height(160.0)
                        .id_salt("skipped-list")
                        .show(ui, |ui| {
                            for (path, reason) in app.library.skipped.iter().chain(failed.iter()) {
                                ui.horizontal(|ui| {
                                    ui.label(path.display().to_string());
                                    ui.weak(reason);
                                });
                            }
                        });
                });
        }
    });
}

fn sources_ui(app: &mut LycheeApp, ui: &mut egui::Ui) {
    let mut remove = None;
    for (i, source) in app.library.sources.iter().enumerate() {
        ui.horizontal(|ui| {
            let kind = if source.is_folder { "📁" } else { "🖼" };
            ui.label(format!("{kind} {}", source.path.display()));
            if source.scanning {
                ui.spinner();
            } else {
                ui.weak(format!("{} photos", source.photos));
            }
            if ui.small_button("Remove").clicked() {
                remove = Some(i);
            }
        });
    }
    if let Some(i) = remove {
        app.library.remove(i);
        app.view.invalidate();
    }
}

fn empty_ui(app: &mut LycheeApp, ui: &mut egui::Ui) {
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
                        app.dialog(DialogKind::AddPhotos);
                    }
                    if ui.button("Add folder…").clicked() {
                        app.dialog(DialogKind::AddFolder);
                    }
                });
                ui.add_space(6.0);
                ui.weak("JPEG, PNG, WebP, GIF, BMP and TIFF photos");
            });
        });
}
