//! Building or updating the index for a set of photos: each photo's content hash first
//! (remembered by path, size and modification time), then, only for content not indexed
//! yet under this embedder, decoding and resizing on CPU threads ahead of the embedder,
//! embedding in batches, and storing each batch in one transaction. Photos already
//! indexed (also when moved or renamed) cost a hash lookup; a bad photo costs only itself,
//! with the same one-line reason as in a ranking. With several embedders (copies on several
//! GPUs, `index --gpus`), each batch goes to whichever is free, on a thread of its own
//! ("embed-N"); the vectors are stored and reported on the caller's thread as before.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use half::f16;

use super::catalog::Catalog;
use super::store::IndexStore;
use crate::cache::db::content_hash;
use crate::embed::{Embedder, PreparedImage};
use crate::library::ahead::{next_batch, run_ahead};
use crate::library::decode_photo;

/// What indexing reports, photo by photo.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexEvent {
    Started {
        total: usize,
    },
    /// Photo `index` has its vector: embedded now, or found in the index (`reused`).
    Indexed {
        index: usize,
        reused: bool,
    },
    Failed {
        index: usize,
        reason: String,
    },
    /// Something the user should know once, that stops nothing (the index file cannot be
    /// written: the vectors are kept for this session only).
    Notice {
        text: String,
    },
    /// A batch is done; the caller may stop the work here (return [`Flow::Stop`]).
    Batch,
}

/// Whether indexing goes on after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// What an indexing run did.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct IndexSummary {
    /// Photos embedded now.
    pub indexed: usize,
    /// Photos found in the index (unchanged, moved or renamed).
    pub reused: usize,
    pub failed: usize,
    pub seconds: f64,
    /// Photos handled per second (embedded, reused and failed).
    pub photos_per_s: f64,
    /// False when the run was stopped before every photo was handled.
    pub complete: bool,
}

/// Why indexing could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(
        "could not start the threads that read the photos ({0}); close other programs and try again"
    )]
    Threads(std::io::Error),
}

/// A photo on its way from the CPU threads to the embedder.
enum Prepared {
    Known(Vec<f16>),
    Decoded(String, PreparedImage),
    Failed(String),
}

/// Photos embedded together. On the CPU a batch buys little, and a small one keeps the
/// pauses between batches (where a window's search is answered) short.
pub fn batch_size(embedder: &Embedder) -> usize {
    if embedder.device.is_gpu() { 64 } else { 2 }
}

/// Indexes `photos` with `embedder` into `store` and `catalog` (which is reset to these
/// photos). `on` hears every step and may stop the run after a batch.
pub fn run_indexing(
    embedder: &Embedder,
    photos: &[PathBuf],
    store: Option<&Mutex<IndexStore>>,
    catalog: &mut Catalog,
    on: impl FnMut(&Catalog, IndexEvent) -> Flow,
) -> Result<IndexSummary, IndexError> {
    run_indexing_on(&[embedder], photos, store, catalog, on)
}

/// A batch's photos decoded and prepared for the embedder: (index, content hash, image).
type Decoded = Vec<(usize, String, PreparedImage)>;
/// What an embedder made of them: (index, content hash, vector or why not).
type Embedded = Vec<(usize, String, Result<Vec<f32>, String>)>;

