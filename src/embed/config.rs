//! A SigLIP / SigLIP 2 checkpoint's `config.json` and `preprocessor_config.json`, with
//! transformers' class defaults (`SiglipTextConfig`, `SiglipVisionConfig`,
//! `SiglipImageProcessor`) for every field the file leaves out, as the released
//! checkpoints do.

use serde::Deserialize;

use crate::model::ModelError;
use crate::model::resample::Filter;

fn d_vocab() -> usize {
    32000
}
fn d_hidden() -> usize {
    768
}
fn d_intermediate() -> usize {
    3072
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    12
}
fn d_positions() -> usize {
    64
}
fn d_eps() -> f64 {
    1e-6
}
fn d_act() -> candle_nn::Activation {
    candle_nn::Activation::GeluPytorchTanh
}
fn d_channels() -> usize {
    3
}
fn d_image_size() -> usize {
    224
}
fn d_patch() -> usize {
    16
}
fn d_true() -> bool {
    true
}

/// The text tower (`SiglipTextConfig`).
#[derive(Debug, Clone, Deserialize)]
pub struct TextConfig {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// Text positions; SigLIP was trained on exactly this many tokens (64).
    #[serde(default = "d_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_act")]
    pub hidden_act: candle_nn::Activation,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    /// Width of the text embedding (the head's output); the hidden size when absent.
    pub projection_size: Option<usize>,
}

impl TextConfig {
    /// The embedding width.
    pub fn projection(&self) -> usize {
        self.projection_size.unwrap_or(self.hidden_size)
    }
}

/// The vision tower (`SiglipVisionConfig`); read into candle's own config, which has the
/// same fields and defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct VisionConfig {
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    #[serde(default = "d_image_size")]
    pub image_size: usize,
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    #[serde(default = "d_act")]
    pub hidden_act: candle_nn::Activation,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    /// The attention-pooling head that makes the image embedding.
    #[serde(default = "d_true")]
    pub vision_use_head: bool,
}

impl VisionConfig {
    /// The same, as candle-transformers' SigLIP vision tower takes it.
    pub fn to_candle(&self) -> candle_transformers::models::siglip::VisionConfig {
        candle_transformers::models::siglip::VisionConfig {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_channels: self.num_channels,
            image_size: self.image_size,
            patch_size: self.patch_size,
            hidden_act: self.hidden_act,
            layer_norm_eps: self.layer_norm_eps,
        }
    }
}

/// `config.json` of a `SiglipModel`.
#[derive(Debug, Clone, Deserialize)]
pub struct EmbedderConfig {
    pub model_type: Option<String>,
    pub text_config: TextConfig,
    pub vision_config: VisionConfig,
}

impl EmbedderConfig {
    /// Parses and checks `config.json`.
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let config: EmbedderConfig =
            serde_json::from_str(text).map_err(|e| ModelError::BadConfig(e.to_string()))?;
        match config.model_type.as_deref() {
            Some("siglip") | None => {}
            Some("siglip2") => {
                return Err(ModelError::BadConfig(
                    "this is a SigLIP 2 NaFlex (variable resolution) checkpoint; choose a fixed-resolution one such as google/siglip2-base-patch16-256".into(),
                ));
            }
            Some(other) => {
                return Err(ModelError::BadConfig(format!(
                    "model_type is {other:?}, not a SigLIP model (\"siglip\")"
                )));
            }
        }
        let (t, v) = (&config.text_config, &config.vision_config);
        if t.hidden_size % t.num_attention_heads != 0 || v.hidden_size % v.num_attention_heads != 0
        {
            return Err(ModelError::BadConfig(
                "hidden_size is not a multiple of num_attention_heads".into(),
            ));
        }
        if !v.vision_use_head {
            return Err(ModelError::BadConfig(
                "the vision tower has no pooling head (vision_use_head is false)".into(),
            ));
        }
        if t.projection() != v.hidden_size {
            return Err(ModelError::BadConfig(format!(
                "the text embedding has {} values but the image embedding {}; they must match",
                t.projection(),
                v.hidden_size
            )));
        }
        if v.patch_size == 0 || v.image_size % v.patch_size != 0 {
            return Err(ModelError::BadConfig(
                "image_size is not a multiple of patch_size".into(),
            ));
        }
        Ok(config)
    }
}

