//! Visual tokens of photos already seen, kept on the model's device for the next query:
//! refining a description and ranking the same photos again skips their decode-to-tokens
//! work in the vision tower. Keyed by the hash of the pixels the tower reads, so an edited
//! photo, another resolution or another preprocessing never matches; bounded in bytes,
//! least recently used first out.

use std::collections::{HashMap, VecDeque};

use candle_core::Tensor;

/// Visual tokens by pixel key.
pub struct VisualCache {
    entries: HashMap<[u8; 32], (Tensor, (usize, usize))>,
    /// Keys, least recently used first.
    order: VecDeque<[u8; 32]>,
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
            entries: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            limit,
            hits: 0,
        }
    }

    /// The tokens and merged grid kept for `key`, now the most recently used.
    pub fn get(&mut self, key: &[u8; 32]) -> Option<(Tensor, (usize, usize))> {
        let found = self.entries.get(key).cloned()?;
        if let Some(i) = self.order.iter().position(|k| k == key) {
            self.order.remove(i);
        }
        self.order.push_back(*key);
        self.hits += 1;
        Some(found)
    }

    /// Keeps `tokens` for `key`, dropping the least recently used entries beyond the limit.
    /// Tokens larger than the whole limit are not kept.
    pub fn put(&mut self, key: [u8; 32], tokens: Tensor, merged: (usize, usize)) {
        let size = size_of(&tokens);
        if size > self.limit || self.entries.contains_key(&key) {
            return;
        }
        while self.bytes + size > self.limit {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((t, _)) = self.entries.remove(&old) {
                self.bytes -= size_of(&t);
            }
        }
        // A copy of its own, so that the batch the tokens came from can be freed.
        let Ok(tokens) = tokens.copy() else {
            return;
        };
        self.entries.insert(key, (tokens, merged));
        self.order.push_back(key);
        self.bytes += size;
    }

    /// Frees everything kept (when the device runs out of memory).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
        self.bytes = 0;
    }

    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
        while self.bytes > self.limit {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((t, _)) = self.entries.remove(&old) {
                self.bytes -= size_of(&t);
            }
        }
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
