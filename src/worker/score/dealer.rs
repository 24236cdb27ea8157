//! Score jobs dealt over several devices (`serve --gpus`): each device has its own copy of
//! the model and its own prepared prefixes, on a named thread of its own ("score-N"), and
//! takes the scheduler's next batch whenever it is free, so that a slower device never
//! holds the others back. A device that fails a whole batch for a reason of its own (an
//! error from the driver, out of memory that one document at a time does not clear) leaves
//! the rotation with a notice, and its batch goes back in line for the others; the last
//! device left reports such failures to the requests, as a single device does.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded, unbounded};

use super::{BatchResult, Prefixes, Scheduler, ScoreBatch, judge_batch};
use crate::model::Reranker;

/// A device's results, with its number.
pub type Results = Receiver<(usize, BatchResult)>;

/// One device of the rotation.
struct Device {
    name: String,
    /// Where its batches go; None once it has left the rotation (its thread then ends).
    work: Option<Sender<ScoreBatch>>,
    /// A batch of its is under way.
    busy: bool,
    handle: Option<JoinHandle<()>>,
}

/// The devices that judge the scheduler's batches.
pub struct Dealer {
    devices: Vec<Device>,
    results: Results,
}

impl Dealer {
    /// A thread per model of `models` (copies of one model on several devices).
    pub fn spawn(models: &[Arc<Reranker>]) -> std::io::Result<Self> {
        let (done, results) = unbounded();
        let mut devices = Vec::with_capacity(models.len());
        for (d, model) in models.iter().enumerate() {
            let (work, batches) = bounded::<ScoreBatch>(1);
            let name = model.device.name.clone();
            let (model, done) = (Arc::clone(model), done.clone());
            let handle = std::thread::Builder::new()
                .name(format!("score-{d}"))
                .spawn(move || {
                    let mut prefixes = Prefixes::default();
                    while let Ok(batch) = batches.recv() {
                        let (ids, key) = (batch.ids(), batch.key.clone());
                        let judged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            judge_batch(&model, &mut prefixes, batch)
                        }));
                        // A panic in model code costs the batch, not the device.
                        let result = judged.unwrap_or_else(|panic| {
                            let reason = format!(
                                "an internal error interrupted the scoring ({})",
                                crate::worker::panic_message(&panic)
                            );
                            BatchResult::all_failed(key, ids, &reason)
                        });
                        if done.send((d, result)).is_err() {
                            return;
                        }
                    }
                })?;
            devices.push(Device {
                name,
                work: Some(work),
                busy: false,
                handle: Some(handle),
            });
        }
        Ok(Dealer { devices, results })
    }

    /// Devices in the rotation.
    pub fn working(&self) -> usize {
        self.devices.iter().filter(|d| d.work.is_some()).count()
    }

    /// A batch is under way on some device.
    pub fn in_flight(&self) -> bool {
        self.devices.iter().any(|d| d.busy)
    }

    /// Where the devices' results arrive (for `select!`); hand each to [`Dealer::take`].
    pub fn results(&self) -> Results {
        self.results.clone()
    }

    /// Hands the scheduler's next batches to the devices that are free. With no device
    /// left in the rotation, every request fails with a reason instead of waiting.
    pub fn deal(&mut self, scheduler: &mut Scheduler) {
        if self.working() == 0 {
            if !scheduler.is_idle() && !self.in_flight() {
                scheduler.fail_all("no device is left to judge the documents");
            }
            return;
        }
        for device in self.devices.iter_mut().filter(|d| !d.busy) {
            let Some(work) = &device.work else {
                continue;
            };
            let Some(batch) = scheduler.next_batch() else {
                return;
            };
            match work.try_send(batch) {
                Ok(()) => device.busy = true,
                // Its thread has ended: the batch goes back, the device leaves.
                Err(TrySendError::Disconnected(batch) | TrySendError::Full(batch)) => {
                    scheduler.requeue_batch(batch);
                    device.work = None;
                }
            }
        }
    }

    /// A device's results: to the requests, or, when the device failed the whole batch
    /// for a reason of its own and others are left, back in line (the device leaves the
    /// rotation). Returns the notice to show then.
    pub fn take(
        &mut self,
        scheduler: &mut Scheduler,
        (d, result): (usize, BatchResult),
    ) -> Option<String> {
        self.devices[d].busy = false;
        if self.working() > 1
            && self.devices[d].work.is_some()
            && let Some(reason) = result.device_failure()
        {
            let notice = format!(
                "{} stopped working ({reason}); its documents go to the other devices",
                self.devices[d].name
            );
            self.devices[d].work = None;
            scheduler.requeue(result);
            return Some(notice);
        }
        scheduler.finish(result);
        None
    }

    /// Serves every request of `scheduler` to the end (for a command that has nothing
    /// else to wait on); `notice` gets what [`Dealer::take`] says.
    pub fn serve_to_end(&mut self, scheduler: &mut Scheduler, mut notice: impl FnMut(String)) {
        loop {
            self.deal(scheduler);
            if scheduler.is_idle() {
                return;
            }
            match self.results.recv() {
                Ok(r) => {
                    if let Some(text) = self.take(scheduler, r) {
                        notice(text);
                    }
                }
                // Every device thread has ended.
                Err(_) => {
                    scheduler.fail_all("no device is left to judge the documents");
                    return;
                }
            }
        }
    }

    /// Waits for every batch under way and hands its results to the scheduler (before the
    /// models are used for something else). Returns the notices.
    pub fn wait_all(&mut self, scheduler: &mut Scheduler) -> Vec<String> {
        let mut notices = Vec::new();
        while self.in_flight() {
            match self.results.recv_timeout(Duration::from_millis(100)) {
                Ok(r) => notices.extend(self.take(scheduler, r)),
                Err(RecvTimeoutError::Timeout) => {
                    // A device thread that ended without a word will not answer.
                    for device in &mut self.devices {
                        if device.busy && device.handle.as_ref().is_some_and(|h| h.is_finished()) {
                            device.busy = false;
                            device.work = None;
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        notices
    }
}

impl Drop for Dealer {
    /// The devices finish the batch in hand and their threads end.
    fn drop(&mut self) {
        for device in &mut self.devices {
            device.work = None;
        }
        for device in &mut self.devices {
            if let Some(h) = device.handle.take() {
                let _ = h.join();
            }
        }
    }
}
