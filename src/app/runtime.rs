//! What the window runs, as opposed to what it shows: the inference thread, the thumbnail
//! textures, file dialogs, and the background tasks (model download, export, copy). Each
//! of them does its work on threads of its own; the window only polls them.

use crate::background::Task;
use crate::hub::download::{HubConfig, ModelDownload};
use crate::library::export::{CopyReport, ExportReport};
use crate::model::device::GpuInfo;
use crate::worker::{IndexThread, InferenceThread};

use super::dialogs::Dialogs;
use super::textures::Thumbnails;

/// The window's runtime.
pub struct Runtime {
    pub worker: InferenceThread,
    /// The first stage: the embedder and the library's index.
    pub index: IndexThread,
    pub thumbs: Thumbnails,
    pub dialogs: Dialogs,
    /// A download of the judge in progress.
    pub download: Option<ModelDownload>,
    /// A download of the embedder in progress.
    pub embedder_download: Option<ModelDownload>,
    /// An export being written.
    pub export: Option<Task<ExportReport>>,
    /// A copy to a folder in progress.
    pub copy: Option<Task<CopyReport>>,
    /// Where models are downloaded from and cached.
    pub hub: HubConfig,
    /// For repaint requests from other threads, and the clipboard.
    pub ctx: egui::Context,
    /// The machine's GPUs, listed once at start.
    pub gpus: Vec<GpuInfo>,
}

impl Runtime {
    /// A repaint request for other threads to call.
    pub fn repaint(&self) -> impl Fn() + Send + Sync + Clone + 'static {
        let ctx = self.ctx.clone();
        move || ctx.request_repaint()
    }
}
