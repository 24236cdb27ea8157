//! Taking a ranking out of the app: as CSV or JSON, or as copies of the chosen photos in a
//! folder. Photos are only ever read; an existing file in the target folder is never
//! replaced (the copy gets a " (2)" suffix instead). Both run on a thread of their own
//! ([`start_export`], [`start_copy`]), never on the window's.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use crate::background::Task;

/// One ranked photo, as exported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportRow {
    pub rank: usize,
    /// Written as text; a name that is not valid Unicode gets U+FFFD in place of the
    /// bytes it cannot show (as on the command line).
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    pub score: f64,
    pub logit_yes: f32,
    pub logit_no: f32,
    pub visual_tokens: usize,
    pub width: usize,
    pub height: usize,
}

/// The ranking as CSV (RFC 4180 quoting), best first.
pub fn to_csv(rows: &[ExportRow]) -> String {
    let mut out = String::from("rank,score,logit_yes,logit_no,visual_tokens,width,height,path\n");
    for r in rows {
        let path = r.path.to_string_lossy();
        let quoted = if path.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", path.replace('"', "\"\""))
        } else {
            path.into_owned()
        };
        out.push_str(&format!(
            "{},{:.6},{},{},{},{},{},{}\n",
            r.rank, r.score, r.logit_yes, r.logit_no, r.visual_tokens, r.width, r.height, quoted
        ));
    }
    out
}

fn lossy_path<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// The ranking as a JSON object, best first, with the query it answers.
pub fn to_json(query: &str, instruction: &str, rows: &[ExportRow]) -> String {
    #[derive(Serialize)]
    struct Ranking<'a> {
        query: &'a str,
        instruction: &'a str,
        photos: &'a [ExportRow],
    }
    let ranking = Ranking {
        query,
        instruction,
        photos: rows,
    };
    // Strings, numbers and lossy paths only: serializing cannot fail.
    serde_json::to_string_pretty(&ranking).unwrap_or_default()
}

/// Writes `text` to `path` through a temporary file of a name no one else uses, so that a
/// failure leaves no half file and no other file of the folder is touched.
pub fn write_text(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.as_deref().unwrap_or("export")))
        .suffix(".part")
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    // On failure the temporary file is removed when `tmp` is dropped.
    tmp.persist(path).map(|_| ()).map_err(|e| e.error)
}

/// The format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Json,
}

/// What an export did: the file and the number of photos, or why it failed.
pub type ExportReport = Result<(PathBuf, usize), String>;

/// Writes the ranking to `path` on a thread of its own.
pub fn start_export(
    path: PathBuf,
    format: ExportFormat,
    query: String,
    instruction: String,
    rows: Vec<ExportRow>,
    notify: impl FnOnce() + Send + 'static,
) -> std::io::Result<Task<ExportReport>> {
    Task::start("export-ranking", notify, move || {
        let text = match format {
            ExportFormat::Csv => to_csv(&rows),
            ExportFormat::Json => to_json(&query, &instruction, &rows),
        };
        write_text(&path, &text)
            .map(|()| (path.clone(), rows.len()))
            .map_err(|e| format!("Could not save {}: {e}", path.display()))
    })
}

/// Copies `photos` into `dir` on a thread of its own.
pub fn start_copy(
    photos: Vec<PathBuf>,
    dir: PathBuf,
    notify: impl FnOnce() + Send + 'static,
) -> std::io::Result<Task<CopyReport>> {
    Task::start("copy-photos", notify, move || copy_to_folder(&photos, &dir))
}

/// What a copy to a folder did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// The folder copied into.
    pub dir: PathBuf,
    pub copied: Vec<PathBuf>,
    pub failed: Vec<(PathBuf, String)>,
}

/// A name in `dir` for `file_name` that does not exist yet.
fn free_name(dir: &Path, file_name: &std::ffi::OsStr) -> PathBuf {
    let first = dir.join(file_name);
    if !first.exists() {
        return first;
    }
    let p = Path::new(file_name);
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = p
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (2..)
        .map(|n| dir.join(format!("{stem} ({n}){ext}")))
        .find(|c| !c.exists())
        .expect("some numbered name is free")
}

/// Copies `photos` into `dir` (which is created if missing), never replacing a file.
pub fn copy_to_folder(photos: &[PathBuf], dir: &Path) -> CopyReport {
    let mut report = CopyReport {
        dir: dir.to_path_buf(),
        ..CopyReport::default()
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        report.failed = photos
            .iter()
            .map(|p| (p.clone(), format!("cannot create {}: {e}", dir.display())))
            .collect();
        return report;
    }
    for photo in photos {
        let Some(name) = photo.file_name() else {
            report.failed.push((photo.clone(), "not a file".into()));
            continue;
        };
        let target = free_name(dir, name);
        match std::fs::copy(photo, &target) {
            Ok(_) => report.copied.push(target),
            Err(e) => {
                // Leave no partial copy behind.
                let _ = std::fs::remove_file(&target);
                report.failed.push((photo.clone(), e.to_string()));
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(rank: usize, path: &str) -> ExportRow {
        ExportRow {
            rank,
            path: PathBuf::from(path),
            score: 0.5,
            logit_yes: 1.0,
            logit_no: 1.0,
            visual_tokens: 10,
            width: 4,
            height: 3,
        }
    }

    #[test]
    fn csv_quotes_awkward_paths() {
        let csv = to_csv(&[row(1, "/a/b.jpg"), row(2, "/a/x, \"y\".jpg")]);
        let lines: Vec<_> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "rank,score,logit_yes,logit_no,visual_tokens,width,height,path"
        );
        assert!(lines[1].ends_with(",/a/b.jpg"));
        assert!(lines[2].ends_with(",\"/a/x, \"\"y\"\".jpg\""));
    }

    #[cfg(unix)]
    #[test]
    fn json_takes_names_that_are_not_unicode() {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"/photos/caf\xe9.jpg");
        let mut r = row(1, "x");
        r.path = PathBuf::from(name);
        let json = to_json("q", "i", &[r]);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["photos"][0]["path"], "/photos/caf\u{fffd}.jpg");
        assert_eq!(value["query"], "q");
    }

    #[test]
    fn saving_leaves_other_files_of_the_folder_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ranking.csv");
        // a file of the user's with the name a naive temporary file would take
        let theirs = dir.path().join("ranking.part");
        std::fs::write(&theirs, b"the user's own notes").unwrap();
        write_text(&target, "rank,score\n").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"rank,score\n");
        assert_eq!(std::fs::read(&theirs).unwrap(), b"the user's own notes");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
        // an existing export is replaced as a whole
        write_text(&target, "new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
    }

    #[test]
    fn copies_never_replace_files() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let photo = src.join("p.jpg");
        std::fs::write(&photo, b"photo").unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("p.jpg"), b"someone else's").unwrap();
        let report = copy_to_folder(&[photo.clone(), photo.clone()], &out);
        assert_eq!(
            report.copied,
            vec![out.join("p (2).jpg"), out.join("p (3).jpg")]
        );
        assert_eq!(std::fs::read(out.join("p.jpg")).unwrap(), b"someone else's");
        assert_eq!(std::fs::read(&photo).unwrap(), b"photo");
    }
}
