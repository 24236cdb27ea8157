//! The Qwen2 tokenizer, from `tokenizer.json` or rebuilt from `vocab.json` + `merges.txt`
//! the way transformers' `Qwen2Tokenizer` builds it (NFC, the Qwen2 split pattern,
//! byte-level BPE), plus the token ids the prompt and the score need.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::files::{TokenizerFiles, read_text};
use super::{ModelError, Result};

/// Qwen2's pre-tokenizer pattern (transformers `tokenization_qwen2.py`, PRETOKENIZE_REGEX).
const QWEN2_SPLIT_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";
pub const VISION_START: &str = "<|vision_start|>";
pub const VISION_END: &str = "<|vision_end|>";
pub const IMAGE_PAD: &str = "<|image_pad|>";

/// The token ids the scorer depends on, read from the vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub im_start: u32,
    pub im_end: u32,
    pub vision_start: u32,
    pub vision_end: u32,
    pub image_pad: u32,
    pub yes: u32,
    pub no: u32,
}

/// The tokenizer and the ids of its special tokens.
#[derive(Clone)]
pub struct PromptTokenizer {
    tokenizer: Tokenizer,
    pub ids: SpecialIds,
}

impl std::fmt::Debug for PromptTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptTokenizer")
            .field("ids", &self.ids)
            .finish()
    }
}

impl PromptTokenizer {
    /// Loads the tokenizer from the files a model folder has.
    pub fn load(files: &TokenizerFiles) -> Result<Self> {
        let tokenizer = match files {
            TokenizerFiles::Json(path) => Tokenizer::from_file(path).map_err(|e| {
                ModelError::BadTokenizer(format!("{} could not be read: {e}", path.display()))
            })?,
            TokenizerFiles::VocabMerges {
                vocab,
                merges,
                tokenizer_config,
                added_tokens,
            } => from_vocab_merges(
                vocab,
                merges,
                tokenizer_config.as_deref(),
                added_tokens.as_deref(),
            )?,
        };
        Self::new(tokenizer)
    }

    fn new(tokenizer: Tokenizer) -> Result<Self> {
        let special = |name: &str| {
            tokenizer.token_to_id(name).ok_or_else(|| {
                ModelError::BadTokenizer(format!("the vocabulary has no {name} token"))
            })
        };
        // "yes" and "no" must each be one token for P(yes) to be read off one position.
        let single = |word: &str| -> Result<u32> {
            let enc = tokenizer
                .encode(word, false)
                .map_err(|e| ModelError::BadTokenizer(e.to_string()))?;
            match enc.get_ids() {
                [id] => Ok(*id),
                ids => Err(ModelError::BadTokenizer(format!(
                    "\"{word}\" is {} tokens, not one",
                    ids.len()
                ))),
            }
        };
        let ids = SpecialIds {
            im_start: special(IM_START)?,
            im_end: special(IM_END)?,
            vision_start: special(VISION_START)?,
            vision_end: special(VISION_END)?,
            image_pad: special(IMAGE_PAD)?,
            yes: single("yes")?,
            no: single("no")?,
        };
        Ok(PromptTokenizer { tokenizer, ids })
    }

    /// Token ids of `text`, in which the special tokens written out are recognised.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ModelError::BadTokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// When `text` has more than `max_tokens` tokens, the part of it the first `max_tokens`
    /// cover; None when it fits.
    pub fn cut_after<'t>(&self, text: &'t str, max_tokens: usize) -> Result<Option<&'t str>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ModelError::BadTokenizer(e.to_string()))?;
        if enc.len() <= max_tokens {
            return Ok(None);
        }
        let end = enc.get_offsets()[max_tokens].0;
        // Offsets are byte offsets into `text`; keep to a character boundary.
        let end = (0..=end)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        Ok(Some(&text[..end]))
    }

    /// The text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| ModelError::BadTokenizer(e.to_string()))
    }
}

fn bad(msg: impl Into<String>) -> ModelError {
    ModelError::BadTokenizer(msg.into())
}

/// transformers' `Qwen2Tokenizer.__init__`, on the files of an older checkpoint.
fn from_vocab_merges(
    vocab: &Path,
    merges: &Path,
    tokenizer_config: Option<&Path>,
    added_tokens: Option<&Path>,
) -> Result<Tokenizer> {
    let to_str = |p: &Path| {
        p.to_str()
            .map(str::to_owned)
            .ok_or_else(|| bad(format!("{} is not a UTF-8 path", p.display())))
    };
    let bpe = BPE::from_file(&to_str(vocab)?, &to_str(merges)?)
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix(String::new())
        .fuse_unk(false)
        .byte_fallback(false)
        .build()
        .map_err(|e| bad(format!("vocab.json / merges.txt could not be read: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    let split = Split::new(
        SplitPattern::Regex(QWEN2_SPLIT_PATTERN.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| bad(e.to_string()))?;
    tokenizer
        .with_normalizer(Some(NFC))
        .map_err(|e| bad(e.to_string()))?
        .with_pre_tokenizer(Some(Sequence::new(vec![
            split.into(),
            ByteLevel::new(false, false, false).into(),
        ])))
        .with_decoder(Some(ByteLevel::default()));

    // Added tokens with their ids, from tokenizer_config.json and added_tokens.json.
    let mut added: BTreeMap<u32, (String, bool)> = BTreeMap::new();
    if let Some(path) = tokenizer_config {
        let value: Value = serde_json::from_str(&read_text(path)?)
            .map_err(|e| bad(format!("tokenizer_config.json is not valid JSON ({e})")))?;
        if let Some(map) = value.get("added_tokens_decoder").and_then(Value::as_object) {
            for (id, entry) in map {
                let id: u32 = id
                    .parse()
                    .map_err(|_| bad(format!("added token id {id} is not a number")))?;
                let content = entry
                    .get("content")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("added token {id} has no content")))?;
                let special = entry
                    .get("special")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                added.insert(id, (content.to_owned(), special));
            }
        }
    }
    if let Some(path) = added_tokens {
        let value: Value = serde_json::from_str(&read_text(path)?)
            .map_err(|e| bad(format!("added_tokens.json is not valid JSON ({e})")))?;
        for (content, id) in value.as_object().into_iter().flatten() {
            let id = id
                .as_u64()
                .ok_or_else(|| bad(format!("added token {content} has no id")))?
                as u32;
            added.entry(id).or_insert_with(|| (content.clone(), true));
        }
    }
    if added.is_empty() {
        return Err(bad(
            "vocab.json and merges.txt need the added tokens (<|im_start|> and the rest) from tokenizer_config.json or added_tokens.json",
        ));
    }
    for (id, (content, special)) in &added {
        let token = AddedToken::from(content.clone(), true)
            .normalized(false)
            .special(*special);
        tokenizer
            .add_special_tokens([token])
            .map_err(|e| bad(e.to_string()))?;
        if tokenizer.token_to_id(content) != Some(*id) {
            return Err(bad(format!(
                "added token {content} should have id {id} but the vocabulary gives {:?}",
                tokenizer.token_to_id(content)
            )));
        }
    }
    Ok(tokenizer)
}
