//! The model's `config.json`, in both layouts: the flat one of the published checkpoint
//! (text fields at the top, a sparse `vision_config`) and the nested `text_config` /
//! `vision_config` one that transformers 5 writes. Fields missing from the file take the
//! defaults of transformers' `Qwen2_5_VLTextConfig` / `Qwen2_5_VLVisionConfig` classes,
//! because that is what the reference implementation does with them.

use serde_json::{Map, Value};

use super::ModelError;

/// The Qwen2.5-VL vision tower's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub depth: usize,
    pub hidden_size: usize,
    pub hidden_act: String,
    pub intermediate_size: usize,
    pub num_heads: usize,
    pub in_channels: usize,
    pub patch_size: usize,
    pub spatial_merge_size: usize,
    pub temporal_patch_size: usize,
    pub window_size: usize,
    pub out_hidden_size: usize,
    pub fullatt_block_indexes: Vec<usize>,
    pub rope_theta: f64,
}

/// The Qwen2 language model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub hidden_act: String,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Rotary dimensions (per half of the rotate-half pair) given to t, h and w.
    pub mrope_section: Vec<usize>,
    pub tie_word_embeddings: bool,
}

impl TextConfig {
    /// Dimension of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

impl VisionConfig {
    /// Dimension of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Side of a window attention block in merged tokens (112 px / 14 px / 2 = 4).
    pub fn window_merged_tokens(&self) -> usize {
        self.window_size / self.spatial_merge_size / self.patch_size
    }

    /// Pixels per side of one merged token (28 for Qwen2.5-VL): sizes are multiples of it.
    pub fn resize_factor(&self) -> usize {
        self.patch_size * self.spatial_merge_size
    }

    /// Values in one row of patch input: channels x frames x patch x patch (1176).
    pub fn patch_input_len(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }
}

/// The whole model configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub image_token_id: Option<u32>,
    pub vision_start_token_id: Option<u32>,
    pub vision_end_token_id: Option<u32>,
}

// transformers' class defaults (configuration_qwen2_5_vl.py).
const VISION_DEFAULT_DEPTH: usize = 32;
const VISION_DEFAULT_HIDDEN: usize = 3584;
const VISION_DEFAULT_INTERMEDIATE: usize = 3420;
const VISION_DEFAULT_HEADS: usize = 16;
const VISION_DEFAULT_WINDOW: usize = 112;
const VISION_DEFAULT_OUT_HIDDEN: usize = 3584;
const VISION_DEFAULT_FULLATT: [usize; 4] = [7, 15, 23, 31];
const VISION_ROPE_THETA: f64 = 10_000.0;
const TEXT_DEFAULT_VOCAB: usize = 152_064;
const TEXT_DEFAULT_HIDDEN: usize = 8192;
const TEXT_DEFAULT_INTERMEDIATE: usize = 29_568;
const TEXT_DEFAULT_LAYERS: usize = 80;
const TEXT_DEFAULT_HEADS: usize = 64;
const TEXT_DEFAULT_KV_HEADS: usize = 8;
const TEXT_DEFAULT_RMS_EPS: f64 = 1e-5;
const TEXT_DEFAULT_ROPE_THETA: f64 = 1_000_000.0;
const TEXT_DEFAULT_MROPE_SECTION: [usize; 3] = [16, 24, 24];

