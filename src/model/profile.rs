//! Optional per-stage timing of the model, for performance work: with LYCHEE_PROFILE=1 each
//! named stage waits for the device before and after it runs, and the totals are printed by
//! `lychee-rerank bench`. Off, a stage costs one relaxed atomic load.
//!
//! With LYCHEE_GAPS=1 (CUDA only), [`mark`] records an event on the device's stream instead,
//! timed by the device and waiting for nothing: where a batch's upload begins, where its
//! vision tower begins, where its scores are ready. The time between a batch's scores and
//! the next batch's upload is time the device had nothing queued ([`gaps`]), and comparing
//! each mark's device time with when the host queued it says whether the device was
//! waiting for the host there.

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
/// A point of the device's work: its name, its event, and when the host queued it.
#[cfg(feature = "cuda")]
type Mark = (
    &'static str,
    candle_core::cuda::cudarc::driver::CudaEvent,
    Instant,
);
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
        mark_stream(name, &dev.cuda_stream());
    }
    #[cfg(not(feature = "cuda"))]
    let _ = (name, device);
}

/// [`mark`] on a stream of the GPU's other than the model's own.
#[cfg(feature = "cuda")]
pub fn mark_stream(name: &'static str, stream: &candle_core::cuda::cudarc::driver::CudaStream) {
    use candle_core::cuda::cudarc::driver::sys::CUevent_flags;
    if !marks_enabled() {
        return;
    }
    if let Ok(event) = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)) {
        MARKS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, event, Instant::now()));
    }
}

/// The time between consecutive marks, summed per pair of names, in the order first seen;
/// the marks are then forgotten.
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    /// "from -> to".
    pub pair: String,
    /// The device's time from one to the other.
    pub device_ms: f64,
    /// The host's time between queuing one and the other.
    pub host_ms: f64,
    /// How long after being queued the device reached "to", beyond the least such delay
    /// of the run (summed): near 0, the device was waiting for the host to queue it.
    pub queued_ahead_ms: f64,
    pub times: u64,
}

#[cfg(feature = "cuda")]
pub fn gaps() -> Vec<Gap> {
    let marks = std::mem::take(&mut *MARKS.lock().unwrap_or_else(|e| e.into_inner()));
    let Some((_, first, first_host)) = marks.first() else {
        return Vec::new();
    };
    // How long after its queuing the device reached each mark, up to one constant.
    let lag: Vec<Option<f64>> = marks
        .iter()
        .map(|(_, e, h)| {
            let device = f64::from(first.elapsed_ms(e).ok()?);
            Some(device - h.duration_since(*first_host).as_secs_f64() * 1e3)
        })
        .collect();
    let least = lag.iter().flatten().copied().fold(f64::INFINITY, f64::min);
    let mut rows: Vec<Gap> = Vec::new();
    for (i, pair) in marks.windows(2).enumerate() {
        let ((from, a, ha), (to, b, hb)) = (&pair[0], &pair[1]);
        let (Ok(ms), Some(lag)) = (a.elapsed_ms(b), lag[i + 1]) else {
            continue;
        };
        let key = format!("{from} -> {to}");
        let host = hb.duration_since(*ha).as_secs_f64() * 1e3;
        let row = match rows.iter_mut().position(|r| r.pair == key) {
            Some(at) => &mut rows[at],
            None => {
                rows.push(Gap {
                    pair: key,
                    device_ms: 0.0,
                    host_ms: 0.0,
                    queued_ahead_ms: 0.0,
                    times: 0,
                });
                rows.last_mut().expect("just pushed")
            }
        };
        row.device_ms += f64::from(ms);
        row.host_ms += host;
        row.queued_ahead_ms += lag - least;
        row.times += 1;
    }
    rows
}

/// Without CUDA nothing is marked.
#[cfg(not(feature = "cuda"))]
pub fn gaps() -> Vec<Gap> {
    Vec::new()
}
