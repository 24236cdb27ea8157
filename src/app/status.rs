//! The status bar: the newest notice, in red when it is an error; otherwise a reminder
//! that photos are only read.

use super::session::Notice;

pub fn status_ui(ui: &mut egui::Ui, notices: &[Notice]) {
    ui.horizontal(|ui| match notices.last() {
        Some(n) if n.error => {
            ui.colored_label(ui.visuals().error_fg_color, &n.text);
        }
        Some(n) => {
            ui.label(&n.text);
        }
        None => {
            ui.weak("Your photos are only read: nothing is moved, changed or uploaded.");
        }
    });
}
