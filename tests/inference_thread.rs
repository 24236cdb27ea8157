//! The inference thread under faults: a panic inside it is reported and the next ranking
//! runs without restarting anything; closing the window in the middle of a ranking ends
//! the thread within 2 seconds and leaves no thread behind.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lychee_rerank::hub::ModelSource;
use lychee_rerank::model::DEFAULT_INSTRUCTION;
use lychee_rerank::model::device::DevicePreference;
use lychee_rerank::worker::rank::{RankEvent, RankOutcome, RankRequest};
use lychee_rerank::worker::thread::{Command, Event, InferenceThread};

fn photos(copies: usize) -> Vec<PathBuf> {
    let mut one: Vec<PathBuf> = std::fs::read_dir(common::photo_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    one.sort();
    one.iter()
        .cycle()
        .take(one.len() * copies)
        .cloned()
        .collect()
}

fn rank(worker: &mut InferenceThread, job: u64, photos: Vec<PathBuf>) -> Arc<AtomicBool> {
    let cancel = Arc::new(AtomicBool::new(false));
    assert!(worker.send(Command::Rank {
        job,
        request: RankRequest {
            query_text: "a snowy mountain".into(),
            query_image: None,
            instruction: DEFAULT_INSTRUCTION.into(),
            photos,
            min_pixels: None,
            max_pixels: None,
        },
        cancel: Arc::clone(&cancel),
        use_cache: false,
    }));
    cancel
}

fn load(worker: &mut InferenceThread) {
    assert!(worker.send(Command::LoadModel {
        source: ModelSource::Folder(common::model_dir()),
        device: DevicePreference::Cpu,
        name: None,
    }));
    loop {
        match worker.recv_timeout(Duration::from_secs(60)) {
            Some(Event::ModelReady(_)) => return,
            Some(Event::ModelFailed { reason, .. }) => panic!("{reason}"),
            Some(_) => {}
            None => panic!("the model did not load"),
        }
    }
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
    );
    load(&mut worker);
    rank(&mut worker, 1, photos(20));
    let reason = loop {
        match worker.recv_timeout(Duration::from_secs(60)) {
            Some(Event::Recovered { reason }) => break reason,
            Some(Event::RankFinished { .. }) => panic!("the fault did not happen"),
            Some(_) => {}
            None => panic!("the thread hung after the fault"),
        }
    };
    assert!(reason.contains("a fault for the test"), "{reason}");
    let n = photos(1).len();
    rank(&mut worker, 2, photos(1));
    let mut scored = 0;
    loop {
        match worker.recv_timeout(Duration::from_secs(60)) {
            Some(Event::Rank {
                job: 2,
                event: RankEvent::PhotoScored { .. },
            }) => scored += 1,
            Some(Event::RankFinished {
                job: 2, outcome, ..
            }) => {
                assert_eq!(outcome, RankOutcome::Finished);
                break;
            }
            Some(Event::RankFailed { reason, .. }) => panic!("{reason}"),
            Some(_) => {}
            None => panic!("the ranking after the fault did not finish"),
        }
    }
    assert_eq!(scored, n, "every photo of the next ranking scored");
    assert!(worker.shut_down(Duration::from_secs(2)));

    // 2. Closing the window while a long ranking runs: the thread ends within 2 seconds.
    let mut worker = InferenceThread::spawn(|| {}, None);
    load(&mut worker);
    rank(&mut worker, 3, photos(500));
    let mut scored = 0;
    while scored < 10 {
        match worker.recv_timeout(Duration::from_secs(60)) {
            Some(Event::Rank {
                event: RankEvent::PhotoScored { .. },
                ..
            }) => scored += 1,
            Some(Event::RankFinished { .. }) => panic!("the ranking ended too soon"),
            Some(_) => {}
            None => panic!("no photo was scored"),
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
        engine_threads(),
        Vec::<String>::new(),
        "no thread left behind"
    );
    eprintln!("closed mid-ranking in {} ms", took.as_millis());
}
