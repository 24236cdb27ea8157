//! The result grid: three columns, best first, thumbnails in their aspect ratio, "Rank 1 ·
//! Score 0.93" under each, the first place framed. Only the visible rows are laid out, so
//! a library of 10,000 photos scrolls as smoothly as one of ten.

use std::path::PathBuf;

use super::dialogs::DialogKind;
use super::lychee::{LycheeApp, Outcome};
use super::textures::Thumb;

/// Columns of the grid.
pub const COLUMNS: usize = 3;

/// The order the grid shows, recomputed only when outcomes, photos or filters change.
#[derive(Debug, Default)]
pub struct RankedView {
    dirty: bool,
    key: Option<(u32, usize, u64, bool)>,
    order: Vec<PathBuf>,
    /// Scored photos before filtering.
    pub scored: usize,
    /// Scored photos the filters hide.
    pub hidden: usize,
}

impl RankedView {
    pub fn invalidate(&mut self) {
        self.dirty = true;
    }
}

impl LycheeApp {
    /// What the grid shows, in order: scored photos best first (filtered), then, while a
    /// ranking runs, the photos still waiting; before any ranking, the library in order.
    pub fn ranked(&mut self) -> &[PathBuf] {
        let active = self.run.as_ref().is_some_and(|r| r.active());
        let key = (
            self.state.threshold.to_bits(),
            self.state.top_n,
            self.library.generation,
            active,
        );
        if self.view.dirty || self.view.key != Some(key) {
            self.view.dirty = false;
            self.view.key = Some(key);
            self.view.order = self.compute_order(active);
        }
        &self.view.order
    }