/// How photos are prepared (`preprocessor_config.json` of `SiglipImageProcessor`).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageConfig {
    /// (width, height) the photo is resized to, without cropping.
    pub size: (usize, usize),
    pub filter: Filter,
    pub rescale: f64,
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

#[derive(Debug, Deserialize)]
struct RawImageConfig {
    size: Option<serde_json::Value>,
    #[serde(default = "d_resample")]
    resample: u64,
    #[serde(default = "d_rescale")]
    rescale_factor: f64,
    image_mean: Option<[f64; 3]>,
    image_std: Option<[f64; 3]>,
    #[serde(default = "d_true")]
    do_resize: bool,
    #[serde(default = "d_true")]
    do_rescale: bool,
    #[serde(default = "d_true")]
    do_normalize: bool,
}

fn d_resample() -> u64 {
    2 // PIL BILINEAR, SiglipImageProcessor's default
}
fn d_rescale() -> f64 {
    1.0 / 255.0
}

impl ImageConfig {
    /// Parses `preprocessor_config.json`; `image_size` is the vision tower's (the size a
    /// config without one resizes to).
    pub fn from_json(text: &str, image_size: usize) -> Result<Self, ModelError> {
        let bad = |why: String| ModelError::BadPreprocessor(why);
        let raw: RawImageConfig = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if !raw.do_resize {
            return Err(bad(
                "do_resize is off; the vision tower needs its own size".into()
            ));
        }
        let size = match &raw.size {
            None => (image_size, image_size),
            Some(v) => {
                let get = |k: &str| {
                    v.get(k)
                        .and_then(serde_json::Value::as_u64)
                        .map(|n| n as usize)
                };
                match (get("width"), get("height"), get("shortest_edge")) {
                    (Some(w), Some(h), _) => (w, h),
                    (_, _, Some(s)) => (s, s),
                    _ => return Err(bad(format!("size {v} is not {{\"height\", \"width\"}}"))),
                }
            }
        };
        if size != (image_size, image_size) {
            return Err(bad(format!(
                "it resizes to {}x{} but the vision tower takes {image_size}x{image_size}",
                size.0, size.1
            )));
        }
        let filter = Filter::from_pil(raw.resample).ok_or_else(|| {
            bad(format!(
                "resample {} is not bilinear (2) or bicubic (3)",
                raw.resample
            ))
        })?;
        // transformers' defaults for SiglipImageProcessor: mean = std = 0.5.
        let (mean, std) = if raw.do_normalize {
            (
                raw.image_mean.unwrap_or([0.5; 3]),
                raw.image_std.unwrap_or([0.5; 3]),
            )
        } else {
            ([0.0; 3], [1.0; 3])
        };
        if std.iter().any(|&s| s <= 0.0) {
            return Err(bad("image_std must be positive".into()));
        }
        Ok(ImageConfig {
            size,
            filter,
            rescale: if raw.do_rescale {
                raw.rescale_factor
            } else {
                1.0
            },
            mean,
            std,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_config_takes_the_class_defaults() {
        let c = EmbedderConfig::from_json(
            r#"{"model_type": "siglip", "text_config": {"vocab_size": 256000},
                "vision_config": {"image_size": 256}}"#,
        )
        .unwrap();
        assert_eq!(c.text_config.hidden_size, 768);
        assert_eq!(c.text_config.projection(), 768);
        assert_eq!(c.text_config.max_position_embeddings, 64);
        assert_eq!(c.vision_config.patch_size, 16);
        assert_eq!(
            c.vision_config.hidden_act,
            candle_nn::Activation::GeluPytorchTanh
        );
        let image =
            ImageConfig::from_json(r#"{"size": {"height": 256, "width": 256}}"#, 256).unwrap();
        assert_eq!(image.filter, Filter::Bilinear);
        assert_eq!(image.mean, [0.5; 3]);
    }

    #[test]
    fn other_models_are_named() {
        let e = EmbedderConfig::from_json(
            r#"{"model_type": "siglip2", "text_config": {}, "vision_config": {}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("NaFlex"), "{e}");
        let e = EmbedderConfig::from_json(
            r#"{"model_type": "qwen2_5_vl", "text_config": {}, "vision_config": {}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a SigLIP model"), "{e}");
    }
}
