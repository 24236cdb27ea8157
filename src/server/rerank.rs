//! The rerank routes: `POST /rerank` (text-embeddings-inference's format when the body has
//! `texts`, the Cohere/Jina/vLLM format when it has `documents`), `POST /v1/rerank` and
//! `POST /v2/rerank`. A request takes a permit (429 at once when all are taken), its
//! images are decoded on blocking threads, its documents go to the inference thread as one
//! job, and the answer is built when the last score arrives. A client that goes away
//! drops its job, and the model stops working on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ServerState;
use super::error::ApiError;
use super::images::content;
use super::parse::{self, Call, Shape};
use crate::worker::{Command, Content, ScoreJob, ScoreReply};

/// One document's result.
#[derive(Debug, Clone)]
struct Scored {
    index: usize,
    /// P(yes), or z_yes - z_no when raw scores were asked for.
    score: f64,
    truncated: bool,
    tokens: usize,
}

fn body_json(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) => ApiError::too_large(format!(
            "the body is larger than this server accepts ({e}); send fewer or smaller documents, or start the server with a larger --body-limit"
        )),
        other => ApiError::malformed(format!("the body could not be read ({other})")),
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::malformed(format!("the body is not valid JSON: {e}")))
}

/// `POST /rerank`: text-embeddings-inference's format, or the documents format.
pub async fn rerank(
    State(state): State<Arc<ServerState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let v = body_json(body)?;
        if !v.is_object() {
            return Err(ApiError::validation("the body must be a JSON object"));
        }
        let call = match (v.get("texts"), v.get("documents")) {
            (Some(_), None) => parse::tei(&v, &state.policy)?,
            (None, Some(_)) => parse::results(&v, &state.policy, 1)?,
            (Some(_), Some(_)) => {
                return Err(ApiError::validation(
                    "the body has both texts and documents: send texts (text-embeddings-inference) or documents (Cohere, Jina, vLLM)",
                ));
            }
            (None, None) => {
                return Err(ApiError::validation(
                    "the body has neither texts nor documents: give the texts or documents to rank",
                ));
            }
        };
        serve(&state, call).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/rerank`.
pub async fn rerank_v1(
    State(state): State<Arc<ServerState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let call = parse::results(&body_json(body)?, &state.policy, 1)?;
        serve(&state, call).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v2/rerank`.
pub async fn rerank_v2(
    State(state): State<Arc<ServerState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let call = parse::results(&body_json(body)?, &state.policy, 2)?;
        serve(&state, call).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Counts the documents of a request that was given up before it was answered.
struct DropGuard<'a> {
    state: &'a ServerState,
    left: usize,
}

impl Drop for DropGuard<'_> {
    fn drop(&mut self) {
        if self.left > 0 {
            self.state.metrics.dropped(self.left);
        }
    }
}

