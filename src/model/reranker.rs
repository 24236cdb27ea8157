//! The reranker as the rest of the app uses it: load a model folder, prepare a query
//! (its prompt prefix runs once), turn photos into visual tokens, judge each photo.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

use super::checkpoint::{Checkpoint, CheckpointWeights};
use super::config::ModelConfig;
use super::device::ComputeDevice;
use super::files::{ModelFiles, read_text};
use super::preprocess::{PhotoInput, PreprocessConfig};
use super::prompt::{Positions, PromptIds, display_prompt, expand_pads};
use super::random::RandomWeights;
use super::text::{PrefixCache, TextModel};
use super::tokenizer::PromptTokenizer;
use super::vision::{VisionTower, split_per_image};
use super::visual_cache::VisualCache;
use super::{ModelError, Result};

mod memory;
mod transfer;

pub use transfer::PendingScores;

/// A query: text, an example image, or both.
#[derive(Debug, Clone, Default)]
pub struct QueryInput {
    pub text: String,
    pub image: Option<PhotoInput>,
}

/// A query whose prompt prefix has been run: reused for every photo of a ranking.
#[derive(Debug, Clone)]
pub struct PreparedQuery {
    cache: PrefixCache,
    prefix_ids: Vec<u32>,
    suffix_ids: Vec<u32>,
    instruction: String,
    text: String,
    query_tokens: Option<usize>,
}

impl PreparedQuery {
    /// Tokens in the shared prefix (query image tokens included).
    pub fn prefix_len(&self) -> usize {
        self.prefix_ids.len()
    }

    /// Visual tokens of the query image, if the query has one.
    pub fn query_tokens(&self) -> Option<usize> {
        self.query_tokens
    }

    /// The instruction the query was prepared with.
    pub fn instruction(&self) -> &str {
        &self.instruction
    }

    /// The prompt as the model reads it for a photo of `photo_tokens` visual tokens, with
    /// each image written as one marker and its token count.
    pub fn display_prompt(&self, photo_tokens: usize) -> String {
        display_prompt(
            &self.instruction,
            &self.text,
            self.query_tokens,
            photo_tokens,
        )
    }
}

/// A photo's visual tokens, (tokens, hidden) on the model's device.
#[derive(Debug, Clone)]
pub struct VisualTokens {
    pub tokens: Tensor,
    /// Merged tokens per column and per row.
    pub merged: (usize, usize),
}

impl VisualTokens {
    /// Number of visual tokens.
    pub fn count(&self) -> usize {
        self.merged.0 * self.merged.1
    }
}

/// A document for [`Reranker::judge_documents`]: its ids from `<Document>:` on (its
/// image's pad single), and its image's visual tokens when it has one.
#[derive(Debug, Clone, Copy)]
pub struct DocumentTokens<'a> {
    pub ids: &'a [u32],
    pub visual: Option<&'a VisualTokens>,
}

/// The model's verdict on one photo.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    pub logit_yes: f32,
    pub logit_no: f32,
}

impl Judgement {
    /// P(yes) between the two answers: sigmoid(z_yes - z_no).
    pub fn score(&self) -> f64 {
        let d = f64::from(self.logit_yes) - f64::from(self.logit_no);
        1.0 / (1.0 + (-d).exp())
    }
}

/// A loaded Lychee-rerank-mm model.
pub struct Reranker {
    /// Identifies the weights and configuration (for caches): a hash of the configs and
    /// of the weight files' names, sizes and modification times.
    pub identity: String,
    pub config: ModelConfig,
    pub preprocess: PreprocessConfig,
    pub tokenizer: PromptTokenizer,
    pub device: ComputeDevice,
    pub dir: PathBuf,
    vision: VisionTower,
    text: TextModel,
    /// See [`Reranker::set_activation_budget`].
    activation_budget: Option<u64>,
    /// Visual tokens of photos already seen, for the next query over the same photos.
    visual_cache: Mutex<VisualCache>,
    /// Images run through the vision tower since loading (see [`Reranker::photos_encoded`]).
    encoded: std::sync::atomic::AtomicU64,
    /// Device memory one photo at the largest resolution took in the warm-up (0: not
    /// measured); batch sizes are chosen from it.
    measured_photo_bytes: std::sync::atomic::AtomicU64,
    /// How pixels reach the device and scores come back.
    link: transfer::Link,
}

