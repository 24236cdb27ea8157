//! Where models come from: a local folder, or a model of the Hugging Face Hub kept in the
//! standard Hugging Face cache (shared with Python tools), which is used without any
//! network call once it is complete.

pub mod cache;
pub mod download;

use std::path::PathBuf;

pub use cache::{HfCache, hf_cache_dir};

/// The model the app uses unless told otherwise.
pub const DEFAULT_MODEL_ID: &str = "vec-ai/lychee-rerank-mm";
/// The revision of it.
pub const DEFAULT_REVISION: &str = "main";
/// Its download size, for the first-start message (4 bf16 safetensors shards).
pub const DEFAULT_MODEL_BYTES: u64 = 16_600_000_000;

/// A model the user pointed at: a folder, or a Hub id with a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Folder(PathBuf),
    Hub { id: String, revision: String },
}

impl ModelSource {
    /// Reads `--model`: an existing folder, else a Hub id (`owner/name`, optionally
    /// `owner/name@revision`).
    pub fn parse(spec: &str, revision: Option<&str>) -> Result<Self, HubError> {
        let path = PathBuf::from(spec);
        if path.is_dir() {
            return Ok(ModelSource::Folder(path));
        }
        let (id, rev) = match spec.split_once('@') {
            Some((id, rev)) => (id, Some(rev)),
            None => (spec, None),
        };
        let parts: Vec<&str> = id.split('/').collect();
        let valid = parts.len() == 2
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            });
        if !valid {
            return Err(HubError::NotAModel(spec.to_owned()));
        }
        Ok(ModelSource::Hub {
            id: id.to_owned(),
            revision: rev.or(revision).unwrap_or(DEFAULT_REVISION).to_owned(),
        })
    }

    /// The default model.
    pub fn default_model() -> Self {
        ModelSource::Hub {
            id: DEFAULT_MODEL_ID.into(),
            revision: DEFAULT_REVISION.into(),
        }
    }

    /// A short name for the user.
    pub fn display(&self) -> String {
        match self {
            ModelSource::Folder(p) => p.display().to_string(),
            ModelSource::Hub { id, revision } if revision == DEFAULT_REVISION => id.clone(),
            ModelSource::Hub { id, revision } => format!("{id}@{revision}"),
        }
    }
}

/// Why a model could not be found or fetched.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{0} is neither a model folder nor a Hugging Face model id (owner/name)")]
    NotAModel(String),
    #[error(
        "{id} is not downloaded yet (looked in {cache}); run `lychee-rerank download {id}` or start the app to get it"
    )]
    NotDownloaded { id: String, cache: String },
    #[error("{0}")]
    Download(String),
}

/// Finds a model on disk without touching the network.
pub fn resolve_local(source: &ModelSource) -> Result<PathBuf, HubError> {
    match source {
        ModelSource::Folder(p) => Ok(p.clone()),
        ModelSource::Hub { id, revision } => {
            let cache = HfCache::from_env();
            cache
                .complete_snapshot(id, revision)
                .ok_or_else(|| HubError::NotDownloaded {
                    id: id.clone(),
                    cache: cache.root().display().to_string(),
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_specs_parse() {
        assert_eq!(
            ModelSource::parse("vec-ai/lychee-rerank-mm", None).unwrap(),
            ModelSource::default_model()
        );
        assert_eq!(
            ModelSource::parse("a/b@v2", None).unwrap(),
            ModelSource::Hub {
                id: "a/b".into(),
                revision: "v2".into()
            }
        );
        assert!(ModelSource::parse("no such folder", None).is_err());
        assert!(ModelSource::parse("a/b/c", None).is_err());
    }
}