async fn serve(state: &Arc<ServerState>, call: Call) -> Result<Response, ApiError> {
    let preparer = state.ready_model()?;
    let _permit = Arc::clone(&state.permits).try_acquire_owned().map_err(|_| {
        ApiError::overloaded(format!(
            "Model is overloaded: {} requests are being served (the most at once); try again shortly",
            state.config.max_concurrent
        ))
    })?;
    let texts: Vec<String> = call.documents.iter().map(|d| d.text.clone()).collect();
    // Images are decoded on blocking threads, beside the inference thread, a request's
    // documents side by side on the compute threads: nothing of a request is judged
    // before all of its images are ready.
    let (query, documents) = {
        let max_pixels = state.config.max_image_pixels;
        let (query, documents) = (call.query.clone(), call.documents.clone());
        tokio::task::spawn_blocking(move || -> Result<(Content, Vec<Content>), ApiError> {
            use rayon::prelude::*;
            let query = content(query, "query", &preparer, max_pixels)?;
            let documents: Vec<Result<Content, ApiError>> = documents
                .into_par_iter()
                .enumerate()
                .map(|(i, d)| content(d, &format!("documents[{i}]"), &preparer, max_pixels))
                .collect();
            // The first document that cannot be used (in the request's order) is named.
            let documents = documents.into_iter().collect::<Result<_, _>>()?;
            Ok((query, documents))
        })
        .await
        .map_err(|e| ApiError::backend(format!("preparing the images failed ({e})")))??
    };
    let query_image_key = query
        .image
        .as_ref()
        .map(|i| i.pixel_key.iter().map(|b| format!("{b:02x}")).collect());
    let (reply, mut replies) = tokio::sync::mpsc::unbounded_channel();
    let n = documents.len();
    let job = ScoreJob {
        instruction: call
            .instruction
            .clone()
            .unwrap_or_else(|| state.config.instruction.clone()),
        query,
        query_image_key,
        documents,
        max_text_tokens: state.config.max_text_tokens,
        reply,
    };
    let submitted = std::time::Instant::now();
    state.commands.try_send(Command::Score(job)).map_err(|_| {
        ApiError::overloaded(
            "Model is overloaded: the queue of the model is full; try again shortly",
        )
    })?;
    let mut guard = DropGuard { state, left: n };
    let mut scored: Vec<Option<Scored>> = vec![None; n];
    let prefix = loop {
        match replies.recv().await {
            Some(ScoreReply::Scored {
                index,
                judgement,
                truncated,
                tokens,
            }) => {
                let score = if call.raw_scores {
                    f64::from(judgement.logit_yes) - f64::from(judgement.logit_no)
                } else {
                    judgement.score()
                };
                if index < n && scored[index].is_none() {
                    guard.left -= 1;
                    scored[index] = Some(Scored {
                        index,
                        score,
                        truncated,
                        tokens,
                    });
                }
            }
            Some(ScoreReply::DocumentFailed { index, reason }) => {
                return Err(ApiError::backend(format!(
                    "documents[{index}] could not be judged: {reason}"
                )));
            }
            Some(ScoreReply::Done { prefix_tokens }) => break prefix_tokens,
            Some(ScoreReply::Failed { reason }) => return Err(ApiError::backend(reason)),
            None => return Err(ApiError::unhealthy("the model stopped before answering")),
        }
    };
    let scored: Vec<Scored> = scored
        .into_iter()
        .enumerate()
        .map(|(i, s)| s.ok_or_else(|| ApiError::backend(format!("documents[{i}] got no score"))))
        .collect::<Result<_, _>>()?;
    state.metrics.scored(scored.len());
    if !call.truncate
        && let Some(long) = scored.iter().find(|s| s.truncated)
    {
        return Err(ApiError::validation(format!(
            "Input validation error: documents[{}] is longer than {} tokens and truncate is false; send it shorter or set truncate to true",
            long.index, state.config.max_text_tokens
        )));
    }
    let model_ms = submitted.elapsed().as_secs_f64() * 1e3;
    let mut response = respond(state, &call, scored, &texts, prefix);
    // As text-embeddings-inference does: the time the model's side took (queue included).
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("{model_ms:.3}")) {
        response.headers_mut().insert("x-compute-time", v);
    }
    Ok(response)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn respond(
    state: &ServerState,
    call: &Call,
    mut scored: Vec<Scored>,
    texts: &[String],
    prefix_tokens: usize,
) -> Response {
    let tokens: usize = scored.iter().map(|s| s.tokens + prefix_tokens).sum();
    scored.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    if let Some(k) = call.top_n {
        scored.truncate(k);
    }
    match call.shape {
        Shape::Tei => {
            let items: Vec<Value> = scored
                .iter()
                .map(|s| {
                    let mut item = json!({ "index": s.index, "score": s.score });
                    if call.return_documents {
                        item["text"] = json!(texts[s.index]);
                    }
                    if s.truncated {
                        item["truncated"] = json!(true);
                    }
                    item
                })
                .collect();
            axum::Json(Value::Array(items)).into_response()
        }
        Shape::Results { api_version } => {
            let results: Vec<Value> = scored
                .iter()
                .map(|s| {
                    let mut item = json!({ "index": s.index, "relevance_score": s.score });
                    if call.return_documents {
                        item["document"] = json!({ "text": texts[s.index] });
                    }
                    if s.truncated {
                        item["truncated"] = json!(true);
                    }
                    item
                })
                .collect();
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let id = format!(
                "rerank-{nanos:x}-{}",
                NEXT_ID.fetch_add(1, Ordering::Relaxed)
            );
            axum::Json(json!({
                "id": id,
                "model": call.model.clone().unwrap_or_else(|| state.config.served_model_name.clone()),
                "results": results,
                "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
                "meta": {
                    "api_version": { "version": api_version.to_string() },
                    "billed_units": { "search_units": 1 }
                }
            }))
            .into_response()
        }
    }
}
