//! The index on disk: one row per photo content (the content hash the score cache uses)
//! and embedder, the L2-normalized vector stored as little-endian f16 (half the size of
//! f32, and within 1e-3 of it, far below what separates two photos). SQLite in WAL mode
//! beside the score cache: every batch is one transaction, so a kill loses at most the
//! batch being written and the file always opens; a damaged or foreign file is set aside
//! and a new one started. Moved or renamed photos keep their content hash, so they are
//! found again without being embedded.

use std::path::{Path, PathBuf};

use half::f16;
use rusqlite::{Connection, OptionalExtension, params};

use crate::cache::db::{DatabaseKind, HashMemo, open_database};
use crate::cache::scores::CacheError;

/// File name of the index in the cache folder.
pub const INDEX_FILE: &str = "index.sqlite3";

const KIND: DatabaseKind = DatabaseKind {
    what: "photo index",
    // "LYIX"
    application_id: 0x4c59_4958,
    version: 1,
    schema: "CREATE TABLE IF NOT EXISTS embeddings (
        photo_hash TEXT NOT NULL,
        embedder TEXT NOT NULL,
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL,
        PRIMARY KEY (photo_hash, embedder)
    );",
};

/// The photo index.
pub struct IndexStore {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for IndexStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexStore")
            .field("path", &self.path)
            .finish()
    }
}

impl HashMemo for IndexStore {
    fn connection(&self) -> &Connection {
        &self.conn
    }
}

impl IndexStore {
    /// The index in the app's cache folder.
    pub fn default_path() -> PathBuf {
        crate::cache::dirs::cache_dir().join(INDEX_FILE)
    }

    /// Opens (or creates) the index at `path`; the second value is a warning for the user
    /// when an unusable file was set aside.
    pub fn open(path: &Path) -> Result<(Self, Option<String>), CacheError> {
        let (conn, warning) = open_database(path, KIND)?;
        Ok((
            IndexStore {
                conn,
                path: path.to_path_buf(),
            },
            warning,
        ))
    }

    /// Where the index lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The vector of a photo's content under `embedder`, if indexed.
    pub fn get(&self, photo_hash: &str, embedder: &str) -> Result<Option<Vec<f16>>, CacheError> {
        let blob: Option<Vec<u8>> = self
            .conn
            .prepare_cached(
                "SELECT vector FROM embeddings WHERE photo_hash = ?1 AND embedder = ?2",
            )?
            .query_row(params![photo_hash, embedder], |r| r.get(0))
            .optional()?;
        // A row that is not a whole number of f16 values is treated as missing.
        Ok(blob.filter(|b| b.len() % 2 == 0 && !b.is_empty()).map(|b| {
            b.chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect()
        }))
    }

    /// Stores vectors (one transaction: all or none).
    pub fn put_all(
        &mut self,
        embedder: &str,
        rows: &[(String, Vec<f32>)],
    ) -> Result<(), CacheError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO embeddings (photo_hash, embedder, dim, vector) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (hash, vector) in rows {
                insert.execute(params![hash, embedder, vector.len() as i64, encode(vector)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Vectors stored under `embedder`.
    pub fn count(&self, embedder: &str) -> Result<usize, CacheError> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM embeddings WHERE embedder = ?1",
            [embedder],
            |r| r.get::<_, i64>(0),
        )? as usize)
    }
}

/// f32 values as little-endian f16 bytes.
pub fn encode(vector: &[f32]) -> Vec<u8> {
    vector
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_come_back_as_f16_and_a_damaged_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INDEX_FILE);
        let (mut store, warning) = IndexStore::open(&path).unwrap();
        assert!(warning.is_none());
        let v: Vec<f32> = (0..8).map(|i| (i as f32 - 3.5) / 10.0).collect();
        store.put_all("e1", &[("h1".into(), v.clone())]).unwrap();
        let back = store.get("h1", "e1").unwrap().unwrap();
        for (a, b) in back.iter().zip(&v) {
            assert!((a.to_f32() - b).abs() < 1e-3);
        }
        assert_eq!(store.get("h1", "e2").unwrap(), None);
        assert_eq!(store.count("e1").unwrap(), 1);
        drop(store);
        std::fs::write(&path, b"no longer a database, just bytes of something else").unwrap();
        let (store, warning) = IndexStore::open(&path).unwrap();
        assert!(warning.unwrap().contains("photo index"));
        assert_eq!(store.count("e1").unwrap(), 0);
    }
}
