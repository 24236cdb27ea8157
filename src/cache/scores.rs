//! Scores already computed, in SQLite (as rclip and digiKam keep their indexes), so that
//! running the same search again is instant and only new or changed photos are scored.
//!
//! A score is keyed by the query (model identity and revision, instruction, query text,
//! query image content, resolution) and the photo's content hash; the value is the whole
//! model output, stored as JSON (the cache is a keyed store: it does not know the type it
//! keeps, so that it sits below the ranking code that uses it). Photo hashes are memoized by path, size and modification time, so an
//! unchanged photo is not read again. The database runs in WAL mode: a crash loses at most
//! the score being written, and the file always opens. A database that is damaged or not
//! ours is set aside (renamed, never deleted) and a fresh one started.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use rusqlite::{Connection, OptionalExtension, params};

pub use super::db::{CacheError, FileStamp, content_hash, hash_file};
use super::db::{DatabaseKind, HashMemo, open_database};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The score cache's marks ("LYCH" in `PRAGMA application_id`) and its table.
const KIND: DatabaseKind = DatabaseKind {
    what: "score cache",
    application_id: 0x4c59_4348,
    version: 1,
    schema: "CREATE TABLE IF NOT EXISTS scores (
        query_key TEXT NOT NULL,
        photo_hash TEXT NOT NULL,
        output TEXT NOT NULL,
        created INTEGER NOT NULL,
        PRIMARY KEY (query_key, photo_hash)
    );",
};

/// File name of the database in the cache folder.
pub const DATABASE_FILE: &str = "scores.sqlite3";

/// The score cache.
pub struct ScoreCache {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for ScoreCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScoreCache")
            .field("path", &self.path)
            .finish()
    }
}

impl HashMemo for ScoreCache {
    fn connection(&self) -> &Connection {
        &self.conn
    }
}

impl ScoreCache {
    /// The cache in the app's cache folder.
    pub fn default_path() -> PathBuf {
        super::dirs::cache_dir().join(DATABASE_FILE)
    }

    /// Opens (or creates) the cache at `path`. The second value is a warning for the user
    /// when an unusable file was set aside.
    pub fn open(path: &Path) -> Result<(Self, Option<String>), CacheError> {
        let (conn, warning) = open_database(path, KIND)?;
        Ok((
            ScoreCache {
                conn,
                path: path.to_path_buf(),
            },
            warning,
        ))
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value stored for a photo under a query, if any. An entry that no longer parses
    /// as `T` is treated as missing (it is recomputed).
    pub fn get<T: DeserializeOwned>(
        &self,
        query_key: &str,
        photo_hash: &str,
    ) -> Result<Option<T>, CacheError> {
        let text: Option<String> = self
            .conn
            .prepare_cached("SELECT output FROM scores WHERE query_key = ?1 AND photo_hash = ?2")?
            .query_row(params![query_key, photo_hash], |r| r.get(0))
            .optional()?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Stores a photo's value under a query.
    pub fn put<T: Serialize>(
        &self,
        query_key: &str,
        photo_hash: &str,
        value: &T,
    ) -> Result<(), CacheError> {
        let now = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO scores (query_key, photo_hash, output, created) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![query_key, photo_hash, serde_json::to_string(value)?, now])?;
        Ok(())
    }

    /// Number of stored scores.
    pub fn len(&self) -> Result<usize, CacheError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM scores", [], |r| r.get::<_, i64>(0))?
            as usize)
    }

    /// True when no score is stored.
    pub fn is_empty(&self) -> Result<bool, CacheError> {
        Ok(self.len()? == 0)
    }
}

/// What makes two rankings give the same score for the same photo.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueryIdentity<'a> {
    /// The model's identity (its configuration and weight files).
    pub model: &'a str,
    pub instruction: &'a str,
    pub query_text: &'a str,
    /// Content hash of the query image.
    pub query_image: Option<&'a str>,
    pub min_pixels: usize,
    pub max_pixels: usize,
    /// The number format the model computed in (bf16 and f32 differ slightly).
    pub dtype: &'a str,
}

