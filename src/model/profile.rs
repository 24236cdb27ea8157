//! Optional per-stage timing of the model, for performance work: with LYCHEE_PROFILE=1 each
//! named stage waits for the device before and after it runs, and the totals are printed by
//! `lychee-rerank bench`. Off, a stage costs one relaxed atomic load.

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
    match STATE.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => {
            let on = std::env::var("LYCHEE_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0");
            STATE.store(if on { ON } else { OFF }, Ordering::Relaxed);
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
