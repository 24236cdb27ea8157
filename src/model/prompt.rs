//! The reranker's prompt (MODEL_SPEC.md section 2) and the multimodal rotary positions of
//! its tokens.
//!
//! ```text
//! <|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n<Instruct>: {INSTRUCTION}<Query>:{QUERY}\n<Document>:{DOCUMENT}<|im_end|>\n<|im_start|>assistant\n
//! ```
//!
//! A side's content is its image (`<|vision_start|><|image_pad|><|vision_end|>`, the pad
//! expanded to one token per merged visual token) followed by its text. Everything up to
//! the newline before `<Document>:` is the same for every document of a ranking: that is
//! the prefix whose keys and values are computed once. The split falls where the Qwen2
//! pre-tokenizer always splits (a newline run ends a piece, and `<Document` starts one),
//! so the prefix's ids followed by a document's ids are the ids of the whole prompt.

use super::tokenizer::{IMAGE_PAD, PromptTokenizer, VISION_END, VISION_START};
use super::{ModelError, Result};

/// The system message Lychee-rerank-mm was trained with.
pub const SYSTEM_PROMPT: &str = "Judge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be \"yes\" or \"no\".";

/// The instruction Lychee-rerank-mm's published demo prefills; it was trained on it.
pub const DEFAULT_INSTRUCTION: &str =
    "Given a web search query, retrieve relevant passages that answer the query.";

/// Instructions offered in the app: (label, instruction).
pub const INSTRUCTION_PRESETS: &[(&str, &str)] = &[
    ("Photo search", DEFAULT_INSTRUCTION),
    (
        "Find similar photos",
        "Retrieve images that are similar to the query image.",
    ),
    (
        "Document or screenshot search",
        "Retrieve document pages or screenshots that answer the user's query.",
    ),
];

/// Written for a side with neither text nor image, as Qwen's reranker code does.
const EMPTY_SIDE: &str = "NULL";

fn side(has_image: bool, text: &str) -> String {
    let mut content = String::new();
    if has_image {
        content.push_str(VISION_START);
        content.push_str(IMAGE_PAD);
        content.push_str(VISION_END);
    }
    content.push_str(text);
    if content.is_empty() {
        EMPTY_SIDE.to_owned()
    } else {
        content
    }
}

/// The prompt text with one `<|image_pad|>` per image; the pads are expanded later.
pub fn prompt_text(instruction: &str, query_text: &str, query_has_image: bool) -> String {
    format!(
        "{}{}",
        prefix_text(instruction, query_text, query_has_image),
        document_text(true, "")
    )
}

/// The prompt up to the document: system, instruction and query, ending in a newline.
fn prefix_text(instruction: &str, query_text: &str, query_has_image: bool) -> String {
    format!(
        "<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n<Instruct>: {instruction}<Query>:{query}\n",
        query = side(query_has_image, query_text),
    )
}

/// The prompt from the document on: the document (its image first, then its text) and the
/// assistant's turn.
fn document_text(has_image: bool, text: &str) -> String {
    format!(
        "<Document>:{document}<|im_end|>\n<|im_start|>assistant\n",
        document = side(has_image, text)
    )
}

/// The prompt as token ids, split where the document begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptIds {
    /// Everything before the document, with the query image's pad (if any) still single.
    pub prefix: Vec<u32>,
    /// A photo as the document: from `<Document>:` to the end, its pad single.
    pub suffix: Vec<u32>,
}

impl PromptIds {
    /// Tokenizes the prefix and the photo document.
    pub fn new(
        tokenizer: &PromptTokenizer,
        instruction: &str,
        query_text: &str,
        query_has_image: bool,
    ) -> Result<Self> {
        if query_text.is_empty() && !query_has_image {
            return Err(ModelError::EmptyQuery);
        }
        let prefix = tokenizer.encode(&prefix_text(instruction, query_text, query_has_image))?;
        let suffix = document_ids(tokenizer, true, "")?;
        let pads = prefix
            .iter()
            .filter(|&&id| id == tokenizer.ids.image_pad)
            .count();
        if pads != usize::from(query_has_image) {
            return Err(ModelError::BadTokenizer(format!(
                "{IMAGE_PAD} was not recognised as one token"
            )));
        }
        Ok(PromptIds { prefix, suffix })
    }
}

/// A document's ids, from `<Document>:` to the end, its image's pad (if any) single.
pub fn document_ids(tokenizer: &PromptTokenizer, has_image: bool, text: &str) -> Result<Vec<u32>> {
    let ids = tokenizer.encode(&document_text(has_image, text))?;
    let pads = ids
        .iter()
        .filter(|&&id| id == tokenizer.ids.image_pad)
        .count();
    if pads != usize::from(has_image) || (has_image && !ids.contains(&tokenizer.ids.vision_start)) {
        return Err(ModelError::BadTokenizer(format!(
            "{VISION_START}{IMAGE_PAD}{VISION_END} was not recognised as three tokens"
        )));
    }
    Ok(ids)
}

/// A document's ids with its text cut to at most `max_text_tokens` tokens (from the
/// right, at a token boundary of the text read alone); the second value says whether it
/// was cut.
pub fn text_document_ids(
    tokenizer: &PromptTokenizer,
    has_image: bool,
    text: &str,
    max_text_tokens: usize,
) -> Result<(Vec<u32>, bool)> {
    match tokenizer.cut_after(text, max_text_tokens)? {
        Some(kept) => Ok((document_ids(tokenizer, has_image, kept)?, true)),
        None => Ok((document_ids(tokenizer, has_image, text)?, false)),
    }
}

