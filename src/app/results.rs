//! The result grid: three columns, best first, thumbnails in their aspect ratio, "Rank 1 ·
//! Score 0.93" under each, the first place framed. Only the visible rows are laid out, so
//! a library of 10,000 photos scrolls as smoothly as one of ten. Above it, the filters and
//! the ways out (export, copy).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use super::actions::photo_actions_ui;
use super::command::{DialogKind, UiCommand};
use super::run::{FirstStage, Outcome};
use super::state::AppState;
use super::textures::{Thumb, Thumbnails};
use super::view::RankedView;

/// Columns of the grid.
pub const COLUMNS: usize = 3;

/// The filters and the ways out: threshold, top N, export, copy; with a first stage, what
/// it found and "show more".
pub fn toolbar_ui(
    ui: &mut egui::Ui,
    state: &mut AppState,
    view: &RankedView,
    first_stage: Option<&FirstStage>,
    active: bool,
    selected: usize,
    out: &mut Vec<UiCommand>,
) {
    if let Some(first) = first_stage {
        ui.horizontal_wrapped(|ui| {
            let mut line = format!(
                "First stage: {} photos ranked by similarity in {:.0} ms; the judge has the best {}",
                first.order.len(),
                first.seconds * 1e3,
                first.judged
            );
            if !first.unindexed.is_empty() {
                line.push_str(&format!(" · {} not indexed yet", first.unindexed.len()));
            }
            ui.weak(line);
            if first.remaining() > 0 {
                let next = first.remaining().min(first.shortlist);
                let button = egui::Button::new(format!("Show more (judge the next {next})"));
                if ui
                    .add_enabled(!active, button)
                    .on_hover_text("The judge looks at the next photos of the first stage's order")
                    .on_disabled_hover_text("When the judge has finished these")
                    .clicked()
                {
                    out.push(UiCommand::ShowMore);
                }
            }
        });
    }
    ui.horizontal_wrapped(|ui| {
        ui.label("Show scores from");
        ui.add(egui::Slider::new(&mut state.threshold, 0.0..=1.0).fixed_decimals(2))
            .on_hover_text("Hide photos that score lower than this");
        ui.separator();
        ui.label("Best");
        ui.add(
            egui::DragValue::new(&mut state.top_n)
                .range(0..=100_000)
                .speed(1.0),
        )
        .on_hover_text("Show only the best N photos (0 shows all)");
        if state.top_n == 0 {
            ui.weak("(all)");
        }
        ui.separator();
        ui.add_enabled_ui(view.scored > 0, |ui| {
            ui.menu_button("Export…", |ui| {
                if ui.button("Ranking as CSV…").clicked() {
                    out.push(UiCommand::OpenDialog(DialogKind::ExportCsv));
                    ui.close();
                }
                if ui.button("Ranking as JSON…").clicked() {
                    out.push(UiCommand::OpenDialog(DialogKind::ExportJson));
                    ui.close();
                }
            });
            let what = if selected == 0 {
                "Copy shown photos to a folder…".to_owned()
            } else {
                format!("Copy {selected} selected photos to a folder…")
            };
            if ui
                .button(what)
                .on_hover_text("Copies, never moves: your photos stay where they are")
                .clicked()
            {
                out.push(UiCommand::OpenDialog(DialogKind::CopyTo));
            }
        })
        .response
        .on_disabled_hover_text("Rank the photos first");
        if selected > 0 && ui.button("Clear selection").clicked() {
            out.push(UiCommand::ClearSelection);
        }
    });
    if view.hidden > 0 {
        ui.weak(format!(
            "{} scored photos are hidden by the filters",
            view.hidden
        ));
    }
}

/// What the grid reads to caption its tiles.
pub struct GridView<'a> {
    pub view: &'a RankedView,
    pub outcomes: &'a HashMap<PathBuf, Outcome>,
    pub selection: &'a HashSet<PathBuf>,
    pub first_stage: Option<&'a FirstStage>,
    /// Whether there is a ranking (tiles not yet scored say "Waiting…" then).
    pub ranking: bool,
    /// Whether it is under way.
    pub active: bool,
}

/// One tile's content, gathered before drawing.
struct TileInfo {
    path: PathBuf,
    caption: String,
    first: bool,
    scored: bool,
    selected: bool,
}

