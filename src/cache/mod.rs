//! Where the app keeps what it can recompute: thumbnails now, scores later. Everything
//! lives under the OS cache folder (`directories`), never beside the user's photos.

pub mod dirs;
pub mod scores;
