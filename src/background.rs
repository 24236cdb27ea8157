//! Work that runs on a named thread of its own and hands back one result: an export, a
//! copy of photos to a folder, a model download. The window polls it once per frame and
//! never waits for it; the thread calls `notify` (the window's repaint request) when the
//! result is ready.

use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, bounded};

/// A result on its way from a background thread.
#[derive(Debug)]
pub struct Task<T> {
    result: Receiver<T>,
    handle: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Task<T> {
    /// Runs `work` on a thread named `name`; `notify` runs once the result is ready. When
    /// the thread cannot be started the error comes back at once and nothing is pending.
    pub fn start(
        name: &str,
        notify: impl FnOnce() + Send + 'static,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<Self> {
        Self::start_with(std::thread::Builder::new().name(name.into()), notify, work)
    }

    /// [`Task::start`] with a thread builder of the caller's.
    pub fn start_with(
        builder: std::thread::Builder,
        notify: impl FnOnce() + Send + 'static,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, rx) = bounded(1);
        let handle = builder.spawn(move || {
            let _ = tx.send(work());
            notify();
        })?;
        Ok(Task {
            result: rx,
            handle: Some(handle),
        })
    }
}

impl<T> Task<T> {
    /// The result, once; None while the work goes on.
    pub fn try_take(&mut self) -> Option<T> {
        let result = self.result.try_recv().ok()?;
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        Some(result)
    }

    /// Waits for the result (for the command line and tests). None if the work panicked.
    pub fn wait(mut self) -> Option<T> {
        let result = self.result.recv().ok();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn the_result_arrives_once_and_notifies() {
        let notified = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&notified);
        let mut task = Task::start(
            "test-task",
            move || flag.store(true, Ordering::SeqCst),
            || 41 + 1,
        )
        .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let value = loop {
            if let Some(v) = task.try_take() {
                break v;
            }
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert_eq!(value, 42);
        assert!(notified.load(Ordering::SeqCst));
        assert_eq!(task.try_take(), None);
    }

    #[test]
    fn a_thread_that_cannot_start_is_an_error_not_a_pending_task() {
        // A stack no machine can give makes the spawn fail, as it does when the system is
        // out of threads or memory.
        let builder = std::thread::Builder::new()
            .name("too-big".into())
            .stack_size(usize::MAX / 2);
        let result = Task::start_with(builder, || {}, || 1);
        assert!(result.is_err());
    }
}
