//! From an RGB photo to the vision tower's input, as transformers' `Qwen2VLImageProcessor`
//! does it: `smart_resize` to multiples of 28 within [min_pixels, max_pixels], antialiased
//! bicubic resize of the 8-bit image, rescale and normalize (fused, in f32), then patch
//! rows in 2x2 merge-block order, each still image repeated to two frames.

use std::path::Path;

use serde_json::Value;

use super::config::VisionConfig;
use super::files::read_text;
use super::resample::{Rgb8, resize_bicubic_aa};
use super::{ModelError, Result};

/// OpenAI CLIP mean and std, the defaults of Qwen2VLImageProcessor.
const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];
/// Qwen2VLImageProcessor's default pixel bounds.
const DEFAULT_MIN_PIXELS: usize = 56 * 56;
const DEFAULT_MAX_PIXELS: usize = 28 * 28 * 1280;
/// Lychee-rerank-mm's model card runs the processor with at most 1280 visual tokens per
/// image; checkpoints whose preprocessor_config.json allows more (Qwen2.5-VL's allows
/// 16384) are held to it, since more costs far more time than it brings.
pub const MODEL_CARD_MAX_PIXELS: usize = 1280 * 28 * 28;
/// The reference refuses aspect ratios above this.
pub const MAX_ASPECT_RATIO: f64 = 200.0;
/// Sides under this many pixels carry too little to judge (and the reference's channel
/// detection fails on them).
pub const MIN_SIDE: usize = 10;

/// Resolution and normalization of photos, from `preprocessor_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessConfig {
    pub min_pixels: usize,
    pub max_pixels: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig {
            min_pixels: DEFAULT_MIN_PIXELS,
            max_pixels: DEFAULT_MAX_PIXELS,
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }
}

impl PreprocessConfig {
    /// Reads `preprocessor_config.json`; absent fields keep the class defaults, and
    /// max_pixels is held to the model card's [`MODEL_CARD_MAX_PIXELS`].
    pub fn load(path: &Path) -> Result<Self> {
        let mut cfg = Self::from_json(&read_text(path)?)?;
        cfg.max_pixels = cfg.max_pixels.min(MODEL_CARD_MAX_PIXELS);
        cfg.min_pixels = cfg.min_pixels.min(cfg.max_pixels);
        Ok(cfg)
    }

    /// Parses the text of `preprocessor_config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let bad = |why: String| ModelError::BadPreprocessor(why);
        let value: Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON ({e})")))?;
        let mut cfg = PreprocessConfig::default();
        let size = value.get("size");
        let pick = |key: &str, size_key: &str| {
            value
                .get(key)
                .and_then(Value::as_u64)
                .or_else(|| size.and_then(|s| s.get(size_key)).and_then(Value::as_u64))
        };
        if let Some(v) = pick("min_pixels", "shortest_edge") {
            cfg.min_pixels = v as usize;
        }
        if let Some(v) = pick("max_pixels", "longest_edge") {
            cfg.max_pixels = v as usize;
        }
        let triple = |key: &str| -> Result<Option<[f32; 3]>> {
            match value.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(a)) if a.len() == 3 => {
                    let mut out = [0.0f32; 3];
                    for (o, v) in out.iter_mut().zip(a) {
                        *o = v
                            .as_f64()
                            .ok_or_else(|| bad(format!("{key} holds a non-number")))?
                            as f32;
                    }
                    Ok(Some(out))
                }
                Some(_) => Err(bad(format!("{key} is not a list of three numbers"))),
            }
        };
        if let Some(m) = triple("image_mean")? {
            cfg.mean = m;
        }
        if let Some(s) = triple("image_std")? {
            cfg.std = s;
        }
        if cfg.std.iter().any(|&s| s <= 0.0) {
            return Err(bad("image_std must be positive".into()));
        }
        if cfg.min_pixels > cfg.max_pixels {
            return Err(bad(format!(
                "min_pixels {} is above max_pixels {}",
                cfg.min_pixels, cfg.max_pixels
            )));
        }
        Ok(cfg)
    }

    /// The same with the pixel bounds replaced where given.
    pub fn with_bounds(&self, min_pixels: Option<usize>, max_pixels: Option<usize>) -> Self {
        let mut out = self.clone();
        if let Some(v) = min_pixels {
            out.min_pixels = v;
        }
        if let Some(v) = max_pixels {
            out.max_pixels = v;
        }
        out.min_pixels = out.min_pixels.min(out.max_pixels);
        out
    }
}

