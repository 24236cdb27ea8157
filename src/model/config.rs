//! The model's `config.json`, in both layouts: the flat one of the published checkpoint
//! (text fields at the top, a sparse `vision_config`) and the nested `text_config` /
//! `vision_config` one that transformers 5 writes. Fields missing from the file take the
//! defaults of transformers' `Qwen2_5_VLTextConfig` / `Qwen2_5_VLVisionConfig` classes
//! (configuration_qwen2_5_vl.py), because that is what the reference implementation does
//! with them: the `Default` impls below.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::ModelError;

/// The Qwen2.5-VL vision tower's shape.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct VisionConfig {
    pub depth: usize,
    pub hidden_size: usize,
    pub hidden_act: String,
    pub intermediate_size: usize,
    pub num_heads: usize,
    /// Older checkpoints also write `in_chans`; transformers reads `in_channels`.
    pub in_channels: usize,
    pub patch_size: usize,
    pub spatial_merge_size: usize,
    pub temporal_patch_size: usize,
    pub window_size: usize,
    pub out_hidden_size: usize,
    pub fullatt_block_indexes: Vec<usize>,
    /// `rope_parameters.rope_theta` in the file.
    pub rope_theta: f64,
}

impl Default for VisionConfig {
    fn default() -> Self {
        VisionConfig {
            depth: 32,
            hidden_size: 3584,
            hidden_act: "silu".into(),
            intermediate_size: 3420,
            num_heads: 16,
            in_channels: 3,
            patch_size: 14,
            spatial_merge_size: 2,
            temporal_patch_size: 2,
            window_size: 112,
            out_hidden_size: 3584,
            fullatt_block_indexes: vec![7, 15, 23, 31],
            rope_theta: 10_000.0,
        }
    }
}

/// The Qwen2 language model's shape.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub hidden_act: String,
    pub rms_norm_eps: f64,
    /// In `rope_parameters` (or the older `rope_scaling`), or beside them.
    pub rope_theta: f64,
    /// Rotary dimensions (per half of the rotate-half pair) given to t, h and w; in
    /// `rope_parameters` or `rope_scaling`.
    pub mrope_section: Vec<usize>,
    pub tie_word_embeddings: bool,
}

impl Default for TextConfig {
    fn default() -> Self {
        TextConfig {
            vocab_size: 152_064,
            hidden_size: 8192,
            intermediate_size: 29_568,
            num_hidden_layers: 80,
            num_attention_heads: 64,
            num_key_value_heads: 8,
            hidden_act: "silu".into(),
            rms_norm_eps: 1e-5,
            rope_theta: 1_000_000.0,
            mrope_section: vec![16, 24, 24],
            tie_word_embeddings: false,
        }
    }
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

impl ModelConfig {
    /// Parses the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let bad = |why: String| ModelError::BadConfig(why);
        let root: Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let root = root
            .as_object()
            .ok_or_else(|| bad("the top level is not an object".into()))?;
        if let Some(kind) = root.get("model_type").and_then(Value::as_str)
            && !matches!(kind, "qwen2_5_vl" | "qwen2_5_vl_text")
        {
            return Err(bad(format!(
                "model_type is \"{kind}\"; this app runs Qwen2.5-VL rerankers (qwen2_5_vl)"
            )));
        }
        let text_obj = match root.get("text_config") {
            Some(Value::Object(t)) => t,
            _ => root,
        };
        let text = TextConfig::deserialize(Value::Object(text_fields(text_obj, root)))
            .map_err(|e| bad(format!("the text model's settings: {e}")))?;
        let vision = VisionConfig::deserialize(Value::Object(vision_fields(root)))
            .map_err(|e| bad(format!("vision_config: {e}")))?;
        let token = |key: &str| {
            [root, text_obj]
                .iter()
                .find_map(|o| o.get(key).and_then(Value::as_u64))
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

/// The text model's fields as [`TextConfig`] reads them, from `text` (the `text_config`
/// object, or the top level in the flat layout): the rotary settings lifted out of
/// `rope_parameters` (or the older `rope_scaling`, or the top level's), the top level's
/// `tie_word_embeddings` first. A null counts as missing, except that a null
/// `num_key_value_heads` means one key head per query head, as transformers reads it.
fn text_fields(text: &Map<String, Value>, root: &Map<String, Value>) -> Map<String, Value> {
    let mut fields = text.clone();
    let rope = [(text, "rope_parameters"), (text, "rope_scaling")]
        .into_iter()
        .chain([(root, "rope_parameters"), (root, "rope_scaling")])
        .find_map(|(o, key)| o.get(key))
        .and_then(Value::as_object);
    let theta = [rope, Some(text), Some(root)]
        .into_iter()
        .flatten()
        .find_map(|o| o.get("rope_theta").filter(|t| t.is_number()));
    match theta {
        Some(t) => fields.insert("rope_theta".into(), t.clone()),
        None => fields.remove("rope_theta"),
    };
    match rope.and_then(|r| r.get("mrope_section")) {
        Some(s) => fields.insert("mrope_section".into(), s.clone()),
        None => fields.remove("mrope_section"),
    };
    if let Some(tie) = root.get("tie_word_embeddings").filter(|t| t.is_boolean()) {
        fields.insert("tie_word_embeddings".into(), tie.clone());
    }
    if fields.get("num_key_value_heads") == Some(&Value::Null) {
        let heads = fields.get("num_attention_heads").filter(|h| h.is_u64());
        let heads = heads
            .cloned()
            .unwrap_or(TextConfig::default().num_attention_heads.into());
        fields.insert("num_key_value_heads".into(), heads);
    }
    fields.retain(|_, v| !v.is_null());
    fields
}

/// The vision tower's fields as [`VisionConfig`] reads them: `vision_config` (missing or not
/// an object: all defaults) with `rope_theta` taken from its `rope_parameters` only.
fn vision_fields(root: &Map<String, Value>) -> Map<String, Value> {
    let mut fields = match root.get("vision_config") {
        Some(Value::Object(v)) => v.clone(),
        _ => Map::new(),
    };
    let theta = fields
        .get("rope_parameters")
        .and_then(|r| r.get("rope_theta"))
        .filter(|t| t.is_number())
        .cloned();
    match theta {
        Some(t) => fields.insert("rope_theta".into(), t),
        None => fields.remove("rope_theta"),
    };
    fields.retain(|_, v| !v.is_null());
    fields
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
    fn null_means_the_class_default_but_null_kv_heads_means_one_per_query_head() {
        let c = ModelConfig::from_json(
            &FLAT_7B
                .replace(
                    "\"num_key_value_heads\": 4",
                    "\"num_key_value_heads\": null",
                )
                .replace("\"vocab_size\": 152064", "\"vocab_size\": null"),
        )
        .unwrap();
        assert_eq!(c.text.num_key_value_heads, 28);
        assert_eq!(c.text.vocab_size, 152_064);
        // Missing, it is the class default of 8, which 28 heads do not divide into.
        let missing = FLAT_7B.replace("\"num_key_value_heads\": 4,", "");
        let err = ModelConfig::from_json(&missing).unwrap_err();
        assert!(err.to_string().contains("num_key_value_heads 8"), "{err}");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_refused() {
        let err = ModelConfig::from_json(&FLAT_7B.replace("28, \"num_key", "\"28\", \"num_key"))
            .unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
        let vision = FLAT_7B.replace("\"hidden_size\": 1280", "\"hidden_size\": \"1280\"");
        let err = ModelConfig::from_json(&vision).unwrap_err();
        assert!(err.to_string().contains("vision_config"), "{err}");
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
