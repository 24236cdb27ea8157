//! Reading a rerank request in the formats RAG tools send (tests/fixtures/server/README.md
//! names the sources): text-embeddings-inference's `{query, texts}`, and the
//! Cohere/Jina/vLLM `{model, query, documents, top_n, return_documents}`, where a query or
//! document is a string, a Jina object (`{"text"}`, `{"image"}`, or both) or vLLM content
//! parts (`{"content": [{"type": "text"}, {"type": "image_url"}]}`). A `null` counts as
//! absent, unknown fields are ignored, any `model` is accepted. Every error names the field
//! (`documents[3].image`) and says what to send instead.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::Value;

use super::error::ApiError;

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageRef {
    /// Bytes sent in the request (base64 or a data: URI).
    Bytes(Vec<u8>),
    /// A file under one of the folders the server may read.
    File(PathBuf),
}

/// A query or a document: text, an image, or an image followed by text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Side {
    pub text: String,
    pub image: Option<ImageRef>,
}

/// Which response shape the client expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// text-embeddings-inference: a bare array of `{index, score, text?}`.
    Tei,
    /// Cohere (v1 or v2), Jina, vLLM: `{id, model, results: [...], usage}`.
    Results { api_version: u8 },
}

/// A rerank request, whatever format it came in.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub shape: Shape,
    pub query: Side,
    pub documents: Vec<Side>,
    /// Results kept, best first (None: all).
    pub top_n: Option<usize>,
    /// Echo each document's text in its result.
    pub return_documents: bool,
    /// z_yes - z_no instead of P(yes) (text-embeddings-inference's `raw_scores`).
    pub raw_scores: bool,
    /// Cut long texts instead of refusing them.
    pub truncate: bool,
    pub model: Option<String>,
    /// An instruction other than the server's (an extension of these formats).
    pub instruction: Option<String>,
}

/// What the server allows.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Folders (canonical) whose files may be named as images; empty: none.
    pub local_roots: Vec<PathBuf>,
    /// Most documents in one request.
    pub max_documents: usize,
}

/// `v[key]`, with `null` counted as absent.
fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn bool_field(v: &Value, key: &str) -> Result<Option<bool>, ApiError> {
    match field(v, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ApiError::validation(format!(
            "{key} must be true or false, not {}",
            kind(other)
        ))),
    }
}

fn count_field(v: &Value, key: &str) -> Result<Option<usize>, ApiError> {
    match field(v, key) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(n) => Ok(Some(n as usize)),
            None => Err(ApiError::validation(format!(
                "{key} must be a whole number of 0 or more, not {n}"
            ))),
        },
        Some(other) => Err(ApiError::validation(format!(
            "{key} must be a number, not {}",
            kind(other)
        ))),
    }
}

fn string_field(v: &Value, key: &str) -> Result<Option<String>, ApiError> {
    match field(v, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::validation(format!(
            "{key} must be a string, not {}",
            kind(other)
        ))),
    }
}

/// "a number", "an object" … for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "true or false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn top_object(v: &Value) -> Result<(), ApiError> {
    if v.is_object() {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "the body must be a JSON object, not {}",
            kind(v)
        )))
    }
}

