//! Images of a request, turned into what the judge reads: decoded (sniffed by content,
//! with the app's memory limits), refused above the server's pixel limit before they are
//! decoded, oriented and converted as photos are, then resized and normalized. Runs on the
//! server's blocking threads, never on the inference thread.

use std::io::Cursor;

use super::error::ApiError;
use super::parse::{ImageRef, Side};
use crate::library::decode::decode_bytes;
use crate::worker::{Content, PhotoPreparer};

/// A side as the model reads it; `name` names it in errors ("documents[2]").
pub fn content(
    side: Side,
    name: &str,
    preparer: &PhotoPreparer,
    max_pixels: u64,
) -> Result<Content, ApiError> {
    let image = match side.image {
        None => None,
        Some(r) => {
            let bytes = match r {
                ImageRef::Bytes(b) => b,
                ImageRef::File(path) => std::fs::read(&path).map_err(|e| {
                    ApiError::validation(format!(
                        "{name}.image: {} cannot be read ({e})",
                        path.display()
                    ))
                })?,
            };
            let dims = image::ImageReader::new(Cursor::new(&bytes))
                .with_guessed_format()
                .ok()
                .and_then(|r| r.into_dimensions().ok());
            if let Some((w, h)) = dims
                && u64::from(w) * u64::from(h) > max_pixels
            {
                return Err(ApiError::too_large(format!(
                    "{name}.image is {w} x {h} pixels, over this server's limit of {max_pixels}; send a smaller image"
                )));
            }
            let photo = decode_bytes(&bytes)
                .map_err(|e| ApiError::validation(format!("{name}.image: {e}")))?;
            let input = preparer
                .prepare(&photo.image)
                .map_err(|e| ApiError::validation(format!("{name}.image: {e}")))?;
            Some(input)
        }
    };
    Ok(Content {
        text: side.text,
        image,
    })
}
