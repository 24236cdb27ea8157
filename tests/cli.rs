//! `lychee-rerank rank` as a script uses it: JSON lines best first, scores equal to
//! transformers', bad photos reported per file, exit codes.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn rank(args: &[&str], paths: &[&Path]) -> Output {
    let cache = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_lychee-rerank"))
        .env("LYCHEE_CACHE_DIR", cache.path())
        .arg("rank")
        .arg("--model")
        .arg(common::model_dir())
        .args(args)
        .args(paths)
        .output()
        .expect("the binary runs")
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[test]
fn json_ranking_matches_transformers() {
    let r = common::reference();
    for key in ["en", "zh", "mixed"] {
        let q = &r.queries[key];
        let mut args = vec!["--json", "--query", q.text.as_str()];
        let query_image;
        if let Some(img) = &q.image {
            query_image = common::photo_dir().join(&r.photos[img].file);
            args.extend(["--query-image", query_image.to_str().unwrap()]);
        }
        let out = rank(&args, &[&common::photo_dir()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows = lines(&out);
        // every fixture photo, the query image among them
        assert_eq!(rows.len(), r.photos.len());
        let mut last = f64::INFINITY;
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row["rank"].as_u64(), Some(i as u64 + 1));
            let score = row["score"].as_f64().unwrap();
            assert!(score <= last, "best first");
            last = score;
            for field in [
                "path",
                "logit_yes",
                "logit_no",
                "visual_tokens",
                "input_size",
            ] {
                assert!(!row[field].is_null(), "{field} missing in {row}");
            }
            let yes = row["logit_yes"].as_f64().unwrap();
            let no = row["logit_no"].as_f64().unwrap();
            assert!((score - 1.0 / (1.0 + (no - yes).exp())).abs() < 1e-6);
            let name = Path::new(row["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            let photo = r
                .photos
                .iter()
                .find(|(_, p)| p.file == name)
                .map(|(k, _)| k.clone())
                .unwrap();
            if let Some(case) = r.cases.iter().find(|c| c.query == key && c.photo == photo) {
                assert!(
                    (score - case.score).abs() < 0.01,
                    "{key}/{photo}: {score} vs {}",
                    case.score
                );
                let g = r.photos[&photo].grid_thw;
                assert_eq!(
                    row["visual_tokens"].as_u64(),
                    Some((g[1] * g[2] / 4) as u64)
                );
                assert_eq!(
                    row["input_size"],
                    serde_json::json!(r.photos[&photo].input_size)
                );
            }
        }
    }
}

#[test]
fn bad_photos_are_reported_and_the_run_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::copy(
        common::photo_dir().join("portrait.png"),
        dir.join("good.png"),
    )
    .unwrap();
    std::fs::write(
        dir.join("notes.jpg"),
        b"this is a text file with a photo's name",
    )
    .unwrap();
    std::fs::write(dir.join("empty.png"), b"").unwrap();
    let jpeg = std::fs::read(common::photo_dir().join("beach_landscape.jpg")).unwrap();
    std::fs::write(dir.join("cut.jpg"), &jpeg[..jpeg.len() / 3]).unwrap();
    std::fs::write(dir.join("clip.mp4"), b"not looked at").unwrap();

    let out = rank(&["--json", "--query", "a red umbrella"], &[dir]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = lines(&out);
    let scored: Vec<_> = rows.iter().filter(|r| r.get("score").is_some()).collect();
    let failed: Vec<_> = rows.iter().filter(|r| r.get("error").is_some()).collect();
    assert_eq!((scored.len(), failed.len()), (1, 3), "{rows:?}");
    let error_of = |name: &str| {
        rows.iter()
            .find(|r| r["path"].as_str().unwrap().ends_with(name))
            .and_then(|r| r["error"].as_str())
            .map(str::to_owned)
    };
    assert_eq!(
        error_of("notes.jpg").as_deref(),
        Some("not an image, or a format this app does not read")
    );
    assert_eq!(error_of("empty.png").as_deref(), Some("the file is empty"));
    let cut = error_of("cut.jpg").unwrap();
    assert!(cut.contains("ends too early"), "{cut}");
    assert!(
        !rows
            .iter()
            .any(|r| r["path"].as_str().unwrap().ends_with("clip.mp4"))
    );
}

#[test]
fn nothing_to_do_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = rank(&["--query", "x"], &[tmp.path()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no photos found"));

    let out = Command::new(env!("CARGO_BIN_EXE_lychee-rerank"))
        .args(["rank", "--model", "/no/such/model/folder", "--query", "x"])
        .arg(common::photo_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/no/such/model/folder"), "{err}");

    let out = rank(&[], &[&common::photo_dir()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--query"));
}

#[test]
fn gpus_asked_for_that_are_not_there_are_named() {
    let photos = common::photo_dir();
    let out = rank(&["--query", "x", "--gpus", "0,x"], &[&photos]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"x\" is not a GPU number"), "{err}");

    let out = rank(&["--query", "x", "--gpus", "all", "--cpu"], &[&photos]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));

    // This test machine has no GPU (and CI builds without GPU support).
    if !cfg!(feature = "cuda") {
        let out = rank(&["--query", "x", "--gpus", "all"], &[&photos]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no CUDA GPU is visible"), "{err}");
        assert!(out.stdout.is_empty(), "nothing ranked, nothing printed");
    }
}
