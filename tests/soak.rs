//! A long run through the tiny model on the CPU: 5,000 photos, each scored exactly once,
//! and the process's resident memory flat once warmed up. (The longer variant: set
//! LYCHEE_SOAK_PHOTOS, e.g. to 50000.)

mod common;

use std::io::Cursor;
use std::sync::atomic::AtomicBool;

use lychee_rerank::model::{ComputeDevice, Reranker};
use lychee_rerank::worker::rank::{RankEvent, RankRequest, RankSettings, run_ranking};

/// Resident set size in KiB (Linux).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn five_thousand_photos_each_once_with_flat_memory() {
    let n: usize = std::env::var("LYCHEE_SOAK_PHOTOS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let dir = tempfile::tempdir().unwrap();
    let mut photos = Vec::with_capacity(n);
    for i in 0..n {
        let img = image::RgbImage::from_fn(128, 96, |x, y| {
            image::Rgb([
                (x as usize * 2 + i) as u8,
                (y as usize * 2 + i / 256) as u8,
                (i % 251) as u8,
            ])
        });
        let mut bytes = Cursor::new(Vec::new());
        img.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
        let p = dir.path().join(format!("{i:06}.png"));
        std::fs::write(&p, bytes.into_inner()).unwrap();
        photos.push(p);
    }
    let model = Reranker::load(&common::model_dir(), ComputeDevice::cpu()).unwrap();
    let request = RankRequest::new("a red umbrella on a sunny beach", photos);
    let mut seen = vec![0u32; n];
    let mut failed = 0;
    let mut warm = None;
    let mut peak_after_warm = 0;
    let mut handled = 0;
    let start = std::time::Instant::now();
    run_ranking(
        &model,
        &request,
        RankSettings {
            max_batch: 4,
            time_stages: false,
        },
        None,
        &AtomicBool::new(false),
        |e| match e {
            RankEvent::PhotoScored { index, .. } | RankEvent::PhotoFailed { index, .. } => {
                if matches!(e, RankEvent::PhotoFailed { .. }) {
                    failed += 1;
                }
                seen[index] += 1;
                handled += 1;
                if handled == n / 5 {
                    warm = rss_kib();
                }
                if handled > n / 5 && handled % 100 == 0 {
                    peak_after_warm = peak_after_warm.max(rss_kib().unwrap_or(0));
                }
            }
            _ => {}
        },
    )
    .unwrap();
    let elapsed = start.elapsed();
    assert_eq!(failed, 0);
    assert!(seen.iter().all(|&c| c == 1), "every photo exactly once");
    if let Some(warm) = warm {
        let growth = peak_after_warm.saturating_sub(warm);
        eprintln!(
            "{n} photos in {elapsed:?}; resident memory {} MiB after {} photos, at most {} MiB after (+{} MiB)",
            warm / 1024,
            n / 5,
            peak_after_warm / 1024,
            growth / 1024
        );
        assert!(
            growth < 64 * 1024,
            "memory grew by {} MiB after warm-up",
            growth / 1024
        );
    }
}
