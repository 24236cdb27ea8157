//! A rerank server on a free port with the tiny model, and requests written by hand (so
//! that any header can be sent), for tests/server*.rs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use lychee_rerank::hub::ModelSource;
use lychee_rerank::model::device::DevicePreference;
use lychee_rerank::model::{
    ComputeDevice, DEFAULT_INSTRUCTION, DocumentTokens, QueryInput, Reranker,
};
use lychee_rerank::server::{Server, ServerConfig, start};
use serde_json::Value;

pub fn config() -> ServerConfig {
    ServerConfig {
        port: 0,
        max_batch_documents: 300,
        max_concurrent: 8,
        ..ServerConfig::default()
    }
}

/// A server on a free port with the tiny model, once it answers /health.
pub fn serve(config: ServerConfig) -> Server {
    let server = start(
        config,
        ModelSource::Folder(super::model_dir()),
        DevicePreference::Cpu,
        false,
    )
    .expect("the server starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while raw(&server, "GET", "/health", &[], "").0 != 200 {
        assert!(Instant::now() < deadline, "the model did not load");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// One request written by hand (so that any header can be sent); (status, body).
pub fn raw(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {}\r\n", server.addr()));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = match text.split_once("\r\n\r\n") {
        Some((head, rest))
            if head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked") =>
        {
            dechunk(rest)
        }
        Some((_, rest)) => rest.to_owned(),
        None => String::new(),
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

pub fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let (status, text) = raw(
        server,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        &body.to_string(),
    );
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: not JSON: {text}"));
    (status, v)
}

pub fn fixture(name: &str) -> Value {
    let path = super::fixtures().join("server").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

pub fn reranker() -> Reranker {
    Reranker::load(&super::model_dir(), ComputeDevice::cpu()).unwrap()
}

/// The scoring core's P(yes) for text documents.
pub fn direct_scores(model: &Reranker, query: &str, texts: &[&str]) -> Vec<f64> {
    let q = model
        .prepare_query(
            DEFAULT_INSTRUCTION,
            &QueryInput {
                text: query.into(),
                image: None,
            },
        )
        .unwrap();
    texts
        .iter()
        .map(|t| {
            let (ids, _) = model.document_ids(false, t, 2048).unwrap();
            model
                .judge_documents(
                    &q,
                    &[DocumentTokens {
                        ids: &ids,
                        visual: None,
                    }],
                )
                .unwrap()[0]
                .score()
        })
        .collect()
}
