//! The library index through the real commands, with the tiny SigLIP 2 checkpoint:
//! incremental indexing, renamed photos found by content, a kill in the middle of a run,
//! a damaged index set aside, `search` against transformers' similarities, and the two
//! stages of `rank --shortlist` equal to judging the shortlist directly.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const QUERY: &str = "a red umbrella on a sunny beach";

fn embedder_dir() -> PathBuf {
    common::fixtures().join("tiny-siglip")
}

fn lychee(cache: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lychee-rerank"));
    cmd.env("LYCHEE_CACHE_DIR", cache);
    cmd
}

fn ok(out: &Output) -> &Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&ok(out).stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `index --json`'s summary.
fn index(cache: &Path, dir: &Path) -> Value {
    let out = lychee(cache)
        .args(["index", "--json", "--embedder"])
        .arg(embedder_dir())
        .arg(dir)
        .output()
        .unwrap();
    let mut lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "one summary line");
    lines.remove(0)
}

fn copy_photos(to: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(common::photo_dir()).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        n += 1;
    }
    n
}

#[test]
fn indexing_is_incremental_and_follows_photos_by_content() {
    let cache = tempfile::tempdir().unwrap();
    let photos = tempfile::tempdir().unwrap();
    let n = copy_photos(photos.path()) as u64;
    let first = index(cache.path(), photos.path());
    assert_eq!(first["indexed"], n, "{first}");
    assert_eq!(first["reused"], 0);
    assert_eq!(first["failed"], 0);
    assert!(first["photos_per_s"].as_f64().unwrap() > 0.0);
    // again: nothing to embed
    let again = index(cache.path(), photos.path());
    assert_eq!(
        (again["indexed"].as_u64(), again["reused"].as_u64()),
        (Some(0), Some(n))
    );
    // a new photo, a renamed one and a moved one: only the new one is embedded
    let mut bytes = std::fs::read(common::photo_dir().join("portrait.png")).unwrap();
    bytes.extend_from_slice(b"another photo");
    std::fs::write(photos.path().join("new.png"), bytes).unwrap();
    std::fs::rename(
        photos.path().join("beach_landscape.jpg"),
        photos.path().join("renamed beach.jpg"),
    )
    .unwrap();
    std::fs::create_dir(photos.path().join("moved")).unwrap();
    std::fs::rename(
        photos.path().join("palette.gif"),
        photos.path().join("moved/palette.gif"),
    )
    .unwrap();
    let third = index(cache.path(), photos.path());
    assert_eq!(
        (third["indexed"].as_u64(), third["reused"].as_u64()),
        (Some(1), Some(n))
    );
    // a broken photo gets its reason and the others go on
    std::fs::write(photos.path().join("broken.jpg"), b"not a photo").unwrap();
    let out = lychee(cache.path())
        .args(["index", "--json", "--embedder"])
        .arg(embedder_dir())
        .arg(photos.path())
        .output()
        .unwrap();
    let summary = &json_lines(&out)[0];
    assert_eq!(summary["failed"], 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("could not index") && err.contains("broken.jpg"),
        "{err}"
    );
}

