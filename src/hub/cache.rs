//! The standard Hugging Face cache layout, as huggingface_hub and hf-hub write it:
//! `<root>/models--<owner>--<name>/refs/<revision>` holds a commit hash and
//! `snapshots/<commit>/<file>` the files (links into `blobs/`, or copies). Lookups go
//! through hf-hub's own `Cache`; two things are added here because hf-hub lacks them:
//! the root follows HF_HUB_CACHE as huggingface_hub does (hf-hub reads only HF_HOME), and
//! a revision given as a commit hash is found in `snapshots/` directly (hf-hub looks for
//! it under `refs/`, where only branch and tag names are).

use std::path::{Path, PathBuf};

use hf_hub::Repo;

/// Files a model folder must have to be usable without the network (the weights are
/// checked separately against the index).
const REQUIRED: &[&str] = &["config.json", "preprocessor_config.json"];

/// The cache root from the environment: HF_HUB_CACHE, else HF_HOME/hub, else
/// ~/.cache/huggingface/hub (the same rules as huggingface_hub).
pub fn hf_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join("hub");
    }
    let home = std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("huggingface").join("hub")
}

/// A Hugging Face cache folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfCache {
    root: PathBuf,
}

impl HfCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        HfCache { root: root.into() }
    }

    /// The cache the environment points at.
    pub fn from_env() -> Self {
        Self::new(hf_cache_dir())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/models--owner--name`.
    pub fn repo_dir(&self, id: &str) -> PathBuf {
        self.root.join(Repo::model(id.to_owned()).folder_name())
    }

    /// True when `revision` is a commit hash rather than a branch or tag name.
    fn is_commit(revision: &str) -> bool {
        revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit())
    }

    /// The commit a revision points at, if the cache knows it.
    pub fn commit(&self, id: &str, revision: &str) -> Option<String> {
        if Self::is_commit(revision) {
            return Some(revision.to_owned());
        }
        let text = std::fs::read_to_string(self.repo_dir(id).join("refs").join(revision)).ok()?;
        let commit = text.trim();
        (!commit.is_empty()).then(|| commit.to_owned())
    }

    /// The snapshot folder of a revision, whether or not it is complete.
    pub fn snapshot_dir(&self, id: &str, commit: &str) -> PathBuf {
        self.repo_dir(id).join("snapshots").join(commit)
    }

    /// The snapshot folder of `revision` when it holds a whole model: the configs, a
    /// tokenizer, and every weight file the index names.
    pub fn complete_snapshot(&self, id: &str, revision: &str) -> Option<PathBuf> {
        // The ref is read trimmed (`commit`): a ref file ending in a newline, as git and
        // editors write them, still names its snapshot.
        let dir = self.snapshot_dir(id, &self.commit(id, revision)?);
        is_complete_model(&dir).then_some(dir)
    }
}

/// True when `dir` has everything the scorer loads.
pub fn is_complete_model(dir: &Path) -> bool {
    REQUIRED.iter().all(|f| dir.join(f).is_file())
        && (dir.join("tokenizer.json").is_file()
            || (dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file()))
        && crate::model::files::ModelFiles::locate(dir).is_ok()
}