/// Device memory kept for visual tokens of photos already seen: 1/32 of the GPU's memory
/// up to 1 GiB (about 140 photos of 1 000 tokens on the 7B model); 256 MiB of RAM on the
/// CPU.
fn visual_cache_limit(device: &ComputeDevice) -> u64 {
    match device.memory() {
        Some((_, total)) => (total / 32).min(1 << 30),
        None => 256 << 20,
    }
}

impl Reranker {
    /// Loads the model in `dir` onto `device`.
    pub fn load(dir: &Path, device: ComputeDevice) -> Result<Self> {
        let files = ModelFiles::locate(dir)?;
        let config = ModelConfig::from_json(&read_text(&files.config)?)?;
        let preprocess = PreprocessConfig::load(&files.preprocessor_config)?;
        let tokenizer = PromptTokenizer::load(&files.tokenizer)?;
        if let Some(id) = config.image_token_id
            && id != tokenizer.ids.image_pad
        {
            return Err(ModelError::BadTokenizer(format!(
                "config.json says the image token is {id} but the tokenizer's <|image_pad|> is {}",
                tokenizer.ids.image_pad
            )));
        }
        let weights = Arc::new(Checkpoint::open(&files.weights)?);
        let layout = TensorLayout::detect(&weights, &files)?;
        let vb = VarBuilder::from_backend(
            Box::new(CheckpointWeights::new(weights.clone())),
            device.dtype,
            device.device.clone(),
        );
        let host = VarBuilder::from_backend(
            Box::new(CheckpointWeights::new(weights)),
            device.dtype,
            Device::Cpu,
        );
        let identity = model_identity(&files);
        Self::assemble(
            config, preprocess, tokenizer, device, dir, vb, host, layout, identity,
        )
        .map_err(|e| match e {
            ModelError::Compute(e) => ModelError::BadWeights {
                file: "the weights".into(),
                why: format!("{e} (does config.json belong to these weights?)"),
            },
            other => other,
        })
    }

    /// What identifies the model in `dir` for caches, and its photo preparation, read from
    /// its files without loading the weights: a question already answered needs no model.
    pub fn identity_of(dir: &Path) -> Result<(String, PreprocessConfig)> {
        let files = ModelFiles::locate(dir)?;
        let preprocess = PreprocessConfig::load(&files.preprocessor_config)?;
        Ok((model_identity(&files), preprocess))
    }

