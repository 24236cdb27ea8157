//! Optional per-stage timing of the model, for performance work: with LYCHEE_PROFILE=1 each
//! named stage waits for the device before and after it runs, and the totals are printed by
//! `lychee-rerank bench`. Off, a stage costs one relaxed atomic load.
//!
//! With LYCHEE_GAPS=1 (CUDA only), [`mark`] records an event on the device's stream instead,
//! timed by the device and waiting for nothing: where a batch's upload begins, where its
//! vision tower begins, where its scores are ready. The time between a batch's scores and
//! the next batch's upload is time the device had nothing queued ([`gaps`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use candle_core::Device;

static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;
static TOTALS: Mutex<BTreeMap<&'static str, (Duration, u64)>> = Mutex::new(BTreeMap::new());

/// True when LYCHEE_PROFILE is set to something other than 0.
pub fn enabled() -> bool {
    flag(&STATE, "LYCHEE_PROFILE")
}

/// Whether the environment sets `var` to something other than 0, read once into `state`.
fn flag(state: &AtomicU8, var: &str) -> bool {
    match state.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => {
            let on = std::env::var(var).is_ok_and(|v| !v.is_empty() && v != "0");
            state.store(if on { ON } else { OFF }, Ordering::Relaxed);
            on
        }
    }
}

/// Runs `f` as the stage `name`.
pub fn stage<T, E>(
    name: &'static str,
    device: &Device,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    if !enabled() {
        return f();
    }
    let _ = device.synchronize();
    let start = Instant::now();
    let out = f();
    let _ = device.synchronize();
    let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    let entry = totals.entry(name).or_default();
    entry.0 += start.elapsed();
    entry.1 += 1;
    out
}

/// The totals so far, slowest first: (stage, total, calls).
pub fn report() -> Vec<(&'static str, Duration, u64)> {
    let totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    let mut rows: Vec<_> = totals.iter().map(|(k, (d, n))| (*k, *d, *n)).collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    rows
}

/// Forgets the totals.
pub fn reset() {
    TOTALS.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

static GAPS: AtomicU8 = AtomicU8::new(UNKNOWN);
#[cfg(feature = "cuda")]
type Mark = (&'static str, candle_core::cuda::cudarc::driver::CudaEvent);
#[cfg(feature = "cuda")]
static MARKS: Mutex<Vec<Mark>> = Mutex::new(Vec::new());

/// True when LYCHEE_GAPS is set to something other than 0.
pub fn marks_enabled() -> bool {
    flag(&GAPS, "LYCHEE_GAPS")
}

/// Records the point `name` of the device's work, where [`marks_enabled`] and the device is
/// a GPU; a mark that cannot be recorded is left out.
pub fn mark(name: &'static str, device: &Device) {
    if !marks_enabled() {
        return;
    }
    #[cfg(feature = "cuda")]
    if let Device::Cuda(dev) = device {
        use candle_core::cuda::cudarc::driver::sys::CUevent_flags;
        if let Ok(event) = dev
            .cuda_stream()
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
        {
            MARKS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((name, event));
        }
    }
    #[cfg(not(feature = "cuda"))]
    let _ = (name, device);
}

/// The device's time between consecutive marks so far, summed per pair of names: ("from ->
/// to", milliseconds, times), in the order first seen; the marks are then forgotten.
#[cfg(feature = "cuda")]
pub fn gaps() -> Vec<(String, f64, u64)> {
    let marks = std::mem::take(&mut *MARKS.lock().unwrap_or_else(|e| e.into_inner()));
    let mut rows: Vec<(String, f64, u64)> = Vec::new();
    for pair in marks.windows(2) {
        let ((from, a), (to, b)) = (&pair[0], &pair[1]);
        let Ok(ms) = a.elapsed_ms(b) else { continue };
        let key = format!("{from} -> {to}");
        match rows.iter_mut().find(|r| r.0 == key) {
            Some(row) => {
                row.1 += f64::from(ms);
                row.2 += 1;
            }
            None => rows.push((key, f64::from(ms), 1)),
        }
    }
    rows
}

/// Without CUDA nothing is marked.
#[cfg(not(feature = "cuda"))]
pub fn gaps() -> Vec<(String, f64, u64)> {
    Vec::new()
}
