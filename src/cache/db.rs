//! What the app's SQLite files have in common (the score cache, the photo index): opening
//! one in WAL mode, checking that it is ours and intact, setting aside (renaming, never
//! deleting) a file that is damaged or foreign and starting afresh, and the memo of photo
//! content hashes by path, size and modification time that both keep.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use rusqlite::{Connection, OptionalExtension, params};

/// Why a database is unusable for a call (the work goes on without it).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{0}")]
    Sql(#[from] rusqlite::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

/// What a database is: its name for the user, its marks and its tables.
#[derive(Debug, Clone, Copy)]
pub struct DatabaseKind {
    /// "score cache", "photo index".
    pub what: &'static str,
    /// In `PRAGMA application_id`.
    pub application_id: i64,
    /// In `PRAGMA user_version`.
    pub version: i64,
    /// `CREATE TABLE IF NOT EXISTS ...` statements.
    pub schema: &'static str,
}

/// The memo of content hashes, in every database of the app.
pub const PHOTOS_TABLE: &str = "CREATE TABLE IF NOT EXISTS photos (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash TEXT NOT NULL
);";

/// Opens (or creates) the database of `kind` at `path`. The second value is a warning for
/// the user when an unusable file was set aside.
pub fn open_database(
    path: &Path,
    kind: DatabaseKind,
) -> Result<(Connection, Option<String>), CacheError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match open_checked(path, kind) {
        Ok(conn) => Ok((conn, None)),
        Err(first) if path.exists() => {
            let stamp = std::time::SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let aside = path.with_extension(format!("unusable-{stamp}"));
            std::fs::rename(path, &aside)?;
            for suffix in ["-wal", "-shm"] {
                let side = PathBuf::from(format!("{}{suffix}", path.display()));
                let _ =
                    std::fs::rename(&side, PathBuf::from(format!("{}{suffix}", aside.display())));
            }
            let conn = open_checked(path, kind)?;
            let warning = format!(
                "The {} {} could not be used ({first}); it was set aside as {} and a new one started",
                kind.what,
                path.display(),
                aside.display()
            );
            Ok((conn, Some(warning)))
        }
        Err(e) => Err(e),
    }
}

fn open_checked(path: &Path, kind: DatabaseKind) -> Result<Connection, CacheError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Reading a page checks that the file is a database at all.
    let app_id: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    if tables > 0 && (app_id != kind.application_id || version != kind.version) {
        return Err(CacheError::Io(std::io::Error::other(format!(
            "it is not a Lychee Rerank {} of this version (application id {app_id:#x}, version {version})",
            kind.what
        ))));
    }
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(CacheError::Io(std::io::Error::other(format!(
            "it is damaged ({check})"
        ))));
    }
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(&format!(
        "PRAGMA application_id = {};
         PRAGMA user_version = {};
         {PHOTOS_TABLE}
         {}",
        kind.application_id, kind.version, kind.schema
    ))?;
    Ok(conn)
}

/// A file's size and modification time: when both are unchanged, so is its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub size: i64,
    pub mtime_ns: i64,
}

impl FileStamp {
    /// The stamp of the file at `path` now.
    pub fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        Ok(FileStamp {
            size: meta.len() as i64,
            mtime_ns: meta
                .modified()?
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0),
        })
    }
}

/// A database with the memo of content hashes.
pub trait HashMemo {
    fn connection(&self) -> &Connection;

    /// The hash remembered for `path` when it still has size and time `stamp`.
    fn known_hash(&self, path: &Path, stamp: FileStamp) -> Result<Option<String>, CacheError> {
        Ok(self
            .connection()
            .prepare_cached(
                "SELECT hash FROM photos WHERE path = ?1 AND size = ?2 AND mtime_ns = ?3",
            )?
            .query_row(
                params![path.to_string_lossy(), stamp.size, stamp.mtime_ns],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Remembers the hash of `path` at size and time `stamp`.
    fn remember_hash(&self, path: &Path, stamp: FileStamp, hash: &str) -> Result<(), CacheError> {
        self.connection()
            .prepare_cached("INSERT OR REPLACE INTO photos (path, size, mtime_ns, hash) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![path.to_string_lossy(), stamp.size, stamp.mtime_ns, hash])?;
        Ok(())
    }

    /// The content hash of the photo at `path`, read from the file only when its size or
    /// modification time changed since last time.
    fn photo_hash(&self, path: &Path) -> Result<String, CacheError> {
        let stamp = FileStamp::of(path)?;
        if let Some(hash) = self.known_hash(path, stamp)? {
            return Ok(hash);
        }
        let hash = hash_file(path)?;
        self.remember_hash(path, stamp, &hash)?;
        Ok(hash)
    }
}

/// The content hash of `path`, as [`HashMemo::photo_hash`], but reading the file while
/// the database is unlocked, so that threads sharing it never wait for each other's files
/// (a first ranking or indexing reads every photo once).
pub fn content_hash<M: HashMemo>(db: &Mutex<M>, path: &Path) -> Result<String, CacheError> {
    let stamp = FileStamp::of(path)?;
    let lock = || {
        db.lock().map_err(|_| {
            CacheError::Io(std::io::Error::other(
                "the database is unusable after a fault",
            ))
        })
    };
    if let Some(hash) = lock()?.known_hash(path, stamp)? {
        return Ok(hash);
    }
    let hash = hash_file(path)?;
    lock()?.remember_hash(path, stamp, &hash)?;
    Ok(hash)
}

/// blake3 of a file's bytes, hex.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}
