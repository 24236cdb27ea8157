//! The first stage: a SigLIP / SigLIP 2 dual encoder that turns photos and descriptions
//! into vectors whose cosine says how well they match. It is fast enough to embed a whole
//! library once (the index, [`crate::index`]) and a query in milliseconds; the judge
//! ([`crate::model::Reranker`]) then looks at the best few hundred only.
//!
//! Checked against transformers' `SiglipModel` on a tiny checkpoint (tests/embedder.rs):
//! token ids exactly, the resized pixels exactly, the embeddings to 1e-4 in f32.

pub mod config;
pub mod tokenizer;
mod towers;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

pub use config::{EmbedderConfig, ImageConfig};
use towers::{TextTower, l2_normalize};

use crate::model::files::{ModelFiles, TokenizerFiles};
use crate::model::resample::{Rgb8, resize_aa};
use crate::model::{Checkpoint, CheckpointWeights, ComputeDevice, ModelError};

/// The embedder the index uses unless told otherwise: multilingual (Chinese and English),
/// small enough for a CPU, Apache-2.0.
pub const DEFAULT_EMBEDDER_ID: &str = "google/siglip2-base-patch16-256";
/// Its download size (f32 safetensors), for the first-start message.
pub const DEFAULT_EMBEDDER_BYTES: u64 = 1_510_000_000;

/// The shape of google/siglip2-base-patch16-256 (its config.json names only the vocabulary
/// and the image size; the rest are transformers' class defaults), for benchmarks with
/// random weights.
pub const SIGLIP2_BASE_256_CONFIG: &str = r#"{
  "model_type": "siglip",
  "text_config": {"vocab_size": 256000},
  "vision_config": {"image_size": 256, "patch_size": 16}
}"#;

/// A photo resized and normalized for the vision tower: channels first, f32.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedImage {
    /// 3 x height x width values.
    pub pixels: Vec<f32>,
}

/// A loaded SigLIP model.
pub struct Embedder {
    pub config: EmbedderConfig,
    pub image: ImageConfig,
    pub device: ComputeDevice,
    /// What determines the vectors (configs and weight files): vectors of another identity
    /// are not comparable.
    pub identity: String,
    pub folder: PathBuf,
    tokenizer: tokenizer::TextTokenizer,
    text: TextTower,
    vision: candle_transformers::models::siglip::VisionModel,
    /// exp(logit_scale) and logit_bias: the model's logit is `cos * scale + bias`.
    pub logit_scale: f32,
    pub logit_bias: f32,
    /// Images embedded so far (for the tests and the dealing over several devices).
    images_embedded: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("folder", &self.folder)
            .field("device", &self.device.name)
            .field("dim", &self.dim())
            .finish()
    }
}

impl Embedder {
    /// Loads the SigLIP checkpoint in `dir` onto `device`.
    pub fn load(dir: &Path, device: ComputeDevice) -> Result<Self, ModelError> {
        let files = ModelFiles::locate(dir)?;
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| ModelError::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        let config = EmbedderConfig::from_json(&read(&files.config)?)?;
        let image = ImageConfig::from_json(
            &read(&files.preprocessor_config)?,
            config.vision_config.image_size,
        )?;
        let TokenizerFiles::Json(tokenizer_json) = &files.tokenizer else {
            return Err(ModelError::MissingFile {
                file: "tokenizer.json".into(),
                hint: "the embedder reads the Gemma tokenizer from tokenizer.json; download the whole model folder again".into(),
            });
        };
        let tokenizer = tokenizer::TextTokenizer::load(
            tokenizer_json,
            config.text_config.max_position_embeddings,
        )?;
        let weights = Arc::new(Checkpoint::open(&files.weights)?);
        let vb = VarBuilder::from_backend(
            Box::new(CheckpointWeights::new(weights)),
            device.dtype,
            device.device.clone(),
        );
        let named = |e: candle_core::Error| ModelError::BadWeights {
            file: "the embedder's weights".into(),
            why: format!("{e} (does config.json belong to these weights?)"),
        };
        let text = TextTower::new(&config.text_config, vb.pp("text_model")).map_err(named)?;
        let vision = candle_transformers::models::siglip::VisionModel::new(
            &config.vision_config.to_candle(),
            true,
            vb.pp("vision_model"),
        )
        .map_err(named)?;
        let scalar = |name: &str| -> Result<f32, ModelError> {
            Ok(vb
                .get(1, name)
                .and_then(|t| t.to_dtype(DType::F32)?.to_vec1::<f32>())
                .map_err(named)?[0])
        };
        let logit_scale = scalar("logit_scale")?.exp();
        let logit_bias = scalar("logit_bias")?;
        Ok(Embedder {
            identity: identity(&files),
            folder: dir.to_path_buf(),
            config,
            image,
            device,
            tokenizer,
            text,
            vision,
            logit_scale,
            logit_bias,
            images_embedded: Default::default(),
        })
    }