impl QueryIdentity<'_> {
    /// The cache key.
    pub fn key(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        blake3::hash(text.as_bytes()).to_hex().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Output {
        score: f64,
        tokens: usize,
    }

    fn score(s: f64) -> Output {
        Output {
            score: s,
            tokens: 12,
        }
    }

    #[test]
    fn a_stored_score_comes_back_to_the_bit() {
        // serde_json's default float parsing can land one unit in the last place away
        // (0.48289783888173893 came back as 0.482897838881739); a cached answer must be
        // the score computed.
        let dir = tempfile::tempdir().unwrap();
        let (cache, _) = ScoreCache::open(&dir.path().join("s.sqlite3")).unwrap();
        let mut x = 0.48289783888173893f64;
        for i in 0..2000 {
            let key = format!("q{i}");
            cache.put(&key, "h", &score(x)).unwrap();
            let back: Output = cache.get(&key, "h").unwrap().unwrap();
            assert_eq!(back.score.to_bits(), x.to_bits(), "{x:?}");
            x = (x * 7.123456789 + 0.1).fract();
        }
    }

    #[test]
    fn stores_and_finds_scores_by_query_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, warning) = ScoreCache::open(&dir.path().join("s.sqlite3")).unwrap();
        assert!(warning.is_none());
        let photo = dir.path().join("p.jpg");
        std::fs::write(&photo, b"pixels").unwrap();
        let h = cache.photo_hash(&photo).unwrap();
        assert_eq!(h, cache.photo_hash(&photo).unwrap());
        cache.put("q1", &h, &score(0.7)).unwrap();
        assert_eq!(cache.get("q1", &h).unwrap(), Some(score(0.7)));
        assert_eq!(cache.get::<Output>("q2", &h).unwrap(), None);
        // a value of another shape reads as missing
        assert_eq!(cache.get::<String>("q1", &h).unwrap(), None);
        // new content, new hash
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&photo, b"other pixels").unwrap();
        assert_ne!(cache.photo_hash(&photo).unwrap(), h);
    }

    #[test]
    fn a_foreign_or_damaged_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite3");
        std::fs::write(
            &path,
            b"this is not a database at all, just some text that is long enough",
        )
        .unwrap();
        let (cache, warning) = ScoreCache::open(&path).unwrap();
        assert!(warning.unwrap().contains("set aside"));
        assert!(cache.is_empty().unwrap());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains("unusable"))
            .collect();
        assert_eq!(aside.len(), 1);
        // someone else's SQLite database is not ours either
        let other = dir.path().join("other.sqlite3");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x);")
            .unwrap();
        let (_, warning) = ScoreCache::open(&other).unwrap();
        assert!(warning.is_some());
    }

    /// Reading a photo for its hash leaves the cache free for the other threads. The photo
    /// here is a pipe whose bytes arrive only after another thread has used the cache:
    /// with the file read under the lock, that thread would wait forever.
    #[cfg(unix)]
    #[test]
    fn hashing_a_slow_file_does_not_hold_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, _) = ScoreCache::open(&dir.path().join("s.sqlite3")).unwrap();
        let cache = std::sync::Arc::new(Mutex::new(cache));
        let pipe = dir.path().join("slow.jpg");
        let status = std::process::Command::new("mkfifo")
            .arg(&pipe)
            .status()
            .unwrap();
        assert!(status.success());
        let hasher = {
            let (cache, pipe) = (std::sync::Arc::clone(&cache), pipe.clone());
            std::thread::spawn(move || content_hash(&cache, &pipe))
        };
        let (tx, rx) = crossbeam_channel::bounded(1);
        {
            let cache = std::sync::Arc::clone(&cache);
            std::thread::spawn(move || {
                let found = cache.lock().unwrap().get::<Output>("q", "h").unwrap();
                let _ = tx.send(found);
            });
        }
        let other = rx.recv_timeout(std::time::Duration::from_secs(10));
        // let the hashing thread finish either way
        std::fs::write(&pipe, b"pixels").unwrap();
        assert_eq!(other, Ok(None), "the cache was held while a file was read");
        let hash = hasher.join().unwrap().unwrap();
        assert_eq!(hash, blake3::hash(b"pixels").to_hex().to_string());
    }

    #[test]
    fn query_keys_change_with_every_input() {
        let base = QueryIdentity {
            model: "m",
            instruction: "i",
            query_text: "q",
            query_image: None,
            min_pixels: 1,
            max_pixels: 2,
            dtype: "f32",
        };
        let mut other = base.clone();
        other.max_pixels = 3;
        assert_ne!(base.key(), other.key());
        let mut other = base.clone();
        other.query_image = Some("h");
        assert_ne!(base.key(), other.key());
        assert_eq!(base.key(), base.clone().key());
    }
}
