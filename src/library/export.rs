//! Taking a ranking out of the app: as CSV or JSON, or as copies of the chosen photos in a
//! folder. Photos are only ever read; an existing file in the target folder is never
//! replaced (the copy gets a " (2)" suffix instead).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One ranked photo, as exported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportRow {
    pub rank: usize,
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

/// The ranking as a JSON array, best first, with the query it answers.
pub fn to_json(query: &str, instruction: &str, rows: &[ExportRow]) -> String {
    let value = serde_json::json!({
        "query": query,
        "instruction": instruction,
        "photos": rows,
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// Writes `text` to `path` through a temporary file, so that a failure leaves no half file.
pub fn write_text(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("part");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// What a copy to a folder did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyReport {
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
    let mut report = CopyReport::default();
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