#[test]
fn a_killed_run_keeps_what_it_stored_and_the_next_one_goes_on() {
    let cache = tempfile::tempdir().unwrap();
    let photos = tempfile::tempdir().unwrap();
    // many photos of distinct content
    let base = std::fs::read(common::photo_dir().join("grey_scan.png")).unwrap();
    let total = 1500;
    for i in 0..total {
        let mut bytes = base.clone();
        bytes.extend_from_slice(format!("photo {i}").as_bytes());
        std::fs::write(photos.path().join(format!("{i:04}.png")), bytes).unwrap();
    }
    let mut child = lychee(cache.path())
        .args(["index", "--embedder"])
        .arg(embedder_dir())
        .arg(photos.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        if line.unwrap().starts_with("photo 200 of") {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let again = index(cache.path(), photos.path());
    let (indexed, reused) = (
        again["indexed"].as_u64().unwrap(),
        again["reused"].as_u64().unwrap(),
    );
    assert_eq!(indexed + reused, total, "{again}");
    assert!(
        reused >= 100,
        "only {reused} photos were kept from the killed run"
    );
    assert!(indexed > 0, "the killed run had not finished: {again}");
}

#[test]
fn a_damaged_index_is_set_aside_and_the_run_goes_on() {
    let cache = tempfile::tempdir().unwrap();
    std::fs::write(cache.path().join("index.sqlite3"), vec![0x17u8; 8192]).unwrap();
    let out = lychee(cache.path())
        .args(["index", "--json", "--embedder"])
        .arg(embedder_dir())
        .arg(common::photo_dir().join("tiny_icon.png"))
        .output()
        .unwrap();
    let summary = &json_lines(&out)[0];
    assert_eq!(summary["indexed"], 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("set aside"), "{err}");
    let aside = std::fs::read_dir(cache.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("unusable")
        })
        .count();
    assert!(aside >= 1, "the damaged file is kept aside, not deleted");
}

/// transformers' cosine of `query` with each photo, from the reference.
fn reference_similarities(query: &str) -> HashMap<String, f32> {
    let text = std::fs::read_to_string(common::fixtures().join("reference/siglip.json")).unwrap();
    let r: Value = serde_json::from_str(&text).unwrap();
    let q = r["queries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["text"] == query)
        .expect("the query is in the reference");
    let qv: Vec<f64> = serde_json::from_value(q["text_embeds_normalized"].clone()).unwrap();
    r["photos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let pv: Vec<f64> =
                serde_json::from_value(p["image_embeds_normalized"].clone()).unwrap();
            let cos: f64 = qv.iter().zip(&pv).map(|(a, b)| a * b).sum();
            (p["file"].as_str().unwrap().to_owned(), cos as f32)
        })
        .collect()
}

fn file_name(v: &Value) -> String {
    Path::new(v["path"].as_str().unwrap())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn search_ranks_by_transformers_similarity() {
    let cache = tempfile::tempdir().unwrap();
    for query in [QUERY, "雪山脚下骑马的藏族姑娘，红围巾"] {
        let out = lychee(cache.path())
            .args(["search", "--json", "--query", query, "--embedder"])
            .arg(embedder_dir())
            .arg(common::photo_dir())
            .output()
            .unwrap();
        let lines = json_lines(&out);
        let reference = reference_similarities(query);
        assert_eq!(lines.len(), reference.len());
        let mut last = f64::INFINITY;
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line["rank"], i as u64 + 1);
            let sim = line["similarity"].as_f64().unwrap();
            assert!(sim <= last, "best first");
            last = sim;
            // f16 storage and JPEG decoding: within 2e-3 of transformers' cosine
            let theirs = reference[&file_name(line)];
            assert!(
                (sim as f32 - theirs).abs() < 2e-3,
                "{}: {sim} vs {theirs}",
                file_name(line)
            );
            assert!(line["logit"].is_number());
        }
    }
    // --top
    let out = lychee(cache.path())
        .args([
            "search",
            "--json",
            "--top",
            "3",
            "--query",
            QUERY,
            "--embedder",
        ])
        .arg(embedder_dir())
        .arg(common::photo_dir())
        .output()
        .unwrap();
    assert_eq!(json_lines(&out).len(), 3);
}

#[test]
fn two_stages_judge_exactly_the_shortlist() {
    let cache = tempfile::tempdir().unwrap();
    let out = lychee(cache.path())
        .args([
            "rank",
            "--json",
            "--no-cache",
            "--shortlist",
            "4",
            "--query",
            QUERY,
        ])
        .arg("--embedder")
        .arg(embedder_dir())
        .arg("--model")
        .arg(common::model_dir())
        .arg(common::photo_dir())
        .output()
        .unwrap();
    let two_stage = json_lines(&out);
    assert_eq!(two_stage.len(), 4, "only the shortlist is judged");
    let search = lychee(cache.path())
        .args([
            "search",
            "--json",
            "--top",
            "4",
            "--query",
            QUERY,
            "--embedder",
        ])
        .arg(embedder_dir())
        .arg(common::photo_dir())
        .output()
        .unwrap();
    let shortlist: Vec<String> = json_lines(&search).iter().map(file_name).collect();
    for line in &two_stage {
        let name = file_name(line);
        let first = line["first_stage_rank"].as_u64().unwrap() as usize;
        assert_eq!(shortlist[first - 1], name, "first-stage rank of {name}");
        assert!(line["similarity"].is_number());
    }
    // the same photos judged directly
    let mut direct = lychee(cache.path());
    direct
        .args(["rank", "--json", "--no-cache", "--query", QUERY, "--model"])
        .arg(common::model_dir());
    for name in &shortlist {
        direct.arg(common::photo_dir().join(name));
    }
    let direct = json_lines(&direct.output().unwrap());
    let order = |lines: &[Value]| -> Vec<(String, f64)> {
        lines
            .iter()
            .map(|l| (file_name(l), l["score"].as_f64().unwrap()))
            .collect()
    };
    assert_eq!(order(&two_stage), order(&direct));
}