impl ModelConfig {
    /// Parses the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let root: Value = serde_json::from_str(text)
            .map_err(|e| ModelError::BadConfig(format!("not valid JSON: {e}")))?;
        let root = root
            .as_object()
            .ok_or_else(|| ModelError::BadConfig("the top level is not an object".into()))?;
        if let Some(kind) = root.get("model_type").and_then(Value::as_str)
            && !matches!(kind, "qwen2_5_vl" | "qwen2_5_vl_text")
        {
            return Err(ModelError::BadConfig(format!(
                "model_type is \"{kind}\"; this app runs Qwen2.5-VL rerankers (qwen2_5_vl)"
            )));
        }
        let empty = Map::new();
        // transformers 5 nests the text fields; older checkpoints keep them at the top.
        let text_obj = root
            .get("text_config")
            .and_then(Value::as_object)
            .unwrap_or(root);
        let vision_obj = root
            .get("vision_config")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let text = parse_text(text_obj, root)?;
        let vision = parse_vision(vision_obj)?;
        let token = |key: &str| {
            get_usize(root, key)
                .or_else(|| get_usize(text_obj, key))
                .map(|v| v as u32)
        };
        let config = ModelConfig {
            text,
            vision,
            image_token_id: token("image_token_id"),
            vision_start_token_id: token("vision_start_token_id"),
            vision_end_token_id: token("vision_end_token_id"),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ModelError> {
        let t = &self.text;
        let v = &self.vision;
        let bad = |why: String| Err(ModelError::BadConfig(why));
        if t.num_attention_heads == 0 || !t.hidden_size.is_multiple_of(t.num_attention_heads) {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                t.hidden_size, t.num_attention_heads
            ));
        }
        if t.num_key_value_heads == 0
            || !t.num_attention_heads.is_multiple_of(t.num_key_value_heads)
        {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                t.num_attention_heads, t.num_key_value_heads
            ));
        }
        if t.mrope_section.len() != 3 || t.mrope_section.iter().sum::<usize>() * 2 != t.head_dim() {
            return bad(format!(
                "mrope_section {:?} must have three parts that add up to half the head dimension {}",
                t.mrope_section,
                t.head_dim()
            ));
        }
        if v.num_heads == 0
            || !v.hidden_size.is_multiple_of(v.num_heads)
            || !v.head_dim().is_multiple_of(4)
        {
            return bad(format!(
                "vision hidden_size {} and num_heads {} do not give a head dimension divisible by 4",
                v.hidden_size, v.num_heads
            ));
        }
        if v.spatial_merge_size == 0 || v.patch_size == 0 || v.window_merged_tokens() == 0 {
            return bad(
                "vision patch_size, spatial_merge_size and window_size must be positive".into(),
            );
        }
        if v.out_hidden_size != t.hidden_size {
            return bad(format!(
                "vision out_hidden_size {} differs from the text hidden_size {}",
                v.out_hidden_size, t.hidden_size
            ));
        }
        for act in [&t.hidden_act, &v.hidden_act] {
            if act != "silu" {
                return bad(format!("activation \"{act}\" is not supported (silu only)"));
            }
        }
        Ok(())
    }
}

fn get_usize(obj: &Map<String, Value>, key: &str) -> Option<usize> {
    obj.get(key).and_then(Value::as_u64).map(|v| v as usize)
}

fn get_f64(obj: &Map<String, Value>, key: &str) -> Option<f64> {
    obj.get(key).and_then(Value::as_f64)
}

fn get_string(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn get_usize_list(obj: &Map<String, Value>, key: &str) -> Result<Option<Vec<usize>>, ModelError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| ModelError::BadConfig(format!("{key} holds a non-integer")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(ModelError::BadConfig(format!("{key} is not a list"))),
    }
}

