//! SigLIP 2's text as it was trained: the Gemma tokenizer (byte fallback, spaces as "▁"),
//! lower-cased, `<eos>` appended, padded with `<pad>` or truncated to exactly the text
//! tower's 64 positions. This is what transformers' `Siglip2Tokenizer` and
//! `Siglip2Processor` do (`models/siglip2/tokenization_siglip2.py`: the `Lowercase`
//! normalizer before Gemma's; `processing_siglip2.py`: `padding="max_length"`,
//! `truncation=True`, `max_length=64`). The plain Gemma tokenizer that transformers picks
//! for the fixed-resolution checkpoints does neither, and the text tower, which reads the
//! last of its 64 positions, then embeds another sentence.
//!
//! Lower-casing is the `tokenizers` `Lowercase` normalizer (character by character: Σ
//! becomes σ even at the end of a word, unlike Python's `str.lower`). As in
//! `GemmaTokenizer`, only the vocabulary and merges of `tokenizer.json` are taken; the
//! normalizer and the `<bos>`/`<eos>` template are rebuilt from `tokenizer_config.json`.

use std::path::Path;

use serde_json::Value;
use tokenizers::normalizers::{Lowercase, Replace, Sequence};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    NormalizerWrapper, PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer,
    TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::model::ModelError;

/// The embedder's tokenizer.
pub struct TextTokenizer {
    tokenizer: Tokenizer,
    /// Ids per text (the text tower's positions).
    pub length: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("length", &self.length)
            .finish()
    }
}

fn bad(why: impl std::fmt::Display) -> ModelError {
    ModelError::BadTokenizer(why.to_string())
}

impl TextTokenizer {
    /// Loads `tokenizer.json` (and `tokenizer_config.json` beside it, if any) for texts of
    /// `length` ids.
    pub fn load(tokenizer_json: &Path, length: usize) -> Result<Self, ModelError> {
        let mut tokenizer = Tokenizer::from_file(tokenizer_json)
            .map_err(|e| bad(format!("{}: {e}", tokenizer_json.display())))?;
        let config: Value = tokenizer_json
            .parent()
            .map(|d| d.join("tokenizer_config.json"))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        // GemmaTokenizer's own defaults, which SigLIP 2's tokenizer_config.json overrides
        // (add_bos_token false, add_eos_token true).
        let flag =
            |key: &str, default: bool| config.get(key).and_then(Value::as_bool).unwrap_or(default);
        let (add_bos, add_eos) = (flag("add_bos_token", true), flag("add_eos_token", false));
        let id = |token: &str| {
            tokenizer
                .token_to_id(token)
                .ok_or_else(|| bad(format!("it has no {token} token")))
        };
        let (pad, bos, eos) = (id("<pad>")?, id("<bos>")?, id("<eos>")?);

        let normalizer = Sequence::new(vec![
            NormalizerWrapper::Lowercase(Lowercase),
            NormalizerWrapper::Replace(Replace::new(" ", "▁").map_err(bad)?),
        ]);
        tokenizer.with_normalizer(Some(normalizer)).map_err(bad)?;
        tokenizer.with_pre_tokenizer(None::<tokenizers::PreTokenizerWrapper>);
        let mut single = Vec::new();
        let mut special = Vec::new();
        if add_bos {
            single.push("<bos>".to_owned());
            special.push(("<bos>", bos));
        }
        single.push("$A".to_owned());
        if add_eos {
            single.push("<eos>".to_owned());
            special.push(("<eos>", eos));
        }
        let template = TemplateProcessing::builder()
            .try_single(single.join(" "))
            .map_err(bad)?
            .special_tokens(special)
            .build()
            .map_err(bad)?;
        tokenizer.with_post_processor(Some(template));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(bad)?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id: pad,
            pad_type_id: 0,
            pad_token: "<pad>".into(),
        }));
        Ok(TextTokenizer { tokenizer, length })
    }

    /// The `length` ids of `text`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let encoding = self.tokenizer.encode(text, true).map_err(bad)?;
        Ok(encoding.get_ids().to_vec())
    }
}