/// The whole prompt's ids for a query (with an image of `query_tokens` visual tokens, if
/// any) and a photo of `photo_tokens` visual tokens (tokenized in two parts, as the model
/// reads it; tests compare it with transformers' ids of the whole prompt).
pub fn full_prompt_ids(
    tokenizer: &PromptTokenizer,
    instruction: &str,
    query_text: &str,
    query_tokens: Option<usize>,
    photo_tokens: usize,
) -> Result<Vec<u32>> {
    let ids = PromptIds::new(tokenizer, instruction, query_text, query_tokens.is_some())?;
    let pad = tokenizer.ids.image_pad;
    let mut out = expand_pads(&ids.prefix, pad, query_tokens.as_slice());
    out.extend(expand_pads(&ids.suffix, pad, &[photo_tokens]));
    Ok(out)
}

/// Replaces each single `pad` in `ids` by `counts[i]` copies, in order.
pub fn expand_pads(ids: &[u32], pad: u32, counts: &[usize]) -> Vec<u32> {
    let mut out = Vec::with_capacity(ids.len() + counts.iter().sum::<usize>());
    let mut next = counts.iter();
    for &id in ids {
        if id == pad {
            let n = next.next().copied().unwrap_or(1);
            out.extend(std::iter::repeat_n(pad, n));
        } else {
            out.push(id);
        }
    }
    out
}

/// Multimodal rotary positions (t, h, w) for a run of tokens, as transformers'
/// `get_rope_index` gives them: text tokens count up by one in all three; the merged
/// visual tokens of an image starting at position p get (p, p + row, p + column), and the
/// text after the image continues at p + max(rows, columns).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Positions {
    pub t: Vec<u32>,
    pub h: Vec<u32>,
    pub w: Vec<u32>,
}

impl Positions {
    /// Positions of `ids` (pads already expanded) starting at `start`; `grids` gives the
    /// merged (rows, columns) of each image in order. Returns the positions and the
    /// position the next token would take.
    pub fn of(ids: &[u32], pad: u32, grids: &[(usize, usize)], start: u32) -> (Self, u32) {
        let mut p = Positions::default();
        let mut next = start;
        let mut images = grids.iter();
        let mut i = 0;
        while i < ids.len() {
            if ids[i] == pad {
                let (rows, cols) = images.next().copied().unwrap_or((1, 1));
                for r in 0..rows {
                    for c in 0..cols {
                        p.t.push(next);
                        p.h.push(next + r as u32);
                        p.w.push(next + c as u32);
                    }
                }
                i += rows * cols;
                next += rows.max(cols) as u32;
            } else {
                p.t.push(next);
                p.h.push(next);
                p.w.push(next);
                next += 1;
                i += 1;
            }
        }
        (p, next)
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.t.len()
    }

    /// True when there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.t.is_empty()
    }
}

/// The prompt as the model read it, for the "show model output" view: each image's pad
/// run is written as one marker with its count.
pub fn display_prompt(
    instruction: &str,
    query_text: &str,
    query_tokens: Option<usize>,
    photo_tokens: usize,
) -> String {
    let marker = |n: usize| format!("{VISION_START}[{n} visual tokens]{VISION_END}");
    let query = match query_tokens {
        Some(n) => format!("{}{query_text}", marker(n)),
        None if query_text.is_empty() => EMPTY_SIDE.to_owned(),
        None => query_text.to_owned(),
    };
    format!(
        "<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n<Instruct>: {instruction}<Query>:{query}\n<Document>:{document}<|im_end|>\n<|im_start|>assistant\n",
        document = marker(photo_tokens),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_layout_matches_the_spec() {
        let text = prompt_text("INSTR", "a cat", false);
        assert_eq!(
            text,
            "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n<Instruct>: INSTR<Query>:a cat\n<Document>:<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n"
        );
        let with_image = prompt_text("I", "", true);
        assert!(
            with_image.contains("<Query>:<|vision_start|><|image_pad|><|vision_end|>\n<Document>:")
        );
        assert!(prompt_text("I", "", false).contains("<Query>:NULL\n"));
    }

    #[test]
    fn pads_expand_in_order() {
        assert_eq!(
            expand_pads(&[1, 9, 2, 9, 3], 9, &[2, 3]),
            vec![1, 9, 9, 2, 9, 9, 9, 3]
        );
    }

    #[test]
    fn positions_follow_get_rope_index() {
        // two text tokens, a 2x3 image, one text token
        let ids = [5, 6, 9, 9, 9, 9, 9, 9, 7];
        let (p, next) = Positions::of(&ids, 9, &[(2, 3)], 0);
        assert_eq!(p.t, vec![0, 1, 2, 2, 2, 2, 2, 2, 5]);
        assert_eq!(p.h, vec![0, 1, 2, 2, 2, 3, 3, 3, 5]);
        assert_eq!(p.w, vec![0, 1, 2, 3, 4, 2, 3, 4, 5]);
        assert_eq!(next, 6);
        let (p, next) = Positions::of(&[1, 2], 9, &[], 10);
        assert_eq!(p.h, vec![10, 11]);
        assert_eq!(next, 12);
    }
}
