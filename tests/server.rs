//! `lychee-rerank serve` with the tiny model: each format's requests (tests/fixtures/server,
//! written from the formats' published schemas and the clients' source) answered in the
//! shape its clients read, scores equal to the scoring core's, bad input answered with a
//! 4xx naming what was wrong, the API key, the Host check, and the server serving on
//! after all of it. Load, limits and stopping are in tests/server_load.rs.

mod common;

use base64::Engine;
use common::server::{config, direct_scores, fixture, post, raw, reranker, serve};
use lychee_rerank::server::ServerConfig;
use serde_json::{Value, json};

/// The fixtures' images are 2 x 2 PNGs, too small for the model: each is replaced by a
/// real photo, in the same form (raw base64 or a data: URI).
fn with_real_images(v: &mut Value) {
    let photo = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(common::photo_dir().join("portrait.png")).unwrap());
    match v {
        Value::String(s) if s.starts_with("data:image/") => {
            *s = format!("data:image/png;base64,{photo}")
        }
        Value::String(s) if s.starts_with("iVBOR") => *s = photo,
        Value::Array(a) => a.iter_mut().for_each(with_real_images),
        Value::Object(o) => o.values_mut().for_each(with_real_images),
        _ => {}
    }
}

fn sorted_desc(scores: &[f64]) -> bool {
    scores.windows(2).all(|w| w[0] >= w[1])
}

#[test]
fn each_format_answers_as_its_clients_read_it() {
    let server = serve(config());
    let model = reranker();
    // text-embeddings-inference: a bare array, sorted, with text when asked.
    let req = fixture("tei_rerank_request.json");
    let (status, v) = post(&server, "/rerank", &req);
    assert_eq!(status, 200, "{v}");
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 3);
    let texts: Vec<&str> = req["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let want = direct_scores(&model, req["query"].as_str().unwrap(), &texts);
    let mut scores = Vec::new();
    for item in items {
        let i = item["index"].as_u64().unwrap() as usize;
        let s = item["score"].as_f64().unwrap();
        assert!(
            (s - want[i]).abs() < 1e-5,
            "document {i}: {s} vs {}",
            want[i]
        );
        assert_eq!(item["text"], texts[i]);
        scores.push(s);
    }
    assert!(sorted_desc(&scores));
    // no text unless asked; raw scores are the logit gap
    let (_, v) = post(
        &server,
        "/rerank",
        &fixture("tei_rerank_request_minimal.json"),
    );
    assert!(v[0].get("text").is_none());
    let mut raw_req = fixture("tei_rerank_request_minimal.json");
    raw_req["raw_scores"] = json!(true);
    let (_, v) = post(&server, "/rerank", &raw_req);
    for item in v.as_array().unwrap() {
        let i = item["index"].as_u64().unwrap() as usize;
        let p = want[i];
        let gap = (p / (1.0 - p)).ln();
        assert!((item["score"].as_f64().unwrap() - gap).abs() < 1e-4);
    }
    // Cohere v1: top_n, rank_fields, the document echoed
    let (status, v) = post(&server, "/v1/rerank", &fixture("cohere_v1_request.json"));
    assert_eq!(status, 200, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert!(
        results
            .iter()
            .all(|r| r["document"]["text"].is_string() && r["relevance_score"].is_f64())
    );
    assert_eq!(v["meta"]["api_version"]["version"], "1");
    assert!(v["id"].is_string() && v["usage"]["total_tokens"].as_u64().unwrap() > 0);
    // Cohere v2: no documents, top_n
    let (status, v) = post(&server, "/v2/rerank", &fixture("cohere_v2_request.json"));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"].as_array().unwrap().len(), 2);
    assert!(v["results"][0].get("document").is_none());
    assert_eq!(v["meta"]["api_version"]["version"], "2");
    // Jina, text and images (base64 and data: URIs), documents echoed by default
    let (status, v) = post(&server, "/v1/rerank", &fixture("jina_request.json"));
    assert_eq!(status, 200, "{v}");
    let mut m0 = fixture("jina_m0_base64_request.json");
    with_real_images(&mut m0);
    let n = m0["documents"].as_array().unwrap().len();
    let (status, v) = post(&server, "/v1/rerank", &m0);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"].as_array().unwrap().len(), n);
    // a JPEG as plain base64 (it begins with "/9j/", like a path)
    let jpeg = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(common::photo_dir().join("beach_landscape.jpg")).unwrap());
    let (status, v) = post(
        &server,
        "/v1/rerank",
        &json!({"query": "a beach", "documents": [{"image": jpeg}, "a beach"]}),
    );
    assert_eq!(status, 200, "{v}");
    // vLLM content parts, an image query
    for name in [
        "vllm_rerank_request.json",
        "vllm_rerank_multimodal_request.json",
        "vllm_rerank_image_query_request.json",
    ] {
        let mut req = fixture(name);
        with_real_images(&mut req);
        for path in ["/rerank", "/v1/rerank", "/v2/rerank"] {
            let (status, v) = post(&server, path, &req);
            assert_eq!(status, 200, "{name} {path}: {v}");
            let scores: Vec<f64> = v["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["relevance_score"].as_f64().unwrap())
                .collect();
            assert!(sorted_desc(&scores));
        }
    }
    // the old vLLM form (one object of parts as all the documents) is refused, not guessed
    let mut legacy = fixture("vllm_rerank_multimodal_legacy_request.json");
    with_real_images(&mut legacy);
    let (status, v) = post(&server, "/v1/rerank", &legacy);
    assert_eq!(status, 422, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("must be a list"),
        "{v}"
    );
    // an image by address: refused, naming the document
    let (status, v) = post(&server, "/v1/rerank", &fixture("jina_m0_request.json"));
    assert_eq!(status, 422);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("documents[0].image"),
        "{v}"
    );
    assert_eq!(v["error_type"], "Validation");
}

