//! Small previews of photos for the result grid: made on a few named threads, newest
//! request first (the rows just scrolled into view), kept on disk under the cache folder
//! keyed by path, size and modification time, so that a library opens fast the second
//! time. Full-size decoding never happens on the window's thread.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::UNIX_EPOCH;

use crossbeam_channel::{Receiver, Sender, bounded};

use super::decode::decode_photo;

/// Longest side of a thumbnail, in pixels.
pub const THUMBNAIL_SIZE: u32 = 256;
/// JPEG quality of the cached files.
const JPEG_QUALITY: u8 = 85;

/// A decoded thumbnail, RGBA8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    pub width: u32,
    pub height: u32,
    pub rgba: Vec<u8>,
}

/// A finished request.
#[derive(Debug, Clone)]
pub struct ThumbnailResult {
    pub path: PathBuf,
    pub thumbnail: Result<Thumbnail, String>,
}

/// The on-disk cache key of a photo: its path, size and modification time.
fn cache_key(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_nanos();
    let mut hasher = blake3::Hasher::new();
    hasher.update(path.as_os_str().as_encoded_bytes());
    hasher.update(&meta.len().to_le_bytes());
    hasher.update(&mtime.to_le_bytes());
    hasher.update(&THUMBNAIL_SIZE.to_le_bytes());
    Some(hasher.finalize().to_hex()[..32].to_owned())
}

/// Makes (or reads from `cache_dir`) the thumbnail of `path`.
pub fn thumbnail(path: &Path, cache_dir: &Path) -> Result<Thumbnail, String> {
    let cached = cache_key(path).map(|k| cache_dir.join(&k[..2]).join(format!("{k}.jpg")));
    if let Some(file) = &cached
        && let Ok(img) = image::open(file)
    {
        let rgba = img.to_rgba8();
        return Ok(Thumbnail {
            width: rgba.width(),
            height: rgba.height(),
            rgba: rgba.into_raw(),
        });
    }
    let photo = decode_photo(path).map_err(|e| e.to_string())?;
    let rgb = image::RgbImage::from_raw(
        photo.image.width as u32,
        photo.image.height as u32,
        photo.image.data,
    )
    .ok_or("the decoded photo has the wrong size")?;
    let (w, h) = rgb.dimensions();
    let scale = f64::from(THUMBNAIL_SIZE) / f64::from(w.max(h));
    let small = if scale < 1.0 {
        let (tw, th) = (
            ((f64::from(w) * scale).round() as u32).max(1),
            ((f64::from(h) * scale).round() as u32).max(1),
        );
        image::imageops::resize(&rgb, tw, th, image::imageops::FilterType::Triangle)
    } else {
        rgb
    };
    if let Some(file) = &cached {
        // A cache that cannot be written costs only speed.
        let _ = write_cached(&small, file);
    }
    let rgba = image::DynamicImage::ImageRgb8(small).to_rgba8();
    Ok(Thumbnail {
        width: rgba.width(),
        height: rgba.height(),
        rgba: rgba.into_raw(),
    })
}

fn write_cached(img: &image::RgbImage, file: &Path) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Written beside, then renamed: a reader never sees half a file.
    let tmp = file.with_extension("part");
    {
        let out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(out, JPEG_QUALITY);
        enc.encode_image(img).map_err(std::io::Error::other)?;
    }
    std::fs::rename(tmp, file)
}

struct Queue {
    /// Pending paths, newest last (served first).
    stack: Vec<PathBuf>,
    pending: HashSet<PathBuf>,
    stop: bool,
}