    /// A model of `config`'s shape with random weights (for measuring speed), using the
    /// tokenizer of the model folder `dir` and Qwen2VLImageProcessor's default resolution
    /// (the model card's 1280 visual tokens at most).
    pub fn random(config: ModelConfig, dir: &Path, device: ComputeDevice) -> Result<Self> {
        let files = ModelFiles::locate(dir)?;
        let preprocess = PreprocessConfig::default();
        let tokenizer = PromptTokenizer::load(&files.tokenizer)?;
        let vb =
            VarBuilder::from_backend(Box::new(RandomWeights), device.dtype, device.device.clone());
        let host = VarBuilder::from_backend(Box::new(RandomWeights), device.dtype, Device::Cpu);
        let layout = TensorLayout {
            text: "model",
            vision: "visual",
        };
        let identity = "random weights".to_owned();
        Self::assemble(
            config, preprocess, tokenizer, device, dir, vb, host, layout, identity,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        config: ModelConfig,
        preprocess: PreprocessConfig,
        tokenizer: PromptTokenizer,
        device: ComputeDevice,
        dir: &Path,
        vb: VarBuilder,
        host: VarBuilder,
        layout: TensorLayout,
        identity: String,
    ) -> Result<Self> {
        let vision = VisionTower::new(&config.vision, vb.pp(layout.vision))?;
        let lm_head = (!config.text.tie_word_embeddings).then(|| host.pp("lm_head"));
        let text = TextModel::new(
            &config.text,
            vb.pp(layout.text),
            host.pp(layout.text),
            lm_head,
            tokenizer.ids.yes,
            tokenizer.ids.no,
        )?;
        Ok(Reranker {
            identity,
            config,
            preprocess,
            tokenizer,
            dir: dir.to_path_buf(),
            vision,
            text,
            activation_budget: None,
            visual_cache: Mutex::new(VisualCache::new(visual_cache_limit(&device))),
            encoded: std::sync::atomic::AtomicU64::new(0),
            measured_photo_bytes: std::sync::atomic::AtomicU64::new(0),
            link: transfer::Link::new(&device),
            device,
        })
    }

    /// Runs the system + instruction + query prefix once and keeps its keys and values.
    pub fn prepare_query(&self, instruction: &str, query: &QueryInput) -> Result<PreparedQuery> {
        let ids = PromptIds::new(
            &self.tokenizer,
            instruction,
            &query.text,
            query.image.is_some(),
        )?;
        let pad = self.tokenizer.ids.image_pad;
        let (prefix_ids, visual) = match &query.image {
            Some(image) => {
                let tokens = self.encode_photos(&[image])?.remove(0);
                (
                    expand_pads(&ids.prefix, pad, &[tokens.count()]),
                    Some(tokens),
                )
            }
            None => (ids.prefix.clone(), None),
        };
        let grids: Vec<_> = visual.iter().map(|v| v.merged).collect();
        let (positions, next) = Positions::of(&prefix_ids, pad, &grids, 0);
        let embeds = self
            .text
            .embed(&prefix_ids, pad, visual.as_ref().map(|v| &v.tokens))?;
        let cache = self.text.prefill(&embeds, &positions, next)?;
        Ok(PreparedQuery {
            cache,
            prefix_ids,
            suffix_ids: ids.suffix,
            instruction: instruction.to_owned(),
            text: query.text.clone(),
            query_tokens: visual.map(|v| v.count()),
        })
    }

    fn visual_cache(&self) -> std::sync::MutexGuard<'_, VisualCache> {
        self.visual_cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes of device memory kept for visual tokens of photos already seen (0 turns
    /// the keeping off).
    pub fn set_visual_cache_limit(&self, bytes: u64) {
        self.visual_cache().set_limit(bytes);
    }

    /// Photos whose visual tokens are kept, the bytes they take, and how many photos
    /// were answered from them since the model was loaded.
    pub fn visual_cache_stats(&self) -> (usize, u64, u64) {
        let c = self.visual_cache();
        (c.len(), c.bytes(), c.hits())
    }

    /// Frees device memory held for later use (after the device ran out of memory).
    /// Images (photos and query images) run through the vision tower since the model was
    /// loaded, not counting those answered from kept visual tokens: the share of a
    /// ranking that this copy of the model did.
    pub fn photos_encoded(&self) -> u64 {
        self.encoded.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn release_cached_memory(&self) {
        self.visual_cache().clear();
    }

    /// Visual tokens of photos: those seen before (the same pixels at the same
    /// resolution) from memory, the others run through the vision tower together.
    pub fn encode_photos(&self, photos: &[&PhotoInput]) -> Result<Vec<VisualTokens>> {
        let mut out: Vec<Option<VisualTokens>> = {
            let mut cache = self.visual_cache();
            photos
                .iter()
                .map(|p| {
                    cache
                        .get(&p.pixel_key)
                        .map(|(tokens, merged)| VisualTokens { tokens, merged })
                })
                .collect()
        };
        let missing: Vec<usize> = (0..photos.len()).filter(|&i| out[i].is_none()).collect();
        if !missing.is_empty() {
            let inputs: Vec<&PhotoInput> = missing.iter().map(|&i| photos[i]).collect();
            let fresh = self.run_vision(&inputs)?;
            let mut cache = self.visual_cache();
            for (&i, v) in missing.iter().zip(fresh) {
                cache.put(photos[i].pixel_key, v.tokens.clone(), v.merged);
                out[i] = Some(v);
            }
        }
        Ok(out
            .into_iter()
            .map(|v| v.expect("every photo was looked up or encoded"))
            .collect())
    }

    /// Runs photos through the vision tower together.
    fn run_vision(&self, photos: &[&PhotoInput]) -> Result<Vec<VisualTokens>> {
        let row = self.config.vision.patch_input_len();
        let merge = self.config.vision.spatial_merge_size;
        let rows = photos.iter().map(|p| p.len()).sum::<usize>() / row;
        self.check_budget(self.vision_bytes(rows as u64), "the vision tower")?;
        let device = &self.device.device;
        super::profile::mark("upload", device);
        let pixels = super::profile::stage("vision.upload", device, || {
            self.link.pixels(&self.device, photos, row)
        })?;
        debug_assert_eq!(pixels.dim(0)?, rows);
        super::profile::mark("vision", device);
        let grids: Vec<_> = photos.iter().map(|p| (p.grid_h, p.grid_w)).collect();
        let tokens = self.vision.forward(&pixels, &grids)?;
        self.encoded
            .fetch_add(photos.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let counts: Vec<_> = photos.iter().map(|p| p.visual_tokens(merge)).collect();
        Ok(split_per_image(&tokens, &counts)?
            .into_iter()
            .zip(photos)
            .map(|(tokens, p)| VisualTokens {
                tokens,
                merged: p.merged_grid(merge),
            })
            .collect())
    }

    /// The full prompt token ids for a photo of `photo` visual tokens (for inspection and
    /// tests; the model itself reuses the prefix).
    pub fn prompt_ids(&self, query: &PreparedQuery, photo_tokens: usize) -> Vec<u32> {
        let pad = self.tokenizer.ids.image_pad;
        let mut ids = query.prefix_ids.clone();
        ids.extend(expand_pads(&query.suffix_ids, pad, &[photo_tokens]));
        ids
    }

    /// The full prompt's ids for a document given by its ids from `<Document>:` on, with
    /// an image of `visual_tokens` tokens if it has one (for inspection and tests).
    pub fn document_prompt_ids(
        &self,
        query: &PreparedQuery,
        document_ids: &[u32],
        visual_tokens: Option<usize>,
    ) -> Vec<u32> {
        let pad = self.tokenizer.ids.image_pad;
        let mut ids = query.prefix_ids.clone();
        ids.extend(expand_pads(document_ids, pad, visual_tokens.as_slice()));
        ids
    }

    /// Judges one photo against a prepared query.
    pub fn judge(&self, query: &PreparedQuery, photo: &VisualTokens) -> Result<Judgement> {
        Ok(self.judge_batch(query, &[photo])?[0])
    }

    /// Judges photos of the same merged grid together, in one batch.
    pub fn judge_batch(
        &self,
        query: &PreparedQuery,
        photos: &[&VisualTokens],
    ) -> Result<Vec<Judgement>> {
        self.collect(self.queue_batch(query, photos)?)
    }

    /// Queues the judging of photos of the same merged grid, in one batch, without waiting
    /// for the device: [`Reranker::collect`] reads the scores. Work queued meanwhile (the
    /// next batch) runs behind it without being waited for.
    pub fn queue_batch(
        &self,
        query: &PreparedQuery,
        photos: &[&VisualTokens],
    ) -> Result<PendingScores> {
        let Some(first) = photos.first() else {
            return Ok(PendingScores::none());
        };
        if photos.iter().any(|p| p.merged != first.merged) {
            return Err(
                candle_core::Error::Msg("a batch of photos must share one grid".into()).into(),
            );
        }
        let pad = self.tokenizer.ids.image_pad;
        let ids = expand_pads(&query.suffix_ids, pad, &[first.count()]);
        let seq = (query.prefix_len() + ids.len()) as u64;
        self.check_budget(
            self.text_bytes(seq) * photos.len() as u64,
            "the language model",
        )?;
        let (positions, _) = Positions::of(&ids, pad, &[first.merged], query.cache.next_position);
        let embeds =
            super::profile::stage("text.embed", &self.device.device, || -> Result<Tensor> {
                let embeds = photos
                    .iter()
                    .map(|p| self.text.embed(&ids, pad, Some(&p.tokens)))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Tensor::cat(&embeds, 0)?)
            })?;
        let logits = self.text.score_suffix(&query.cache, &embeds, &positions)?;
        super::profile::mark("scores", &self.device.device);
        self.link.queue(&self.device, logits)
    }

    /// The judgements of queued photos or documents, once the device has them.
    pub fn collect(&self, pending: PendingScores) -> Result<Vec<Judgement>> {
        Ok(self
            .link
            .read(pending)?
            .into_iter()
            .map(|[logit_yes, logit_no]| Judgement {
                logit_yes,
                logit_no,
            })
            .collect())
    }

    /// A document's ids from `<Document>:` on, for an image (when `has_image`) followed by
    /// `text`, the text cut to `max_text_tokens` tokens; the second value says whether it
    /// was cut.
    pub fn document_ids(
        &self,
        has_image: bool,
        text: &str,
        max_text_tokens: usize,
    ) -> Result<(Vec<u32>, bool)> {
        if text.is_empty() && !has_image {
            return Err(ModelError::EmptyDocument);
        }
        super::prompt::text_document_ids(&self.tokenizer, has_image, text, max_text_tokens)
    }

    /// Judges documents in one batch: all without an image, or all with images of one
    /// merged grid; their texts may differ in length (the batch is padded on the right,
    /// and each document is read at its own last token).
    pub fn judge_documents(
        &self,
        query: &PreparedQuery,
        docs: &[DocumentTokens<'_>],
    ) -> Result<Vec<Judgement>> {
        let Some(first) = docs.first() else {
            return Ok(Vec::new());
        };
        let grid = first.visual.map(|v| v.merged);
        if docs.iter().any(|d| d.visual.map(|v| v.merged) != grid) {
            return Err(candle_core::Error::Msg(
                "a batch of documents must share one image grid (or have none)".into(),
            )
            .into());
        }
        let pad = self.tokenizer.ids.image_pad;
        let counts: Vec<usize> = grid.iter().map(|(r, c)| r * c).collect();
        let rows: Vec<Vec<u32>> = docs
            .iter()
            .map(|d| expand_pads(d.ids, pad, &counts))
            .collect();
        let len = rows.iter().map(Vec::len).max().unwrap_or(0);
        let seq = (query.prefix_len() + len) as u64;
        self.check_budget(
            self.text_bytes(seq) * docs.len() as u64,
            "the language model",
        )?;
        // Padding: any token that is not an image pad; its rows are never read.
        let filler = self.tokenizer.ids.im_end;
        let last: Vec<usize> = rows.iter().map(|r| r.len() - 1).collect();
        let padded: Vec<Vec<u32>> = rows
            .into_iter()
            .map(|mut r| {
                r.resize(len, filler);
                r
            })
            .collect();
        let grids: Vec<(usize, usize)> = grid.into_iter().collect();
        let (positions, _) = Positions::of(&padded[0], pad, &grids, query.cache.next_position);
        let embeds = padded
            .iter()
            .zip(docs)
            .map(|(ids, d)| self.text.embed(ids, pad, d.visual.map(|v| &v.tokens)))
            .collect::<Result<Vec<_>>>()?;
        let embeds = Tensor::cat(&embeds, 0)?;
        let logits = self
            .text
            .score_suffix_at(&query.cache, &embeds, &positions, Some(&last))?;
        self.collect(self.link.queue(&self.device, logits)?)
    }

    /// True when photos are best sent to the device already in bf16: the model computes
    /// in bf16 on a GPU, and half the bytes cross the bus (the values are the same as the
    /// device's own conversion would give: both round to nearest even).
    pub fn takes_bf16_pixels(&self) -> bool {
        self.device.is_gpu() && self.device.dtype == candle_core::DType::BF16
    }

    /// Waits for the device to finish queued work (for honest timings).
    pub fn synchronize(&self) -> Result<()> {
        Ok(self.device.device.synchronize()?)
    }
}

/// A hash of what determines the model's outputs: the configs' bytes and each weight
/// file's name, size and modification time.
fn model_identity(files: &ModelFiles) -> String {
    let mut h = blake3::Hasher::new();
    for path in [&files.config, &files.preprocessor_config] {
        h.update(&std::fs::read(path).unwrap_or_default());
    }
    files.hash_weight_files(&mut h);
    h.finalize().to_hex()[..32].to_owned()
}

/// Where the two towers' tensors are in the checkpoint.
struct TensorLayout {
    text: &'static str,
    vision: &'static str,
}

impl TensorLayout {
    fn detect(weights: &Checkpoint, files: &ModelFiles) -> Result<Self> {
        let has = |name: &str| weights.contains(name);
        if has("model.embed_tokens.weight") {
            Ok(TensorLayout {
                text: "model",
                vision: "visual",
            })
        } else if has("model.language_model.embed_tokens.weight") {
            Ok(TensorLayout {
                text: "model.language_model",
                vision: "model.visual",
            })
        } else {
            Err(ModelError::MissingTensor {
                name: "model.embed_tokens.weight".into(),
                files: files
                    .weights
                    .iter()
                    .map(|p| super::files::file_name(p))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }
}
