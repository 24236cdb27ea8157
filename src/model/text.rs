//! The Qwen2 language model of Qwen2.5-VL (weights under `model.*`): grouped-query
//! attention with multimodal rotary positions (M-RoPE), gated MLP, RMSNorm. It runs in two
//! steps: the prompt prefix shared by every photo once ([`TextModel::prefill`], keeping its
//! keys and values), then each photo's tokens against that prefix
//! ([`TextModel::score_suffix`]), returning only what the score needs: the final hidden
//! state of the last position times the LM-head rows of "yes" and "no".

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::Result;
use super::config::TextConfig;
use super::layers::{GatedMlp, Linear, RmsNorm, attention, rms_norm};
use super::memo::Memo;
use super::ops::{self, ScoreMask};
use super::profile::stage;
use super::prompt::Positions;

struct Attention {
    /// q, k, v projections stacked: ((heads + 2 kv_heads) * dim, hidden), and their biases.
    qkv: Tensor,
    qkv_bias: Tensor,
    o: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(cfg: &TextConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.head_dim();
        let h = cfg.hidden_size;
        let (q_out, kv_out) = (cfg.num_attention_heads * d, cfg.num_key_value_heads * d);
        let (q, k, v) = (vb.pp("q_proj"), vb.pp("k_proj"), vb.pp("v_proj"));
        let qkv = Tensor::cat(
            &[
                &q.get((q_out, h), "weight")?,
                &k.get((kv_out, h), "weight")?,
                &v.get((kv_out, h), "weight")?,
            ],
            0,
        )?;
        let qkv_bias = Tensor::cat(
            &[
                &q.get(q_out, "bias")?,
                &k.get(kv_out, "bias")?,
                &v.get(kv_out, "bias")?,
            ],
            0,
        )?;
        Ok(Attention {
            qkv,
            qkv_bias,
            o: Linear::new(q_out, h, false, vb.pp("o_proj"))?,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: d,
        })
    }

    /// `x`: (batch, len, hidden). Returns `residual` plus the output (the output
    /// projection and the residual add are one product) and this call's keys and values
    /// (batch, kv_heads, len, dim) after rotary, for a cache.
    fn forward(
        &self,
        x: &Tensor,
        residual: &Tensor,
        rope: &(Tensor, Tensor),
        past: Option<&(Tensor, Tensor)>,
        last_only: bool,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let (b, len, hidden) = x.dims3()?;
        let dev = x.device();
        // q, k, v with bias and rotary, laid out (batch, heads, len, dim).
        let (q, k, v) = stage("text.attn.qkv", dev, || -> Result<_> {
            let y = x.reshape((b * len, hidden))?.matmul(&self.qkv.t()?)?;
            ops::qkv_epilogue(
                &y,
                &self.qkv_bias,
                rope,
                self.heads,
                self.kv_heads,
                self.head_dim,
                Some(len),
            )
        })?;
        // bf16 on CUDA: the flash-attention kernel reads the cached prefix and this call's
        // keys in place (no concatenation, no repeated key heads) and writes the output in
        // the layout the output projection takes.
        #[cfg(feature = "cuda")]
        if super::ops::flash_enabled()
            && super::cuda::flash_supported(self.head_dim, q.dtype())
            && [&q, &k, &v].iter().all(|t| super::ops::flash_ready(t))
            && past
                .is_none_or(|(pk, pv)| super::ops::flash_ready(pk) && super::ops::flash_ready(pv))
        {
            let (q_off, n_q) = if last_only { (len - 1, 1) } else { (0, len) };
            let out = stage("text.attn.core", dev, || -> Result<Tensor> {
                Ok(super::cuda::flash_causal(
                    &q,
                    &k,
                    &v,
                    past.map(|(pk, pv)| (pk, pv)),
                    q_off,
                    n_q,
                    (self.head_dim as f64).powf(-0.5) as f32,
                    None,
                )?)
            })?;
            let out = stage("text.attn.out", dev, || {
                self.o.forward_residual(&out, residual)
            })?;
            return Ok((out, (k, v)));
        }
        let (k_all, v_all) = stage("text.attn.kv", dev, || -> Result<_> {
            let (k_all, v_all) = match past {
                Some((pk, pv)) => (
                    Tensor::cat(
                        &[
                            &pk.broadcast_as((b, self.kv_heads, pk.dim(2)?, self.head_dim))?,
                            &k,
                        ],
                        2,
                    )?,
                    Tensor::cat(
                        &[
                            &pv.broadcast_as((b, self.kv_heads, pv.dim(2)?, self.head_dim))?,
                            &v,
                        ],
                        2,
                    )?,
                ),
                None => (k.clone(), v.clone()),
            };
            let rep = self.heads / self.kv_heads;
            Ok((
                candle_transformers::utils::repeat_kv(k_all, rep)?,
                candle_transformers::utils::repeat_kv(v_all, rep)?,
            ))
        })?;
        // In the last layer only the last position matters.
        let q = if last_only {
            q.narrow(2, len - 1, 1)?
        } else {
            q
        };
        let out = stage("text.attn.core", dev, || {
            attention(
                &q,
                &k_all,
                &v_all,
                ScoreMask::Causal,
                (self.head_dim as f64).powf(-0.5),
            )
        })?;
        let out = stage("text.attn.out", dev, || -> Result<Tensor> {
            let q_len = out.dim(2)?;
            let out = out
                .transpose(1, 2)?
                .reshape((b, q_len, self.heads * self.head_dim))?;
            self.o.forward_residual(&out, residual)
        })?;
        Ok((out, (k, v)))
    }
}