/// A small pool of named threads making thumbnails.
pub struct ThumbnailPool {
    queue: Arc<(Mutex<Queue>, Condvar)>,
    results: Receiver<ThumbnailResult>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl ThumbnailPool {
    /// Starts `threads` workers caching into `cache_dir`; `notify` runs after each result.
    pub fn new(
        cache_dir: PathBuf,
        threads: usize,
        notify: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        let queue = Arc::new((
            Mutex::new(Queue {
                stack: Vec::new(),
                pending: HashSet::new(),
                stop: false,
            }),
            Condvar::new(),
        ));
        let (tx, rx): (Sender<ThumbnailResult>, _) = bounded(256);
        let notify = Arc::new(notify);
        let threads = (0..threads.max(1))
            .map(|i| {
                let queue = Arc::clone(&queue);
                let tx = tx.clone();
                let notify = Arc::clone(&notify);
                let dir = cache_dir.clone();
                std::thread::Builder::new()
                    .name(format!("thumbnail-{i}"))
                    .spawn(move || worker(&queue, &tx, &*notify, &dir))
                    .expect("spawning a thumbnail thread")
            })
            .collect();
        ThumbnailPool {
            queue,
            results: rx,
            threads,
        }
    }

    /// Asks for the thumbnail of `path` (ignored if already pending).
    pub fn request(&self, path: &Path) {
        let (lock, cv) = &*self.queue;
        let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
        if q.pending.insert(path.to_path_buf()) {
            q.stack.push(path.to_path_buf());
            cv.notify_one();
        }
    }

    /// Forgets requests not yet started (after the library was cleared, say).
    pub fn clear_pending(&self) {
        let (lock, _) = &*self.queue;
        let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
        q.stack.clear();
        q.pending.clear();
    }

    /// Finished thumbnails, without waiting.
    pub fn try_results(&self) -> impl Iterator<Item = ThumbnailResult> + '_ {
        self.results.try_iter()
    }
}

fn worker(
    queue: &(Mutex<Queue>, Condvar),
    tx: &Sender<ThumbnailResult>,
    notify: &(dyn Fn() + Send + Sync),
    dir: &Path,
) {
    loop {
        let path = {
            let (lock, cv) = queue;
            let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if q.stop {
                    return;
                }
                if let Some(p) = q.stack.pop() {
                    break p;
                }
                q = cv.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let thumbnail = thumbnail(&path, dir);
        {
            let (lock, _) = queue;
            lock.lock()
                .unwrap_or_else(|e| e.into_inner())
                .pending
                .remove(&path);
        }
        if tx.send(ThumbnailResult { path, thumbnail }).is_err() {
            return;
        }
        notify();
    }
}

impl Drop for ThumbnailPool {
    fn drop(&mut self) {
        {
            let (lock, cv) = &*self.queue;
            lock.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
            cv.notify_all();
        }
        // Let a worker blocked on a full channel finish.
        for _ in self.results.try_iter() {}
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_are_small_upright_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let photo = dir.path().join("wide.png");
        image::RgbImage::from_pixel(1000, 400, image::Rgb([200, 10, 10]))
            .save(&photo)
            .unwrap();
        let cache = dir.path().join("cache");
        let t = thumbnail(&photo, &cache).unwrap();
        assert_eq!((t.width, t.height), (256, 102));
        assert_eq!(t.rgba.len(), 256 * 102 * 4);
        let files: Vec<_> = walkdir::WalkDir::new(&cache)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .collect();
        assert_eq!(files.len(), 1, "one cached file");
        // the second time comes from the cache and gives the same size
        let again = thumbnail(&photo, &cache).unwrap();
        assert_eq!((again.width, again.height), (256, 102));
        assert!(thumbnail(&dir.path().join("missing.jpg"), &cache).is_err());
    }

    #[test]
    fn the_pool_answers_every_request() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for i in 0..5 {
            let p = dir.path().join(format!("{i}.png"));
            image::RgbImage::from_pixel(50 + i, 40, image::Rgb([1, 2, 3]))
                .save(&p)
                .unwrap();
            paths.push(p);
        }
        let pool = ThumbnailPool::new(dir.path().join("cache"), 2, || {});
        for p in &paths {
            pool.request(p);
            pool.request(p); // twice: still one answer
        }
        let mut got = Vec::new();
        while got.len() < paths.len() {
            got.extend(
                pool.results
                    .recv_timeout(std::time::Duration::from_secs(10))
                    .ok(),
            );
        }
        assert!(got.iter().all(|r| r.thumbnail.is_ok()));
        assert!(
            pool.results
                .recv_timeout(std::time::Duration::from_millis(200))
                .is_err()
        );
    }
}
