//! Native file dialogs (rfd). Each runs on its own thread, since a dialog blocks while it
//! is open; what the user picked comes back as a [`UiCommand`].

use std::path::PathBuf;

use crossbeam_channel::{Receiver, Sender, unbounded};

use super::command::{DialogKind, UiCommand};
use crate::library::export::ExportFormat;

/// File name endings the photo dialogs offer.
const IMAGE_ENDINGS: [&str; 10] = [
    "jpg", "jpeg", "jpe", "jfif", "png", "webp", "gif", "bmp", "tif", "tiff",
];

impl DialogKind {
    /// Shows the dialog (blocking) and turns the answer into a command.
    fn run(self) -> Option<UiCommand> {
        let dialog = rfd::FileDialog::new();
        match self {
            DialogKind::AddPhotos => dialog
                .set_title("Add photos")
                .add_filter("Photos", &IMAGE_ENDINGS)
                .pick_files()
                .map(UiCommand::AddPaths),
            DialogKind::AddFolder => dialog
                .set_title("Add folders of photos")
                .pick_folders()
                .map(UiCommand::AddPaths),
            DialogKind::QueryImage => dialog
                .set_title("Choose an example image")
                .add_filter("Images", &IMAGE_ENDINGS)
                .pick_file()
                .map(|p| UiCommand::SetQueryImage(Some(p))),
            DialogKind::ModelFolder => dialog
                .set_title("Choose a model folder")
                .pick_folder()
                .map(|p: PathBuf| UiCommand::LoadModel(p.to_string_lossy().into_owned())),
            DialogKind::EmbedderFolder => dialog
                .set_title("Choose an embedder folder (SigLIP or SigLIP 2)")
                .pick_folder()
                .map(|p: PathBuf| UiCommand::LoadEmbedder(p.to_string_lossy().into_owned())),
            DialogKind::ExportCsv => dialog
                .set_title("Save the ranking as CSV")
                .set_file_name("ranking.csv")
                .add_filter("CSV", &["csv"])
                .save_file()
                .map(|p| UiCommand::Export(p, ExportFormat::Csv)),
            DialogKind::ExportJson => dialog
                .set_title("Save the ranking as JSON")
                .set_file_name("ranking.json")
                .add_filter("JSON", &["json"])
                .save_file()
                .map(|p| UiCommand::Export(p, ExportFormat::Json)),
            DialogKind::CopyTo => dialog
                .set_title("Copy the photos to a folder")
                .pick_folder()
                .map(UiCommand::CopyTo),
        }
    }
}

/// Opens dialogs and collects their answers.
pub struct Dialogs {
    tx: Sender<UiCommand>,
    rx: Receiver<UiCommand>,
    ctx: egui::Context,
}

impl Dialogs {
    pub fn new(ctx: &egui::Context) -> Self {
        let (tx, rx) = unbounded();
        Dialogs {
            tx,
            rx,
            ctx: ctx.clone(),
        }
    }

    /// Opens a dialog on its own thread.
    pub fn open(&self, kind: DialogKind) -> std::io::Result<()> {
        let tx = self.tx.clone();
        let ctx = self.ctx.clone();
        std::thread::Builder::new()
            .name("file-dialog".into())
            .spawn(move || {
                if let Some(command) = kind.run() {
                    let _ = tx.send(command);
                    ctx.request_repaint();
                }
            })
            .map(|_| ())
    }

    /// What the user picked in dialogs since the last frame.
    pub fn answers(&self) -> impl Iterator<Item = UiCommand> + '_ {
        self.rx.try_iter()
    }
}
