//! Where the app keeps what it can recompute: thumbnails and scores. Everything lives
//! under the OS cache folder (`directories`), never beside the user's photos.

pub mod db;
pub mod dirs;
pub mod scores;