/// [`run_indexing`] over every embedder of `embedders` (copies of one embedder on several
/// devices); a stopped run still keeps the vectors of the batches under way.
pub fn run_indexing_on(
    embedders: &[&Embedder],
    photos: &[PathBuf],
    store: Option<&Mutex<IndexStore>>,
    catalog: &mut Catalog,
    mut on: impl FnMut(&Catalog, IndexEvent) -> Flow,
) -> Result<IndexSummary, IndexError> {
    let Some(&embedder) = embedders.first() else {
        return Err(IndexError::Threads(std::io::Error::other(
            "no embedder to index with",
        )));
    };
    let start = Instant::now();
    let identity = embedder.identity.clone();
    *catalog = Catalog::new(photos.to_vec(), identity.clone(), embedder.dim());
    on(
        catalog,
        IndexEvent::Started {
            total: photos.len(),
        },
    );
    let store_ok = std::sync::atomic::AtomicBool::new(store.is_some());
    let prepare = |_: usize, path: &PathBuf| -> Prepared {
        // Without a usable index file the content hash is not needed.
        let hash = match store {
            Some(s) if store_ok.load(std::sync::atomic::Ordering::Relaxed) => {
                match content_hash(s, path) {
                    Ok(h) => Some(h),
                    Err(e) => return Prepared::Failed(read_reason(path, &e.to_string())),
                }
            }
            _ => None,
        };
        if let (Some(s), Some(h)) = (store, &hash)
            && let Ok(s) = s.lock()
            && let Ok(Some(vector)) = s.get(h, &identity)
            && vector.len() == embedder.dim()
        {
            return Prepared::Known(vector);
        }
        match decode_photo(path) {
            Ok(photo) => Prepared::Decoded(
                hash.unwrap_or_default(),
                embedder.prepare_image(&photo.image),
            ),
            Err(e) => Prepared::Failed(e.to_string()),
        }
    };
    let batch = batch_size(embedder);
    let mut summary = IndexSummary {
        indexed: 0,
        reused: 0,
        failed: 0,
        seconds: 0.0,
        photos_per_s: 0.0,
        complete: true,
    };
    let mut told_store = false;
    // The vectors of a batch into the catalog and the store, each photo reported.
    let mut record = |catalog: &mut Catalog,
                      summary: &mut IndexSummary,
                      on: &mut dyn FnMut(&Catalog, IndexEvent) -> Flow,
                      embedded: Embedded| {
        let mut stored = Vec::new();
        for (index, hash, result) in embedded {
            match result {
                Ok(vector) => {
                    catalog.set_f32(index, &vector);
                    summary.indexed += 1;
                    if !hash.is_empty() {
                        stored.push((hash, vector));
                    }
                    on(
                        catalog,
                        IndexEvent::Indexed {
                            index,
                            reused: false,
                        },
                    );
                }
                Err(reason) => {
                    summary.failed += 1;
                    on(catalog, IndexEvent::Failed { index, reason });
                }
            }
        }
        if let Some(s) = store
            && !stored.is_empty()
            && store_ok.load(std::sync::atomic::Ordering::Relaxed)
        {
            let result = s
                .lock()
                .map_err(|_| "the index is unusable after a fault".to_owned())
                .and_then(|mut s| s.put_all(&identity, &stored).map_err(|e| e.to_string()));
            if let Err(e) = result {
                store_ok.store(false, std::sync::atomic::Ordering::Relaxed);
                if !told_store {
                    told_store = true;
                    on(
                        catalog,
                        IndexEvent::Notice {
                            text: format!(
                                "The index could not be saved ({e}); this session's photos are still searched, and will be indexed again next time. Free some disk space."
                            ),
                        },
                    );
                }
            }
        }
    };
    let work = |rx: &crossbeam_channel::Receiver<(usize, Prepared)>| {
        std::thread::scope(|s| {
            // With several embedders, a thread each takes the next batch when it is free;
            // with one, the batch is embedded here.
            let (todo, batches) = crossbeam_channel::bounded::<Decoded>(embedders.len());
            let (done, results) = crossbeam_channel::unbounded::<Embedded>();
            let mut started = 0;
            if embedders.len() > 1 {
                for (d, &e) in embedders.iter().enumerate() {
                    let (batches, done) = (batches.clone(), done.clone());
                    let spawned = std::thread::Builder::new()
                        .name(format!("embed-{d}"))
                        .spawn_scoped(s, move || {
                            while let Ok(decoded) = batches.recv() {
                                if done.send(embed_batch(e, &decoded)).is_err() {
                                    return;
                                }
                            }
                        });
                    // An embedder whose thread cannot start is left out; the others
                    // take its share (with none, the batches are embedded here).
                    started += usize::from(spawned.is_ok());
                }
            }
            drop((batches, done));
            let threads = started > 0;
            let mut in_flight = 0usize;
            'batches: while let Some(items) = next_batch(rx, batch) {
                let mut decoded = Vec::new();
                for (index, item) in items {
                    match item {
                        Prepared::Known(vector) => {
                            catalog.set(index, &vector);
                            summary.reused += 1;
                            on(
                                catalog,
                                IndexEvent::Indexed {
                                    index,
                                    reused: true,
                                },
                            );
                        }
                        Prepared::Failed(reason) => {
                            summary.failed += 1;
                            on(catalog, IndexEvent::Failed { index, reason });
                        }
                        Prepared::Decoded(hash, image) => decoded.push((index, hash, image)),
                    }
                }
                if !decoded.is_empty() && !threads {
                    let embedded = embed_batch(embedder, &decoded);
                    record(catalog, &mut summary, &mut on, embedded);
                } else if !decoded.is_empty() {
                    // Waits for a free embedder, taking in what the busy ones finish.
                    let mut work = decoded;
                    loop {
                        match todo.try_send(work) {
                            Ok(()) => {
                                in_flight += 1;
                                break;
                            }
                            Err(crossbeam_channel::TrySendError::Full(w)) => {
                                work = w;
                                if let Ok(embedded) = results.recv() {
                                    in_flight -= 1;
                                    record(catalog, &mut summary, &mut on, embedded);
                                }
                            }
                            Err(crossbeam_channel::TrySendError::Disconnected(w)) => {
                                // No embedder thread is left: this one is embedded here.
                                let embedded = embed_batch(embedder, &w);
                                record(catalog, &mut summary, &mut on, embedded);
                                break;
                            }
                        }
                    }
                }
                while let Ok(embedded) = results.try_recv() {
                    in_flight -= 1;
                    record(catalog, &mut summary, &mut on, embedded);
                }
                if on(catalog, IndexEvent::Batch) == Flow::Stop {
                    summary.complete = false;
                    break 'batches;
                }
            }
            // The batches under way finish and are kept, also when the run was stopped.
            drop(todo);
            while in_flight > 0 {
                match results.recv() {
                    Ok(embedded) => {
                        in_flight -= 1;
                        record(catalog, &mut summary, &mut on, embedded);
                    }
                    Err(_) => break,
                }
            }
        });
    };
    run_ahead("photo-index", photos, batch, prepare, work).map_err(IndexError::Threads)?;
    summary.seconds = start.elapsed().as_secs_f64();
    let handled = summary.indexed + summary.reused + summary.failed;
    summary.photos_per_s = handled as f64 / summary.seconds.max(1e-9);
    Ok(summary)
}

