//! The inference thread's tests that need its private parts.

use super::*;
use crate::worker::Content;

/// The inference thread's loop with two copies of the tiny model (CPU): score jobs are
/// dealt over them and answered as one copy answers them, a ranking sent in between
/// waits for the batches under way and finishes, and the thread stops with the copies'
/// threads.
#[test]
fn score_jobs_dealt_over_two_copies_and_a_ranking_between_them() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let load = || Reranker::load(&dir.join("tiny-model"), ComputeDevice::cpu()).unwrap();
    let (model, copy) = (load(), load());
    let info = ModelInfo {
        name: "tiny".into(),
        folder: dir.join("tiny-model"),
        device: "CPU".into(),
        dtype: "f32".into(),
        gpu_memory_used_mib: None,
        load_seconds: 0.0,
        max_pixels: model.preprocess.max_pixels,
        note: None,
        inputs: PhotoPreparer::of(&model),
    };
    let preparer = PhotoPreparer::of(&model);
    let photos: Vec<PathBuf> = ["beach_landscape.jpg", "portrait.png", "grey_scan.png"]
        .iter()
        .map(|n| dir.join("photos").join(n))
        .collect();
    let documents: Vec<Content> = photos
        .iter()
        .map(|p| Content {
            text: String::new(),
            image: Some(
                preparer
                    .prepare(&crate::library::decode_photo(p).unwrap().image)
                    .unwrap(),
            ),
        })
        .chain(["a beach", "a mountain"].map(|t| Content {
            text: t.into(),
            image: None,
        }))
        .collect();
    let job = |query: &str| {
        let (reply, replies) = tokio::sync::mpsc::unbounded_channel();
        let job = crate::worker::ScoreJob {
            instruction: crate::model::DEFAULT_INSTRUCTION.into(),
            query: Content {
                text: query.into(),
                image: None,
            },
            query_image_key: None,
            documents: documents.clone(),
            max_text_tokens: 64,
            reply,
        };
        (job, replies)
    };
    let limits = BatchLimits {
        max_documents: 2,
        max_images: 1,
        max_tokens: 4096,
    };
    // What one copy answers, in this thread.
    let mut alone = Scheduler::new(limits, Default::default());
    let mut expected = Vec::new();
    for q in ["sand", "snow"] {
        let (j, r) = job(q);
        alone.push(j);
        expected.push(r);
    }
    while !alone.is_idle() {
        alone.step(&model);
    }

    let (commands, command_rx) = bounded(16);
    let (event_tx, events) = bounded(64);
    let mut worker = Worker {
        commands: command_rx,
        events: event_tx,
        shutdown: Arc::new(AtomicBool::new(false)),
        notify: Arc::new(|| {}),
        model: None,
        copies: Vec::new(),
        dealer: None,
        model_key: SharedKey::default(),
        cache: None,
        cache_path: None,
        scheduler: None,
        queued: Arc::new(AtomicUsize::new(0)),
    };
    worker.ready(model, vec![copy], info);
    assert!(worker.dealer.is_some(), "two copies get a dealer");
    worker.scheduler = Some(Scheduler::new(limits, Arc::clone(&worker.queued)));
    let thread = std::thread::spawn(move || worker.run());
    let mut replies = Vec::new();
    for q in ["sand", "snow"] {
        let (j, r) = job(q);
        commands.send(Command::Score(j)).unwrap();
        replies.push(r);
    }
    let (rank, handle) = RankJob::new(RankRequest::new("a beach", photos.clone()), false);
    commands.send(Command::Rank(rank)).unwrap();

    let drain = |mut r: tokio::sync::mpsc::UnboundedReceiver<ScoreReply>, wait: bool| {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match r.try_recv() {
                Ok(reply) => {
                    let done = matches!(reply, ScoreReply::Done { .. });
                    got.push(reply);
                    if done {
                        return got;
                    }
                }
                Err(_) if !wait => return got,
                Err(_) => {
                    assert!(Instant::now() < deadline, "no Done: {got:?}");
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    };
    let scored = |replies: Vec<ScoreReply>| {
        let mut s: Vec<(usize, u32)> = replies
            .iter()
            .filter_map(|r| match r {
                ScoreReply::Scored {
                    index, judgement, ..
                } => Some((*index, judgement.logit_yes.to_bits())),
                _ => None,
            })
            .collect();
        s.sort();
        s
    };
    for (got, want) in replies.into_iter().zip(expected) {
        let (got, want) = (drain(got, true), drain(want, false));
        assert_eq!(scored(got.clone()).len(), documents.len(), "{got:?}");
        assert_eq!(scored(got), scored(want));
    }
    let last = handle
        .replies
        .iter()
        .find(|r| !matches!(r, RankReply::Progress(_)))
        .expect("the ranking's last reply");
    assert!(
        matches!(
            last,
            RankReply::Finished {
                outcome: RankOutcome::Finished,
                ..
            }
        ),
        "{last:?}"
    );
    commands.send(Command::Shutdown).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !thread.is_finished() {
        assert!(Instant::now() < deadline, "the thread did not stop");
        for _ in events.try_iter() {}
        std::thread::sleep(Duration::from_millis(10));
    }
    thread.join().unwrap();
}

#[test]
fn a_long_kernel_load_is_explained_once() {
    assert_eq!(first_start_note(Duration::from_millis(200)), None);
    let note = first_start_note(Duration::from_secs_f64(17.5)).expect("a note");
    assert!(
        note.contains("18 s") && note.contains("next starts"),
        "{note}"
    );
}
