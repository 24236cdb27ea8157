//! A small cache of values derived from a key, for the tables the model builds per photo
//! size (rotary angles, window layouts): photos of one library mostly share a few sizes,
//! so each is computed once and then reused.

use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;

/// At most `capacity` values, the least recently used dropped first.
pub struct Memo<K, V> {
    entries: Mutex<LruCache<K, Arc<V>>>,
}

impl<K: Hash + Eq, V> Memo<K, V> {
    pub fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Memo {
            entries: Mutex::new(LruCache::new(capacity)),
        }
    }

    fn entries(&self) -> MutexGuard<'_, LruCache<K, Arc<V>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value for `key`, made with `make` when it is not kept; an error is returned
    /// and nothing is kept. The lock is not held while `make` runs.
    pub fn get_or_try<E>(
        &self,
        key: K,
        make: impl FnOnce(&K) -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        if let Some(value) = self.entries().get(&key) {
            return Ok(value.clone());
        }
        let value = Arc::new(make(&key)?);
        self.entries().put(key, value.clone());
        Ok(value)
    }

    /// Number of values kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_made_once_per_key_and_the_least_recent_goes_first() {
        let memo = Memo::new(2);
        let mut made = 0;
        let mut get = |k: u32| {
            *memo
                .get_or_try(k, |k| {
                    made += 1;
                    Ok::<_, ()>(k * 10)
                })
                .unwrap()
        };
        assert_eq!(get(1), 10);
        assert_eq!(get(1), 10);
        assert_eq!(get(2), 20);
        assert_eq!(get(1), 10); // 1 is now the most recent
        assert_eq!(get(3), 30); // evicts 2
        assert_eq!(get(1), 10);
        assert_eq!(get(2), 20); // made again
        assert_eq!(made, 4);
        assert_eq!(memo.len(), 2);
    }

    #[test]
    fn an_error_is_not_kept() {
        let memo: Memo<u32, u32> = Memo::new(4);
        assert!(memo.get_or_try(7, |_| Err("no")).is_err());
        assert!(memo.is_empty());
        assert_eq!(*memo.get_or_try(7, |_| Ok::<_, ()>(1)).unwrap(), 1);
    }
}