/// Why a photo cannot be given to the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreprocessError {
    #[error("the photo is {width}x{height} px; sides under {MIN_SIDE} px are too small to judge")]
    TooSmall { width: usize, height: usize },
    #[error(
        "the photo is {width}x{height} px, an aspect ratio over {MAX_ASPECT_RATIO}:1 that the model cannot read"
    )]
    TooElongated { width: usize, height: usize },
}

/// Python's `round`: halves go to the even neighbour.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// transformers' `smart_resize`: (height, width) multiples of `factor`, close to the
/// original aspect ratio, with height * width within [min_pixels, max_pixels].
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize), PreprocessError> {
    if height < MIN_SIDE || width < MIN_SIDE {
        return Err(PreprocessError::TooSmall { width, height });
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    if h.max(w) / h.min(w) > MAX_ASPECT_RATIO {
        return Err(PreprocessError::TooElongated { width, height });
    }
    let mut h_bar = round_half_even(h / f) * f;
    let mut w_bar = round_half_even(w / f) * f;
    if h_bar * w_bar > max_pixels as f64 {
        let beta = ((h * w) / max_pixels as f64).sqrt();
        h_bar = f.max((h / beta / f).floor() * f);
        w_bar = f.max((w / beta / f).floor() * f);
    } else if h_bar * w_bar < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = (h * beta / f).ceil() * f;
        w_bar = (w * beta / f).ceil() * f;
    }
    Ok((h_bar as usize, w_bar as usize))
}

/// A photo ready for the vision tower.
#[derive(Debug, Clone, PartialEq)]
pub struct PhotoInput {
    /// Patch rows, `grid_h * grid_w` rows of `patch_input_len` values, row-major (empty
    /// once packed to bf16).
    pub pixel_values: Vec<f32>,
    /// The same values in bf16, for a model that computes in bf16 (half the bytes to send).
    pub packed_bf16: Option<Vec<half::bf16>>,
    /// Patches per column and per row (`image_grid_thw` without the t = 1).
    pub grid_h: usize,
    pub grid_w: usize,
    /// Size the model saw, (width, height) in pixels.
    pub input_size: (usize, usize),
    /// Size of the photo as displayed, (width, height).
    pub original_size: (usize, usize),
    /// A hash of everything the pixel values are made of (the resized pixels, their size,
    /// mean and std): two inputs with the same key give the same visual tokens.
    pub pixel_key: [u8; 32],
}

impl PhotoInput {
    /// Converts the pixel values to bf16, freeing the f32 copy.
    pub fn pack_bf16(&mut self) {
        if self.packed_bf16.is_none() {
            self.packed_bf16 = Some(
                self.pixel_values
                    .iter()
                    .map(|&v| half::bf16::from_f32(v))
                    .collect(),
            );
            self.pixel_values = Vec::new();
        }
    }

    /// Number of pixel values.
    pub fn len(&self) -> usize {
        self.packed_bf16
            .as_ref()
            .map_or(self.pixel_values.len(), Vec::len)
    }

    /// True when there are no pixel values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Merged visual tokens this photo becomes (rows x columns after the 2x2 merge).
    pub fn merged_grid(&self, merge: usize) -> (usize, usize) {
        (self.grid_h / merge, self.grid_w / merge)
    }

