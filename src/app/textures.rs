//! Thumbnails as textures for the grid: asked for when a tile becomes visible, made by the
//! thumbnail pool, uploaded a few per frame, and evicted least-recently-shown first so
//! that memory stays bounded whatever the library size.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::library::thumbnails::ThumbnailPool;

/// Textures kept at most (about 256 KB each).
const MAX_TEXTURES: usize = 600;
/// Uploads per frame, so that a burst of results never makes one frame slow.
const UPLOADS_PER_FRAME: usize = 24;

enum Entry {
    Pending,
    Ready {
        texture: egui::TextureHandle,
        size: egui::Vec2,
        last_shown: u64,
    },
    Failed(String),
}

/// What a tile can show.
pub enum Thumb<'a> {
    Ready(&'a egui::TextureHandle, egui::Vec2),
    Pending,
    Failed(&'a str),
}

pub struct Thumbnails {
    pool: ThumbnailPool,
    entries: HashMap<PathBuf, Entry>,
    waiting: Vec<crate::library::thumbnails::ThumbnailResult>,
    frame: u64,
}

impl Thumbnails {
    /// Starts the pool, caching under `cache_dir`; results repaint `ctx`.
    pub fn new(cache_dir: PathBuf, ctx: &egui::Context) -> Self {
        let ctx = ctx.clone();
        let threads = std::thread::available_parallelism()
            .map(|n| n.get() / 2)
            .unwrap_or(1)
            .clamp(1, 4);
        Thumbnails {
            pool: ThumbnailPool::new(cache_dir, threads, move || ctx.request_repaint()),
            entries: HashMap::new(),
            waiting: Vec::new(),
            frame: 0,
        }
    }

    /// Takes in finished thumbnails; call once per frame.
    pub fn begin_frame(&mut self, ctx: &egui::Context) {
        self.frame += 1;
        self.waiting.extend(self.pool.try_results());
        let take = self.waiting.len().min(UPLOADS_PER_FRAME);
        for result in self.waiting.drain(..take) {
            let entry = match result.thumbnail {
                Ok(t) => {
                    let image = egui::ColorImage::from_rgba_unmultiplied(
                        [t.width as usize, t.height as usize],
                        &t.rgba,
                    );
                    let texture = ctx.load_texture(
                        result.path.to_string_lossy(),
                        image,
                        egui::TextureOptions::LINEAR,
                    );
                    Entry::Ready {
                        texture,
                        size: egui::vec2(t.width as f32, t.height as f32),
                        last_shown: self.frame,
                    }
                }
                Err(e) => Entry::Failed(e),
            };
            self.entries.insert(result.path, entry);
        }
        if !self.waiting.is_empty() {
            ctx.request_repaint();
        }
        self.evict();
    }

    fn evict(&mut self) {
        let ready = self
            .entries
            .values()
            .filter(|e| matches!(e, Entry::Ready { .. }))
            .count();
        if ready <= MAX_TEXTURES {
            return;
        }
        let mut by_age: Vec<(u64, PathBuf)> = self
            .entries
            .iter()
            .filter_map(|(p, e)| match e {
                Entry::Ready { last_shown, .. } => Some((*last_shown, p.clone())),
                _ => None,
            })
            .collect();
        by_age.sort();
        for (_, path) in by_age.into_iter().take(ready - MAX_TEXTURES) {
            self.entries.remove(&path);
        }
    }

    /// The thumbnail of `path` for this frame, asking for it if needed.
    pub fn get(&mut self, path: &Path) -> Thumb<'_> {
        let frame = self.frame;
        if !self.entries.contains_key(path) {
            self.pool.request(path);
            self.entries.insert(path.to_path_buf(), Entry::Pending);
        }
        match self.entries.get_mut(path) {
            Some(Entry::Ready {
                texture,
                size,
                last_shown,
            }) => {
                *last_shown = frame;
                Thumb::Ready(texture, *size)
            }
            Some(Entry::Failed(e)) => Thumb::Failed(e),
            _ => Thumb::Pending,
        }
    }

    /// Photos whose thumbnails were asked for (and not evicted).
    pub fn requested(&self) -> usize {
        self.entries.len()
    }

    /// Forgets everything (after the library was cleared).
    pub fn clear(&mut self) {
        self.pool.clear_pending();
        self.entries.clear();
        self.waiting.clear();
    }
}
