//! Scoring documents for other programs (the rerank server, `rank --documents`): a query
//! (text, image or both) against documents that are text, an image, or an image followed
//! by text. Several requests are served at once by [`Scheduler`]: it takes one batch at a
//! time, from the requests in turn, so that a small request is never stuck behind a large
//! one for more than a batch; requests with the same query share one prepared prefix and
//! their documents share batches. A request whose reply channel is dropped (the client
//! went away) has its remaining documents dropped. The scheduler only decides what goes
//! together; [`judge_batch`] judges a batch on one device, and with several devices
//! (`serve --gpus`) [`Dealer`] hands the batches to whichever device is free.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

pub mod dealer;
pub use dealer::Dealer;

use crate::model::resample::Rgb8;
use crate::model::{
    DocumentTokens, Judgement, ModelError, PhotoInput, PreparedQuery, PreprocessConfig, QueryInput,
    Reranker, VisionConfig,
};

/// What turns a decoded image into the judge's input, known once the model is loaded; the
/// server prepares images with it on its own threads, before they reach the model.
#[derive(Debug, Clone, PartialEq)]
pub struct PhotoPreparer {
    pub vision: VisionConfig,
    pub preprocess: PreprocessConfig,
    /// Pack the pixels to bf16 for the device (see [`Reranker::takes_bf16_pixels`]).
    pub bf16: bool,
}

impl PhotoPreparer {
    /// Of `model`.
    pub fn of(model: &Reranker) -> Self {
        PhotoPreparer {
            vision: model.config.vision.clone(),
            preprocess: model.preprocess.clone(),
            bf16: model.takes_bf16_pixels(),
        }
    }

    /// Resizes and normalizes a decoded image for the judge.
    pub fn prepare(&self, image: &Rgb8) -> Result<PhotoInput, String> {
        let mut input = crate::model::preprocess::preprocess(image, &self.vision, &self.preprocess)
            .map_err(|e| e.to_string())?;
        if self.bf16 {
            input.pack_bf16();
        }
        Ok(input)
    }
}

/// A side of the prompt: text, an image (already decoded and prepared for the model), or
/// an image followed by text.
#[derive(Debug, Clone)]
pub struct Content {
    pub text: String,
    pub image: Option<PhotoInput>,
}

/// One request: a query, its documents, and where the scores go.
#[derive(Debug)]
pub struct ScoreJob {
    pub instruction: String,
    pub query: Content,
    /// Identifies the query image's pixels (two requests with the same query share one
    /// prefix).
    pub query_image_key: Option<String>,
    pub documents: Vec<Content>,
    /// Most text tokens a document keeps (the rest is cut from the right).
    pub max_text_tokens: usize,
    pub reply: UnboundedSender<ScoreReply>,
}

/// What a request is told, document by document; `Done` (or `Failed`) is last.
#[derive(Debug, Clone, PartialEq)]
pub enum ScoreReply {
    Scored {
        index: usize,
        judgement: Judgement,
        /// The document's text was cut to the limit.
        truncated: bool,
        /// Tokens the model read for the document (its part of the prompt).
        tokens: usize,
    },
    /// One document could not be judged; the others go on.
    DocumentFailed {
        index: usize,
        reason: String,
    },
    Done {
        prefix_tokens: usize,
    },
    /// The request as a whole could not be served (its query could not be prepared).
    Failed {
        reason: String,
    },
}

/// Photos and texts the model takes together at most.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Text documents in one batch.
    pub max_documents: usize,
    /// Documents with an image in one batch (as many as the device's memory holds).
    pub max_images: usize,
    /// Text tokens in one batch (documents x longest document).
    pub max_tokens: usize,
}

impl BatchLimits {
    /// For copies of one model on several devices: within the limits of the one with the
    /// least room, so that every device judges the same batches.
    pub fn for_models<'a>(models: impl IntoIterator<Item = &'a Reranker>) -> Self {
        models
            .into_iter()
            .map(Self::for_model)
            .min_by_key(|l| l.max_images)
            .expect("at least one model")
    }

    /// For `model`'s device: images as a ranking batches photos (what the free memory
    /// holds); texts up to 64 at a time on a GPU, 16 on the CPU.
    pub fn for_model(model: &Reranker) -> Self {
        let max_images = model.suggested_batch().max(1);
        if model.device.is_gpu() {
            BatchLimits {
                max_documents: 64,
                max_images,
                max_tokens: 32 * 1024,
            }
        } else {
            BatchLimits {
                max_documents: 16,
                max_images,
                max_tokens: 4 * 1024,
            }
        }
    }
}

