//! Thumbnails as textures for the grid: asked for when a tile becomes visible, made by the
//! thumbnail pool, uploaded a few per frame, and evicted least-recently-shown first (an
//! `lru` cache) so that memory stays bounded whatever the library size.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use lru::LruCache;

use crate::library::thumbnails::{ThumbnailPool, ThumbnailResult};

/// Thumbnails kept at most, shown or waiting (a texture is about 256 KB).
const MAX_TEXTURES: NonZeroUsize = NonZeroUsize::new(600).unwrap();
/// Uploads per frame, so that a burst of results never makes one frame slow.
const UPLOADS_PER_FRAME: usize = 24;

enum Entry {
    Pending,
    Ready {
        texture: egui::TextureHandle,
        size: egui::Vec2,
    },
    Failed(String),
}

/// What a tile can show.
pub enum Thumb<'a> {
    Ready(&'a egui::TextureHandle, egui::Vec2),
    Pending,
    /// No preview, and why.
    Failed(&'a str),
}

/// The grid's thumbnails.
pub struct Thumbnails {
    pool: ThumbnailPool,
    entries: LruCache<PathBuf, Entry>,
    waiting: Vec<ThumbnailResult>,
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
            entries: LruCache::new(MAX_TEXTURES),
            waiting: Vec::new(),
        }
    }

    /// Takes in finished thumbnails; call once per frame.
    pub fn begin_frame(&mut self, ctx: &egui::Context) {
        self.waiting.extend(self.pool.try_results());
        let take = self.waiting.len().min(UPLOADS_PER_FRAME);
        for result in self.waiting.drain(..take) {
            // A photo scrolled far away meanwhile was evicted: its preview is not needed.
            let Some(entry) = self.entries.peek_mut(&result.path) else {
                continue;
            };
            *entry = match result.thumbnail {
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
                    }
                }
                Err(e) => Entry::Failed(e),
            };
        }
        if !self.waiting.is_empty() {
            ctx.request_repaint();
        }
    }

    /// The thumbnail of `path` for this frame, asking for it if needed.
    pub fn get(&mut self, path: &Path) -> Thumb<'_> {
        if !self.entries.contains(path) {
            self.pool.request(path);
            self.entries.put(path.to_path_buf(), Entry::Pending);
        }
        match self.entries.get(path) {
            Some(Entry::Ready { texture, size }) => Thumb::Ready(texture, *size),
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
