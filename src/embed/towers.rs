//! The two towers of a SigLIP model. The vision tower is candle-transformers' own
//! (`siglip::VisionModel`: patch embedding, encoder, post-norm, attention-pooling head);
//! the text tower is written here because candle's assumes that the text embedding is as
//! wide as the hidden state (its head is hidden x hidden) and names no projection size,
//! while SigLIP 2 checkpoints may project to another width (`projection_size`). It
//! follows transformers' `SiglipTextTransformer`: token + position embeddings, pre-norm
//! encoder layers without an attention mask, the final layer norm, the LAST position,
//! then the head.

use candle_core::{D, IndexOp, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder, embedding, layer_norm, linear};

use super::config::TextConfig;

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(cfg: &TextConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Attention {
            q: linear(h, h, vb.pp("q_proj"))?,
            k: linear(h, h, vb.pp("k_proj"))?,
            v: linear(h, h, vb.pp("v_proj"))?,
            out: linear(h, h, vb.pp("out_proj"))?,
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, n, _) = xs.dims3()?;
        let split = |t: Tensor| {
            t.reshape((b, n, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(xs.apply(&self.q)?)?;
        let k = split(xs.apply(&self.k)?)?;
        let v = split(xs.apply(&self.v)?)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        // Scores in f32 (transformers' eager attention softmaxes in f32).
        let dtype = q.dtype();
        let scores = (q.matmul(&k.t()?)? * scale)?.to_dtype(candle_core::DType::F32)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?;
        weights
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, n, ()))?
            .apply(&self.out)
    }
}

struct Layer {
    norm1: LayerNorm,
    attention: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: candle_nn::Activation,
}

impl Layer {
    fn new(cfg: &TextConfig, vb: VarBuilder) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        Ok(Layer {
            norm1: layer_norm(h, eps, vb.pp("layer_norm1"))?,
            attention: Attention::new(cfg, vb.pp("self_attn"))?,
            norm2: layer_norm(h, eps, vb.pp("layer_norm2"))?,
            fc1: linear(h, cfg.intermediate_size, vb.pp("mlp").pp("fc1"))?,
            fc2: linear(cfg.intermediate_size, h, vb.pp("mlp").pp("fc2"))?,
            act: cfg.hidden_act,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = (xs + self.attention.forward(&xs.apply(&self.norm1)?)?)?;
        let mlp = xs
            .apply(&self.norm2)?
            .apply(&self.fc1)?
            .apply(&self.act)?
            .apply(&self.fc2)?;
        xs + mlp
    }
}

/// SigLIP's text tower: `length` token ids in, one embedding (not normalized) out.
pub struct TextTower {
    tokens: Embedding,
    positions: Tensor,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    head: Linear,
}

impl TextTower {
    /// Loads the tower from `vb` (the checkpoint's `text_model.*`).
    pub fn new(cfg: &TextConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let emb = vb.pp("embeddings");
        let tokens = embedding(cfg.vocab_size, h, emb.pp("token_embedding"))?;
        let positions = emb
            .pp("position_embedding")
            .get((cfg.max_position_embeddings, h), "weight")?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::new(cfg, vb.pp("encoder").pp("layers").pp(i)))
            .collect::<Result<_>>()?;
        Ok(TextTower {
            tokens,
            positions,
            layers,
            final_norm: layer_norm(h, cfg.layer_norm_eps, vb.pp("final_layer_norm"))?,
            head: linear(h, cfg.projection(), vb.pp("head"))?,
        })
    }

    /// Embeds a batch of token ids (u32, batch x length).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, n) = ids.dims2()?;
        let mut xs = self
            .tokens
            .forward(ids)?
            .broadcast_add(&self.positions.narrow(0, 0, n)?)?;
        for layer in &self.layers {
            xs = layer.forward(&xs)?;
        }
        xs.apply(&self.final_norm)?
            .i((.., n - 1, ..))?
            .contiguous()?
            .apply(&self.head)
    }
}

/// `x / ‖x‖` along the last axis.
pub fn l2_normalize(xs: &Tensor) -> Result<Tensor> {
    let norm = xs
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    xs.broadcast_div(&norm)
}