    /// An embedder of `config`'s shape with random weights (for measuring speed), with the
    /// tokenizer of the embedder folder `dir` and SigLIP's default image preparation.
    pub fn random(config: &str, dir: &Path, device: ComputeDevice) -> Result<Self, ModelError> {
        let config = EmbedderConfig::from_json(config)?;
        let side = config.vision_config.image_size;
        let image = ImageConfig::from_json("{}", side)?;
        let tokenizer = tokenizer::TextTokenizer::load(
            &dir.join("tokenizer.json"),
            config.text_config.max_position_embeddings,
        )?;
        let vb = VarBuilder::from_backend(
            Box::new(crate::model::RandomWeights),
            device.dtype,
            device.device.clone(),
        );
        let text = TextTower::new(&config.text_config, vb.pp("text_model"))?;
        let vision = candle_transformers::models::siglip::VisionModel::new(
            &config.vision_config.to_candle(),
            true,
            vb.pp("vision_model"),
        )?;
        Ok(Embedder {
            identity: "random".into(),
            folder: dir.to_path_buf(),
            config,
            image,
            device,
            tokenizer,
            text,
            vision,
            logit_scale: 10.0,
            logit_bias: -10.0,
            images_embedded: Default::default(),
        })
    }

    /// Values per embedding.
    pub fn dim(&self) -> usize {
        self.config.vision_config.hidden_size
    }

