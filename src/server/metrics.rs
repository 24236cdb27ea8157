//! `GET /metrics` in Prometheus' text format: requests by route and status, documents
//! scored and dropped (their client went away), the documents waiting for the model,
//! request latency as a histogram, and documents per second over the last ten seconds.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// The window of documents per second.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// The server's counters.
#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<([u64; BUCKETS.len() + 1], f64, u64)>,
    documents: AtomicU64,
    dropped: AtomicU64,
    recent: Mutex<VecDeque<(Instant, usize)>>,
    /// Documents waiting for the model (kept by the inference thread).
    pub queued: Arc<AtomicUsize>,
    started: Instant,
}

impl Metrics {
    pub fn new(queued: Arc<AtomicUsize>) -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(([0; BUCKETS.len() + 1], 0.0, 0)),
            documents: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::new()),
            queued,
            started: Instant::now(),
        }
    }

    /// A request answered.
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((route.to_owned(), status)).or_default() += 1;
        }
        if let Ok(mut l) = self.latency.lock() {
            let i = BUCKETS
                .iter()
                .position(|&b| seconds <= b)
                .unwrap_or(BUCKETS.len());
            l.0[i] += 1;
            l.1 += seconds;
            l.2 += 1;
        }
    }

    /// Documents scored.
    pub fn scored(&self, n: usize) {
        self.documents.fetch_add(n as u64, Ordering::Relaxed);
        if let Ok(mut r) = self.recent.lock() {
            let now = Instant::now();
            r.push_back((now, n));
            while r
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
            {
                r.pop_front();
            }
        }
    }

    /// Documents dropped because their client went away.
    pub fn dropped(&self, n: usize) {
        self.dropped.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Documents scored so far.
    pub fn documents(&self) -> u64 {
        self.documents.load(Ordering::Relaxed)
    }

    /// The text of `GET /metrics`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP lychee_requests_total Requests answered, by route and status.\n# TYPE lychee_requests_total counter\n");
        if let Ok(r) = self.requests.lock() {
            for ((route, status), n) in r.iter() {
                out.push_str(&format!(
                    "lychee_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}\n"
                ));
            }
        }
        out.push_str(&format!(
            "# HELP lychee_documents_total Documents scored.\n# TYPE lychee_documents_total counter\nlychee_documents_total {}\n",
            self.documents()
        ));
        out.push_str(&format!(
            "# HELP lychee_documents_dropped_total Documents dropped because their client went away.\n# TYPE lychee_documents_dropped_total counter\nlychee_documents_dropped_total {}\n",
            self.dropped.load(Ordering::Relaxed)
        ));
        out.push_str(&format!(
            "# HELP lychee_queue_documents Documents waiting for the model.\n# TYPE lychee_queue_documents gauge\nlychee_queue_documents {}\n",
            self.queued.load(Ordering::Relaxed)
        ));
        let rate = self.recent.lock().map_or(0.0, |r| {
            let now = Instant::now();
            let n: usize = r
                .iter()
                .filter(|(t, _)| now.duration_since(*t) <= RATE_WINDOW)
                .map(|(_, n)| n)
                .sum();
            let span = RATE_WINDOW
                .min(now.duration_since(self.started))
                .as_secs_f64()
                .max(1.0);
            n as f64 / span
        });
        out.push_str(&format!(
            "# HELP lychee_documents_per_second Documents scored per second over the last 10 s.\n# TYPE lychee_documents_per_second gauge\nlychee_documents_per_second {rate:.3}\n"
        ));
        out.push_str("# HELP lychee_request_duration_seconds Time from a request to its answer.\n# TYPE lychee_request_duration_seconds histogram\n");
        if let Ok(l) = self.latency.lock() {
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += l.0[i];
                out.push_str(&format!(
                    "lychee_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}\n"
                ));
            }
            cumulative += l.0[BUCKETS.len()];
            out.push_str(&format!(
                "lychee_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}\nlychee_request_duration_seconds_sum {:.6}\nlychee_request_duration_seconds_count {}\n",
                l.1, l.2
            ));
        }
        out
    }
}
