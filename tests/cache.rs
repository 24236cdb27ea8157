//! The score cache through the real command: a repeated search scores only new or changed
//! photos, 10,000 cached photos come back fast, a `kill -9` in the middle of a run loses
//! nothing committed, a damaged database is set aside, and the window's "Remember
//! scores" switch turns the cache off.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use lychee_rerank::cache::db::HashMemo;
use lychee_rerank::cache::scores::ScoreCache;
use lychee_rerank::model::{ComputeDevice, Reranker};
use lychee_rerank::worker::{PhotoScore, RankEvent, RankRequest, RankSettings, run_ranking};
use serde_json::Value;

const QUERY: &str = "a red umbrella on a sunny beach";

fn rank(cache: &Path, dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lychee-rerank"))
        .env("LYCHEE_CACHE_DIR", cache)
        .args(["rank", "--json", "--query", QUERY, "--model"])
        .arg(common::model_dir())
        .arg(dir)
        .output()
        .unwrap()
}

/// (file name, score, cached) of each scored photo.
fn rows(out: &Output) -> Vec<(String, f64, bool)> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("score").is_some())
        .map(|v| {
            let name = Path::new(v["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (
                name,
                v["score"].as_f64().unwrap(),
                v["cached"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_repeated_search_scores_only_new_or_changed_photos() {
    let cache = tempfile::tempdir().unwrap();
    let photos = tempfile::tempdir().unwrap();
    for f in ["portrait.png", "tiny_icon.png", "palette.gif"] {
        std::fs::copy(common::photo_dir().join(f), photos.path().join(f)).unwrap();
    }
    let first = rows(&rank(cache.path(), photos.path()));
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|r| !r.2), "nothing cached the first time");

    // one photo added, one replaced by other content
    std::fs::copy(
        common::photo_dir().join("grey_scan.png"),
        photos.path().join("grey_scan.png"),
    )
    .unwrap();
    std::fs::copy(
        common::photo_dir().join("query_example.png"),
        photos.path().join("palette.gif"),
    )
    .unwrap();
    let second = rows(&rank(cache.path(), photos.path()));
    let by_name =
        |rows: &[(String, f64, bool)], n: &str| rows.iter().find(|r| r.0 == n).cloned().unwrap();
    for unchanged in ["portrait.png", "tiny_icon.png"] {
        let (a, b) = (by_name(&first, unchanged), by_name(&second, unchanged));
        assert!(b.2, "{unchanged} comes from the cache");
        assert_eq!(a.1, b.1);
    }
    assert!(
        !by_name(&second, "grey_scan.png").2,
        "a new photo is scored"
    );
    assert!(
        !by_name(&second, "palette.gif").2,
        "a changed photo is scored again"
    );
}

#[test]
fn ten_thousand_cached_photos_come_back_fast() {
    let cache_dir = tempfile::tempdir().unwrap();
    let photos = tempfile::tempdir().unwrap();
    let model = Reranker::load(&common::model_dir(), ComputeDevice::cpu()).unwrap();
    let (cache, _) = ScoreCache::open(&cache_dir.path().join("scores.sqlite3")).unwrap();
    let cache = Mutex::new(cache);
    // One real photo scored, its output copied to 10,000 distinct small files' hashes.
    let small = photos.path().join("00000.png");
    std::fs::copy(common::photo_dir().join("tiny_icon.png"), &small).unwrap();
    let request = |paths: Vec<std::path::PathBuf>| RankRequest::new(QUERY, paths);
    let settings = RankSettings {
        max_batch: 1,
        time_stages: false,
    };
    run_ranking(
        &model,
        &request(vec![small.clone()]),
        settings,
        Some(&cache),
        &AtomicBool::new(false),
        |_| {},
    )
    .unwrap();
    let key_and_score = {
        let c = cache.lock().unwrap();
        let hash = c.photo_hash(&small).unwrap();
        // find the key the run stored under
        let conn = rusqlite::Connection::open(c.path()).unwrap();
        let (key, output): (String, String) = conn
            .query_row(
                "SELECT query_key, output FROM scores WHERE photo_hash = ?1",
                [&hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        (key, serde_json::from_str::<PhotoScore>(&output).unwrap())
    };
    let mut paths = Vec::new();
    {
        let c = cache.lock().unwrap();
        for i in 1..10_000u32 {
            let p = photos.path().join(format!("{i:05}.png"));
            std::fs::write(&p, i.to_le_bytes()).unwrap();
            let h = c.photo_hash(&p).unwrap();
            c.put(&key_and_score.0, &h, &key_and_score.1).unwrap();
            paths.push(p);
        }
    }
    paths.push(small);
    let start = Instant::now();
    let mut cached = 0;
    run_ranking(
        &model,
        &request(paths),
        settings,
        Some(&cache),
        &AtomicBool::new(false),
        |e| {
            if let RankEvent::PhotoScored { cached: true, .. } = e {
                cached += 1;
            }
        },
    )
    .unwrap();
    let elapsed = start.elapsed();
    eprintln!("10,000 cached photos ranked in {elapsed:?}");
    // Every photo came from the cache: the model judged none of them. The time is a
    // measurement (docs/PERFORMANCE.md), not a pass mark: a shared CI machine varies.
    assert_eq!(cached, 10_000);

    // From a shell, end to end: the command answers from the cache without loading the
    // model at all.
    drop(cache);
    let start = Instant::now();
    let out = rank(cache_dir.path(), photos.path());
    let elapsed = start.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the model was not loaded"), "{err}");
    assert!(!err.contains("loading"), "{err}");
    let rows = rows(&out);
    assert_eq!(rows.len(), 10_000);
    assert!(rows.iter().all(|r| r.2), "every row from the cache");
    eprintln!("rank on 10,000 cached photos, end to end, no model: {elapsed:?}");
}

#[test]
fn a_question_answered_before_loads_no_model() {
    let cache = tempfile::tempdir().unwrap();
    let first = rank(cache.path(), &common::photo_dir());
    assert!(String::from_utf8_lossy(&first.stderr).contains("loading"));
    let second = rank(cache.path(), &common::photo_dir());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("the model was not loaded"), "{err}");
    let (a, b) = (rows(&first), rows(&second));
    assert_eq!(
        a.iter().map(|r| (&r.0, r.1)).collect::<Vec<_>>(),
        b.iter().map(|r| (&r.0, r.1)).collect::<Vec<_>>()
    );
    // one new photo: the model is loaded again, and only that photo is judged
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(common::photo_dir()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let mut bytes = std::fs::read(common::photo_dir().join("portrait.png")).unwrap();
    bytes.extend_from_slice(b"new");
    std::fs::write(dir.path().join("new.png"), bytes).unwrap();
    let third = rank(cache.path(), dir.path());
    assert!(String::from_utf8_lossy(&third.stderr).contains("loading"));
    assert_eq!(rows(&third).iter().filter(|r| !r.2).count(), 1);
}

#[test]
fn a_killed_run_keeps_what_it_committed_and_the_database_opens() {
    let cache = tempfile::tempdir().unwrap();
    let photos = tempfile::tempdir().unwrap();
    for i in 0..150 {
        for f in ["portrait.png", "large_photo.jpg"] {
            std::fs::copy(
                common::photo_dir().join(f),
                photos.path().join(format!("{i:03}-{f}")),
            )
            .unwrap();
        }
    }
    // Distinct content per copy, so that each is its own cache entry.
    for entry in std::fs::read_dir(photos.path()).unwrap() {
        let p = entry.unwrap().path();
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.extend_from_slice(p.file_name().unwrap().as_encoded_bytes());
        std::fs::write(&p, bytes).unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_lychee-rerank"))
        .env("LYCHEE_CACHE_DIR", cache.path())
        .args(["rank", "--json", "--query", QUERY, "--model"])
        .arg(common::model_dir())
        .arg(photos.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        if line.unwrap().starts_with("photo 40 of") {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let (cache_db, warning) = ScoreCache::open(&cache.path().join("scores.sqlite3")).unwrap();
    assert!(
        warning.is_none(),
        "the database opens as it is: {warning:?}"
    );
    let kept = cache_db.len().unwrap();
    assert!(kept >= 30, "only {kept} scores kept");
    drop(cache_db);
    let again = rows(&rank(cache.path(), photos.path()));
    assert_eq!(again.len(), 300);
    assert!(
        again.iter().filter(|r| r.2).count() >= kept,
        "every committed score is reused"
    );
}

#[test]
fn a_damaged_database_is_set_aside_and_the_run_goes_on() {
    let cache = tempfile::tempdir().unwrap();
    std::fs::write(cache.path().join("scores.sqlite3"), vec![0x42u8; 8192]).unwrap();
    let out = rank(cache.path(), &common::photo_dir().join("tiny_icon.png"));
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("set aside"), "{err}");
    assert_eq!(rows(&out).len(), 1);
}

/// What the inference thread reported for one ranking: (scored, of which from the cache).
fn thread_rank(
    worker: &mut lychee_rerank::worker::InferenceThread,
    photos: Vec<std::path::PathBuf>,
    use_cache: bool,
) -> (usize, usize) {
    use lychee_rerank::worker::RankReply;
    use std::time::Duration;
    let handle = worker
        .rank(RankRequest::new(QUERY, photos), use_cache)
        .expect("the inference thread takes the ranking");
    let (mut scored, mut cached) = (0, 0);
    loop {
        match handle.replies.recv_timeout(Duration::from_secs(60)) {
            Ok(RankReply::Progress(RankEvent::PhotoScored { cached: c, .. })) => {
                scored += 1;
                cached += usize::from(c);
            }
            Ok(RankReply::Finished { .. }) => return (scored, cached),
            Ok(RankReply::Failed { reason }) => panic!("{reason}"),
            Ok(_) => {}
            Err(_) => panic!("the ranking did not finish"),
        }
    }
}

#[test]
fn the_window_can_turn_the_cache_off() {
    use lychee_rerank::worker::InferenceThread;
    let cache_dir = tempfile::tempdir().unwrap();
    let db = cache_dir.path().join("scores.sqlite3");
    let mut worker = InferenceThread::spawn(|| {}, Some(db.clone())).unwrap();
    common::load_tiny(&mut worker);
    let photos = vec![
        common::photo_dir().join("beach_landscape.jpg"),
        common::photo_dir().join("portrait.png"),
    ];
    // off: nothing read, nothing written (the database is not even created)
    assert_eq!(thread_rank(&mut worker, photos.clone(), false), (2, 0));
    assert!(!db.exists());
    // on: stored, then read back
    assert_eq!(thread_rank(&mut worker, photos.clone(), true), (2, 0));
    assert!(db.exists());
    assert_eq!(thread_rank(&mut worker, photos.clone(), true), (2, 2));
    // off again: computed afresh although the scores are there
    assert_eq!(thread_rank(&mut worker, photos, false), (2, 0));
    assert!(worker.shut_down(std::time::Duration::from_secs(2)));
}

/// Every reply of one ranking, until its last.
fn replies_of(handle: &lychee_rerank::worker::RankHandle) -> Vec<lychee_rerank::worker::RankReply> {
    use lychee_rerank::worker::RankReply;
    let mut all = Vec::new();
    loop {
        let reply = handle
            .replies
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the ranking did not finish");
        let last = matches!(reply, RankReply::Finished { .. } | RankReply::Failed { .. });
        all.push(reply);
        if last {
            return all;
        }
    }
}

#[test]
fn a_question_asked_before_is_answered_while_the_model_is_busy() {
    use lychee_rerank::worker::{InferenceThread, RankEvent, RankReply};
    let cache_dir = tempfile::tempdir().unwrap();
    let db = cache_dir.path().join("scores.sqlite3");
    let mut worker = InferenceThread::spawn(|| {}, Some(db)).unwrap();
    common::load_tiny(&mut worker);
    let mut photos: Vec<_> = common::reference()
        .photos
        .values()
        .map(|p| common::photo_dir().join(&p.file))
        .collect();
    photos.sort();
    let first = replies_of(
        &worker
            .rank(RankRequest::new(QUERY, photos.clone()), true)
            .unwrap(),
    );
    let scores_of = |replies: &[RankReply]| {
        let mut s: Vec<(usize, f64, bool)> = replies
            .iter()
            .filter_map(|r| match r {
                RankReply::Progress(RankEvent::PhotoScored {
                    index,
                    score,
                    cached,
                }) => Some((*index, score.score, *cached)),
                _ => None,
            })
            .collect();
        s.sort_by_key(|x| x.0);
        s
    };
    let computed = scores_of(&first);
    assert_eq!(computed.len(), photos.len());

    // The model is busy with a long ranking (no cache: every photo computed) ...
    let long: Vec<_> = photos
        .iter()
        .cycle()
        .take(40 * photos.len())
        .cloned()
        .collect();
    let busy = worker.rank(RankRequest::new(QUERY, long), false).unwrap();
    // ... and the question asked before is answered from the cache meanwhile.
    let answer = replies_of(
        &worker
            .rank_cache_first(RankRequest::new(QUERY, photos.clone()), true)
            .unwrap(),
    );
    assert!(
        matches!(answer.last(), Some(RankReply::Finished { .. })),
        "{answer:?}"
    );
    let still_busy = !busy
        .replies
        .try_iter()
        .any(|r| matches!(r, RankReply::Finished { .. } | RankReply::Failed { .. }));
    assert!(still_busy, "the answer waited for the long ranking");
    let cached = scores_of(&answer);
    assert_eq!(cached.len(), photos.len());
    for (a, b) in computed.iter().zip(&cached) {
        assert_eq!((a.0, a.1), (b.0, b.1), "the same score, to the bit");
        assert!(b.2, "from the cache");
    }
    busy.cancel();
    drop(busy);

    // With a photo left to score, the job goes to the model and waits for it there.
    let extra = tempfile::tempdir().unwrap();
    let copy = extra.path().join("new-photo.png");
    std::fs::copy(common::photo_dir().join("portrait.png"), &copy).unwrap();
    image::open(&copy).unwrap().fliph().save(&copy).unwrap();
    let mut with_new = photos.clone();
    with_new.push(copy);
    let answer = replies_of(
        &worker
            .rank_cache_first(RankRequest::new(QUERY, with_new), true)
            .unwrap(),
    );
    let scores = scores_of(&answer);
    assert_eq!(scores.len(), photos.len() + 1, "{answer:?}");
    assert_eq!(scores.iter().filter(|s| s.2).count(), photos.len());
    assert!(worker.shut_down(std::time::Duration::from_secs(5)));
}
