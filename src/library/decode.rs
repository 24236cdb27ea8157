//! Opening a photo as the person sees it: the format is read from the content (not the
//! name), EXIF orientation is applied, and every colour mode becomes 8-bit RGB
//! (transparency laid over white, 16-bit reduced to its high byte as PIL does, CMYK
//! converted by the decoder). Memory is bounded: a file that declares a huge size is
//! refused before anything large is allocated. The file is only ever read.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

use crate::model::resample::Rgb8;

/// Largest photo opened, in pixels (a 150 MP medium-format frame still fits).
pub const MAX_PIXELS: u64 = 150_000_000;
/// Largest single side, in pixels.
pub const MAX_SIDE: u32 = 65_000;
/// Most memory one decode may allocate.
const MAX_DECODE_BYTES: u64 = 1 << 30;
/// Files larger than this are not read (no photo format needs more).
const MAX_FILE_BYTES: u64 = 1 << 30;

/// A decoded photo, upright, in 8-bit RGB.
#[derive(Debug, Clone)]
pub struct DecodedPhoto {
    pub image: Rgb8,
}

impl DecodedPhoto {
    /// (width, height) as displayed.
    pub fn size(&self) -> (usize, usize) {
        (self.image.width, self.image.height)
    }
}

/// Why a photo could not be opened, in words for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhotoError {
    #[error("cannot read the file ({0})")]
    Unreadable(String),
    #[error("the file is empty")]
    Empty,
    #[error("not an image, or a format this app does not read")]
    NotAnImage,
    #[error("the image data is damaged or cut short ({0})")]
    Corrupt(String),
    #[error("the image is {width}x{height} px, too large to open safely")]
    TooLarge { width: u32, height: u32 },
    #[error("{0}")]
    Unusable(String),
}