/// What identifies a query: requests with the same one share a prefix and batches.
type QueryKey = (String, String, Option<String>);

/// A request's query, as a device prepares its prefix.
#[derive(Debug)]
pub struct BatchQuery {
    instruction: String,
    input: QueryInput,
}

/// A request under way.
struct Pending {
    id: u64,
    key: QueryKey,
    query: Arc<BatchQuery>,
    documents: Vec<Arc<Content>>,
    max_text_tokens: usize,
    reply: UnboundedSender<ScoreReply>,
    /// Documents not yet handed to a device, by index.
    todo: VecDeque<usize>,
    /// Documents handed to a device whose results have not come back.
    in_flight: usize,
    prefix_tokens: usize,
    started: Instant,
}

/// One document of a batch.
#[derive(Debug)]
struct BatchDocument {
    request: u64,
    index: usize,
    content: Arc<Content>,
    max_text_tokens: usize,
}

/// Documents handed to a device together: all texts, or all images of one grid, of the
/// requests of one query.
#[derive(Debug)]
pub struct ScoreBatch {
    key: QueryKey,
    query: Arc<BatchQuery>,
    documents: Vec<BatchDocument>,
}

impl ScoreBatch {
    /// Documents in the batch.
    pub fn len(&self) -> usize {
        self.documents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }

    /// The batch judged by no one: every document fails with `reason`.
    pub fn failed(self, reason: &str) -> BatchResult {
        let ids = self.ids();
        BatchResult::all_failed(self.key, ids, reason)
    }

    /// (request, document index) of each document.
    fn ids(&self) -> Vec<(u64, usize)> {
        self.documents
            .iter()
            .map(|d| (d.request, d.index))
            .collect()
    }
}

/// A document's judgement, whether its text was cut, and the tokens the model read for it;
/// or why it could not be judged.
type Outcome = Result<(Judgement, bool, usize), String>;

/// What a device made of a batch.
#[derive(Debug)]
pub struct BatchResult {
    key: QueryKey,
    /// (request, document index, outcome), one per document of the batch.
    documents: Vec<(u64, usize, Outcome)>,
    prefix_tokens: usize,
    /// The query could not be prepared: its requests fail with this reason.
    query_failed: Option<String>,
    /// The batch as a whole ran out of memory: later batches are smaller.
    out_of_memory: bool,
}

impl BatchResult {
    /// Every document of `ids` failed with `reason`.
    fn all_failed(key: QueryKey, ids: Vec<(u64, usize)>, reason: &str) -> Self {
        BatchResult {
            key,
            documents: ids
                .into_iter()
                .map(|(r, i)| (r, i, Err(reason.to_owned())))
                .collect(),
            prefix_tokens: 0,
            query_failed: None,
            out_of_memory: false,
        }
    }

    /// Why the device failed the whole batch, when the reason is the device's (an error
    /// from the driver, out of memory that one document at a time does not clear) rather
    /// than the documents'.
    pub fn device_failure(&self) -> Option<&str> {
        if let Some(reason) = &self.query_failed {
            return super::devices::device_failure(reason).then_some(reason.as_str());
        }
        let mut reasons = self.documents.iter().map(|(_, _, o)| o.as_ref().err());
        let first = reasons.next()??;
        (super::devices::device_failure(first) && reasons.all(|r| r.is_some()))
            .then_some(first.as_str())
    }

    /// Documents in the batch.
    pub fn len(&self) -> usize {
        self.documents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }
}

/// Prepared prefixes of one device, kept for repeated queries.
pub struct Prefixes(lru::LruCache<QueryKey, Arc<PreparedQuery>>);

/// Prepared prefixes kept for repeated queries.
const PREFIXES_KEPT: usize = 16;

impl Default for Prefixes {
    fn default() -> Self {
        Prefixes(lru::LruCache::new(
            std::num::NonZeroUsize::new(PREFIXES_KEPT).unwrap_or(std::num::NonZeroUsize::MIN),
        ))
    }
}

