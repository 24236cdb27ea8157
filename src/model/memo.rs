//! A small cache of values derived from a key, for the tables the model builds per photo
//! size (rotary angles, window layouts): photos of one library mostly share a few sizes,
//! so each is computed once and then reused.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// At most `capacity` values, the most recently used first.
pub struct Memo<K, V> {
    entries: Mutex<VecDeque<(K, Arc<V>)>>,
    capacity: usize,
}

impl<K: PartialEq, V> Memo<K, V> {
    pub fn new(capacity: usize) -> Self {
        Memo {
            entries: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity: capacity.max(1),
        }
    }

    /// The value for `key`, made with `make` when it is not kept; an error is returned
    /// and nothing is kept.
    pub fn get_or_try<E>(
        &self,
        key: K,
        make: impl FnOnce(&K) -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = entries.iter().position(|(k, _)| *k == key) {
                let entry = entries.remove(i).expect("the index was just found");
                let value = entry.1.clone();
                entries.push_front(entry);
                return Ok(value);
            }
        }
        let value = Arc::new(make(&key)?);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.truncate(self.capacity - 1);
        entries.push_front((key, value.clone()));
        Ok(value)
    }

    /// Number of values kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
