//! "Show model output": why a photo got its score. The yes and no logits, P(yes), the
//! prompt as the model read it, the sizes, the visual tokens and the time it took.

use std::path::Path;

use egui_extras::{Column, TableBuilder};

use super::actions::photo_actions_ui;
use super::command::UiCommand;
use super::run::Run;
use crate::model::prompt::display_prompt;
use crate::worker::PhotoScore;

/// What the model output window shows: one scored photo of a ranking.
pub struct OutputView<'a> {
    pub path: &'a Path,
    pub score: &'a PhotoScore,
    pub run: &'a Run,
    /// Its place in the grid, if shown there.
    pub rank: Option<usize>,
    /// Its similarity and rank in the first stage, when there was one.
    pub first_stage: Option<(f32, usize, bool)>,
}

/// The model output window; pushes `Inspect(None)` when the user closes it.
pub fn model_output_ui(ctx: &egui::Context, view: &OutputView<'_>, out: &mut Vec<UiCommand>) {
    let (path, score, run) = (view.path, view.score, view.run);
    let prompt = display_prompt(
        &run.instruction,
        &run.query_text,
        run.query_tokens,
        score.visual_tokens,
    );
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut rows: Vec<(&str, String)> = Vec::new();
    if let Some(rank) = view.rank {
        rows.push(("Rank", rank.to_string()));
    }
    if let Some((similarity, rank, _)) = view.first_stage {
        rows.push(("First-stage rank", rank.to_string()));
        rows.push(("First-stage similarity", format!("{similarity:.4}")));
    }
    rows.push(("Score P(yes)", format!("{:.4}", score.score)));
    rows.push(("Logit of \"yes\"", format!("{:.4}", score.logit_yes)));
    rows.push(("Logit of \"no\"", format!("{:.4}", score.logit_no)));
    rows.push((
        "yes − no",
        format!("{:+.4}", score.logit_yes - score.logit_no),
    ));
    rows.push(("Visual tokens", score.visual_tokens.to_string()));
    rows.push((
        "Original size",
        format!("{} × {} px", score.original_size.0, score.original_size.1),
    ));
    let lowered = if score.lowered_resolution {
        " (lowered: the GPU ran out of memory at the chosen resolution)"
    } else {
        ""
    };
    rows.push((
        "Model input size",
        format!(
            "{} × {} px{lowered}",
            score.input_size.0, score.input_size.1
        ),
    ));
    rows.push(("Time", format!("{:.0} ms", score.seconds * 1e3)));
    rows.push(("File", path.display().to_string()));

    let mut open = true;
    egui::Window::new(format!("Model output · {name}"))
        .id(egui::Id::unique("model-output"))
        .open(&mut open)
        .default_width(520.0)
        .pivot(egui::Align2::CENTER_CENTER)
        .default_pos(ctx.content_rect().center())
        .resizable(true)
        .show(ctx, |ui| {
            let row_height = ui.text_style_height(&egui::TextStyle::Body) + 4.0;
            TableBuilder::new(ui)
                .id_salt("model-output-table")
                .striped(true)
                .vscroll(false)
                .column(Column::auto().at_least(120.0))
                .column(Column::remainder())
                .body(|mut body| {
                    for (label, value) in &rows {
                        body.row(row_height, |mut row| {
                            row.col(|ui| {
                                ui.label(*label);
                            });
                            row.col(|ui| {
                                ui.label(value);
                            });
                        });
                    }
                });
            ui.add_space(6.0);
            ui.label("The prompt as the model read it:");
            egui::ScrollArea::vertical()
                .max_height(220.0)
                .show(ui, |ui| {
                    let mut text = prompt.as_str();
                    ui.add(
                        egui::TextEdit::multiline(&mut text)
                            .font(egui::TextStyle::Monospace)
                            .desired_width(f32::INFINITY),
                    );
                });
            ui.add_space(6.0);
            ui.horizontal(|ui| photo_actions_ui(ui, path, out));
        });
    if !open {
        out.push(UiCommand::Inspect(None));
    }
}
