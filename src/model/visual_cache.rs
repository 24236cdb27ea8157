//! Visual tokens of photos already seen, kept on the model's device for the next query:
//! refining a description and ranking the same photos again skips their decode-to-tokens
//! work in the vision tower. Keyed by the hash of the pixels the tower reads, so an edited
//! photo, another resolution or another preprocessing never matches; bounded in bytes,
//! least recently used first out. The order is `lru`'s (unbounded in entries); the bytes are
//! counted here.

use candle_core::Tensor;
use lru::LruCache;

/// Visual tokens by pixel key.
pub struct VisualCache {
    entries: LruCache<[u8; 32], (Tensor, (usize, usize))>,
    bytes: u64,
    limit: u64,
    hits: u64,
}

fn size_of(t: &Tensor) -> u64 {
    (t.elem_count() * t.dtype().size_in_bytes()) as u64
}

impl VisualCache {
    pub fn new(limit: u64) -> Self {
        VisualCache {
            entries: LruCache::unbounded(),
            bytes: 0,
            limit,
            hits: 0,
        }
    }

    /// The tokens and merged grid kept for `key`, now the most recently used.
    pub fn get(&mut self, key: &[u8; 32]) -> Option<(Tensor, (usize, usize))> {
        let found = self.entries.get(key).cloned()?;
        self.hits += 1;
        Some(found)
    }

    /// Keeps `tokens` for `key`, dropping the least recently used entries beyond the limit.
    /// Tokens larger than the whole limit are not kept.
    pub fn put(&mut self, key: [u8; 32], tokens: Tensor, merged: (usize, usize)) {
        let size = size_of(&tokens);
        if size > self.limit || self.entries.contains(&key) {
            return;
        }
        self.shrink_to(self.limit - size);
        // A copy of its own, so that the batch the tokens came from can be freed.
        let Ok(tokens) = tokens.copy() else {
            return;
        };
        self.entries.put(key, (tokens, merged));
        self.bytes += size;
    }

    /// Drops the least recently used entries until at most `bytes` are kept.
    fn shrink_to(&mut self, bytes: u64) {
        while self.bytes > bytes {
            let Some((_, (tokens, _))) = self.entries.pop_lru() else {
                break;
            };
            self.bytes -= size_of(&tokens);
        }
    }

    /// Frees everything kept (when the device runs out of memory).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
        self.shrink_to(limit);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Most bytes kept.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes of tokens kept.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Lookups answered from the cache since the model was loaded.
    pub fn hits(&self) -> u64 {
        self.hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn tokens(rows: usize) -> Tensor {
        Tensor::zeros((rows, 4), DType::F32, &Device::Cpu).unwrap() // 16 bytes per row
    }

    #[test]
    fn stays_within_its_limit_dropping_the_least_recently_used() {
        let mut c = VisualCache::new(100);
        c.put([1; 32], tokens(2), (1, 2)); // 32 bytes
        c.put([2; 32], tokens(2), (1, 2));
        c.put([3; 32], tokens(2), (1, 2));
        assert_eq!((c.len(), c.bytes()), (3, 96));
        assert!(c.get(&[1; 32]).is_some()); // 2 is now the least recent
        c.put([4; 32], tokens(2), (2, 1));
        assert!(c.bytes() <= 100);
        assert!(c.get(&[2; 32]).is_none());
        assert_eq!(c.get(&[4; 32]).unwrap().1, (2, 1));
        assert!(c.get(&[1; 32]).is_some());
        c.put([5; 32], tokens(10), (2, 5)); // larger than the limit: not kept
        assert!(c.get(&[5; 32]).is_none());
        c.set_limit(40);
        assert_eq!(c.len(), 1);
        c.clear();
        assert!(c.is_empty());
        assert_eq!(c.bytes(), 0);
    }
}
