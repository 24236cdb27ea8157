//! Scoring documents for other programs (the rerank server, `rank --documents`): a query
//! (text, image or both) against documents that are text, an image, or an image followed
//! by text. Several requests are served at once by [`Scheduler`]: it takes one batch at a
//! time, from the requests in turn, so that a small request is never stuck behind a large
//! one for more than a batch; requests with the same query share one prepared prefix and
//! their documents share batches. A request whose reply channel is dropped (the client
//! went away) has its remaining documents dropped.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

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

struct Pending {
    job: ScoreJob,
    key: (String, String, Option<String>),
    /// Documents not yet judged, by index.
    todo: VecDeque<usize>,
    started: Instant,
}

/// The requests under way and the prefixes they share.
pub struct Scheduler {
    pending: VecDeque<Pending>,
    prefixes: lru::LruCache<(String, String, Option<String>), Arc<PreparedQuery>>,
    limits: BatchLimits,
    /// Documents waiting, for the server's metrics.
    pub queued: Arc<AtomicUsize>,
}

/// Prepared prefixes kept for repeated queries.
const PREFIXES_KEPT: usize = 16;

impl Scheduler {
    pub fn new(limits: BatchLimits, queued: Arc<AtomicUsize>) -> Self {
        Scheduler {
            pending: VecDeque::new(),
            prefixes: lru::LruCache::new(
                std::num::NonZeroUsize::new(PREFIXES_KEPT).unwrap_or(std::num::NonZeroUsize::MIN),
            ),
            limits,
            queued,
        }
    }

    /// Takes a request in.
    pub fn push(&mut self, job: ScoreJob) {
        let key = (
            job.instruction.clone(),
            job.query.text.clone(),
            job.query_image_key.clone(),
        );
        // Texts of similar length are judged together (less padding), images of one
        // grid together: the documents are taken in that order.
        let mut order: Vec<usize> = (0..job.documents.len()).collect();
        order.sort_by_key(|&i| {
            let d = &job.documents[i];
            (
                d.image.as_ref().map(|im| (im.grid_h, im.grid_w)),
                d.text.len(),
            )
        });
        let todo: VecDeque<usize> = order.into();
        self.queued.fetch_add(todo.len(), Ordering::Relaxed);
        self.pending.push_back(Pending {
            job,
            key,
            todo,
            started: Instant::now(),
        });
    }

    /// True when no request waits.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// Drops every request (the model is being replaced): each is told why.
    pub fn fail_all(&mut self, reason: &str) {
        for p in self.pending.drain(..) {
            self.queued.fetch_sub(p.todo.len(), Ordering::Relaxed);
            let _ = p.job.reply.send(ScoreReply::Failed {
                reason: reason.to_owned(),
            });
        }
        self.prefixes.clear();
    }