/// Reads and decodes the photo at `path`.
pub fn decode_photo(path: &Path) -> Result<DecodedPhoto, PhotoError> {
    let meta = std::fs::metadata(path).map_err(|e| PhotoError::Unreadable(io_reason(&e)))?;
    if !meta.is_file() {
        return Err(PhotoError::Unreadable("not a regular file".into()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(PhotoError::Unusable(format!(
            "the file is {} MB, larger than any photo this app opens",
            meta.len() >> 20
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| PhotoError::Unreadable(io_reason(&e)))?;
    decode_bytes(&bytes)
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "it no longer exists".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Decodes a photo held in memory.
pub fn decode_bytes(bytes: &[u8]) -> Result<DecodedPhoto, PhotoError> {
    if bytes.is_empty() {
        return Err(PhotoError::Empty);
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PhotoError::Unreadable(e.to_string()))?;
    match reader.format() {
        None => return Err(PhotoError::NotAnImage),
        Some(image::ImageFormat::Jpeg) if jpeg_is_cut_short(bytes) => {
            return Err(PhotoError::Corrupt(
                "the file ends too early; it may be an incomplete copy".into(),
            ));
        }
        Some(_) => {}
    }
    let mut decoder = reader.into_decoder().map_err(classify)?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(PhotoError::Corrupt("it declares no pixels".into()));
    }
    if u64::from(width) * u64::from(height) > MAX_PIXELS || width > MAX_SIDE || height > MAX_SIDE {
        return Err(PhotoError::TooLarge { width, height });
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    decoder.set_limits(limits).map_err(classify)?;
    // A damaged EXIF block must not cost the photo: it is then shown as stored.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(classify)?;
    image.apply_orientation(orientation);
    Ok(DecodedPhoto {
        image: to_rgb8(image),
    })
}

/// A JPEG whose last scan has no end-of-image marker after it was cut short. (The JPEG
/// decoder would fill the missing part with grey; a person would call the file broken.)
/// Inside entropy-coded data 0xFF is always followed by 0x00 or a restart marker, so
/// 0xFFD9 there is the real end; an embedded thumbnail's markers come before the last scan.
fn jpeg_is_cut_short(bytes: &[u8]) -> bool {
    let marker = |m: u8| bytes.windows(2).rposition(|w| w[0] == 0xFF && w[1] == m);
    match (marker(0xDA), marker(0xD9)) {
        (Some(scan), Some(end)) => end < scan,
        (Some(_), None) => true,
        (None, _) => false, // no scan at all: the decoder reports it
    }
}

fn classify(e: image::ImageError) -> PhotoError {
    use image::ImageError as E;
    match e {
        E::Limits(_) => {
            PhotoError::Unusable("the image needs more memory than a photo should".into())
        }
        E::Unsupported(u) => PhotoError::Unusable(format!("unsupported image variant ({u})")),
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            PhotoError::Corrupt("the file ends too early".into())
        }
        E::Decoding(d) => PhotoError::Corrupt(d.to_string()),
        other => PhotoError::Corrupt(other.to_string()),
    }
}

/// Any decoded image as 8-bit RGB, transparency laid over white.
pub fn to_rgb8(image: DynamicImage) -> Rgb8 {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let data = match image {
        DynamicImage::ImageRgb8(img) => img.into_raw(),
        DynamicImage::ImageLuma8(img) => img.into_raw().iter().flat_map(|&v| [v, v, v]).collect(),
        DynamicImage::ImageRgba8(img) => over_white(
            img.as_raw()
                .chunks_exact(4)
                .map(|p| [p[0], p[1], p[2], p[3]]),
        ),
        DynamicImage::ImageLumaA8(img) => over_white(
            img.as_raw()
                .chunks_exact(2)
                .map(|p| [p[0], p[0], p[0], p[1]]),
        ),
        // 16-bit samples keep their high byte (PIL's "RGB;16B" raw modes do the same).
        DynamicImage::ImageRgb16(img) => img.as_raw().iter().map(|&v| (v >> 8) as u8).collect(),
        DynamicImage::ImageLuma16(img) => img
            .as_raw()
            .iter()
            .flat_map(|&v| [(v >> 8) as u8; 3])
            .collect(),
        DynamicImage::ImageRgba16(img) => over_white(
            img.as_raw()
                .chunks_exact(4)
                .map(|p| [p[0], p[1], p[2], p[3]].map(|v| (v >> 8) as u8)),
        ),
        DynamicImage::ImageLumaA16(img) => over_white(img.as_raw().chunks_exact(2).map(|p| {
            let (v, a) = ((p[0] >> 8) as u8, (p[1] >> 8) as u8);
            [v, v, v, a]
        })),
        other => over_white(
            other
                .to_rgba8()
                .as_raw()
                .chunks_exact(4)
                .map(|p| [p[0], p[1], p[2], p[3]]),
        ),
    };
    Rgb8 {
        width: w,
        height: h,
        data,
    }
}

/// RGBA pixels laid over an opaque white background, with PIL's `alpha_composite`
/// integer arithmetic (AlphaComposite.c, 7 bits of precision).
fn over_white(pixels: impl Iterator<Item = [u8; 4]>) -> Vec<u8> {
    const PRECISION_BITS: u32 = 7;
    let mut out = Vec::new();
    for [r, g, b, a] in pixels {
        if a == 255 {
            out.extend_from_slice(&[r, g, b]);
            continue;
        }
        let a = u32::from(a);
        // Over an opaque background the output alpha is 255 * 255.
        let coef1 = a << PRECISION_BITS;
        let coef2 = (255 << PRECISION_BITS) - coef1;
        for c in [r, g, b] {
            let tmp = u32::from(c) * coef1 + 255 * coef2 + (0x80 << PRECISION_BITS);
            let div = ((tmp >> 8) + tmp) >> 8;
            out.push((div >> PRECISION_BITS) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transparency_goes_over_white() {
        let px = over_white([[0, 0, 0, 0], [0, 0, 0, 255], [200, 100, 0, 128]].into_iter());
        assert_eq!(&px[0..3], &[255, 255, 255]);
        assert_eq!(&px[3..6], &[0, 0, 0]);
        // (200 * 128 + 255 * 127) / 255 = 227.4
        assert_eq!(px[6], 227);
    }

    #[test]
    fn not_an_image_and_empty_are_told_apart() {
        assert_eq!(decode_bytes(b"").unwrap_err(), PhotoError::Empty);
        assert_eq!(
            decode_bytes(b"hello, I am a text file").unwrap_err(),
            PhotoError::NotAnImage
        );
    }

    #[test]
    fn cut_jpegs_are_detected() {
        let whole = [0xFF, 0xD8, 0xFF, 0xDA, 1, 2, 0xFF, 0x00, 3, 0xFF, 0xD9];
        assert!(!jpeg_is_cut_short(&whole));
        assert!(jpeg_is_cut_short(&whole[..8]));
        // a thumbnail's end marker before the main scan does not count
        let cut = [0xFF, 0xD8, 0xFF, 0xD9, 0xFF, 0xDA, 1, 2];
        assert!(jpeg_is_cut_short(&cut));
    }

    #[test]
    fn sixteen_bit_keeps_the_high_byte() {
        let img = image::ImageBuffer::<image::Rgb<u16>, _>::from_raw(
            1,
            1,
            vec![0xFF00u16, 0x80FF, 0x00FF],
        )
        .unwrap();
        let rgb = to_rgb8(DynamicImage::ImageRgb16(img));
        assert_eq!(rgb.data, vec![0xFF, 0x80, 0x00]);
    }
}