struct DecoderLayer {
    input_norm: RmsNorm,
    attn: Attention,
    post_norm: RmsNorm,
    mlp: GatedMlp,
}

impl DecoderLayer {
    fn new(cfg: &TextConfig, vb: VarBuilder) -> Result<Self> {
        Ok(DecoderLayer {
            input_norm: rms_norm(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("input_layernorm"))?,
            attn: Attention::new(cfg, vb.pp("self_attn"))?,
            post_norm: rms_norm(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                vb.pp("post_attention_layernorm"),
            )?,
            mlp: GatedMlp::new(cfg.hidden_size, cfg.intermediate_size, false, vb.pp("mlp"))?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        past: Option<&(Tensor, Tensor)>,
        last_only: bool,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let dev = x.device();
        let residual = if last_only {
            x.narrow(1, x.dim(1)? - 1, 1)?
        } else {
            x.clone()
        };
        let (x, kv) = stage("text.attention", dev, || {
            self.attn.forward(
                &self.input_norm.forward(x)?,
                &residual,
                rope,
                past,
                last_only,
            )
        })?;
        let x = stage("text.mlp", dev, || -> Result<Tensor> {
            self.mlp.forward_residual(&self.post_norm.forward(&x)?, &x)
        })?;
        Ok((x, kv))
    }
}

/// Keys and values of the prompt prefix, per layer, and where its positions end.
#[derive(Debug, Clone)]
pub struct PrefixCache {
    /// Per layer: (keys, values), each (1, kv_heads, prefix_len, head_dim).
    pub layers: Vec<(Tensor, Tensor)>,
    /// The rotary position of the first token after the prefix.
    pub next_position: u32,
}

/// The language model, with only the LM-head rows the score reads.
pub struct TextModel {
    /// Kept in host memory: a prompt reads a few dozen rows of it, and on a GPU the table
    /// (152064 x 3584, 1.1 GB in bf16) would take memory the photos need.
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    /// (2, hidden): the LM-head rows of "yes" and "no".
    judge_rows: Tensor,
    inv_freq: Vec<f32>,
    mrope_section: Vec<usize>,
    device: Device,
    /// Rotary tables of the photo suffixes, by positions and batch size: photos of one
    /// size share them.
    suffix_rope: Memo<(Positions, usize), (Tensor, Tensor)>,
}

/// Suffix shapes whose rotary tables are kept (about 0.5 MB each on the device per photo
/// of 1 000 tokens).
const SUFFIX_ROPE_KEPT: usize = 8;

impl TextModel {
    /// Loads the model from `vb` (prefixed `model` or `model.language_model`). `host`
    /// reads the same weights into host memory, for the embeddings and the LM head
    /// (`lm_head` under it, or `None` when the embeddings are tied to it); only the LM
    /// head's rows of `yes` and `no` go to the device.
    pub fn new(
        cfg: &TextConfig,
        vb: VarBuilder,
        host: VarBuilder,
        lm_head: Option<VarBuilder>,
        yes: u32,
        no: u32,
    ) -> Result<Self> {
        let embed_tokens =
            candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, host.pp("embed_tokens"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let norm = rms_norm(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("norm"))?;
        let head = match lm_head {
            Some(vb) => vb.get((cfg.vocab_size, cfg.hidden_size), "weight")?,
            None => embed_tokens.embeddings().clone(),
        };
        let ids = Tensor::new(&[yes, no], head.device())?;
        let judge_rows = head.index_select(&ids, 0)?.to_device(vb.device())?;
        let d = cfg.head_dim();
        let inv_freq = (0..d)
            .step_by(2)
            .map(|i| 1.0 / (cfg.rope_theta as f32).powf(i as f32 / d as f32))
            .collect();
        Ok(TextModel {
            embed_tokens,
            layers,
            norm,
            judge_rows,
            inv_freq,
            mrope_section: cfg.mrope_section.clone(),
            device: vb.device().clone(),
            suffix_rope: Memo::new(SUFFIX_ROPE_KEPT),
        })
    }

    /// Embeddings of `ids` (len) as (1, len, hidden), with the rows of `pad` tokens
    /// replaced in order by `visual` tokens, when given. Only the text rows are looked up
    /// in the (host) table and sent to the device.
    pub fn embed(&self, ids: &[u32], pad: u32, visual: Option<&Tensor>) -> Result<Tensor> {
        let visual_rows = visual.map(|v| v.dim(0)).transpose()?.unwrap_or(0);
        let text_ids: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| id != pad || visual.is_none())
            .collect();
        let table = self.embed_tokens.embeddings();
        let text = self
            .embed_tokens
            .forward(&Tensor::new(text_ids.as_slice(), table.device())?)?
            .to_device(&self.device)?;
        let Some(visual) = visual else {
            return Ok(text.unsqueeze(0)?);
        };
        // Gather from [text rows; visual rows] in prompt order.
        let n_text = text_ids.len() as u32;
        let (mut t, mut v) = (0u32, 0u32);
        let mut index = Vec::with_capacity(ids.len());
        for &id in ids {
            if id == pad {
                index.push(n_text + v);
                v += 1;
            } else {
                index.push(t);
                t += 1;
            }
        }
        if v as usize != visual_rows {
            return Err(candle_core::Error::Msg(format!(
                "the prompt has {v} image pads for {visual_rows} visual tokens"
            ))
            .into());
        }
        let all = Tensor::cat(&[&text, &visual.to_dtype(text.dtype())?], 0)?;
        let index = Tensor::new(index.as_slice(), &self.device)?;
        Ok(all.index_select(&index, 0)?.unsqueeze(0)?)
    }

    /// cos and sin of the M-RoPE angles in f32, (batch * len, head_dim / 2), the same
    /// positions for each of `batch` sequences: the first `mrope_section[0]` frequencies
    /// turn with t, the next with h, the rest with w.
    fn rope_tables(&self, positions: &Positions, batch: usize) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let len = positions.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        let (s0, s1) = (
            self.mrope_section[0],
            self.mrope_section[0] + self.mrope_section[1],
        );
        for i in 0..len {
            for (f, &inv) in self.inv_freq.iter().enumerate() {
                let pos = if f < s0 {
                    positions.t[i]
                } else if f < s1 {
                    positions.h[i]
                } else {
                    positions.w[i]
                };
                let angle = pos as f32 * inv;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let (cos, sin) = if batch > 1 {
            (cos.repeat(batch), sin.repeat(batch))
        } else {
            (cos, sin)
        };
        let cos = Tensor::from_vec(cos, (batch * len, half), &self.device)?;
        let sin = Tensor::from_vec(sin, (batch * len, half), &self.device)?;
        Ok((cos, sin))
    }

    /// Runs the prefix (1, len, hidden) and keeps its keys and values.
    pub fn prefill(
        &self,
        embeds: &Tensor,
        positions: &Positions,
        next_position: u32,
    ) -> Result<PrefixCache> {
        let rope = self.rope_tables(positions, 1)?;
        let mut x = embeds.clone();
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let (out, kv) = layer.forward(&x, &rope, None, false)?;
            layers.push(kv);
            x = out;
        }
        Ok(PrefixCache {
            layers,
            next_position,
        })
    }

    /// Runs a photo's tokens (batch, len, hidden) after the cached prefix and returns the
    /// yes and no logits of each sequence's last position, (batch, 2) in f32.
    pub fn score_suffix(
        &self,
        prefix: &PrefixCache,
        embeds: &Tensor,
        positions: &Positions,
    ) -> Result<Tensor> {
        self.score_suffix_at(prefix, embeds, positions, None)
    }

    /// [`TextModel::score_suffix`] for a batch padded on the right: row `b` is read at
    /// position `last[b]` of the suffix instead of its end. Causal attention keeps each
    /// row's real tokens blind to the padding after them, so no mask is needed; only the
    /// last layer then runs over every position, to read each row where it ends.
    pub fn score_suffix_at(
        &self,
        prefix: &PrefixCache,
        embeds: &Tensor,
        positions: &Positions,
        last: Option<&[usize]>,
    ) -> Result<Tensor> {
        let (batch, len, _) = embeds.dims3()?;
        let last = last.filter(|l| l.iter().any(|&i| i + 1 != len));
        let rope = stage("text.rope", &self.device, || {
            self.suffix_rope
                .get_or_try((positions.clone(), batch), |(p, b)| self.rope_tables(p, *b))
        })?;
        let mut x = embeds.clone();
        let final_layer = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let past = prefix.layers.get(i);
            x = layer
                .forward(&x, &rope, past, i == final_layer && last.is_none())?
                .0;
        }
        let h = match last {
            None => self.norm.forward(&x)?.squeeze(1)?, // (batch, hidden)
            Some(last) => {
                let hidden = x.dim(2)?;
                let rows: Vec<u32> = last
                    .iter()
                    .enumerate()
                    .map(|(b, &i)| (b * len + i.min(len - 1)) as u32)
                    .collect();
                let rows = Tensor::new(rows.as_slice(), x.device())?;
                let x = x.reshape((batch * len, hidden))?.index_select(&rows, 0)?;
                self.norm.forward(&x)?
            }
        };
        let logits = h
            .to_dtype(DType::F32)?
            .matmul(&self.judge_rows.to_dtype(DType::F32)?.t()?)?;
        Ok(logits)
    }
}
