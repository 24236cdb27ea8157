//! The user's photos: finding them in dropped files and folders, and decoding them.
//! Everything here only reads the user's files.

pub mod ahead;
pub mod decode;
pub mod export;
pub mod scan;
pub mod sources;
pub mod thumbnails;

pub use decode::{DecodedPhoto, PhotoError, decode_photo};
pub use scan::{ScanResult, scan_paths};
pub use sources::{Library, Source};