    /// Runs one batch: from the request at the front, with the other requests of the same
    /// query joining it; then that request goes to the back of the line.
    pub fn step(&mut self, model: &Reranker) {
        self.drop_abandoned();
        let Some(front) = self.pending.pop_front() else {
            return;
        };
        let key = front.key.clone();
        self.pending.push_front(front);
        let prepared = match self.prefix(model, &key) {
            Ok(p) => p,
            Err(e) => {
                // Every request of this query fails the same way.
                let reason = e.to_string();
                self.pending.retain(|p| {
                    if p.key != key {
                        return true;
                    }
                    let _ = p.job.reply.send(ScoreReply::Failed {
                        reason: reason.clone(),
                    });
                    false
                });
                self.recount();
                return;
            }
        };
        // The front request's kind of document decides the batch: texts, or images of
        // the front document's grid.
        let batch = self.take_batch(model, &key);
        self.judge(model, &prepared, batch);
        // Finished requests are told so; the front one goes to the back.
        let prefix_tokens = prepared.prefix_len();
        self.pending.retain(|p| {
            if p.todo.is_empty() {
                let _ = p.job.reply.send(ScoreReply::Done { prefix_tokens });
                false
            } else {
                true
            }
        });
        if let Some(first) = self.pending.pop_front() {
            self.pending.push_back(first);
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
        self.pending.retain(|p| !p.job.reply.is_closed());
        if self.pending.len() != before {
            self.recount();
        }
    }

    fn prefix(
        &mut self,
        model: &Reranker,
        key: &(String, String, Option<String>),
    ) -> Result<Arc<PreparedQuery>, ModelError> {
        if let Some(p) = self.prefixes.get(key) {
            return Ok(Arc::clone(p));
        }
        let job = &self
            .pending
            .iter()
            .find(|p| &p.key == key)
            .expect("a request of this query waits")
            .job;
        let input = QueryInput {
            text: job.query.text.clone(),
            image: job.query.image.clone(),
        };
        let prepared = Arc::new(model.prepare_query(&job.instruction, &input)?);
        self.prefixes.put(key.clone(), Arc::clone(&prepared));
        Ok(prepared)
    }

    /// The next batch for `key`: (request position, document index) pairs, all texts or all
    /// images of one grid, within the limits; texts of similar length together.
    fn take_batch(
        &mut self,
        model: &Reranker,
        key: &(String, String, Option<String>),
    ) -> Vec<(usize, usize)> {
        let limits = self.limits;
        let merge = model.config.vision.spatial_merge_size;
        let grid_of = |doc: &Content| doc.image.as_ref().map(|i| i.merged_grid(merge));
        let front = &self.pending[0];
        let Some(&first) = front.todo.front() else {
            return Vec::new();
        };
        let want = grid_of(&front.job.documents[first]);
        let limit = if want.is_some() {
            limits.max_images
        } else {
            limits.max_documents
        };
        let mut batch = Vec::new();
        let mut longest = 0usize;
        for (r, p) in self.pending.iter_mut().enumerate() {
            if &p.key != key {
                continue;
            }
            let mut rest = VecDeque::new();
            while let Some(i) = p.todo.pop_front() {
                let doc = &p.job.documents[i];
                let fits = batch.len() < limit && grid_of(doc) == want && {
                    // A rough length (4 bytes a token) keeps long and short texts apart and
                    // the batch within its token budget.
                    let len = doc.text.len() / 4 + 8;
                    let longest_then = longest.max(len);
                    longest_then * (batch.len() + 1) <= limits.max_tokens || batch.is_empty()
                };
                if fits {
                    longest = longest.max(doc.text.len() / 4 + 8);
                    batch.push((r, i));
                } else {
                    rest.push_back(i);
                }
                if batch.len() >= limit {
                    break;
                }
            }
            rest.extend(p.todo.drain(..));
            p.todo = rest;
            if batch.len() >= limit {
                break;
            }
        }
        batch
    }

    /// Judges a batch and sends each document's score to its request. When the batch as a
    /// whole fails, its documents are judged one at a time (after out of memory, later
    /// batches are smaller), so that a failure costs only the document it concerns.
    fn judge(&mut self, model: &Reranker, query: &PreparedQuery, batch: Vec<(usize, usize)>) {
        let mut ready = Vec::new();
        for (r, i) in batch {
            let job = &self.pending[r].job;
            let doc = &job.documents[i];
            match model.document_ids(doc.image.is_some(), &doc.text, job.max_text_tokens) {
                Ok((ids, truncated)) => ready.push((r, i, ids, truncated)),
                Err(e) => {
                    let _ = job.reply.send(ScoreReply::DocumentFailed {
                        index: i,
                        reason: e.to_string(),
                    });
                }
            }
        }
        if ready.is_empty() {
            return;
        }
        match self.judge_together(model, query, &ready) {
            Ok(scores) => self.send_scores(&ready, scores),
            Err(e) => {
                if ready.len() > 1 && e.is_out_of_memory() {
                    model.release_cached_memory();
                    let half = (ready.len() / 2).max(1);
                    self.limits.max_documents = self.limits.max_documents.min(half);
                    self.limits.max_images = self.limits.max_images.min(half);
                    self.limits.max_tokens = (self.limits.max_tokens / 2).max(512);
                }
                for one in ready.chunks(1) {
                    match self.judge_together(model, query, one) {
                        Ok(scores) => self.send_scores(one, scores),
                        Err(e) => {
                            let (r, i, _, _) = &one[0];
                            let _ = self.pending[*r].job.reply.send(ScoreReply::DocumentFailed {
                                index: *i,
                                reason: e.to_string(),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Judges documents (all texts, or all images of one grid) in one batch; with each
    /// judgement, the tokens the model read for the document.
    fn judge_together(
        &self,
        model: &Reranker,
        query: &PreparedQuery,
        ready: &[(usize, usize, Vec<u32>, bool)],
    ) -> Result<Vec<(Judgement, usize)>, ModelError> {
        let images: Vec<&PhotoInput> = ready
            .iter()
            .filter_map(|(r, i, _, _)| self.pending[*r].job.documents[*i].image.as_ref())
            .collect();
        let visual = if images.is_empty() {
            Vec::new()
        } else {
            model.encode_photos(&images)?
        };
        let mut v = visual.iter();
        let docs: Vec<DocumentTokens> = ready
            .iter()
            .map(|(r, i, ids, _)| DocumentTokens {
                ids,
                visual: self.pending[*r].job.documents[*i]
                    .image
                    .as_ref()
                    .and_then(|_| v.next()),
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

    fn send_scores(
        &self,
        ready: &[(usize, usize, Vec<u32>, bool)],
        scores: Vec<(Judgement, usize)>,
    ) {
        for ((r, i, _, truncated), (judgement, tokens)) in ready.iter().zip(scores) {
            let _ = self.pending[*r].job.reply.send(ScoreReply::Scored {
                index: *i,
                judgement,
                truncated: *truncated,
                tokens,
            });
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
