//! Turning what the user dropped (files and folders, in any mix) into a list of photos:
//! folders are walked recursively, hidden and system folders are skipped, files that are
//! not photos (videos, sidecars) are counted and left out quietly, and a folder that
//! cannot be read is reported with its reason. Nothing is opened for writing.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

/// File extensions read as photos (lower case).
pub const PHOTO_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "jpe", "jfif", "png", "webp", "gif", "bmp", "tif", "tiff",
];

/// Folders that hold system or app data, never the user's photos.
const SYSTEM_FOLDERS: &[&str] = &[
    "$RECYCLE.BIN",
    "System Volume Information",
    "__MACOSX",
    "@eaDir",
    "lost+found",
    "node_modules",
];

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanResult {
    /// Photos, in a stable order (sorted by path within each dropped item).
    pub photos: Vec<PathBuf>,
    /// Entries that could not be read, with the reason.
    pub problems: Vec<(PathBuf, String)>,
    /// Files that are not photos (videos, sidecars, documents), left out.
    pub ignored: usize,
    /// Folders walked.
    pub folders: usize,
}

impl ScanResult {
    /// Adds another scan's findings, keeping photos unique.
    pub fn merge(&mut self, other: ScanResult) {
        let mut seen: HashSet<PathBuf> = self.photos.iter().cloned().collect();
        for p in other.photos {
            if seen.insert(p.clone()) {
                self.photos.push(p);
            }
        }
        self.problems.extend(other.problems);
        self.ignored += other.ignored;
        self.folders += other.folders;
    }
}

/// True when the file name has a photo extension.
pub fn is_photo_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| PHOTO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

fn is_hidden_or_system(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    (name.starts_with('.') && name.len() > 1 && name != "..")
        || SYSTEM_FOLDERS.contains(&name.as_ref())
}

/// Scans dropped paths: a file is taken if it has a photo extension (a file named
/// explicitly with another extension is reported), a folder is walked.
pub fn scan_paths<P: AsRef<Path>>(paths: &[P]) -> ScanResult {
    let mut result = ScanResult::default();
    let mut seen = HashSet::new();
    for path in paths {
        let path = path.as_ref();
        match std::fs::metadata(path) {
            Err(e) => result.problems.push((path.to_path_buf(), e.to_string())),
            Ok(meta) if meta.is_dir() => scan_folder(path, &mut result, &mut seen),
            Ok(_) => {
                if is_photo_name(path) {
                    if seen.insert(identity(path)) {
                        result.photos.push(path.to_path_buf());
                    }
                } else {
                    result.problems.push((
                        path.to_path_buf(),
                        "not a photo file (unknown extension)".into(),
                    ));
                }
            }
        }
    }
    result
}

/// The same file reached twice (through a link, or dropped twice) is counted once.
fn identity(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn scan_folder(root: &Path, result: &mut ScanResult, seen: &mut HashSet<PathBuf>) {
    let walker = WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            e.depth() == 0 || !(e.file_type().is_dir() && is_hidden_or_system(e.file_name()))
        });
    for entry in walker {
        match entry {
            Ok(e) if e.file_type().is_dir() => result.folders += 1,
            Ok(e) => {
                if is_hidden_or_system(e.file_name()) {
                    continue; // .DS_Store, ._foo.jpg and the like
                }
                if is_photo_name(e.path()) {
                    if seen.insert(identity(e.path())) {
                        result.photos.push(e.into_path());
                    }
                } else {
                    result.ignored += 1;
                }
            }
            Err(e) => {
                let path = e
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| root.to_path_buf());
                let reason = if e.loop_ancestor().is_some() {
                    "a folder link that loops back on itself; skipped".to_owned()
                } else if let Some(io) = e.io_error() {
                    io.to_string()
                } else {
                    e.to_string()
                };
                result.problems.push((path, reason));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_case_insensitive() {
        assert!(is_photo_name(Path::new("a/B.JPG")));
        assert!(is_photo_name(Path::new("x.tiff")));
        assert!(!is_photo_name(Path::new("clip.mp4")));
        assert!(!is_photo_name(Path::new("photo.jpg.xmp")));
        assert!(!is_photo_name(Path::new("noext")));
    }

    #[test]
    fn walks_folders_skipping_hidden_and_system_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("lib");
        for sub in ["a", "a/b", ".hidden", "@eaDir"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        for f in [
            "a/1.jpg",
            "a/b/2.PNG",
            ".hidden/3.jpg",
            "@eaDir/4.jpg",
            "a/clip.mov",
            "a/1.jpg.xmp",
            "a/.DS_Store",
        ] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        let r = scan_paths(&[&root]);
        let names: Vec<_> = r
            .photos
            .iter()
            .map(|p| p.strip_prefix(&root).unwrap().to_path_buf())
            .collect();
        assert_eq!(
            names,
            vec![PathBuf::from("a/1.jpg"), PathBuf::from("a/b/2.PNG")]
        );
        assert_eq!(r.ignored, 2);
        assert_eq!(r.folders, 3);
        // the same photo dropped again, directly, is not listed twice
        let again = scan_paths(&[root.join("a/1.jpg"), root.clone()]);
        assert_eq!(again.photos.len(), 2);
    }
}
