//! Handing a photo to the system: open it in the default viewer, show it in its folder.
//! The platform's opener is run with the path as an argument, never through a shell.

use std::path::Path;
use std::process::Command;

use super::lychee::LycheeApp;

/// Opens `path` with the default app.
pub fn open(path: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "windows")]
    let mut cmd = {
        let mut c = Command::new("explorer.exe");
        c.arg(path);
        c
    };
    #[cfg(target_os = "macos")]
    let mut cmd = {
        let mut c = Command::new("open");
        c.arg(path);
        c
    };
    #[cfg(not(any(target_os = "windows", target_os = "macos")))]
    let mut cmd = {
        let mut c = Command::new("xdg-open");
        c.arg(path);
        c
    };
    cmd.spawn().map(|_| ())
}

/// Shows `path` selected in the file manager (its folder, where selection is not possible).
pub fn show_in_folder(path: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "windows")]
    {
        let mut arg = std::ffi::OsString::from("/select,");
        arg.push(path);
        Command::new("explorer.exe").arg(arg).spawn().map(|_| ())
    }
    #[cfg(target_os = "macos")]
    {
        Command::new("open").arg("-R").arg(path).spawn().map(|_| ())
    }
    #[cfg(not(any(target_os = "windows", target_os = "macos")))]
    {
        let folder = path.parent().unwrap_or(Path::new("."));
        Command::new("xdg-open").arg(folder).spawn().map(|_| ())
    }
}

/// The three buttons every photo has: open, show in folder, copy path.
pub fn photo_actions_ui(app: &mut LycheeApp, ui: &mut egui::Ui, path: &Path) {
    if ui.button("Open photo").clicked() {
        if let Err(e) = open(path) {
            app.notify_error(&format!("Could not open {}: {e}", path.display()));
        }
        ui.close();
    }
    if ui.button("Show in folder").clicked() {
        if let Err(e) = show_in_folder(path) {
            app.notify_error(&format!("Could not show {}: {e}", path.display()));
        }
        ui.close();
    }
    if ui.button("Copy path").clicked() {
        ui.ctx().copy_text(path.to_string_lossy().into_owned());
        app.notify(format!("Copied {}", path.display()));
        ui.close();
    }
}
