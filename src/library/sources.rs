//! The photos the user added: each dropped or picked item (a folder or a file) is a
//! source; folders are walked on a background thread, so adding 10,000 photos never
//! stalls the window.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crossbeam_channel::{Receiver, Sender, unbounded};

use super::{ScanResult, scan_paths};

/// One added item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub path: PathBuf,
    pub is_folder: bool,
    /// Photos found in it (that were not already in the library).
    pub photos: usize,
    /// Still being walked.
    pub scanning: bool,
}

/// Everything added so far.
#[derive(Debug)]
pub struct Library {
    pub sources: Vec<Source>,
    /// Unique photos, in the order they were found.
    pub photos: Vec<PathBuf>,
    /// For each photo, the index of its source.
    source_of: Vec<usize>,
    known: HashSet<PathBuf>,
    /// Entries that could not be read, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Files that are not photos (videos, sidecars), left out.
    pub ignored: usize,
    /// Folders walked.
    pub folders: usize,
    /// Bumped on every change, so views can tell when to refresh.
    pub generation: u64,
    results_tx: Sender<(PathBuf, ScanResult)>,
    results_rx: Receiver<(PathBuf, ScanResult)>,
}

impl Default for Library {
    fn default() -> Self {
        let (results_tx, results_rx) = unbounded();
        Library {
            sources: Vec::new(),
            photos: Vec::new(),
            source_of: Vec::new(),
            known: HashSet::new(),
            skipped: Vec::new(),
            ignored: 0,
            folders: 0,
            generation: 0,
            results_tx,
            results_rx,
        }
    }
}

impl Library {
    /// Starts walking `paths` in the background; `notify` runs when each is done.
    pub fn add(&mut self, paths: Vec<PathBuf>, notify: impl Fn() + Send + Clone + 'static) {
        for path in paths {
            if self.sources.iter().any(|s| s.path == path) {
                continue;
            }
            self.sources.push(Source {
                is_folder: path.is_dir(),
                path: path.clone(),
                photos: 0,
                scanning: true,
            });
            let tx = self.results_tx.clone();
            let notify = notify.clone();
            let spawned = std::thread::Builder::new()
                .name("library-scan".into())
                .spawn(move || {
                    let result = scan_paths(std::slice::from_ref(&path));
                    let _ = tx.send((path, result));
                    notify();
                });
            if let Err(e) = spawned {
                self.skipped.push((
                    PathBuf::from("(scan)"),
                    format!("could not start a scan: {e}"),
                ));
            }
        }
        self.generation += 1;
    }

    /// Takes in finished scans. Returns true if anything changed.
    pub fn poll(&mut self) -> bool {
        let mut changed = false;
        while let Ok((path, result)) = self.results_rx.try_recv() {
            let Some(index) = self
                .sources
                .iter()
                .position(|s| s.path == path && s.scanning)
            else {
                continue; // removed while it was being walked
            };
            let mut added = 0;
            for photo in result.photos {
                if self.known.insert(photo.clone()) {
                    self.photos.push(photo);
                    self.source_of.push(index);
                    added += 1;
                }
            }
            let source = &mut self.sources[index];
            source.photos = added;
            source.scanning = false;
            self.skipped.extend(result.problems);
            self.ignored += result.ignored;
            self.folders += result.folders;
            changed = true;
        }
        if changed {
            self.generation += 1;
        }
        changed
    }

    /// True while some source is being walked.
    pub fn scanning(&self) -> bool {
        self.sources.iter().any(|s| s.scanning)
    }

    /// Removes a source and its photos.
    pub fn remove(&mut self, index: usize) {
        if index >= self.sources.len() {
            return;
        }
        self.sources.remove(index);
        let mut photos = Vec::with_capacity(self.photos.len());
        let mut source_of = Vec::with_capacity(self.photos.len());
        for (photo, &s) in self.photos.drain(..).zip(&self.source_of) {
            match s.cmp(&index) {
                std::cmp::Ordering::Equal => {
                    self.known.remove(&photo);
                }
                std::cmp::Ordering::Less => {
                    photos.push(photo);
                    source_of.push(s);
                }
                std::cmp::Ordering::Greater => {
                    photos.push(photo);
                    source_of.push(s - 1);
                }
            }
        }
        self.photos = photos;
        self.source_of = source_of;
        self.generation += 1;
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        let (tx, rx) = (self.results_tx.clone(), self.results_rx.clone());
        *self = Library {
            results_tx: tx,
            results_rx: rx,
            generation: self.generation + 1,
            ..Library::default()
        };
        // Results of scans still running arrive for sources that no longer exist and are
        // dropped by `poll`.
    }

    /// Number of photos.
    pub fn len(&self) -> usize {
        self.photos.len()
    }

    /// True when there are no photos.
    pub fn is_empty(&self) -> bool {
        self.photos.is_empty()
    }

    /// Whether `path` is in the library.
    pub fn contains(&self, path: &Path) -> bool {
        self.known.contains(path)
    }
}