    /// Number of visual tokens in the prompt.
    pub fn visual_tokens(&self, merge: usize) -> usize {
        let (r, c) = self.merged_grid(merge);
        r * c
    }
}

/// Copies `parts` one after the other into `dst` (as long as all of them together), on up to
/// eight threads: a batch of eight 1024x768 photos is 75 MB of bf16 pixels, which one thread
/// copies into the page-locked upload buffer in about 15 ms, long enough for the GPU to run
/// out of queued work.
pub fn concat_into<T: Copy + Send + Sync>(dst: &mut [T], parts: &[&[T]]) {
    /// Values one thread copies at a time (2 MiB of bf16).
    const PIECE: usize = 1 << 20;
    let total: usize = parts.iter().map(|p| p.len()).sum();
    assert_eq!(dst.len(), total, "the destination holds exactly the parts");
    let mut pieces: Vec<(&mut [T], &[T])> = Vec::new();
    let mut rest = dst;
    for part in parts {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(part.len());
        rest = tail;
        pieces.extend(head.chunks_mut(PIECE).zip(part.chunks(PIECE)));
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8)
        .min(pieces.len());
    if threads <= 1 {
        for (d, s) in pieces {
            d.copy_from_slice(s);
        }
        return;
    }
    let mut shares: Vec<Vec<(&mut [T], &[T])>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, piece) in pieces.into_iter().enumerate() {
        shares[i % threads].push(piece);
    }
    std::thread::scope(|scope| {
        for share in shares {
            scope.spawn(move || {
                for (d, s) in share {
                    d.copy_from_slice(s);
                }
            });
        }
    });
}

/// Resizes, normalizes and patches `image` for a model of shape `vision`.
pub fn preprocess(
    image: &Rgb8,
    vision: &VisionConfig,
    cfg: &PreprocessConfig,
) -> Result<PhotoInput, PreprocessError> {
    let resized = resize_for_model(image, vision, cfg)?;
    Ok(patchify(&resized, vision, cfg, (image.width, image.height)))
}

/// The first step of [`preprocess`]: `image` resized to the size the model reads.
pub fn resize_for_model(
    image: &Rgb8,
    vision: &VisionConfig,
    cfg: &PreprocessConfig,
) -> Result<Rgb8, PreprocessError> {
    let factor = vision.resize_factor();
    let (height, width) = smart_resize(
        image.height,
        image.width,
        factor,
        cfg.min_pixels,
        cfg.max_pixels,
    )?;
    Ok(resize_bicubic_aa(image, width, height))
}

