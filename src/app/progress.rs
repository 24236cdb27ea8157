//! The ranking's progress: "Analyzing photo 3 of 12 · name.jpg", speed, time left, Cancel,
//! and how the last ranking ended.

use super::command::UiCommand;
use super::run::{Run, RunEnd};

pub fn progress_ui(ui: &mut egui::Ui, run: &Run, out: &mut Vec<UiCommand>) {
    let total = run.photos.len();
    let handled = run.done + run.failed;
    match &run.end {
        None => {
            let current = run
                .current
                .and_then(|i| run.photos.get(i))
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned());
            let position = (handled + 1).min(total);
            let text = match current {
                _ if run.searching() => "Finding candidates in the index…".to_owned(),
                Some(name) => format!("Analyzing photo {position} of {total} · {name}"),
                None if handled == 0 && run.waiting_for_model => {
                    "Waiting for the model to finish loading…".to_owned()
                }
                None if handled == 0 => "Preparing the query…".to_owned(),
                None => format!("Analyzing photo {position} of {total}"),
            };
            let fraction = if total > 0 {
                handled as f32 / total as f32
            } else {
                0.0
            };
            let rate = run.rate();
            let stopping = run.stopping();
            ui.horizontal(|ui| {
                ui.add(
                    egui::ProgressBar::new(fraction)
                        .text(text)
                        .desired_width(ui.available_width() - 110.0),
                );
                let label = if stopping { "Stopping…" } else { "Cancel" };
                if ui
                    .add_enabled(!stopping, egui::Button::new(label))
                    .clicked()
                {
                    out.push(UiCommand::CancelRanking);
                }
            });
            if rate > 0.0 && handled > 0 {
                let left = (total - handled) as f64 / rate;
                ui.weak(format!(
                    "{rate:.1} photos per second · about {} left",
                    duration(left)
                ));
            }
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_millis(250));
        }
        Some(RunEnd::Finished { seconds }) => {
            let mut text = format!("Ranked {} photos in {}", run.done, duration(*seconds));
            if run.failed > 0 {
                text.push_str(&format!(
                    " · {} could not be scored (listed under Skipped)",
                    run.failed
                ));
            }
            ui.label(text);
        }
        Some(RunEnd::Cancelled { .. }) => {
            ui.label(format!(
                "Stopped after {handled} of {total} photos; the {} scores so far are kept",
                run.done
            ));
        }
        Some(RunEnd::Failed(reason)) => {
            ui.colored_label(
                ui.visuals().error_fg_color,
                format!("The ranking stopped: {reason}"),
            );
            if run.done > 0 {
                ui.label(format!("The {} scores computed before are kept.", run.done));
            }
        }
    }
}

/// "12 s", "3 min 20 s", "1 h 5 min".
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}
