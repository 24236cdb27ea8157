//! What the window runs, as opposed to what it shows: the inference thread, the thumbnail
//! textures, file dialogs, and the background tasks (model download, export, copy). Each
//! of them does its work on threads of its own; the window only polls them.

use crate::background::Task;
use crate::hub::download::{HubConfig, ModelDownload};
use crate::library::export::{CopyReport, ExportReport};
use crate::worker::InferenceThread;

use super::dialogs::Dialogs;
use super::textures::Thumbnails;

/// The window's runtime.
pub struct Runtime {
    pub worker: InferenceThread,
    pub thumbs: Thumbnails,
    pub dialogs: Dialogs,
    /// A model download in progress.
    pub download: Option<ModelDownload>,
    /// An export being written.
    pub export: Option<Task<ExportReport>>,
    /// A copy to a folder in progress.
    pub copy: Option<Task<CopyReport>>,
    /// Where models are downloaded from and cached.
    pub hub: HubConfig,
    /// For repaint requests from other threads, and the clipboard.
    pub ctx: egui::Context,
}

impl Runtime {
    /// A repaint request for other threads to call.
    pub fn repaint(&self) -> impl Fn() + Send + Sync + Clone + 'static {
        let ctx = self.ctx.clone();
        move || ctx.request_repaint()
    }
}