/// Normalizes a resized image and lays it out in patch rows.
pub fn patchify(
    resized: &Rgb8,
    vision: &VisionConfig,
    cfg: &PreprocessConfig,
    original_size: (usize, usize),
) -> PhotoInput {
    let p = vision.patch_size;
    let m = vision.spatial_merge_size;
    let frames = vision.temporal_patch_size;
    let (width, height) = (resized.width, resized.height);
    let (grid_h, grid_w) = (height / p, width / p);
    // transformers fuses rescale into normalize: mean and std are scaled by 255 in f32
    // and each value is (x - mean) / std in f32.
    let scale = (1.0f64 / (1.0f64 / 255.0)) as f32;
    let mean: [f32; 3] = std::array::from_fn(|c| cfg.mean[c] * scale);
    let std: [f32; 3] = std::array::from_fn(|c| cfg.std[c] * scale);
    let row_len = 3 * frames * p * p;
    let mut out = Vec::with_capacity(grid_h * grid_w * row_len);
    for bh in 0..grid_h / m {
        for bw in 0..grid_w / m {
            for mh in 0..m {
                for mw in 0..m {
                    let py0 = (bh * m + mh) * p;
                    let px0 = (bw * m + mw) * p;
                    for c in 0..3 {
                        let start = out.len();
                        for py in 0..p {
                            let row = &resized.data[((py0 + py) * width + px0) * 3..];
                            for px in 0..p {
                                out.push((f32::from(row[px * 3 + c]) - mean[c]) / std[c]);
                            }
                        }
                        // A still image is repeated to fill the temporal patch.
                        for _ in 1..frames {
                            out.extend_from_within(start..start + p * p);
                        }
                    }
                }
            }
        }
    }
    debug_assert_eq!(out.len(), grid_h * grid_w * row_len);
    let mut key = blake3::Hasher::new();
    key.update(&(width as u64).to_le_bytes());
    key.update(&(height as u64).to_le_bytes());
    key.update(&(frames as u64).to_le_bytes());
    for v in mean.iter().chain(&std) {
        key.update(&v.to_le_bytes());
    }
    key.update(&resized.data);
    PhotoInput {
        pixel_values: out,
        packed_bf16: None,
        grid_h,
        grid_w,
        input_size: (width, height),
        original_size,
        pixel_key: *key.finalize().as_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_into_copies_parts_in_order_across_pieces() {
        // Parts of uneven sizes, one larger than a thread's piece, one empty.
        let parts: Vec<Vec<u32>> = [3usize, (1 << 20) + 5, 0, 7]
            .iter()
            .scan(0u32, |next, &n| {
                let v: Vec<u32> = (*next..*next + n as u32).collect();
                *next += n as u32;
                Some(v)
            })
            .collect();
        let refs: Vec<&[u32]> = parts.iter().map(|p| p.as_slice()).collect();
        let total: usize = refs.iter().map(|p| p.len()).sum();
        let mut dst = vec![u32::MAX; total];
        concat_into(&mut dst, &refs);
        assert!(dst.iter().enumerate().all(|(i, &v)| v == i as u32));
        let mut one = vec![0u32; 3];
        concat_into(&mut one, &[&[7, 8, 9]]);
        assert_eq!(one, [7, 8, 9]);
    }

    const F: usize = 28;

    #[test]
    fn smart_resize_matches_python() {
        // Values computed with transformers' smart_resize.
        assert_eq!(smart_resize(240, 320, F, 3136, 200704).unwrap(), (252, 308));
        assert_eq!(smart_resize(24, 20, F, 3136, 200704).unwrap(), (84, 56));
        assert_eq!(
            smart_resize(900, 1200, F, 3136, 200704).unwrap(),
            (364, 504)
        );
        assert_eq!(
            smart_resize(768, 1024, F, 4 * 784, 1280 * 784).unwrap(),
            (756, 1036)
        );
        // 42 / 28 = 1.5 rounds to 2 (even), 70 / 28 = 2.5 rounds to 2 (even).
        assert_eq!(smart_resize(42, 70, F, 0, usize::MAX).unwrap(), (56, 56));
    }

    #[test]
    fn smart_resize_refuses_what_the_model_cannot_read() {
        assert!(matches!(
            smart_resize(9, 500, F, 3136, 200704),
            Err(PreprocessError::TooSmall { .. })
        ));
        assert!(matches!(
            smart_resize(20, 30000, F, 3136, 200704),
            Err(PreprocessError::TooElongated { .. })
        ));
    }

    #[test]
    fn round_half_even_like_python() {
        for (x, want) in [
            (0.5, 0.0),
            (1.5, 2.0),
            (2.5, 2.0),
            (2.4, 2.0),
            (2.6, 3.0),
            (3.5, 4.0),
        ] {
            assert_eq!(round_half_even(x), want, "{x}");
        }
    }

    #[test]
    fn preprocessor_config_reads_both_spellings() {
        let a = PreprocessConfig::from_json(r#"{"min_pixels": 100, "max_pixels": 200}"#).unwrap();
        let b =
            PreprocessConfig::from_json(r#"{"size": {"shortest_edge": 100, "longest_edge": 200}}"#)
                .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.mean, CLIP_MEAN);
        assert!(PreprocessConfig::from_json(r#"{"image_std": [0, 1, 1]}"#).is_err());
    }
}
