//! Lychee Rerank: ranks a photo library by how well each photo matches a description,
//! with the Lychee-rerank-mm model running locally.

#[cfg(feature = "gui")]
pub mod app;
pub mod background;
pub mod cache;
pub mod cli;
pub mod embed;
pub mod hub;
pub mod index;
pub mod library;
pub mod model;
pub mod server;
pub mod worker;

/// The name of the app's folders (cache, settings).
pub const APP_DIR_NAME: &str = "lychee-rerank";
