//! The three things every photo offers, in its context menu and its model output.

use std::path::Path;

use super::command::{PhotoAction, UiCommand};

/// "Open photo", "Show in folder", "Copy path".
pub fn photo_actions_ui(ui: &mut egui::Ui, path: &Path, out: &mut Vec<UiCommand>) {
    for (label, action) in [
        ("Open photo", PhotoAction::Open),
        ("Show in folder", PhotoAction::ShowInFolder),
        ("Copy path", PhotoAction::CopyPath),
    ] {
        if ui.button(label).clicked() {
            out.push(UiCommand::Photo(action, path.to_path_buf()));
            ui.close();
        }
    }
}
