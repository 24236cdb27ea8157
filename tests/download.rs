//! Getting a model from the Hub, against a test server on 127.0.0.1 that serves the tiny
//! fixture model in the Hub's layout: a full download, an interrupted one resumed, a
//! missing file, offline starts with and without a cache, a damaged transfer.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use common::hub_server::HubServer;
use lychee_rerank::hub::cache::HfCache;
use lychee_rerank::hub::download::{DownloadEvent, HubConfig, check_free_space, download_model};
use lychee_rerank::model::{ComputeDevice, Reranker};

const ID: &str = "vec-ai/tiny-lychee";

fn config(server: &HubServer, cache: &Path) -> HubConfig {
    HubConfig {
        endpoint: server.endpoint.clone(),
        cache: HfCache::new(cache),
        token: None,
        offline: false,
    }
}

fn fixture_bytes() -> u64 {
    std::fs::read_dir(common::model_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name() != "config_nested.json")
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn a_full_download_gives_a_model_that_loads() {
    let server = HubServer::start(&common::model_dir(), ID);
    let cache = tempfile::tempdir().unwrap();
    let mut events = Vec::new();
    let dir = download_model(
        &config(&server, cache.path()),
        ID,
        "main",
        &AtomicBool::new(false),
        |e| events.push(e),
    )
    .unwrap();
    assert!(dir.starts_with(cache.path()), "{}", dir.display());
    assert!(
        events
            .iter()
            .any(|e| matches!(e, DownloadEvent::Planned { files: 3, .. })),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, DownloadEvent::Progress { .. }))
    );
    // the standard cache layout: refs/main -> the commit, snapshots/<commit>/<files>
    let refs = std::fs::read_to_string(cache.path().join("models--vec-ai--tiny-lychee/refs/main"))
        .unwrap();
    assert_eq!(refs.trim(), common::hub_server::COMMIT);
    assert!(Reranker::load(&dir, ComputeDevice::cpu()).is_ok());

    // Once complete, no network: the server is not asked again.
    let before = server.requests.load(Ordering::SeqCst);
    let again = download_model(
        &config(&server, cache.path()),
        ID,
        "main",
        &AtomicBool::new(false),
        |_| {},
    )
    .unwrap();
    assert_eq!(again, dir);
    assert_eq!(server.requests.load(Ordering::SeqCst), before);

    // A ref file that ends in a newline (as git and editors write them) still names the
    // snapshot.
    let ref_file = cache.path().join("models--vec-ai--tiny-lychee/refs/main");
    std::fs::write(&ref_file, format!("{}\n", common::hub_server::COMMIT)).unwrap();
    assert_eq!(
        HfCache::new(cache.path()).complete_snapshot(ID, "main"),
        Some(dir)
    );
}

#[test]
fn an_interrupted_download_resumes_where_it_stopped() {
    let server = HubServer::start(&common::model_dir(), ID);
    server.behaviour.lock().unwrap().slow = true;
    let cache = tempfile::tempdir().unwrap();
    let cancel = AtomicBool::new(false);
    let mut seen_big = false;
    let first = download_model(&config(&server, cache.path()), ID, "main", &cancel, |e| {
        // Stop in the middle of the first large shard.
        if let DownloadEvent::Progress { done_bytes, .. } = e
            && done_bytes > 4 << 20
        {
            seen_big = true;
            cancel.store(true, Ordering::SeqCst);
        }
    });
    let err = first.unwrap_err().to_string();
    assert!(seen_big && err.contains("cancelled"), "{err}");
    let partial: Vec<_> = walkdir::WalkDir::new(cache.path())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert_eq!(partial.len(), 1, "one partial file is kept for resuming");

    let sent_first = server.bytes_sent.load(Ordering::SeqCst);
    server.behaviour.lock().unwrap().slow = false;
    let dir = download_model(
        &config(&server, cache.path()),
        ID,
        "main",
        &AtomicBool::new(false),
        |_| {},
    )
    .unwrap();
    let sent_second = server.bytes_sent.load(Ordering::SeqCst) - sent_first;
    let total = fixture_bytes();
    assert!(
        sent_second < total,
        "the second run fetched {sent_second} of {total} bytes: it resumed"
    );
    assert!(Reranker::load(&dir, ComputeDevice::cpu()).is_ok());
}

#[test]
fn a_missing_file_is_named() {
    let server = HubServer::start(&common::model_dir(), ID);
    server
        .behaviour
        .lock()
        .unwrap()
        .missing
        .push("preprocessor_config.json".into());
    let cache = tempfile::tempdir().unwrap();
    let err = download_model(
        &config(&server, cache.path()),
        ID,
        "main",
        &AtomicBool::new(false),
        |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("preprocessor_config.json"), "{err}");
}

#[test]
fn offline_works_with_a_cache_and_says_why_without() {
    let cache = tempfile::tempdir().unwrap();
    let offline = HubConfig {
        endpoint: "http://127.0.0.1:9".into(),
        cache: HfCache::new(cache.path()),
        token: None,
        offline: true,
    };
    let err = download_model(&offline, ID, "main", &AtomicBool::new(false), |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HF_HUB_OFFLINE") && err.contains("not in the cache"),
        "{err}"
    );

    let server = HubServer::start(&common::model_dir(), ID);
    download_model(
        &config(&server, cache.path()),
        ID,
        "main",
        &AtomicBool::new(false),
        |_| {},
    )
    .unwrap();
    drop(server);
    let dir = download_model(&offline, ID, "main", &AtomicBool::new(false), |_| {}).unwrap();
    assert!(dir.join("config.json").is_file());
}

#[test]
fn a_damaged_shard_is_detected() {
    let server = HubServer::start(&common::model_dir(), ID);
    server
        .behaviour
        .lock()
        .unwrap()
        .short
        .push("model-00002-of-00003.safetensors".into());
    let cache = tempfile::tempdir().unwrap();
    let err = download_model(
        &config(&server, cache.path()),
        ID,
        "main",
        &AtomicBool::new(false),
        |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("model-00002-of-00003.safetensors"), "{err}");
}

#[test]
fn an_unreachable_endpoint_says_what_to_do() {
    let cache = tempfile::tempdir().unwrap();
    let unreachable = HubConfig {
        // a port nothing listens on
        endpoint: "http://127.0.0.1:9".into(),
        cache: HfCache::new(cache.path()),
        token: None,
        offline: false,
    };
    let err = download_model(&unreachable, ID, "main", &AtomicBool::new(false), |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HF_ENDPOINT") || err.contains("reach"),
        "{err}"
    );
}

#[test]
fn too_little_disk_space_says_how_much_and_where() {
    let cache = tempfile::tempdir().unwrap();
    let not_yet_made = cache.path().join("hub");
    check_free_space(&not_yet_made, 1_000).unwrap();
    let err = check_free_space(&not_yet_made, 1 << 60)
        .unwrap_err()
        .to_string();
    assert!(err.contains("GB more on the disk of"), "{err}");
    assert!(err.contains(&*not_yet_made.to_string_lossy()), "{err}");
    assert!(err.contains("HF_HUB_CACHE"), "{err}");
}