fn parse_text(
    obj: &Map<String, Value>,
    root: &Map<String, Value>,
) -> Result<TextConfig, ModelError> {
    // Rotary settings moved from `rope_scaling` + `rope_theta` to `rope_parameters`.
    let rope = obj
        .get("rope_parameters")
        .or_else(|| obj.get("rope_scaling"))
        .or_else(|| root.get("rope_parameters"))
        .or_else(|| root.get("rope_scaling"))
        .and_then(Value::as_object);
    let mrope_section = match rope {
        Some(r) => get_usize_list(r, "mrope_section")?,
        None => None,
    }
    .unwrap_or_else(|| TEXT_DEFAULT_MROPE_SECTION.to_vec());
    let rope_theta = rope
        .and_then(|r| get_f64(r, "rope_theta"))
        .or_else(|| get_f64(obj, "rope_theta"))
        .or_else(|| get_f64(root, "rope_theta"))
        .unwrap_or(TEXT_DEFAULT_ROPE_THETA);
    let num_attention_heads = get_usize(obj, "num_attention_heads").unwrap_or(TEXT_DEFAULT_HEADS);
    let tie = root
        .get("tie_word_embeddings")
        .or_else(|| obj.get("tie_word_embeddings"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(TextConfig {
        vocab_size: get_usize(obj, "vocab_size").unwrap_or(TEXT_DEFAULT_VOCAB),
        hidden_size: get_usize(obj, "hidden_size").unwrap_or(TEXT_DEFAULT_HIDDEN),
        intermediate_size: get_usize(obj, "intermediate_size").unwrap_or(TEXT_DEFAULT_INTERMEDIATE),
        num_hidden_layers: get_usize(obj, "num_hidden_layers").unwrap_or(TEXT_DEFAULT_LAYERS),
        num_attention_heads,
        num_key_value_heads: get_usize(obj, "num_key_value_heads").unwrap_or(
            if obj.contains_key("num_key_value_heads") {
                num_attention_heads
            } else {
                TEXT_DEFAULT_KV_HEADS
            },
        ),
        hidden_act: get_string(obj, "hidden_act").unwrap_or_else(|| "silu".into()),
        rms_norm_eps: get_f64(obj, "rms_norm_eps").unwrap_or(TEXT_DEFAULT_RMS_EPS),
        rope_theta,
        mrope_section,
        tie_word_embeddings: tie,
    })
}

fn parse_vision(obj: &Map<String, Value>) -> Result<VisionConfig, ModelError> {
    let rope_theta = obj
        .get("rope_parameters")
        .and_then(Value::as_object)
        .and_then(|r| get_f64(r, "rope_theta"))
        .unwrap_or(VISION_ROPE_THETA);
    Ok(VisionConfig {
        depth: get_usize(obj, "depth").unwrap_or(VISION_DEFAULT_DEPTH),
        hidden_size: get_usize(obj, "hidden_size").unwrap_or(VISION_DEFAULT_HIDDEN),
        hidden_act: get_string(obj, "hidden_act").unwrap_or_else(|| "silu".into()),
        intermediate_size: get_usize(obj, "intermediate_size")
            .unwrap_or(VISION_DEFAULT_INTERMEDIATE),
        num_heads: get_usize(obj, "num_heads").unwrap_or(VISION_DEFAULT_HEADS),
        // `in_chans` is what older checkpoints write; transformers reads `in_channels`.
        in_channels: get_usize(obj, "in_channels").unwrap_or(3),
        patch_size: get_usize(obj, "patch_size").unwrap_or(14),
        spatial_merge_size: get_usize(obj, "spatial_merge_size").unwrap_or(2),
        temporal_patch_size: get_usize(obj, "temporal_patch_size").unwrap_or(2),
        window_size: get_usize(obj, "window_size").unwrap_or(VISION_DEFAULT_WINDOW),
        out_hidden_size: get_usize(obj, "out_hidden_size").unwrap_or(VISION_DEFAULT_OUT_HIDDEN),
        fullatt_block_indexes: get_usize_list(obj, "fullatt_block_indexes")?
            .unwrap_or_else(|| VISION_DEFAULT_FULLATT.to_vec()),
        rope_theta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published 7B config keeps only a few vision fields; the rest are defaults.
    const FLAT_7B: &str = r#"{
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0, "vocab_size": 152064, "tie_word_embeddings": false,
        "image_token_id": 151655, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
        "model_type": "qwen2_5_vl",
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "vision_config": {"hidden_size": 1280, "out_hidden_size": 3584, "in_chans": 3}
    }"#;

    #[test]
    fn flat_config_takes_class_defaults() {
        let c = ModelConfig::from_json(FLAT_7B).unwrap();
        assert_eq!(c.text.hidden_size, 3584);
        assert_eq!(c.text.head_dim(), 128);
        assert_eq!(c.text.num_key_value_heads, 4);
        assert_eq!(c.text.mrope_section, vec![16, 24, 24]);
        assert_eq!(c.text.rope_theta, 1e6);
        assert_eq!(c.vision.depth, 32);
        assert_eq!(c.vision.hidden_act, "silu");
        assert_eq!(c.vision.window_size, 112);
        assert_eq!(c.vision.fullatt_block_indexes, vec![7, 15, 23, 31]);
        assert_eq!(c.vision.head_dim(), 80);
        assert_eq!(c.vision.intermediate_size, 3420);
        assert_eq!(c.vision.window_merged_tokens(), 4);
        assert_eq!(c.vision.patch_input_len(), 1176);
        assert_eq!(c.image_token_id, Some(151655));
    }

    #[test]
    fn nested_config_reads_text_config_and_rope_parameters() {
        let nested = r#"{
            "model_type": "qwen2_5_vl", "image_token_id": 151655, "tie_word_embeddings": false,
            "text_config": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                "num_attention_heads": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
                "vocab_size": 152064,
                "rope_parameters": {"mrope_section": [16, 24, 24], "rope_theta": 1000000.0, "rope_type": "default"}},
            "vision_config": {"hidden_size": 1280, "out_hidden_size": 3584, "depth": 32,
                "rope_parameters": {"rope_theta": 10000.0, "rope_type": "axial"}}
        }"#;
        let flat = ModelConfig::from_json(FLAT_7B).unwrap();
        let nested = ModelConfig::from_json(nested).unwrap();
        assert_eq!(flat.text, nested.text);
        assert_eq!(flat.vision, nested.vision);
    }

    #[test]
    fn rejects_other_architectures_and_broken_shapes() {
        let err = ModelConfig::from_json(r#"{"model_type": "qwen3_vl"}"#).unwrap_err();
        assert!(err.to_string().contains("qwen3_vl"), "{err}");
        let err = ModelConfig::from_json("{not json").unwrap_err();
        assert!(err.to_string().contains("JSON"), "{err}");
        let broken = FLAT_7B.replace("[16, 24, 24]", "[16, 24, 20]");
        let err = ModelConfig::from_json(&broken).unwrap_err();
        assert!(err.to_string().contains("mrope_section"), "{err}");
    }
}
