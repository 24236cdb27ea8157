//! What the GPU measured fastest for each size of matrix product, kept on disk between runs
//! (`products.json` in the cache folder), so that each product is measured once per GPU and
//! cuBLASLt version, not at every start. A missing, unreadable or damaged file is an empty
//! one; one that cannot be written leaves the choices in memory only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a product of one size runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The product, then a pass that adds the residual (and bias).
    Unfused,
    /// A cuBLASLt algorithm, as its 64 bytes of configuration.
    Algo([u64; 8]),
}

impl Stored {
    fn encode(&self) -> String {
        match self {
            Stored::Unfused => "unfused".into(),
            Stored::Algo(words) => {
                let hex: Vec<String> = words.iter().map(|w| format!("{w:016x}")).collect();
                format!("algo {}", hex.join(" "))
            }
        }
    }

    fn decode(text: &str) -> Option<Self> {
        if text == "unfused" {
            return Some(Stored::Unfused);
        }
        let words: Vec<u64> = text
            .strip_prefix("algo ")?
            .split(' ')
            .map(|w| u64::from_str_radix(w, 16).ok())
            .collect::<Option<_>>()?;
        Some(Stored::Algo(words.try_into().ok()?))
    }
}

/// The choices of one file.
#[derive(Debug)]
pub struct Choices {
    path: PathBuf,
    entries: BTreeMap<String, Stored>,
}

impl Choices {
    /// The file in the cache folder.
    pub fn default_path() -> PathBuf {
        crate::cache::dirs::cache_dir().join("products.json")
    }

    /// The choices kept in `path`; none where it is missing or not a choices file (entries
    /// that cannot be read are left out).
    pub fn load(path: &Path) -> Self {
        let entries = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| serde_json::from_str::<BTreeMap<String, String>>(&text).ok())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| Some((k, Stored::decode(&v)?)))
            .collect();
        Choices {
            path: path.to_path_buf(),
            entries,
        }
    }

    pub fn get(&self, key: &str) -> Option<Stored> {
        self.entries.get(key).copied()
    }

    /// Keeps `choice` for `key` and writes the file again (to a temporary file first, then
    /// renamed over it, so that a reader never sees half of it).
    pub fn insert(&mut self, key: String, choice: Stored) -> std::io::Result<()> {
        self.entries.insert(key, choice);
        let text: BTreeMap<&str, String> = self
            .entries
            .iter()
            .map(|(k, v)| (k.as_str(), v.encode()))
            .collect();
        let json = serde_json::to_string_pretty(&text).map_err(std::io::Error::other)?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self
            .path
            .with_extension(format!("json.{}.tmp", std::process::id()));
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, &self.path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_survive_a_reload_and_damage_is_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("products.json");
        let mut c = Choices::load(&path);
        assert_eq!(c.get("a"), None);
        let algo = Stored::Algo([1, u64::MAX, 0, 42, 7, 8, 9, 0x0123_4567_89ab_cdef]);
        c.insert("a".into(), algo).unwrap();
        c.insert("b".into(), Stored::Unfused).unwrap();
        let again = Choices::load(&path);
        assert_eq!(again.get("a"), Some(algo));
        assert_eq!(again.get("b"), Some(Stored::Unfused));
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["products.json"]);

        std::fs::write(&path, "{\"a\": \"algo 12\", \"b\": \"unfused\", \"c\": 3").unwrap();
        assert_eq!(
            Choices::load(&path).get("b"),
            None,
            "a damaged file is empty"
        );
        std::fs::write(&path, "{\"a\": \"algo 12\", \"b\": \"unfused\"}").unwrap();
        let partial = Choices::load(&path);
        assert_eq!(
            partial.get("a"),
            None,
            "an entry that cannot be read is left out"
        );
        assert_eq!(partial.get("b"), Some(Stored::Unfused));
    }

    #[test]
    fn an_unwritable_folder_is_an_error_and_the_choice_stays_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "not a folder").unwrap();
        let mut c = Choices::load(&blocker.join("products.json"));
        assert!(c.insert("a".into(), Stored::Unfused).is_err());
        assert_eq!(c.get("a"), Some(Stored::Unfused));
    }
}