impl GridView<'_> {
    fn tile(&self, index: usize) -> Option<TileInfo> {
        let path = self.view.get(index)?.clone();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let place = self.first_stage.and_then(|f| f.place(&path));
        let (caption, scored) = match (self.outcomes.get(&path), place) {
            (Some(Outcome::Scored(s)), _) => (
                format!("Rank {} · Score {:.2}\n{name}", index + 1, s.score),
                true,
            ),
            (_, Some((similarity, rank, judged))) => {
                let state = match (judged, self.active) {
                    (true, true) => "waiting for the judge",
                    (true, false) => "not judged",
                    (false, _) => "not judged yet",
                };
                (
                    format!("First guess #{rank} · {similarity:.2} · {state}\n{name}"),
                    false,
                )
            }
            (_, None) if self.first_stage.is_some() => (format!("Not indexed yet\n{name}"), false),
            _ if self.ranking => (format!("Waiting…\n{name}"), false),
            _ => (format!("Not ranked yet\n{name}"), false),
        };
        Some(TileInfo {
            selected: self.selection.contains(&path),
            first: scored && index == 0,
            path,
            caption,
            scored,
        })
    }
}

/// The grid itself.
pub fn grid_ui(
    ui: &mut egui::Ui,
    view: &GridView<'_>,
    thumbs: &mut Thumbnails,
    out: &mut Vec<UiCommand>,
) {
    let rows = view.view.len().div_ceil(COLUMNS);
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
                ui.horizontal(|ui| {
                    for info in (0..COLUMNS).filter_map(|c| view.tile(row * COLUMNS + c)) {
                        let dim = !info.scored && view.ranking;
                        tile_ui(
                            ui,
                            &info,
                            egui::vec2(tile_w, image_h),
                            caption_h,
                            dim,
                            thumbs,
                            out,
                        );
                    }
                });
            }
        });
}

fn tile_ui(
    ui: &mut egui::Ui,
    info: &TileInfo,
    image_size: egui::Vec2,
    caption_h: f32,
    dim: bool,
    thumbs: &mut Thumbnails,
    out: &mut Vec<UiCommand>,
) {
    let size = egui::vec2(image_size.x, image_size.y + caption_h);
    let (rect, response) = ui.allocate_exact_size(size, egui::Sense::click());
    let mut label = info.caption.replace('\n', " · ");
    if !ui.is_rect_visible(rect) {
        response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, &label));
        return;
    }
    let visuals = ui.visuals().clone();
    let image_rect = egui::Rect::from_min_size(rect.min, image_size);
    let painter = ui.painter_at(rect);
    painter.rect_filled(image_rect, 4.0, visuals.extreme_bg_color);
    let mut no_preview = None;
    match thumbs.get(&info.path) {
        Thumb::Ready(texture, tex_size) => {
            let scale = (image_size.x / tex_size.x).min(image_size.y / tex_size.y);
            let shown = tex_size * scale;
            let img_rect = egui::Rect::from_center_size(image_rect.center(), shown);
            painter.image(
                texture.id(),
                img_rect,
                egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
                if dim {
                    egui::Color32::from_gray(150)
                } else {
                    egui::Color32::WHITE
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
            let text = format!("no preview\n{reason}");
            let galley = ui.painter().layout(
                text,
                egui::FontId::proportional(12.0),
                visuals.weak_text_color(),
                image_size.x - 16.0,
            );
            let pos = image_rect.center() - galley.size() / 2.0;
            painter.galley(pos, galley, visuals.weak_text_color());
            no_preview = Some(reason.to_owned());
        }
    }
    if let Some(reason) = &no_preview {
        label.push_str(&format!(" · no preview: {reason}"));
    }
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, &label));
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
            out.push(UiCommand::ToggleSelection(info.path.clone()));
        } else {
            out.push(UiCommand::Inspect(Some(info.path.clone())));
        }
    }
    let mut hover = if info.scored {
        "Click for the model output; Ctrl-click to select".to_owned()
    } else {
        "Ctrl-click to select".to_owned()
    };
    if let Some(reason) = &no_preview {
        hover.push_str(&format!("\nNo preview: {reason}"));
    }
    let response = response.on_hover_text(hover);
    response.context_menu(|ui| {
        if info.scored && ui.button("Show model output").clicked() {
            out.push(UiCommand::Inspect(Some(info.path.clone())));
            ui.close();
        }
        let select = if info.selected { "Unselect" } else { "Select" };
        if ui.button(select).clicked() {
            out.push(UiCommand::ToggleSelection(info.path.clone()));
            ui.close();
        }
        ui.separator();
        photo_actions_ui(ui, &info.path, out);
    });
}
