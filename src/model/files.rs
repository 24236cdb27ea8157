//! Finding and checking the files of a model folder before anything is loaded, so that a
//! missing or damaged file is named in the message instead of failing somewhere deep.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{ModelError, Result};

/// The files the scorer reads from a model folder.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub preprocessor_config: PathBuf,
    pub tokenizer: TokenizerFiles,
    /// One file, or the shards named by `model.safetensors.index.json`.
    pub weights: Vec<PathBuf>,
}

/// Where the vocabulary comes from.
#[derive(Debug, Clone)]
pub enum TokenizerFiles {
    /// A `tokenizer.json` holds everything.
    Json(PathBuf),
    /// `vocab.json` + `merges.txt`, with the added tokens from `tokenizer_config.json`
    /// and/or `added_tokens.json`.
    VocabMerges {
        vocab: PathBuf,
        merges: PathBuf,
        tokenizer_config: Option<PathBuf>,
        added_tokens: Option<PathBuf>,
    },
}

const INDEX_FILE: &str = "model.safetensors.index.json";
const SINGLE_FILE: &str = "model.safetensors";

impl ModelFiles {
    /// Finds the files in `dir` and checks that each one is there and readable.
    pub fn locate(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ModelError::NoFolder(dir.to_path_buf()));
        }
        let need = |name: &str, hint: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(ModelError::MissingFile {
                    file: name.to_owned(),
                    hint: hint.to_owned(),
                })
            }
        };
        let config = need(
            "config.json",
            "it describes the model's shape; download the whole model folder again",
        )?;
        let preprocessor_config = need(
            "preprocessor_config.json",
            "it gives the photo resolution and colour normalization; download the whole model folder again",
        )?;
        let tokenizer = locate_tokenizer(dir)?;
        let weights = locate_weights(dir)?;
        Ok(ModelFiles {
            dir: dir.to_path_buf(),
            config,
            preprocessor_config,
            tokenizer,
            weights,
        })
    }

    /// Adds each weight file's name, size and modification time to `h` (what names a
    /// checkpoint's version for the caches without reading its gigabytes).
    pub fn hash_weight_files(&self, h: &mut blake3::Hasher) {
        for path in &self.weights {
            h.update(
                path.file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            if let Ok(meta) = std::fs::metadata(path) {
                h.update(&meta.len().to_le_bytes());
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                h.update(&mtime.to_le_bytes());
            }
        }
    }
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

pub(crate) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| ModelError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn locate_tokenizer(dir: &Path) -> Result<TokenizerFiles> {
    let json = dir.join("tokenizer.json");
    if json.is_file() {
        return Ok(TokenizerFiles::Json(json));
    }
    let vocab = dir.join("vocab.json");
    let merges = dir.join("merges.txt");
    let optional = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
    match (vocab.is_file(), merges.is_file()) {
        (true, true) => Ok(TokenizerFiles::VocabMerges {
            vocab,
            merges,
            tokenizer_config: optional("tokenizer_config.json"),
            added_tokens: optional("added_tokens.json"),
        }),
        (true, false) => Err(ModelError::MissingFile {
            file: "merges.txt".into(),
            hint: "there is a vocab.json but no merges.txt or tokenizer.json beside it".into(),
        }),
        _ => Err(ModelError::MissingFile {
            file: "tokenizer.json".into(),
            hint: "the tokenizer needs tokenizer.json, or vocab.json and merges.txt".into(),
        }),
    }
}

fn locate_weights(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join(INDEX_FILE);
    if index.is_file() {
        let text = read_text(&index)?;
        let value: Value = serde_json::from_str(&text).map_err(|e| ModelError::BadWeights {
            file: INDEX_FILE.into(),
            why: format!("not valid JSON ({e})"),
        })?;
        let map = value
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| ModelError::BadWeights {
                file: INDEX_FILE.into(),
                why: "it has no weight_map".into(),
            })?;
        let shards: BTreeSet<&str> = map.values().filter_map(Value::as_str).collect();
        if shards.is_empty() {
            return Err(ModelError::BadWeights {
                file: INDEX_FILE.into(),
                why: "its weight_map is empty".into(),
            });
        }
        let mut paths = Vec::with_capacity(shards.len());
        for shard in shards {
            let path = dir.join(shard);
            if !path.is_file() {
                return Err(ModelError::MissingFile {
                    file: shard.to_owned(),
                    hint: format!("{INDEX_FILE} lists it; the download is incomplete"),
                });
            }
            paths.push(path);
        }
        return Ok(paths);
    }
    let single = dir.join(SINGLE_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(ModelError::MissingFile {
        file: SINGLE_FILE.into(),
        hint: format!("the weights are model.safetensors, or shards listed in {INDEX_FILE}"),
    })
}