/// A text-embeddings-inference request (`POST /rerank` with `texts`).
pub fn tei(v: &Value, policy: &Policy) -> Result<Call, ApiError> {
    top_object(v)?;
    let query = match field(v, "query") {
        Some(Value::String(q)) => Side {
            text: q.clone(),
            image: None,
        },
        Some(other) => side(other, "query", policy)?,
        None => {
            return Err(ApiError::validation(
                "query is missing: give the search text",
            ));
        }
    };
    let texts = match field(v, "texts") {
        Some(Value::Array(t)) => t,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "texts must be a list of strings, not {}",
                kind(other)
            )));
        }
        None => {
            return Err(ApiError::validation(
                "texts is missing: give the texts to rank",
            ));
        }
    };
    let documents = texts
        .iter()
        .enumerate()
        .map(|(i, t)| match t {
            Value::String(s) => Ok(Side {
                text: s.clone(),
                image: None,
            }),
            other => Err(ApiError::validation(format!(
                "texts[{i}] must be a string, not {}",
                kind(other)
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_count(documents.len(), "texts", policy)?;
    Ok(Call {
        shape: Shape::Tei,
        query,
        documents,
        top_n: None,
        return_documents: bool_field(v, "return_text")?.unwrap_or(false),
        raw_scores: bool_field(v, "raw_scores")?.unwrap_or(false),
        truncate: bool_field(v, "truncate")?.unwrap_or(true),
        model: None,
        instruction: string_field(v, "instruction")?,
    })
}

/// A Cohere / Jina / vLLM request (`documents`); `api_version` picks the response's
/// `meta.api_version`.
pub fn results(v: &Value, policy: &Policy, api_version: u8) -> Result<Call, ApiError> {
    top_object(v)?;
    let query = match field(v, "query") {
        Some(q) => side(q, "query", policy)?,
        None => {
            return Err(ApiError::validation(
                "query is missing: give the search text (or an image object)",
            ));
        }
    };
    if query.text.is_empty() && query.image.is_none() {
        return Err(ApiError::validation(
            "query is empty: give some text or an image",
        ));
    }
    let rank_fields: Option<Vec<String>> = match field(v, "rank_fields") {
        None => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .enumerate()
                .map(|(i, f)| {
                    f.as_str().map(str::to_owned).ok_or_else(|| {
                        ApiError::validation(format!("rank_fields[{i}] must be a string"))
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(other) => {
            return Err(ApiError::validation(format!(
                "rank_fields must be a list of field names, not {}",
                kind(other)
            )));
        }
    };
    let items: Vec<&Value> = match field(v, "documents") {
        Some(Value::Array(d)) => d.iter().collect(),
        Some(Value::Object(_)) => {
            return Err(ApiError::validation(
                "documents must be a list (one item per document), not an object; wrap a single document in [ ]",
            ));
        }
        Some(other) => {
            return Err(ApiError::validation(format!(
                "documents must be a list, not {}",
                kind(other)
            )));
        }
        None => {
            return Err(ApiError::validation(
                "documents is missing: give the documents to rank",
            ));
        }
    };
    let mut object_form = false;
    let documents = items
        .iter()
        .enumerate()
        .map(|(i, d)| {
            object_form |= d.is_object();
            document(
                d,
                &format!("documents[{i}]"),
                rank_fields.as_deref(),
                policy,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_count(documents.len(), "documents", policy)?;
    let top_n = count_field(v, "top_n")?.filter(|&n| n > 0);
    // Cohere v1 echoes documents only when asked; Jina echoes them unless told not to,
    // and vLLM always does: objects (their forms) echo by default.
    let return_documents = bool_field(v, "return_documents")?.unwrap_or(object_form);
    let raw = match bool_field(v, "use_activation")? {
        Some(activation) => !activation,
        None => bool_field(v, "raw_scores")?.unwrap_or(false),
    };
    Ok(Call {
        shape: Shape::Results { api_version },
        query,
        documents,
        top_n,
        return_documents,
        raw_scores: raw,
        truncate: bool_field(v, "truncate")?.unwrap_or(true),
        model: string_field(v, "model")?,
        instruction: string_field(v, "instruction")?,
    })
}

fn check_count(n: usize, what: &str, policy: &Policy) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::empty(format!("`{what}` cannot be empty")));
    }
    if n > policy.max_documents {
        return Err(ApiError::validation(format!(
            "batch size {n} > maximum allowed batch size {}: send at most {} {what} per request",
            policy.max_documents, policy.max_documents
        )));
    }
    Ok(())
}

/// A document: a query-like side, or a Cohere object whose `rank_fields` (default `text`)
/// make its text.
fn document(
    v: &Value,
    name: &str,
    rank_fields: Option<&[String]>,
    policy: &Policy,
) -> Result<Side, ApiError> {
    if let (Some(fields), Value::Object(map)) = (rank_fields, v) {
        let mut parts = Vec::new();
        for f in fields {
            match map.get(f) {
                Some(Value::String(s)) => parts.push(s.clone()),
                Some(Value::Null) | None => {}
                Some(other) => parts.push(other.to_string()),
            }
        }
        if parts.is_empty() {
            return Err(ApiError::validation(format!(
                "{name} has none of the rank_fields {fields:?}"
            )));
        }
        return Ok(Side {
            text: parts.join("\n"),
            image: None,
        });
    }
    let s = side(v, name, policy)?;
    if s.text.is_empty() && s.image.is_none() {
        return Err(ApiError::validation(format!(
            "{name} is empty: give some text or an image"
        )));
    }
    Ok(s)
}

/// A string (text), a Jina object (`text` and/or `image`) or vLLM content parts.
fn side(v: &Value, name: &str, policy: &Policy) -> Result<Side, ApiError> {
    match v {
        Value::String(s) => Ok(Side {
            text: s.clone(),
            image: None,
        }),
        Value::Object(map) if map.contains_key("content") => content(v, name, policy),
        Value::Object(_) => {
            let text = string_field(v, "text")
                .map_err(|e| prefixed(e, name))?
                .unwrap_or_default();
            let image = match field(v, "image") {
                None => None,
                Some(Value::String(s)) => Some(image(s, &format!("{name}.image"), policy)?),
                Some(other) => {
                    return Err(ApiError::validation(format!(
                        "{name}.image must be a string (base64 or a data: URI), not {}",
                        kind(other)
                    )));
                }
            };
            if text.is_empty() && image.is_none() {
                let keys: Vec<&String> = v
                    .as_object()
                    .map(|m| m.keys().collect())
                    .unwrap_or_default();
                return Err(ApiError::validation(format!(
                    "{name} has neither \"text\" nor \"image\" (it has {keys:?})"
                )));
            }
            Ok(Side { text, image })
        }
        other => Err(ApiError::validation(format!(
            "{name} must be a string or an object with \"text\" and/or \"image\", not {}",
            kind(other)
        ))),
    }
}

fn prefixed(e: ApiError, name: &str) -> ApiError {
    ApiError {
        error: format!("{name}.{}", e.error),
        ..e
    }
}

/// vLLM content parts: text parts joined, at most one image (it comes first, as in the
/// prompt).
fn content(v: &Value, name: &str, policy: &Policy) -> Result<Side, ApiError> {
    let Some(Value::Array(parts)) = field(v, "content") else {
        return Err(ApiError::validation(format!(
            "{name}.content must be a list of content parts"
        )));
    };
    let mut texts = Vec::new();
    let mut image_ref = None;
    for (j, part) in parts.iter().enumerate() {
        let at = format!("{name}.content[{j}]");
        let kind_of = field(part, "type").and_then(Value::as_str).unwrap_or("");
        match kind_of {
            "text" => match field(part, "text") {
                Some(Value::String(t)) => texts.push(t.clone()),
                _ => return Err(ApiError::validation(format!("{at}.text must be a string"))),
            },
            "image_url" => {
                let url = field(part, "image_url")
                    .and_then(|u| match u {
                        Value::String(s) => Some(s.as_str()),
                        other => field(other, "url").and_then(Value::as_str),
                    })
                    .ok_or_else(|| {
                        ApiError::validation(format!("{at}.image_url.url must be a string"))
                    })?;
                if image_ref.is_some() {
                    return Err(ApiError::validation(format!(
                        "{at}: one image per query or document (the model reads one); send the others as documents of their own"
                    )));
                }
                image_ref = Some(image(url, &format!("{at}.image_url.url"), policy)?);
            }
            other => {
                return Err(ApiError::validation(format!(
                    "{at}.type {other:?} is not supported: use \"text\" or \"image_url\""
                )));
            }
        }
    }
    Ok(Side {
        text: texts.join("\n"),
        image: image_ref,
    })
}

/// An image given as a data: URI, plain base64, or (with `--allow-local-files`) a path.
/// Addresses on the network are refused: the server fetches nothing.
pub fn image(s: &str, name: &str, policy: &Policy) -> Result<ImageRef, ApiError> {
    let s = s.trim();
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Err(ApiError::validation(format!(
            "{name}: images are not fetched from addresses (the server reaches nothing on the network); send the image as base64 or a data: URI"
        )));
    }
    if let Some(rest) = s.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').ok_or_else(|| {
            ApiError::validation(format!("{name}: a data: URI needs a comma before its data"))
        })?;
        if !meta.ends_with(";base64") {
            return Err(ApiError::validation(format!(
                "{name}: only base64 data: URIs are read (data:image/png;base64,...)"
            )));
        }
        return decode_base64(data).map(ImageRef::Bytes).ok_or_else(|| {
            ApiError::validation(format!("{name}: the data: URI is not valid base64"))
        });
    }
    if let Some(path) = s.strip_prefix("file://") {
        return local_file(Path::new(path), name, policy);
    }
    // Plain base64 first: a JPEG's base64 begins with "/9j/", which also looks like a path.
    if let Some(bytes) = decode_base64(s).filter(|b| image::guess_format(b).is_ok()) {
        return Ok(ImageRef::Bytes(bytes));
    }
    if s.starts_with('/')
        || s.starts_with("./")
        || s.starts_with("../")
        || looks_like_windows_path(s)
    {
        return local_file(Path::new(s), name, policy);
    }
    decode_base64(s).map(ImageRef::Bytes).ok_or_else(|| {
        ApiError::validation(format!(
            "{name} is neither a data: URI nor base64 image data"
        ))
    })
}

fn looks_like_windows_path(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > 2 && b[0].is_ascii_alphabetic() && b[1] == b':' && (b[2] == b'\\' || b[2] == b'/')
}

fn decode_base64(data: &str) -> Option<Vec<u8>> {
    let clean: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines
        .iter()
        .find_map(|e| e.decode(clean.as_bytes()).ok())
        .filter(|b| !b.is_empty())
}

/// A file named by the client: only under the allowed folders, after resolving `..` and
/// symbolic links, so that no path or link leads outside them.
fn local_file(path: &Path, name: &str, policy: &Policy) -> Result<ImageRef, ApiError> {
    if policy.local_roots.is_empty() {
        return Err(ApiError::forbidden(format!(
            "{name}: local files are not read unless the server is started with --allow-local-files DIR; send the image as base64 instead"
        )));
    }
    let real = path.canonicalize().map_err(|e| {
        ApiError::validation(format!("{name}: {} cannot be opened ({e})", path.display()))
    })?;
    if !policy.local_roots.iter().any(|root| real.starts_with(root)) {
        return Err(ApiError::forbidden(format!(
            "{name}: {} is outside the folders this server may read",
            path.display()
        )));
    }
    if !real.is_file() {
        return Err(ApiError::validation(format!(
            "{name}: {} is not a file",
            path.display()
        )));
    }
    Ok(ImageRef::File(real))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> Policy {
        Policy {
            local_roots: Vec::new(),
            max_documents: 4,
        }
    }

    #[test]
    fn tei_requests_read_as_the_fixtures_send_them() {
        let call = tei(
            &json!({"query": "q", "texts": ["a", "b"], "return_text": true, "raw_scores": null}),
            &policy(),
        )
        .unwrap();
        assert_eq!(call.documents.len(), 2);
        assert!(call.return_documents && !call.raw_scores && call.truncate);
        let e = tei(&json!({"query": "q", "texts": []}), &policy()).unwrap_err();
        assert_eq!(e.error_type, "Empty");
        let e = tei(&json!({"query": "q", "texts": ["a", 3]}), &policy()).unwrap_err();
        assert!(e.error.contains("texts[1]"), "{}", e.error);
        let e = tei(
            &json!({"query": "q", "texts": ["a", "b", "c", "d", "e"]}),
            &policy(),
        )
        .unwrap_err();
        assert!(
            e.error.contains("maximum allowed batch size 4"),
            "{}",
            e.error
        );
    }

    #[test]
    fn documents_of_every_form() {
        let png = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG fake");
        let call = results(
            &json!({
                "model": "anything", "query": "q", "top_n": null,
                "documents": [
                    "plain",
                    {"text": "jina text"},
                    {"image": png},
                    {"text": "caption", "image": format!("data:image/png;base64,{png}")},
                ]
            }),
            &policy(),
            1,
        )
        .unwrap();
        assert_eq!(call.documents[0].text, "plain");
        assert!(call.documents[2].image.is_some() && call.documents[2].text.is_empty());
        assert!(call.documents[3].image.is_some() && call.documents[3].text == "caption");
        assert!(call.return_documents, "object forms echo by default");
        assert_eq!(call.top_n, None);
        let vllm = results(
            &json!({"query": "q", "documents": [{"content": [
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}},
                {"type": "text", "text": "after the image"}]}]}),
            &policy(),
            2,
        )
        .unwrap();
        assert_eq!(vllm.documents[0].text, "after the image");
        assert!(vllm.documents[0].image.is_some());
    }

    #[test]
    fn what_is_refused_is_named() {
        let e = results(
            &json!({"query": "q", "documents": [{"image": "https://example.com/x.png"}]}),
            &policy(),
            1,
        )
        .unwrap_err();
        assert!(e.error.starts_with("documents[0].image:"), "{}", e.error);
        assert!(e.error.contains("not fetched"), "{}", e.error);
        let e = results(
            &json!({"query": "q", "documents": [{"image": "/etc/passwd"}]}),
            &policy(),
            1,
        )
        .unwrap_err();
        assert_eq!(e.error_type, "Forbidden");
        let e = results(
            &json!({"query": "q", "documents": {"text": "x"}}),
            &policy(),
            1,
        )
        .unwrap_err();
        assert!(e.error.contains("must be a list"), "{}", e.error);
        let e = results(&json!({"query": "q", "documents": ["a", 7]}), &policy(), 1).unwrap_err();
        assert!(e.error.contains("documents[1]"), "{}", e.error);
        let e = results(&json!({"documents": ["a"]}), &policy(), 1).unwrap_err();
        assert!(e.error.contains("query is missing"), "{}", e.error);
        let e = results(
            &json!({"query": "q", "documents": ["a"], "top_n": -1}),
            &policy(),
            1,
        )
        .unwrap_err();
        assert!(e.error.contains("top_n"), "{}", e.error);
        let e = results(
            &json!({"query": "q", "documents": [{"image": "!!!"}]}),
            &policy(),
            1,
        )
        .unwrap_err();
        assert!(
            e.error.contains("neither a data: URI nor base64"),
            "{}",
            e.error
        );
        let e = results(&json!([1, 2]), &policy(), 1).unwrap_err();
        assert!(e.error.contains("JSON object"), "{}", e.error);
    }

    #[test]
    fn base64_that_looks_like_a_path_is_an_image() {
        // A JPEG's base64 starts with "/9j/".
        let jpeg = base64::engine::general_purpose::STANDARD
            .encode(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00 rest");
        assert!(jpeg.starts_with("/9j/"), "{jpeg}");
        assert!(matches!(
            image(&jpeg, "d", &policy()),
            Ok(ImageRef::Bytes(_))
        ));
    }

    #[test]
    fn local_files_stay_inside_the_allowed_folders() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("in");
        std::fs::create_dir(&inside).unwrap();
        std::fs::write(inside.join("ok.png"), b"x").unwrap();
        std::fs::write(dir.path().join("secret.png"), b"x").unwrap();
        let p = Policy {
            local_roots: vec![inside.canonicalize().unwrap()],
            max_documents: 4,
        };
        let ok = inside.join("ok.png");
        assert!(matches!(
            image(ok.to_str().unwrap(), "d", &p),
            Ok(ImageRef::File(_))
        ));
        let up = inside.join("../secret.png");
        assert_eq!(
            image(up.to_str().unwrap(), "d", &p).unwrap_err().error_type,
            "Forbidden"
        );
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret.png"), inside.join("link.png"))
                .unwrap();
            let link = inside.join("link.png");
            assert_eq!(
                image(link.to_str().unwrap(), "d", &p)
                    .unwrap_err()
                    .error_type,
                "Forbidden"
            );
        }
    }
}
