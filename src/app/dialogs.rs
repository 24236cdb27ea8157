//! File dialogs (rfd, each on its own thread, since they block while open) and what
//! their answers do: add photos, pick the query image or a model folder, save the ranking
//! as CSV or JSON, copy the chosen photos to a folder (copies only; nothing is moved).

use std::path::{Path, PathBuf};

use super::lychee::{LycheeApp, Outcome};

/// Results of file dialogs, which run on their own threads.
#[derive(Debug)]
pub enum DialogResult {
    AddPaths(Vec<PathBuf>),
    QueryImage(PathBuf),
    ModelFolder(PathBuf),
    ExportCsv(PathBuf),
    ExportJson(PathBuf),
    CopyTo(PathBuf),
}

impl LycheeApp {
    pub(super) fn on_dialog(&mut self, result: DialogResult) {
        match result {
            DialogResult::AddPaths(paths) => self.add_paths(paths),
            DialogResult::QueryImage(path) => self.query_image = Some(path),
            DialogResult::ModelFolder(path) => self.load_model(path.to_string_lossy().into_owned()),
            DialogResult::ExportCsv(path) => self.export(&path, false),
            DialogResult::ExportJson(path) => self.export(&path, true),
            DialogResult::CopyTo(dir) => self.copy_to(&dir),
        }
    }

    /// Opens a file dialog on its own thread (dialogs block while open).
    pub fn dialog(&self, kind: DialogKind) {
        let tx = self.dialogs.0.clone();
        let ctx = self.ctx.clone();
        let _ = std::thread::Builder::new()
            .name("file-dialog".into())
            .spawn(move || {
                let result = kind.run();
                if let Some(r) = result {
                    let _ = tx.send(r);
                    ctx.request_repaint();
                }
            });
    }

    /// The ranked photos as exported: what the grid shows, best first.
    pub fn export_rows(&mut self) -> Vec<crate::library::export::ExportRow> {
        let order = self.ranked().to_vec();
        order
            .iter()
            .enumerate()
            .filter_map(|(i, path)| match self.outcomes.get(path) {
                Some(Outcome::Scored(s)) => Some(crate::library::export::ExportRow {
                    rank: i + 1,
                    path: path.clone(),
                    score: s.score,
                    logit_yes: s.logit_yes,
                    logit_no: s.logit_no,
                    visual_tokens: s.visual_tokens,
                    width: s.original_size.0,
                    height: s.original_size.1,
                }),
                _ => None,
            })
            .collect()
    }

    fn export(&mut self, path: &Path, json: bool) {
        let rows = self.export_rows();
        let (query, instruction) = self
            .run
            .as_ref()
            .map(|r| (r.query_text.clone(), r.instruction.clone()))
            .unwrap_or_default();
        let text = if json {
            crate::library::export::to_json(&query, &instruction, &rows)
        } else {
            crate::library::export::to_csv(&rows)
        };
        match crate::library::export::write_text(path, &text) {
            Ok(()) => self.notify(format!(
                "Saved the ranking of {} photos to {}",
                rows.len(),
                path.display()
            )),
            Err(e) => self.notify_error(&format!("Could not save {}: {e}", path.display())),
        }
    }

    /// The photos a copy takes: the selection, else what the grid shows.
    pub fn photos_to_copy(&mut self) -> Vec<PathBuf> {
        let order = self.ranked().to_vec();
        let shown: Vec<PathBuf> = order
            .into_iter()
            .filter(|p| matches!(self.outcomes.get(p), Some(Outcome::Scored(_))))
            .collect();
        if self.selection.is_empty() {
            shown
        } else {
            shown
                .into_iter()
                .filter(|p| self.selection.contains(p))
                .collect()
        }
    }

    fn copy_to(&mut self, dir: &Path) {
        let photos = self.photos_to_copy();
        // Copies of a few hundred photos take a while: done off the window's thread.
        let tx_ctx = self.ctx.clone();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let dir_owned = dir.to_path_buf();
        let _ = std::thread::Builder::new()
            .name("copy-photos".into())
            .spawn(move || {
                let report = crate::library::export::copy_to_folder(&photos, &dir_owned);
                let _ = tx.send(report);
                tx_ctx.request_repaint();
            });
        self.pending_copy = Some((dir.to_path_buf(), rx));
    }
}

/// A file dialog to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogKind {
    AddPhotos,
    AddFolder,
    QueryImage,
    ModelFolder,
    ExportCsv,
    ExportJson,
    CopyTo,
}

impl DialogKind {
    fn run(self) -> Option<DialogResult> {
        let images = [
            "jpg", "jpeg", "jpe", "jfif", "png", "webp", "gif", "bmp", "tif", "tiff",
        ];
        let dialog = rfd::FileDialog::new();
        match self {
            DialogKind::AddPhotos => dialog
                .set_title("Add photos")
                .add_filter("Photos", &images)
                .pick_files()
                .map(DialogResult::AddPaths),
            DialogKind::AddFolder => dialog
                .set_title("Add folders of photos")
                .pick_folders()
                .map(DialogResult::AddPaths),
            DialogKind::QueryImage => dialog
                .set_title("Choose an example image")
                .add_filter("Images", &images)
                .pick_file()
                .map(DialogResult::QueryImage),
            DialogKind::ModelFolder => dialog
                .set_title("Choose a model folder")
                .pick_folder()
                .map(DialogResult::ModelFolder),
            DialogKind::ExportCsv => dialog
                .set_title("Save the ranking as CSV")
                .set_file_name("ranking.csv")
                .add_filter("CSV", &["csv"])
                .save_file()
                .map(DialogResult::ExportCsv),
            DialogKind::ExportJson => dialog
                .set_title("Save the ranking as JSON")
                .set_file_name("ranking.json")
                .add_filter("JSON", &["json"])
                .save_file()
                .map(DialogResult::ExportJson),
            DialogKind::CopyTo => dialog
                .set_title("Copy the photos to a folder")
                .pick_folder()
                .map(DialogResult::CopyTo),
        }
    }
}
