//! The desktop window: a query sidebar, an area to add photos, and the ranking as a
//! three-column grid, best first, with each photo's model output one click away. The
//! window never waits on the model: rankings run on the inference thread
//! ([`crate::worker::thread`]) and arrive as events.

mod actions;
pub mod command;
mod dialogs;
pub mod index_status;
mod lychee;
mod model_panel;
mod output;
mod progress;
mod results;
pub mod run;
mod runtime;
pub mod session;
mod sidebar;
pub mod state;
mod status;
mod textures;
mod upload;
mod view;

use std::path::PathBuf;
use std::process::ExitCode;

pub use command::{DialogKind, PhotoAction, UiCommand};
pub use lychee::{AppOptions, LycheeApp};
pub use run::{Outcome, Run, RunEnd};
pub use session::{ModelStatus, Session};

/// The app's id (window class on Linux, settings folder name).
pub const APP_ID: &str = "lychee-rerank";
/// The window's title.
pub const APP_NAME: &str = "Lychee Rerank";

/// The window icon, 256 px.
fn icon() -> Option<egui::IconData> {
    let bytes = include_bytes!("../../assets/icon-256.png");
    let img = image::load_from_memory(bytes).ok()?.to_rgba8();
    Some(egui::IconData {
        width: img.width(),
        height: img.height(),
        rgba: img.into_raw(),
    })
}

/// Opens the window with `paths` (photos or folders) already added, and `model` and
/// `embedder` (folders or Hub ids) instead of the remembered ones.
pub fn run(paths: Vec<PathBuf>, model: Option<String>, embedder: Option<String>) -> ExitCode {
    let mut viewport = egui::ViewportBuilder::default()
        .with_title(APP_NAME)
        .with_app_id(APP_ID)
        .with_inner_size([1280.0, 820.0])
        .with_min_inner_size([760.0, 480.0])
        .with_drag_and_drop(true);
    if let Some(icon) = icon() {
        viewport = viewport.with_icon(icon);
    }
    let options = eframe::NativeOptions {
        viewport,
        renderer: eframe::Renderer::Glow,
        ..Default::default()
    };
    let result = eframe::run_native(
        APP_ID,
        options,
        Box::new(move |cc| {
            let options = AppOptions {
                paths,
                model,
                embedder,
                ..AppOptions::default()
            };
            Ok(Box::new(LycheeApp::new(&cc.egui_ctx, cc.storage, options)))
        }),
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lychee-rerank: the window could not open: {e}");
            eprintln!("(on a machine without a display, use `lychee-rerank rank`; see README.md)");
            ExitCode::FAILURE
        }
    }
}