    /// The ids the text tower reads for `text`.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.tokenizer.encode(text)
    }

    /// Embeddings of `texts`, as the model outputs them (not normalized).
    pub fn text_features(&self, texts: &[&str]) -> Result<Tensor, ModelError> {
        let length = self.tokenizer.length;
        let mut ids = Vec::with_capacity(texts.len() * length);
        for text in texts {
            ids.extend(self.tokenize(text)?);
        }
        let ids = Tensor::from_vec(ids, (texts.len(), length), &self.device.device)?;
        Ok(self.text.forward(&ids)?)
    }

    /// L2-normalized embeddings of `texts`, one row each, in f32 on the host.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        rows(&l2_normalize(
            &self.text_features(texts)?.to_dtype(DType::F32)?,
        )?)
    }

    /// Resizes (no crop) and normalizes a photo for the vision tower, as
    /// `SiglipImageProcessor` does: the filter its config names, antialiased, on 8-bit
    /// values, then `(x * rescale - mean) / std` (computed as `(x - mean / rescale) /
    /// (std / rescale)`, which is how torchvision's fused step rounds).
    pub fn prepare_image(&self, photo: &Rgb8) -> PreparedImage {
        let (w, h) = self.image.size;
        self.normalize(&resize_aa(photo, w, h, self.image.filter))
    }

    /// The normalization step of [`Embedder::prepare_image`], on a photo already resized
    /// to the vision tower's size.
    pub fn normalize(&self, resized: &Rgb8) -> PreparedImage {
        let (w, h) = (resized.width, resized.height);
        let mut pixels = vec![0f32; 3 * w * h];
        for c in 0..3 {
            let mean = (self.image.mean[c] / self.image.rescale) as f32;
            let std = (self.image.std[c] / self.image.rescale) as f32;
            let plane = &mut pixels[c * w * h..(c + 1) * w * h];
            for (i, v) in plane.iter_mut().enumerate() {
                *v = (f32::from(resized.data[i * 3 + c]) - mean) / std;
            }
        }
        PreparedImage { pixels }
    }

    /// Embeddings of prepared photos, as the model outputs them (not normalized).
    pub fn image_features(&self, images: &[&PreparedImage]) -> Result<Tensor, ModelError> {
        let (w, h) = self.image.size;
        let mut data = Vec::with_capacity(images.len() * 3 * w * h);
        for image in images {
            data.extend_from_slice(&image.pixels);
        }
        let pixels = Tensor::from_vec(data, (images.len(), 3, h, w), &Device::Cpu)?
            .to_device(&self.device.device)?
            .to_dtype(self.device.dtype)?;
        Ok(self.vision.forward(&pixels)?)
    }

    /// L2-normalized embeddings of prepared photos, one row each, in f32 on the host.
    pub fn embed_images(&self, images: &[&PreparedImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        let vectors = rows(&l2_normalize(
            &self.image_features(images)?.to_dtype(DType::F32)?,
        )?)?;
        self.images_embedded
            .fetch_add(images.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(vectors)
    }

    /// Images this embedder has embedded.
    pub fn images_embedded(&self) -> u64 {
        self.images_embedded
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The model's logit for a cosine similarity.
    pub fn logit(&self, cosine: f32) -> f32 {
        cosine * self.logit_scale + self.logit_bias
    }
}

/// The query of text and example image together: the normalized sum of their normalized
/// embeddings (each side counts the same).
pub fn combine(text: Option<&[f32]>, image: Option<&[f32]>) -> Option<Vec<f32>> {
    let mut sum: Vec<f32> = match (text, image) {
        (Some(t), Some(i)) => t.iter().zip(i).map(|(a, b)| a + b).collect(),
        (Some(v), None) | (None, Some(v)) => v.to_vec(),
        (None, None) => return None,
    };
    let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    sum.iter_mut().for_each(|x| *x /= norm);
    Some(sum)
}

/// Why a query cannot be embedded.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("give a description, an example image, or both")]
    Empty,
    #[error("the query image {path} cannot be used: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl Embedder {
    /// The query's vector: the text's, the example image's, or both combined.
    pub fn embed_query(
        &self,
        text: Option<&str>,
        image: Option<&Path>,
    ) -> Result<Vec<f32>, QueryError> {
        let text = text.map(str::trim).filter(|t| !t.is_empty());
        let text_vector = match text {
            Some(t) => Some(self.embed_texts(&[t])?.remove(0)),
            None => None,
        };
        let image_vector = match image {
            Some(path) => {
                let photo = crate::library::decode_photo(path).map_err(|e| QueryError::Image {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
                let prepared = self.prepare_image(&photo.image);
                Some(self.embed_images(&[&prepared])?.remove(0))
            }
            None => None,
        };
        combine(text_vector.as_deref(), image_vector.as_deref()).ok_or(QueryError::Empty)
    }
}

fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>, ModelError> {
    Ok(t.to_device(&Device::Cpu)?.to_vec2::<f32>()?)
}

/// A hash of the configs' and tokenizer's bytes and each weight file's name, size and
/// modification time.
fn identity(files: &ModelFiles) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"siglip");
    for path in [&files.config, &files.preprocessor_config] {
        h.update(&std::fs::read(path).unwrap_or_default());
    }
    if let TokenizerFiles::Json(t) = &files.tokenizer {
        h.update(&std::fs::read(t).unwrap_or_default());
    }
    files.hash_weight_files(&mut h);
    h.finalize().to_hex()[..32].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_image_count_the_same() {
        let q = combine(Some(&[1.0, 0.0]), Some(&[0.0, 1.0])).unwrap();
        assert!((q[0] - q[1]).abs() < 1e-6 && (q[0] - 0.70710677).abs() < 1e-6);
        assert_eq!(combine(None, None), None);
    }
}