impl Prefixes {
    fn get(
        &mut self,
        model: &Reranker,
        key: &QueryKey,
        query: &BatchQuery,
    ) -> Result<Arc<PreparedQuery>, ModelError> {
        if let Some(p) = self.0.get(key) {
            return Ok(Arc::clone(p));
        }
        let prepared = Arc::new(model.prepare_query(&query.instruction, &query.input)?);
        self.0.put(key.clone(), Arc::clone(&prepared));
        Ok(prepared)
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// The requests under way: which documents go together in the next batch, and what each
/// request is told as the results come back. It judges nothing itself except in
/// [`Scheduler::step`]; with several devices, [`Dealer`] hands its batches out.
pub struct Scheduler {
    pending: VecDeque<Pending>,
    /// The prefixes of [`Scheduler::step`]'s device.
    prefixes: Prefixes,
    limits: BatchLimits,
    next_id: u64,
    /// Documents waiting, for the server's metrics.
    pub queued: Arc<AtomicUsize>,
}

impl Scheduler {
    pub fn new(limits: BatchLimits, queued: Arc<AtomicUsize>) -> Self {
        Scheduler {
            pending: VecDeque::new(),
            prefixes: Prefixes::default(),
            limits,
            next_id: 0,
            queued,
        }
    }

    /// Takes a request in.
    pub fn push(&mut self, job: ScoreJob) {
        let ScoreJob {
            instruction,
            query,
            query_image_key,
            documents,
            max_text_tokens,
            reply,
        } = job;
        let key = (instruction.clone(), query.text.clone(), query_image_key);
        // Texts of similar length are judged together (less padding), images of one
        // grid together: the documents are taken in that order.
        let mut order: Vec<usize> = (0..documents.len()).collect();
        order.sort_by_key(|&i| {
            let d = &documents[i];
            (grid_of(d), d.text.len())
        });
        let todo: VecDeque<usize> = order.into();
        self.queued.fetch_add(todo.len(), Ordering::Relaxed);
        self.next_id += 1;
        self.pending.push_back(Pending {
            id: self.next_id,
            key,
            query: Arc::new(BatchQuery {
                instruction,
                input: QueryInput {
                    text: query.text,
                    image: query.image,
                },
            }),
            documents: documents.into_iter().map(Arc::new).collect(),
            max_text_tokens,
            reply,
            todo,
            in_flight: 0,
            prefix_tokens: 0,
            started: Instant::now(),
        });
    }

    /// True when no request waits, for a batch or for results.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// Drops every request (the model is being replaced): each is told why. Results of
    /// batches still under way are then dropped too.
    pub fn fail_all(&mut self, reason: &str) {
        for p in self.pending.drain(..) {
            let _ = p.reply.send(ScoreReply::Failed {
                reason: reason.to_owned(),
            });
        }
        self.queued.store(0, Ordering::Relaxed);
        self.prefixes.clear();
    }

    /// Runs one batch on `model`: [`Scheduler::next_batch`], judged here, then
    /// [`Scheduler::finish`].
    pub fn step(&mut self, model: &Reranker) {
        if let Some(batch) = self.next_batch() {
            let result = judge_batch(model, &mut self.prefixes, batch);
            self.finish(result);
        }
    }

    /// The next batch: from the first request with documents left, with the other
    /// requests of the same query joining it; then that request goes to the back of the
    /// line, so that a small request is never stuck behind a large one for more than a
    /// batch. None when every document has been handed out.
    pub fn next_batch(&mut self) -> Option<ScoreBatch> {
        self.drop_abandoned();
        self.retire_answered();
        let front = self.pending.iter().position(|p| !p.todo.is_empty())?;
        self.pending.rotate_left(front);
        let batch = self.take_batch();
        if let Some(first) = self.pending.pop_front() {
            self.pending.push_back(first);
        }
        self.recount();
        Some(batch)
    }

    /// A device's results: each document's to its request, and every request with all its
    /// documents answered is told it is done.
    pub fn finish(&mut self, result: BatchResult) {
        if result.out_of_memory {
            let half = (result.documents.len() / 2).max(1);
            self.limits.max_documents = self.limits.max_documents.min(half);
            self.limits.max_images = self.limits.max_images.min(half);
            self.limits.max_tokens = (self.limits.max_tokens / 2).max(512);
        }
        if let Some(reason) = &result.query_failed {
            // Every request of this query fails the same way.
            self.pending.retain(|p| {
                if p.key != result.key {
                    return true;
                }
                let _ = p.reply.send(ScoreReply::Failed {
                    reason: reason.clone(),
                });
                false
            });
        } else {
            for (request, index, outcome) in result.documents {
                // A request that is gone (its client left) is not told.
                let Some(p) = self.pending.iter_mut().find(|p| p.id == request) else {
                    continue;
                };
                p.in_flight = p.in_flight.saturating_sub(1);
                p.prefix_tokens = result.prefix_tokens;
                let _ = p.reply.send(match outcome {
                    Ok((judgement, truncated, tokens)) => ScoreReply::Scored {
                        index,
                        judgement,
                        truncated,
                        tokens,
                    },
                    Err(reason) => ScoreReply::DocumentFailed { index, reason },
                });
            }
        }
        self.retire_answered();
        self.recount();
    }

    /// Requests with every document answered (or none to answer) are told they are done.
    fn retire_answered(&mut self) {
        self.pending.retain(|p| {
            if p.todo.is_empty() && p.in_flight == 0 {
                let _ = p.reply.send(ScoreReply::Done {
                    prefix_tokens: p.prefix_tokens,
                });
                false
            } else {
                true
            }
        });
    }

    /// A batch's documents back in line, unjudged (its device stopped working): the next
    /// batches take them again.
    pub fn requeue(&mut self, result: BatchResult) {
        self.give_back(result.documents.iter().map(|(r, i, _)| (*r, *i)));
    }

    /// A batch that never reached a device, back in line.
    pub fn requeue_batch(&mut self, batch: ScoreBatch) {
        self.give_back(batch.documents.iter().map(|d| (d.request, d.index)));
    }

    fn give_back(&mut self, documents: impl DoubleEndedIterator<Item = (u64, usize)>) {
        for (request, index) in documents.rev() {
            if let Some(p) = self.pending.iter_mut().find(|p| p.id == request) {
                p.in_flight = p.in_flight.saturating_sub(1);
                p.todo.push_front(index);
            }
        }
        self.recount();
    }

    fn recount(&self) {
        let n = self.pending.iter().map(|p| p.todo.len()).sum();
        self.queued.store(n, Ordering::Relaxed);
    }

    /// Requests whose client went away are dropped with their documents.
    fn drop_abandoned(&mut self) {
        let before = self.pending.len();
        self.pending.retain(|p| !p.reply.is_closed());
        if self.pending.len() != before {
            self.recount();
        }
    }

    /// The batch for the front request's query: all texts or all images of one grid
    /// (the front request's next document decides), within the limits; texts of similar
    /// length together.
    fn take_batch(&mut self) -> ScoreBatch {
        let limits = self.limits;
        let front = &self.pending[0];
        let (key, query) = (front.key.clone(), Arc::clone(&front.query));
        let want = front
            .todo
            .front()
            .and_then(|&first| grid_of(&front.documents[first]));
        let limit = if want.is_some() {
            limits.max_images
        } else {
            limits.max_documents
        };
        let mut documents = Vec::new();
        let mut longest = 0usize;
        for p in self.pending.iter_mut() {
            if p.key != key {
                continue;
            }
            let mut rest = VecDeque::new();
            while let Some(i) = p.todo.pop_front() {
                let doc = &p.documents[i];
                // A rough length (4 bytes a token) keeps long and short texts apart and
                // the batch within its token budget.
                let len = doc.text.len() / 4 + 8;
                let fits = documents.len() < limit
                    && grid_of(doc) == want
                    && (longest.max(len) * (documents.len() + 1) <= limits.max_tokens
                        || documents.is_empty());
                if fits {
                    longest = longest.max(len);
                    p.in_flight += 1;
                    documents.push(BatchDocument {
                        request: p.id,
                        index: i,
                        content: Arc::clone(doc),
                        max_text_tokens: p.max_text_tokens,
                    });
                } else {
                    rest.push_back(i);
                }
                if documents.len() >= limit {
                    break;
                }
            }
            rest.extend(p.todo.drain(..));
            p.todo = rest;
            if documents.len() >= limit {
                break;
            }
        }
        ScoreBatch {
            key,
            query,
            documents,
        }
    }

    /// Seconds the oldest request has waited, for the server's metrics.
    pub fn oldest_wait(&self) -> f64 {
        self.pending
            .iter()
            .map(|p| p.started.elapsed().as_secs_f64())
            .fold(0.0, f64::max)
    }
}

/// A document's image grid (patches per column and row), None for a text: documents of
/// one grid are judged together.
fn grid_of(doc: &Content) -> Option<(usize, usize)> {
    doc.image.as_ref().map(|im| (im.grid_h, im.grid_w))
}

/// Judges a batch on `model` (its prefix from `prefixes`, prepared there the first time).
/// When the batch as a whole fails, its documents are judged one at a time, so that a
/// failure costs only the document it concerns; after out of memory, later batches are
/// smaller.
pub fn judge_batch(model: &Reranker, prefixes: &mut Prefixes, batch: ScoreBatch) -> BatchResult {
    let prepared = match prefixes.get(model, &batch.key, &batch.query) {
        Ok(p) => p,
        Err(e) => {
            let reason = e.to_string();
            let mut result = batch.failed(&reason);
            result.query_failed = Some(reason);
            return result;
        }
    };
    let mut result = BatchResult {
        key: batch.key.clone(),
        documents: Vec::with_capacity(batch.documents.len()),
        prefix_tokens: prepared.prefix_len(),
        query_failed: None,
        out_of_memory: false,
    };
    let mut ready = Vec::new();
    for doc in &batch.documents {
        let content = &doc.content;
        match model.document_ids(content.image.is_some(), &content.text, doc.max_text_tokens) {
            Ok((ids, truncated)) => ready.push((doc, ids, truncated)),
            Err(e) => result
                .documents
                .push((doc.request, doc.index, Err(e.to_string()))),
        }
    }
    let mut record = |ready: &[Ready<'_>], judged: Result<Vec<(Judgement, usize)>, String>| {
        for (i, (doc, _, truncated)) in ready.iter().enumerate() {
            let outcome = match &judged {
                Ok(scores) => Ok((scores[i].0, *truncated, scores[i].1)),
                Err(reason) => Err(reason.clone()),
            };
            result.documents.push((doc.request, doc.index, outcome));
        }
    };
    match judge_together(model, &prepared, &ready) {
        Ok(scores) => record(&ready, Ok(scores)),
        Err(e) if ready.len() == 1 => record(&ready, Err(e.to_string())),
        Err(e) => {
            let out_of_memory = e.is_out_of_memory();
            if out_of_memory {
                model.release_cached_memory();
            }
            for one in ready.chunks(1) {
                record(
                    one,
                    judge_together(model, &prepared, one).map_err(|e| e.to_string()),
                );
            }
            result.out_of_memory = out_of_memory;
        }
    }
    result
}

/// A document ready for the model: its ids and whether its text was cut.
type Ready<'a> = (&'a BatchDocument, Vec<u32>, bool);

/// Judges documents (all texts, or all images of one grid) in one batch; with each
/// judgement, the tokens the model read for the document.
fn judge_together(
    model: &Reranker,
    query: &PreparedQuery,
    ready: &[Ready<'_>],
) -> Result<Vec<(Judgement, usize)>, ModelError> {
    if ready.is_empty() {
        return Ok(Vec::new());
    }
    let images: Vec<&PhotoInput> = ready
        .iter()
        .filter_map(|(doc, _, _)| doc.content.image.as_ref())
        .collect();
    let visual = if images.is_empty() {
        Vec::new()
    } else {
        model.encode_photos(&images)?
    };
    let mut v = visual.iter();
    let docs: Vec<DocumentTokens> = ready
        .iter()
        .map(|(doc, ids, _)| DocumentTokens {
            ids,
            visual: doc.content.image.as_ref().and_then(|_| v.next()),
        })
        .collect();
    let judged = model.judge_documents(query, &docs)?;
    Ok(judged
        .into_iter()
        .zip(&docs)
        .map(|(j, d)| {
            let visual = d.visual.map_or(0, |v| v.count().saturating_sub(1));
            (j, d.ids.len() + visual)
        })
        .collect())
}
