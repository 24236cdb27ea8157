//! The inference thread under faults: a panic inside it is reported and the next ranking
//! runs without restarting anything; closing the window in the middle of a ranking ends
//! the thread within 2 seconds and leaves no thread behind.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lychee_rerank::worker::{
    Event, InferenceThread, RankEvent, RankHandle, RankOutcome, RankReply, RankRequest,
};

fn photos(copies: usize) -> Vec<PathBuf> {
    let one = common::photos();
    one.iter()
        .cycle()
        .take(one.len() * copies)
        .cloned()
        .collect()
}

fn rank(worker: &mut InferenceThread, photos: Vec<PathBuf>) -> RankHandle {
    worker
        .rank(RankRequest::new("a snowy mountain", photos), false)
        .expect("the inference thread takes the ranking")
}

fn load(worker: &mut InferenceThread) {
    common::load_tiny(worker);
}

/// Names of this process's threads that belong to the ranking engine.
#[cfg(target_os = "linux")]
fn engine_threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| name == "inference" || name.starts_with("photo-decode"))
        .collect()
}

/// The engine's threads still listed after up to `wait`: a thread just joined can stay in
/// /proc/self/task for a moment while the kernel reaps it (seen on a loaded 2-core machine).
#[cfg(target_os = "linux")]
fn threads_left_after(wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    loop {
        let left = engine_threads();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_panic_is_reported_and_closing_mid_ranking_is_quick_and_clean() {
    // 1. A fault inside the thread (here: the window's repaint request panicking once,
    //    in the middle of a ranking) is reported, and the next ranking runs.
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let mut worker = InferenceThread::spawn(
        move || {
            if counter.fetch_add(1, Ordering::SeqCst) == 20 {
                panic!("a fault for the test");
            }
        },
        None,
    )
    .unwrap();
    load(&mut worker);
    let faulty = rank(&mut worker, photos(20));
    let reason = loop {
        match worker.recv_timeout(Duration::from_secs(60)) {
            Some(Event::Recovered { reason }) => break reason,
            Some(_) => {}
            None => panic!("the thread hung after the fault"),
        }
    };
    assert!(reason.contains("a fault for the test"), "{reason}");
    // the faulty ranking's channel ended without a last word
    let last = faulty.replies.try_iter().last();
    assert!(
        !matches!(last, Some(RankReply::Finished { .. })),
        "the fault did not happen: {last:?}"
    );
    let n = photos(1).len();
    let next = rank(&mut worker, photos(1));
    let mut scored = 0;
    loop {
        match next.replies.recv_timeout(Duration::from_secs(60)) {
            Ok(RankReply::Progress(RankEvent::PhotoScored { .. })) => scored += 1,
            Ok(RankReply::Finished { outcome, .. }) => {
                assert_eq!(outcome, RankOutcome::Finished);
                break;
            }
            Ok(RankReply::Failed { reason }) => panic!("{reason}"),
            Ok(_) => {}
            Err(_) => panic!("the ranking after the fault did not finish"),
        }
    }
    assert_eq!(scored, n, "every photo of the next ranking scored");
    assert!(worker.shut_down(Duration::from_secs(2)));

    // 2. Closing the window while a long ranking runs: the thread ends within 2 seconds.
    let mut worker = InferenceThread::spawn(|| {}, None).unwrap();
    load(&mut worker);
    let long = rank(&mut worker, photos(500));
    let mut scored = 0;
    while scored < 10 {
        match long.replies.recv_timeout(Duration::from_secs(60)) {
            Ok(RankReply::Progress(RankEvent::PhotoScored { .. })) => scored += 1,
            Ok(RankReply::Finished { .. }) => panic!("the ranking ended too soon"),
            Ok(_) => {}
            Err(_) => panic!("no photo was scored"),
        }
    }
    #[cfg(target_os = "linux")]
    assert!(
        engine_threads()
            .iter()
            .any(|t| t.starts_with("photo-decode")),
        "the ranking is under way"
    );
    let start = Instant::now();
    assert!(worker.shut_down(Duration::from_secs(2)), "the thread ended");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    #[cfg(target_os = "linux")]
    assert_eq!(
        threads_left_after(Duration::from_secs(1)),
        Vec::<String>::new(),
        "no thread left behind"
    );
    eprintln!("closed mid-ranking in {} ms", took.as_millis());
}
