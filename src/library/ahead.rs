//! Photos prepared on CPU threads ahead of the device: a few named threads take the photos
//! in turn (decode, resize, hash, look up) and hand the results over a bounded channel to
//! the one thread that feeds the model, in the order they finish. However that thread's
//! work ends (done, cancelled, an error, a panic), the helpers are stopped and drained:
//! each finishes the photo in hand and leaves, and nothing waits on a full channel.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, bounded};

/// Number of CPU threads preparing photos.
pub fn prepare_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 16)
}

/// Runs `prepare` on every item of `items` on [`prepare_threads`] threads named
/// `name-N`, while `consume` reads `(index, result)` pairs from the channel (at most
/// `ahead` results wait in it). Returns what `consume` returned, or the error of a thread
/// that could not be started (the ones already started are stopped first).
pub fn run_ahead<T, R, X>(
    name: &str,
    items: &[T],
    ahead: usize,
    prepare: impl Fn(usize, &T) -> R + Sync,
    consume: impl FnOnce(&Receiver<(usize, R)>) -> X,
) -> std::io::Result<X>
where
    T: Sync,
    R: Send,
{
    let threads = prepare_threads();
    let (tx, rx) = bounded::<(usize, R)>(threads + ahead.max(1));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Made before the first thread and dropped before the scope joins them, also when
        // this closure returns early or unwinds.
        let _stop = StopHelpers {
            stop: &stop,
            rx: &rx,
        };
        // Declared after the guard, so dropped before it: the guard waits until every
        // sender is gone.
        let tx = tx;
        for t in 0..threads {
            let tx = tx.clone();
            let (next, stop, prepare) = (&next, &stop, &prepare);
            helper_thread(name, t).spawn_scoped(scope, move || {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else {
                        break;
                    };
                    if tx.send((i, prepare(i, item))).is_err() {
                        break;
                    }
                }
            })?;
        }
        drop(tx);
        Ok(consume(&rx))
    })
}

/// The builder of helper thread `t`. Tests make the spawn of one thread fail, as it does
/// when the system is out of threads or memory.
fn helper_thread(name: &str, t: usize) -> std::thread::Builder {
    let builder = std::thread::Builder::new().name(format!("{name}-{t}"));
    #[cfg(test)]
    if tests::FAIL_THREAD.load(Ordering::SeqCst) == t + 1 {
        return builder.stack_size(usize::MAX / 2);
    }
    builder
}

/// Raises `stop` and empties the channel until every helper has left.
struct StopHelpers<'a, T> {
    stop: &'a AtomicBool,
    rx: &'a Receiver<T>,
}

impl<T> Drop for StopHelpers<'_, T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        while !matches!(
            self.rx.recv_timeout(Duration::from_millis(50)),
            Err(RecvTimeoutError::Disconnected)
        ) {}
    }
}

/// The results of a [`run_ahead`] channel in the order of the items, whatever order the
/// helpers finish them in (the helpers take items in order, so few wait here).
pub struct InOrder<'a, R> {
    rx: &'a Receiver<(usize, R)>,
    early: std::collections::BTreeMap<usize, R>,
    next: usize,
}

impl<'a, R> InOrder<'a, R> {
    pub fn new(rx: &'a Receiver<(usize, R)>) -> Self {
        InOrder {
            rx,
            early: std::collections::BTreeMap::new(),
            next: 0,
        }
    }

    /// The next item's result; None when every item was handed over (or the helpers
    /// were stopped).
    pub fn next_item(&mut self) -> Option<(usize, R)> {
        loop {
            if let Some(r) = self.early.remove(&self.next) {
                self.next += 1;
                return Some((self.next - 1, r));
            }
            let (i, r) = self.rx.recv().ok()?;
            self.early.insert(i, r);
        }
    }

    /// The next `max` items (fewer only at the end), so that a batch is made of the same
    /// photos in every run: a model gives the same bits for the same batch, on one
    /// device or on several.
    pub fn batch(&mut self, max: usize) -> Option<Vec<(usize, R)>> {
        let mut batch = vec![self.next_item()?];
        while batch.len() < max.max(1) {
            match self.next_item() {
                Some(item) => batch.push(item),
                None => break,
            }
        }
        Some(batch)
    }
}

/// The next items for one model batch: waits for one, then takes what is already ready,
/// up to `max`. None when every item was handed over.
pub fn next_batch<T>(rx: &Receiver<T>, max: usize) -> Option<Vec<T>> {
    let first = rx.recv().ok()?;
    let mut batch = vec![first];
    while batch.len() < max {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// When set to t + 1, the spawn of helper thread t fails.
    pub(super) static FAIL_THREAD: AtomicUsize = AtomicUsize::new(0);
    /// The tests of this module run one at a time: one of them makes spawns fail.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
        ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn every_item_is_prepared_once() {
        let _one = one_at_a_time();
        let items: Vec<u32> = (0..500).collect();
        let mut seen = run_ahead(
            "test",
            &items,
            4,
            |i, x| (i, x * 2),
            |rx| {
                let mut seen = Vec::new();
                while let Some(batch) = next_batch(rx, 8) {
                    seen.extend(batch.into_iter().map(|(i, (j, v))| {
                        assert_eq!(i, j);
                        v
                    }));
                }
                seen
            },
        )
        .unwrap();
        seen.sort();
        assert_eq!(seen, (0..500).map(|x| x * 2).collect::<Vec<_>>());
    }

    #[test]
    fn in_order_batches_are_the_same_windows_whatever_finishes_first() {
        let _one = one_at_a_time();
        let items: Vec<u64> = (0..103).collect();
        let batches = run_ahead(
            "test",
            &items,
            4,
            |_, &x| {
                // Every third item takes longer, so the helpers finish out of order.
                if x % 3 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                x
            },
            |rx| {
                let mut in_order = InOrder::new(rx);
                let mut batches = Vec::new();
                while let Some(batch) = in_order.batch(8) {
                    batches.push(batch);
                }
                batches
            },
        )
        .unwrap();
        let expected: Vec<Vec<(usize, u64)>> = (0..103u64)
            .collect::<Vec<_>>()
            .chunks(8)
            .map(|c| c.iter().map(|&x| (x as usize, x)).collect())
            .collect();
        assert_eq!(batches, expected);
    }

    #[test]
    fn stopping_early_leaves_no_thread_waiting() {
        let _one = one_at_a_time();
        let items: Vec<u32> = (0..10_000).collect();
        let taken = run_ahead(
            "test",
            &items,
            1,
            |_, x| *x,
            |rx| rx.recv().map(|_| 1).unwrap_or(0),
        )
        .unwrap();
        assert_eq!(taken, 1);
    }

    /// A thread that cannot be started ends the work with the error, after the threads
    /// started before it (which have filled the channel and wait on it) were stopped.
    /// Without the guard in place first, this waited forever.
    #[test]
    fn a_thread_that_cannot_start_is_an_error_not_a_hang() {
        let _one = one_at_a_time();
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            FAIL_THREAD.store(prepare_threads(), Ordering::SeqCst);
            let items: Vec<u32> = (0..10_000).collect();
            let result = run_ahead(
                "test",
                &items,
                1,
                |_, x| {
                    std::thread::sleep(Duration::from_micros(50));
                    *x
                },
                |rx| rx.iter().count(),
            );
            FAIL_THREAD.store(0, Ordering::SeqCst);
            let _ = tx.send(result.map_err(|e| e.to_string()));
        });
        let result = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the work returned instead of hanging");
        assert!(result.is_err(), "{result:?}");
    }
}
