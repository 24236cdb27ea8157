//! Random weights of the real model's shape, made on the device on demand, so that speed
//! and memory can be measured without the 16.6 GB download. Scores from them mean nothing.

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::Init;
use candle_nn::var_builder::SimpleBackend;

use super::config::ModelConfig;

/// Lychee-rerank-mm 7B's config.json (the flat layout it ships).
pub const LYCHEE_7B_CONFIG: &str = r#"{
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "model_type": "qwen2_5_vl",
    "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
    "num_attention_heads": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0, "vocab_size": 152064, "tie_word_embeddings": false,
    "image_token_id": 151655, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vision_config": {"hidden_size": 1280, "out_hidden_size": 3584, "in_chans": 3, "depth": 32,
        "intermediate_size": 3420, "num_heads": 16, "fullatt_block_indexes": [7, 15, 23, 31]}
}"#;

/// The 7B shape.
pub fn lychee_7b_config() -> ModelConfig {
    ModelConfig::from_json(LYCHEE_7B_CONFIG).expect("the built-in 7B config parses")
}

/// A weight source that returns a fresh random tensor for every name: norms near 1,
/// biases small, matrices scaled by 1/sqrt(fan_in) so activations stay of order one.
pub struct RandomWeights;

impl SimpleBackend for RandomWeights {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _hint: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let dims = shape.dims();
        let t = if name.ends_with("norm.weight")
            || name.ends_with("norm1.weight")
            || name.ends_with("norm2.weight")
            || name.ends_with("ln_q.weight")
        {
            (Tensor::randn(0f32, 0.1, shape, dev)? + 1.0)?
        } else if name.ends_with(".bias") {
            Tensor::randn(0f32, 0.02, shape, dev)?
        } else {
            let fan_in: usize = dims.iter().skip(1).product::<usize>().max(1);
            Tensor::randn(0f32, (1.0 / (fan_in as f64).sqrt()) as f32, shape, dev)?
        };
        t.to_dtype(dtype)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights need a shape for {name}")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}