#[test]
fn what_each_client_sends_it_gets_back() {
    let server = serve(config());
    for (name, path) in [
        ("dify_tei_request.json", "/rerank"),
        ("llamaindex_tei_request.json", "/rerank"),
        ("ragflow_request.json", "/rerank"),
        ("openwebui_request.json", "/v1/rerank"),
        ("langchain_cohere_v2_request.json", "/v2/rerank"),
        ("dify_cohere_request.json", "/v1/rerank"),
        ("dify_openai_compatible_request.json", "/v1/rerank"),
        (
            "dify_openai_compatible_multimodal_request.json",
            "/v1/rerank",
        ),
        ("dify_jina_m0_request.json", "/v1/rerank"),
        ("dify_jina_m0_multimodal_request.json", "/v1/rerank"),
        ("ragflow_vllm_request.json", "/v1/rerank"),
        ("ragflow_openai_compatible_request.json", "/rerank"),
    ] {
        let mut req = fixture(name);
        with_real_images(&mut req);
        let (status, v) = post(&server, path, &req);
        assert_eq!(status, 200, "{name}: {v}");
        let (n, is_tei) = match req.get("texts") {
            Some(t) => (t.as_array().unwrap().len(), true),
            None => (req["documents"].as_array().unwrap().len(), false),
        };
        if is_tei {
            // LlamaIndex asserts one item per text; Dify reads text when it asked for it.
            let items = v.as_array().unwrap_or_else(|| panic!("{name}: {v}"));
            assert_eq!(items.len(), n, "{name}");
            let mut seen: Vec<u64> = items.iter().map(|i| i["index"].as_u64().unwrap()).collect();
            seen.sort();
            assert_eq!(seen, (0..n as u64).collect::<Vec<_>>());
            if req["return_text"] == json!(true) {
                assert!(items.iter().all(|i| i["text"].is_string()), "{name}");
            }
        } else {
            let results = v["results"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: {v}"));
            let top = req
                .get("top_n")
                .and_then(Value::as_u64)
                .filter(|&k| k > 0)
                .unwrap_or(n as u64);
            assert_eq!(results.len() as u64, top.min(n as u64), "{name}");
            assert!(
                results
                    .iter()
                    .all(|r| r["index"].is_u64() && r["relevance_score"].is_f64())
            );
            if req["return_documents"] == json!(true) {
                assert!(
                    results.iter().all(|r| r["document"]["text"].is_string()),
                    "{name}"
                );
            }
        }
    }
    // Open WebUI sends "Bearer " when no key is set: a server without a key lets it pass
    let (status, _) = raw(
        &server,
        "POST",
        "/v1/rerank",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer "),
        ],
        &fixture("openwebui_request.json").to_string(),
    );
    assert_eq!(status, 200);
    // /info in the shape Dify reads: model_type's first key is "reranker"
    let (status, info) = raw(&server, "GET", "/info", &[], "");
    assert_eq!(status, 200);
    let info: Value = serde_json::from_str(&info).unwrap();
    let expected = fixture("tei_info_response.json");
    for key in expected.as_object().unwrap().keys() {
        assert!(info.get(key).is_some(), "/info lacks {key}");
    }
    assert_eq!(
        info["model_type"]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap(),
        "reranker"
    );
    assert_eq!(info["max_client_batch_size"], 300);
    let (status, metrics) = raw(&server, "GET", "/metrics", &[], "");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("lychee_documents_total")
            && metrics.contains("lychee_request_duration_seconds_bucket"),
        "{metrics}"
    );
    let (status, spec) = raw(&server, "GET", "/openapi.json", &[], "");
    assert_eq!(status, 200);
    assert!(serde_json::from_str::<Value>(&spec).unwrap()["paths"]["/v1/rerank"].is_object());
    let (status, page) = raw(&server, "GET", "/docs", &[], "");
    assert_eq!(status, 200);
    assert!(page.contains("/v2/rerank"));
}

