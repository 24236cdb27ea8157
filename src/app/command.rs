//! What the user asked for, as the panels report it. A panel borrows only what it shows
//! and pushes commands; [`super::LycheeApp::apply`] is the one place that carries them out.

use std::path::PathBuf;

use crate::library::export::ExportFormat;

/// One thing the user asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum UiCommand {
    /// Rank every photo against the query.
    StartRanking,
    /// Stop the ranking after the current batch, keeping its scores.
    CancelRanking,
    /// Forget every photo (nothing on disk changes).
    ClearLibrary,
    /// Forget one added folder or photo, by its index among the sources.
    RemoveSource(usize),
    AddPaths(Vec<PathBuf>),
    SetQueryImage(Option<PathBuf>),
    /// Load the model named by a folder or a Hub id.
    LoadModel(String),
    /// Run the judge on these GPUs, one copy each (None: every GPU), and reload it.
    SetGpus(Option<Vec<usize>>),
    /// Load the first-stage embedder named by a folder or a Hub id.
    LoadEmbedder(String),
    /// Download the model (or embedder) named in the settings.
    StartDownload(ModelRole),
    CancelDownload(ModelRole),
    /// Judge the first stage's next photos.
    ShowMore,
    OpenDialog(DialogKind),
    Export(PathBuf, ExportFormat),
    /// Copy the selected (or shown) photos into a folder.
    CopyTo(PathBuf),
    /// Open (or close, with None) a photo's model output.
    Inspect(Option<PathBuf>),
    ToggleSelection(PathBuf),
    ClearSelection,
    Photo(PhotoAction, PathBuf),
}

/// Which of the two models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelRole {
    /// Lychee-rerank-mm, the judge.
    Judge,
    /// The first stage's embedder.
    Embedder,
}

/// What every photo offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhotoAction {
    /// Open it in the default viewer.
    Open,
    /// Show it selected in the file manager.
    ShowInFolder,
    /// Put its path on the clipboard.
    CopyPath,
}

/// A file dialog to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogKind {
    AddPhotos,
    AddFolder,
    QueryImage,
    ModelFolder,
    EmbedderFolder,
    ExportCsv,
    ExportJson,
    CopyTo,
}
