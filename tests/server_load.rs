//! `lychee-rerank serve` under load and at its limits: many clients at once and one that
//! goes away, more requests than it takes at once, no usable model, and SIGTERM.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::server::{config, direct_scores, fixture, post, raw, reranker, serve};
use lychee_rerank::hub::ModelSource;
use lychee_rerank::model::device::DevicePreference;
use lychee_rerank::server::{ServerConfig, start};
use serde_json::json;

#[test]
fn many_clients_at_once_and_one_that_goes_away() {
    let server = serve(ServerConfig {
        max_concurrent: 64,
        max_batch_documents: 5000,
        ..config()
    });
    let model = reranker();
    let req = fixture("tei_rerank_request.json");
    let texts: Vec<&str> = req["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let want = direct_scores(&model, req["query"].as_str().unwrap(), &texts);
    // 16 clients, 5 requests each, at the same time: every answer complete and equal
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                for _ in 0..5 {
                    let (status, v) = post(&server, "/rerank", &req);
                    assert_eq!(status, 200, "{v}");
                    let items = v.as_array().unwrap();
                    assert_eq!(items.len(), 3);
                    for item in items {
                        let i = item["index"].as_u64().unwrap() as usize;
                        assert!((item["score"].as_f64().unwrap() - want[i]).abs() < 1e-5);
                    }
                }
            });
        }
    });
    // A client that sends a large request (seconds of work) and goes away: its documents
    // are dropped.
    let many: Vec<String> = (0..5000)
        .map(|i| format!("document number {i} about boats"))
        .collect();
    let body = json!({"query": "boats", "texts": many}).to_string();
    {
        let mut s = TcpStream::connect(server.addr()).unwrap();
        let head = format!(
            "POST /rerank HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            server.addr(),
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        // dropped here: the connection closes before the answer
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, m) = raw(&server, "GET", "/metrics", &[], "");
        let dropped: u64 = m
            .lines()
            .find(|l| l.starts_with("lychee_documents_dropped_total "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let scored: u64 = m
            .lines()
            .find(|l| l.starts_with("lychee_documents_total "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if dropped > 0 {
            assert!(
                scored < 240 + 5000,
                "the abandoned request was finished: {scored} scored"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned request's documents were not dropped:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, _) = post(&server, "/rerank", &req);
    assert_eq!(status, 200, "serving on");
}

#[test]
fn over_the_limit_of_requests_at_once_is_429_at_once() {
    let server = serve(ServerConfig {
        max_concurrent: 1,
        ..config()
    });
    let many: Vec<String> = (0..300)
        .map(|i| format!("a long list of documents, number {i}"))
        .collect();
    let big = json!({"query": "boats", "texts": many});
    std::thread::scope(|s| {
        let slow = s.spawn(|| post(&server, "/rerank", &big).0);
        // wait until the slow one holds the only permit
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, m) = raw(&server, "GET", "/metrics", &[], "");
            if m.lines()
                .any(|l| l.starts_with("lychee_queue_documents ") && !l.ends_with(" 0"))
            {
                break;
            }
            assert!(Instant::now() < deadline, "the slow request did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        let start = Instant::now();
        let (status, v) = post(
            &server,
            "/rerank",
            &fixture("tei_rerank_request_minimal.json"),
        );
        assert_eq!(status, 429, "{v}");
        assert_eq!(v["error_type"], "Overloaded");
        assert!(start.elapsed() < Duration::from_secs(2), "answered at once");
        assert_eq!(slow.join().unwrap(), 200);
    });
}

#[test]
fn health_is_503_while_there_is_no_usable_model() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
    let server = start(
        config(),
        ModelSource::Folder(dir.path().to_path_buf()),
        DevicePreference::Cpu,
        false,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = raw(&server, "GET", "/health", &[], "");
        assert_eq!(status, 503);
        if body.contains("not usable") {
            assert!(body.contains("Unhealthy"));
            break;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, v) = post(&server, "/rerank", &fixture("tei_rerank_request.json"));
    assert_eq!(status, 503, "{v}");
}

/// `serve` stops on SIGTERM: it stops accepting, finishes what is under way and exits.
#[cfg(unix)]
#[test]
fn sigterm_stops_the_server_cleanly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lychee-rerank"))
        .args(["serve", "--cpu", "--port", &port.to_string(), "--model"])
        .arg(common::model_dir())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
            let _ = s
                .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out.starts_with("HTTP/1.1 200")
        });
        if up {
            break;
        }
        assert!(Instant::now() < deadline, "the server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopped = Instant::now();
    // SAFETY: a plain kill(2) of our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "the server did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "no longer listening"
    );
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("stopping"), "{err}");
}