#[test]
fn the_documents_command_scores_as_the_server_does() {
    let server = serve(config());
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs.jsonl");
    let photo = common::photo_dir().join("portrait.png");
    std::fs::write(
        &docs,
        format!(
            "{{\"text\": \"A red umbrella on the beach.\"}}\n{{\"text\": \"雪山下的马\"}}\n{{\"image\": {:?}}}\n{{\"image\": {:?}, \"text\": \"a caption\"}}\n{{\"image\": \"missing.png\"}}\n",
            photo, photo
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lychee-rerank"))
        .args(["rank", "--json", "--query", "a red umbrella", "--model"])
        .arg(common::model_dir())
        .arg("--documents")
        .arg(&docs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    // A document whose image cannot be read is named; the others are scored.
    let missing = lines.iter().find(|l| l["line"] == 5).unwrap();
    assert!(
        missing["error"].as_str().unwrap().contains("missing.png") && missing["score"].is_null(),
        "{missing}"
    );
    let image = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&photo).unwrap());
    let (status, v) = post(
        &server,
        "/v1/rerank",
        &json!({"query": "a red umbrella", "documents": [
            "A red umbrella on the beach.", "雪山下的马", {"image": image}, {"image": image, "text": "a caption"}]}),
    );
    assert_eq!(status, 200, "{v}");
    for r in v["results"].as_array().unwrap() {
        let line = lines
            .iter()
            .find(|l| l["line"] == r["index"].as_u64().unwrap() + 1)
            .unwrap();
        let (a, b) = (
            r["relevance_score"].as_f64().unwrap(),
            line["score"].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-5, "document {}: {a} vs {b}", r["index"]);
    }
}

#[test]
fn bad_input_gets_a_4xx_that_names_it_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    std::fs::copy(
        common::photo_dir().join("portrait.png"),
        allowed.join("p.png"),
    )
    .unwrap();
    std::fs::write(dir.path().join("outside.png"), b"x").unwrap();
    let server = serve(ServerConfig {
        allow_local_files: vec![allowed.clone()],
        body_limit: 64 * 1024,
        max_image_pixels: 100_000,
        ..config()
    });
    let json_header = [("Content-Type", "application/json")];
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("not JSON", "{not json".into(), 400, "not valid JSON"),
        ("an array", "[1,2]".into(), 422, "JSON object"),
        ("no query", json!({"documents": ["a"]}).to_string(), 422, "query is missing"),
        ("no documents", json!({"query": "q"}).to_string(), 422, "documents is missing"),
        ("empty texts", json!({"query": "q", "texts": []}).to_string(), 400, "cannot be empty"),
        ("a number as a text", json!({"query": "q", "texts": ["a", 5]}).to_string(), 422, "texts[1]"),
        ("a number as a document", json!({"query": "q", "documents": ["a", 5]}).to_string(), 422, "documents[1]"),
        ("an empty object", json!({"query": "q", "documents": [{}]}).to_string(), 422, "documents[0]"),
        ("a negative top_n", json!({"query": "q", "documents": ["a"], "top_n": -3}).to_string(), 422, "top_n"),
        ("too many documents", json!({"query": "q", "documents": vec!["a"; 301]}).to_string(), 422, "maximum allowed batch size 300"),
        ("not an image", json!({"query": "q", "documents": [{"image": base64::engine::general_purpose::STANDARD.encode(b"plain words, not pixels")}]}).to_string(), 422, "documents[0].image"),
        ("an image address", json!({"query": "q", "documents": [{"image": "http://192.168.1.1/x.png"}]}).to_string(), 422, "not fetched"),
        ("a file outside", json!({"query": "q", "documents": [{"image": dir.path().join("outside.png")}]}).to_string(), 403, "outside the folders"),
        ("a way out with ..", json!({"query": "q", "documents": [{"image": allowed.join("../outside.png")}]}).to_string(), 403, "outside the folders"),
        ("too large a body", json!({"query": "q", "texts": [("x".repeat(70_000))]}).to_string(), 413, "larger"),
        ("two content images", json!({"query": "q", "documents": [{"content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}).to_string(), 422, "one image per"),
    ];
    for (what, body, status, says) in &cases {
        let path = if body.contains("\"texts\"") || *what == "not JSON" || *what == "an array" {
            "/rerank"
        } else {
            "/v1/rerank"
        };
        let (got, text) = raw(&server, "POST", path, &json_header, body);
        let got_body: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
        assert_eq!(got, *status, "{what}: {got_body}");
        assert!(
            got_body["error"].as_str().unwrap().contains(says),
            "{what}: {got_body}"
        );
        assert!(got_body["error_type"].is_string(), "{what}");
    }
    // an image over the pixel limit, read from the allowed folder: refused before decoding
    let (status, v) = post(
        &server,
        "/v1/rerank",
        &json!({"query": "q", "documents": [{"image": allowed.join("p.png")}]}),
    );
    assert!(status == 200 || status == 413, "{v}");
    let big = image::RgbImage::new(400, 400);
    let mut png = Vec::new();
    big.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let (status, v) = post(
        &server,
        "/v1/rerank",
        &json!({"query": "q", "documents": ["fine", {"image": base64::engine::general_purpose::STANDARD.encode(&png)}]}),
    );
    assert_eq!(status, 413, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("documents[1].image"),
        "{v}"
    );
    // not sent as JSON
    let (status, text) = raw(
        &server,
        "POST",
        "/rerank",
        &[("Content-Type", "text/plain")],
        "{}",
    );
    assert_eq!(status, 415, "{text}");
    // no such route
    let (status, text) = raw(&server, "GET", "/nothing", &[], "");
    assert_eq!(status, 404);
    assert!(text.contains("error_type"));
    // truncate: false and a text over the limit
    let long = "word ".repeat(3000);
    let (status, v) = post(
        &server,
        "/rerank",
        &json!({"query": "q", "texts": ["short", long], "truncate": false}),
    );
    assert_eq!(status, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("documents[1]"), "{v}");
    // ... and cut, and said so, when allowed
    let (status, v) = post(
        &server,
        "/rerank",
        &json!({"query": "q", "texts": ["short", long]}),
    );
    assert_eq!(status, 200, "{v}");
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|i| i["truncated"] == json!(true)),
        "{v}"
    );
    // and after all of that it still serves
    let (status, _) = post(&server, "/rerank", &fixture("tei_rerank_request.json"));
    assert_eq!(status, 200);
}

#[test]
fn the_key_the_host_and_web_pages() {
    let server = serve(ServerConfig {
        api_key: Some("s3cret".into()),
        allow_hosts: vec!["host.docker.internal".into()],
        cors_origins: vec!["http://localhost:3000".into()],
        ..config()
    });
    let body = fixture("tei_rerank_request.json").to_string();
    let json_h = ("Content-Type", "application/json");
    let (s, _) = raw(&server, "POST", "/rerank", &[json_h], &body);
    assert_eq!(s, 401, "no key");
    let (s, t) = raw(
        &server,
        "POST",
        "/rerank",
        &[json_h, ("Authorization", "Bearer wrong")],
        &body,
    );
    assert_eq!(s, 401);
    assert!(t.contains("Unauthorized"));
    let (s, _) = raw(
        &server,
        "POST",
        "/rerank",
        &[json_h, ("Authorization", "Bearer s3cret")],
        &body,
    );
    assert_eq!(s, 200);
    let (s, _) = raw(&server, "GET", "/metrics", &[], "");
    assert_eq!(s, 401, "metrics need the key too");
    let (s, _) = raw(&server, "GET", "/health", &[], "");
    assert_eq!(s, 200, "health needs no key");
    // DNS rebinding: a page of evil.example resolving to 127.0.0.1
    let (s, t) = raw(
        &server,
        "GET",
        "/health",
        &[("Host", "evil.example:8080")],
        "",
    );
    assert_eq!(s, 403);
    assert!(t.contains("--allow-host evil.example"), "{t}");
    let (s, _) = raw(
        &server,
        "GET",
        "/health",
        &[("Host", "host.docker.internal:8080")],
        "",
    );
    assert_eq!(s, 200, "an allowed host");
    let (s, _) = raw(&server, "GET", "/health", &[("Host", "localhost")], "");
    assert_eq!(s, 200);
    // a web page of another origin is refused; the allowed one gets CORS headers
    let (s, _) = raw(
        &server,
        "POST",
        "/rerank",
        &[
            json_h,
            ("Authorization", "Bearer s3cret"),
            ("Origin", "http://evil.example"),
        ],
        &body,
    );
    assert_eq!(s, 403);
    let (s, _) = raw(
        &server,
        "OPTIONS",
        "/rerank",
        &[
            ("Origin", "http://localhost:3000"),
            ("Access-Control-Request-Method", "POST"),
        ],
        "",
    );
    assert_eq!(s, 204, "the preflight of the allowed origin");
}