/// Embeds a batch; when the batch as a whole fails (out of memory), each photo is tried
/// alone, so that a failure costs only the photo it concerns.
fn embed_batch(embedder: &Embedder, decoded: &[(usize, String, PreparedImage)]) -> Embedded {
    if decoded.is_empty() {
        return Vec::new();
    }
    let images: Vec<&PreparedImage> = decoded.iter().map(|(_, _, i)| i).collect();
    match embedder.embed_images(&images) {
        Ok(vectors) => decoded
            .iter()
            .zip(vectors)
            .map(|((i, h, _), v)| (*i, h.clone(), Ok(v)))
            .collect(),
        Err(_) if decoded.len() > 1 => decoded
            .iter()
            .map(|(i, h, image)| {
                let one = embedder
                    .embed_images(&[image])
                    .map(|mut v| v.remove(0))
                    .map_err(|e| e.to_string());
                (*i, h.clone(), one)
            })
            .collect(),
        Err(e) => vec![(decoded[0].0, decoded[0].1.clone(), Err(e.to_string()))],
    }
}

/// The one-line reason for a photo that could not be read for its hash.
fn read_reason(path: &std::path::Path, error: &str) -> String {
    if !path.exists() {
        "no longer exists".into()
    } else {
        format!("cannot be read ({error})")
    }
}