    fn compute_order(&mut self, active: bool) -> Vec<PathBuf> {
        let Some(run) = &self.run else {
            self.view.scored = 0;
            self.view.hidden = 0;
            return self.library.photos.clone();
        };
        let mut scored: Vec<(f64, &PathBuf)> = self
            .outcomes
            .iter()
            .filter_map(|(p, o)| match o {
                Outcome::Scored(s) if self.library.contains(p) => Some((s.score, p)),
                _ => None,
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        self.view.scored = scored.len();
        let threshold = f64::from(self.state.threshold);
        let limit = if self.state.top_n == 0 {
            usize::MAX
        } else {
            self.state.top_n
        };
        let mut order: Vec<PathBuf> = scored
            .iter()
            .filter(|(s, _)| *s >= threshold)
            .take(limit)
            .map(|(_, p)| (*p).clone())
            .collect();
        self.view.hidden = scored.len() - order.len();
        if active {
            order.extend(
                run.photos
                    .iter()
                    .filter(|p| !self.outcomes.contains_key(*p) && self.library.contains(p))
                    .cloned(),
            );
        }
        order
    }
}

/// The filters and the ways out: threshold, top N, export, copy.
pub fn toolbar_ui(app: &mut LycheeApp, ui: &mut egui::Ui) {
    ui.horizontal_wrapped(|ui| {
        ui.label("Show scores from");
        ui.add(egui::Slider::new(&mut app.state.threshold, 0.0..=1.0).fixed_decimals(2))
            .on_hover_text("Hide photos that score lower than this");
        ui.separator();
        ui.label("Best");
        ui.add(
            egui::DragValue::new(&mut app.state.top_n)
                .range(0..=100_000)
                .speed(1.0),
        )
        .on_hover_text("Show only the best N photos (0 shows all)");
        if app.state.top_n == 0 {
            ui.weak("(all)");
        }
        ui.separator();
        let has_scores = app.view.scored > 0;
        ui.add_enabled_ui(has_scores, |ui| {
            ui.menu_button("Export…", |ui| {
                if ui.button("Ranking as CSV…").clicked() {
                    app.dialog(DialogKind::ExportCsv);
                    ui.close();
                }
                if ui.button("Ranking as JSON…").clicked() {
                    app.dialog(DialogKind::ExportJson);
                    ui.close();
                }
            });
            let what = if app.selection.is_empty() {
                "Copy shown photos to a folder…".to_owned()
            } else {
                format!("Copy {} selected photos to a folder…", app.selection.len())
            };
            if ui
                .button(what)
                .on_hover_text("Copies, never moves: your photos stay where they are")
                .clicked()
            {
                app.dialog(DialogKind::CopyTo);
            }
        })
        .response
        .on_disabled_hover_text("Rank the photos first");
        if !app.selection.is_empty() && ui.button("Clear selection").clicked() {
            app.selection.clear();
        }
    });
    if app.view.hidden > 0 {
        ui.weak(format!(
            "{} scored photos are hidden by the filters",
            app.view.hidden
        ));
    }
}

/// One tile's content, gathered before drawing.
struct TileInfo {
    path: PathBuf,
    caption: String,
    first: bool,
    scored: bool,
    selected: bool,
}

/// The grid itself.
pub fn grid_ui(app: &mut LycheeApp, ui: &mut egui::Ui) {
    let order_len = app.ranked().len();
    let rows = order_len.div_ceil(COLUMNS);
    let spacing = ui.spacing().item_spacing.x;
    let width = ui.available_width().max(240.0);
    let tile_w = ((width - spacing * (COLUMNS as f32 - 1.0)) / COLUMNS as f32)
        .floor()
        .max(60.0);
    let image_h = (tile_w * 0.75).floor();
    let caption_h = ui.text_style_height(&egui::TextStyle::Body) * 2.0 + 6.0;
    let row_h = image_h + caption_h;
    egui::ScrollArea::vertical()
        .auto_shrink([false, false])
        .id_salt("result-grid")
        .show_rows(ui, row_h, rows, |ui, range| {
            for row in range {
                let infos: Vec<TileInfo> = (0..COLUMNS)
                    .filter_map(|c| app.view_order_get(row * COLUMNS + c))
                    .map(|(i, path)| app.tile_info(i, path))
                    .collect();
                ui.horizontal(|ui| {
                    for info in infos {
                        tile_ui(app, ui, &info, egui::vec2(tile_w, image_h), caption_h);
                    }
                });
            }
        });
}

impl LycheeApp {
    fn view_order_get(&self, i: usize) -> Option<(usize, PathBuf)> {
        self.view.order.get(i).map(|p| (i, p.clone()))
    }

    fn tile_info(&self, index: usize, path: PathBuf) -> TileInfo {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (caption, scored, first) = match self.outcomes.get(&path) {
            Some(Outcome::Scored(s)) => (
                format!("Rank {} · Score {:.2}\n{name}", index + 1, s.score),
                true,
                index == 0,
            ),
            _ if self.run.is_some() => (format!("Waiting…\n{name}"), false, false),
            _ => (format!("Not ranked yet\n{name}"), false, false),
        };
        TileInfo {
            selected: self.selection.contains(&path),
            path,
            caption,
            first,
            scored,
        }
    }
}

fn tile_ui(
    app: &mut LycheeApp,
    ui: &mut egui::Ui,
    info: &TileInfo,
    image_size: egui::Vec2,
    caption_h: f32,
) {
    let size = egui::vec2(image_size.x, image_size.y + caption_h);
    let (rect, response) = ui.allocate_exact_size(size, egui::Sense::click());
    let label = info.caption.replace('\n', " · ");
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, &label));
    if !ui.is_rect_visible(rect) {
        return;
    }
    let visuals = ui.visuals().clone();
    let image_rect = egui::Rect::from_min_size(rect.min, image_size);
    let painter = ui.painter_at(rect);
    painter.rect_filled(image_rect, 4.0, visuals.extreme_bg_color);
    match app.thumbs.get(&info.path) {
        Thumb::Ready(texture, tex_size) => {
            let scale = (image_size.x / tex_size.x).min(image_size.y / tex_size.y);
            let shown = tex_size * scale;
            let img_rect = egui::Rect::from_center_size(image_rect.center(), shown);
            painter.image(
                texture.id(),
                img_rect,
                egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
                if info.scored || app.run.is_none() {
                    egui::Color32::WHITE
                } else {
                    egui::Color32::from_gray(150)
                },
            );
        }
        Thumb::Pending => {
            painter.text(
                image_rect.center(),
                egui::Align2::CENTER_CENTER,
                "…",
                egui::FontId::proportional(24.0),
                visuals.weak_text_color(),
            );
        }
        Thumb::Failed(reason) => {
            painter.text(
                image_rect.center(),
                egui::Align2::CENTER_CENTER,
                "no preview",
                egui::FontId::proportional(13.0),
                visuals.weak_text_color(),
            );
            let _ = reason;
        }
    }
    if info.first {
        painter.rect_stroke(
            image_rect.shrink(1.0),
            4.0,
            egui::Stroke::new(3.0, visuals.selection.bg_fill),
            egui::StrokeKind::Inside,
        );
    }
    if info.selected {
        painter.rect_stroke(
            image_rect,
            4.0,
            egui::Stroke::new(2.0, visuals.hyperlink_color),
            egui::StrokeKind::Inside,
        );
        painter.circle_filled(
            image_rect.right_top() + egui::vec2(-14.0, 14.0),
            9.0,
            visuals.hyperlink_color,
        );
        painter.text(
            image_rect.right_top() + egui::vec2(-14.0, 14.0),
            egui::Align2::CENTER_CENTER,
            "✔",
            egui::FontId::proportional(12.0),
            egui::Color32::WHITE,
        );
    }
    if response.hovered() {
        painter.rect_stroke(
            image_rect,
            4.0,
            visuals.widgets.hovered.bg_stroke,
            egui::StrokeKind::Inside,
        );
    }
    let caption_pos = egui::pos2(rect.min.x + 2.0, image_rect.max.y + 3.0);
    let galley = ui.painter().layout(
        info.caption.clone(),
        egui::FontId::proportional(13.0),
        if info.scored {
            visuals.strong_text_color()
        } else {
            visuals.weak_text_color()
        },
        image_size.x - 4.0,
    );
    painter.galley(caption_pos, galley, visuals.text_color());

    let toggle = ui.input(|i| i.modifiers.command || i.modifiers.shift);
    if response.clicked() {
        if toggle || !info.scored {
            toggle_selection(app, &info.path);
        } else {
            app.inspect = Some(info.path.clone());
        }
    }
    let hover = if info.scored {
        "Click for the model output; Ctrl-click to select"
    } else {
        "Ctrl-click to select"
    };
    let response = response.on_hover_text(hover);
    response.context_menu(|ui| {
        if info.scored && ui.button("Show model output").clicked() {
            app.inspect = Some(info.path.clone());
            ui.close();
        }
        let select = if info.selected { "Unselect" } else { "Select" };
        if ui.button(select).clicked() {
            toggle_selection(app, &info.path);
            ui.close();
        }
        ui.separator();
        super::platform::photo_actions_ui(app, ui, &info.path);
    });
}

fn toggle_selection(app: &mut LycheeApp, path: &std::path::Path) {
    if !app.selection.remove(path) {
        app.selection.insert(path.to_path_buf());
    }
}
