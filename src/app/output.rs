//! "Show model output": why a photo got its score. The yes and no logits, P(yes), the
//! prompt as the model read it, the sizes, the visual tokens and the time it took.

use super::lychee::{LycheeApp, Outcome};
use crate::model::prompt::display_prompt;

/// The model output window of the photo in `app.inspect`, if any.
pub fn model_output_ui(app: &mut LycheeApp, ctx: &egui::Context) {
    let Some(path) = app.inspect.clone() else {
        return;
    };
    let Some(Outcome::Scored(score)) = app.outcomes.get(&path).cloned() else {
        app.inspect = None;
        return;
    };
    let Some(run) = app.run.as_ref() else { return };
    let prompt = display_prompt(
        &run.instruction,
        &run.query_text,
        run.query_tokens,
        score.visual_tokens,
    );
    let rank = app.ranked().iter().position(|p| *p == path).map(|i| i + 1);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut open = true;
    egui::Window::new(format!("Model output · {name}"))
        .id(egui::Id::unique("model-output"))
        .open(&mut open)
        .default_width(520.0)
        .pivot(egui::Align2::CENTER_CENTER)
        .default_pos(ctx.content_rect().center())
        .resizable(true)
        .show(ctx, |ui| {
            egui::Grid::new("model-output-grid")
                .num_columns(2)
                .striped(true)
                .show(ui, |ui| {
                    let mut row = |label: &str, value: String| {
                        ui.label(label);
                        ui.label(value);
                        ui.end_row();
                    };
                    if let Some(rank) = rank {
                        row("Rank", rank.to_string());
                    }
                    row("Score P(yes)", format!("{:.4}", score.score));
                    row("Logit of \"yes\"", format!("{:.4}", score.logit_yes));
                    row("Logit of \"no\"", format!("{:.4}", score.logit_no));
                    row(
                        "yes − no",
                        format!("{:+.4}", score.logit_yes - score.logit_no),
                    );
                    row("Visual tokens", score.visual_tokens.to_string());
                    row(
                        "Original size",
                        format!("{} × {} px", score.original_size.0, score.original_size.1),
                    );
                    let lowered = if score.lowered_resolution {
                        " (lowered: the GPU ran out of memory at the chosen resolution)"
                    } else {
                        ""
                    };
                    row(
                        "Model input size",
                        format!(
                            "{} × {} px{lowered}",
                            score.input_size.0, score.input_size.1
                        ),
                    );
                    row("Time", format!("{:.0} ms", score.seconds * 1e3));
                    row("File", path.display().to_string());
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
            ui.horizontal(|ui| super::platform::photo_actions_ui(app, ui, &path));
        });
    if !open {
        app.inspect = None;
    }
}
