//! The window, driven like a person drives it (egui_kittest): type a query, drop a folder,
//! press Rerank, open a model output, cancel a long run. The ranking runs on the real
//! inference thread with the tiny fixture model.
#![cfg(feature = "gui")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::{Queryable, by};
use lychee_rerank::app::{AppOptions, LycheeApp, ModelStatus};
use lychee_rerank::hub::cache::HfCache;
use lychee_rerank::hub::download::HubConfig;
use lychee_rerank::model::device::GpuInfo;

const QUERY: &str = "a red umbrella on a sunny beach";

/// A file dropped on the window, as the windowing backend hands it over.
#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

fn harness(cache: &Path) -> Harness<'static, LycheeApp> {
    harness_with(
        cache,
        common::model_dir().to_string_lossy().into_owned(),
        None,
    )
}

fn harness_with(
    cache: &Path,
    model: String,
    hub: Option<HubConfig>,
) -> Harness<'static, LycheeApp> {
    harness_full(cache, model, hub, None)
}

/// The window with the tiny judge and, when given, a first-stage embedder.
fn harness_full(
    cache: &Path,
    model: String,
    hub: Option<HubConfig>,
    embedder: Option<PathBuf>,
) -> Harness<'static, LycheeApp> {
    harness_gpus(cache, model, hub, embedder, None)
}

/// The same, offering `gpus` in the model panel instead of the machine's.
fn harness_gpus(
    cache: &Path,
    model: String,
    hub: Option<HubConfig>,
    embedder: Option<PathBuf>,
    gpus: Option<Vec<GpuInfo>>,
) -> Harness<'static, LycheeApp> {
    let cache = cache.to_path_buf();
    Harness::builder()
        .with_size(egui::vec2(1280.0, 820.0))
        .allow_missing_glyphs()
        .build_eframe(move |cc| {
            let hub = hub.unwrap_or_else(|| HubConfig {
                endpoint: "http://127.0.0.1:9".into(),
                cache: HfCache::new(cache.join("hub")),
                token: None,
                offline: true,
            });
            LycheeApp::new(
                &cc.egui_ctx,
                None,
                AppOptions {
                    paths: Vec::new(),
                    cache_dir: cache.clone(),
                    model: Some(model),
                    load_model: true,
                    hub,
                    score_cache: None,
                    load_embedder: embedder.is_some(),
                    embedder: embedder.map(|e| e.to_string_lossy().into_owned()),
                    index: Some(cache.join("index.sqlite3")),
                    gpus: gpus.clone(),
                },
            )
        })
}

fn wait_for(h: &mut Harness<'_, LycheeApp>, what: &str, done: impl Fn(&LycheeApp) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(h.state()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    h.step();
}

fn drop_folder(h: &mut Harness<'_, LycheeApp>, dir: &Path) {
    h.input_mut()
        .dropped_files
        .push(Arc::new(Dropped(dir.to_path_buf())));
    h.step();
    wait_for(h, "the folder to be read", |a| {
        !a.session.library.is_empty() && !a.session.library.scanning()
    });
}

fn type_query(h: &mut Harness<'_, LycheeApp>) {
    h.get_by_role(egui::accesskit::Role::MultilineTextInput)
        .click();
    h.step();
    h.get_by_role(egui::accesskit::Role::MultilineTextInput)
        .type_text(QUERY);
    h.step();
    assert_eq!(h.state().state.query, QUERY);
}

fn names(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_dropped_folder_ranks_like_the_rank_command() {
    let cache = tempfile::tempdir().unwrap();
    let mut h = harness(cache.path());
    // before anything: the drop area says what to do, and Rerank says why it is off
    h.step();
    h.get_by_label("Drop photos or folders here");
    wait_for(&mut h, "the model", |a| {
        matches!(a.session.model, ModelStatus::Ready(_))
    });
    assert!(h.state().cannot_rank_because().is_some());

    drop_folder(&mut h, &common::photo_dir());
    assert_eq!(
        h.state().session.library.len(),
        common::reference().photos.len()
    );
    type_query(&mut h);
    h.get_by_label("Rerank").click();
    h.step();
    wait_for(&mut h, "the ranking", |a| {
        a.session.run.as_ref().is_some_and(|r| !r.active())
    });
    let app_order = names(&h.state_mut().ranked());

    let out = Command::new(env!("CARGO_BIN_EXE_lychee-rerank"))
        .args(["rank", "--json", "--query", QUERY, "--model"])
        .arg(common::model_dir())
        .arg(common::photo_dir())
        .output()
        .unwrap();
    assert!(out.status.success());
    let cli_order: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            Path::new(v["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(app_order, cli_order);

    // The best photo's model output.
    h.get(by().label_contains("Rank 1 ·")).click();
    // a window takes a frame to size itself before it shows
    h.run_steps(3);
    assert_eq!(
        h.state()
            .session
            .inspect
            .as_ref()
            .map(|p| names(std::slice::from_ref(p))[0].clone()),
        Some(app_order[0].clone())
    );
    h.get_by_label("Score P(yes)");
    h.get_by_label("Model input size");
    h.get_by_label("The prompt as the model read it:");
    h.get_by_label("Open photo");
    h.get_by_label("Copy path");
}

#[test]
fn cancel_stops_and_keeps_the_scores() {
    let cache = tempfile::tempdir().unwrap();
    let photos = tempfile::tempdir().unwrap();
    // many photos, so that the run is still going when Cancel is pressed
    for i in 0..60 {
        for f in [
            "beach_landscape.jpg",
            "portrait.png",
            "large_photo.jpg",
            "palette.gif",
        ] {
            std::fs::copy(
                common::photo_dir().join(f),
                photos.path().join(format!("{i:03}-{f}")),
            )
            .unwrap();
        }
    }
    let mut h = harness(cache.path());
    wait_for(&mut h, "the model", |a| {
        matches!(a.session.model, ModelStatus::Ready(_))
    });
    drop_folder(&mut h, photos.path());
    let total = h.state().session.library.len();
    assert_eq!(total, 240);
    type_query(&mut h);
    h.get_by_label("Rerank").click();
    h.step();
    wait_for(&mut h, "a few scores", |a| {
        a.session.run.as_ref().is_some_and(|r| r.done >= 3)
    });
    h.get_by_label("Cancel").click();
    h.step();
    wait_for(&mut h, "the ranking to stop", |a| {
        a.session.run.as_ref().is_some_and(|r| !r.active())
    });
    let app = h.state_mut();
    let run = app.session.run.as_ref().unwrap();
    assert!(
        matches!(run.end, Some(lychee_rerank::app::RunEnd::Cancelled { .. })),
        "{:?}",
        run.end
    );
    let done = run.done;
    assert!(done >= 3 && done < total, "{done} of {total}");
    assert_eq!(app.session.outcomes.len(), done + run.failed);
    // the scores stay and stay ranked
    assert_eq!(app.ranked().len(), done);
    h.get(by().label_contains("Stopped after"));
    h.get(by().label_contains("Rank 1 ·"));
}

#[test]
fn ten_thousand_photos_lay_out_only_the_visible_rows() {
    let cache = tempfile::tempdir().unwrap();
    let photos = tempfile::tempdir().unwrap();
    for i in 0..10_000 {
        std::fs::write(photos.path().join(format!("{i:05}.jpg")), b"").unwrap();
    }
    let mut h = harness(cache.path());
    drop_folder(&mut h, photos.path());
    assert_eq!(h.state().session.library.len(), 10_000);
    let frames = 30;
    let start = Instant::now();
    for _ in 0..frames {
        h.step();
    }
    let still = start.elapsed() / frames;
    let start = Instant::now();
    for _ in 0..frames {
        h.event(egui::Event::MouseWheel {
            unit: egui::MouseWheelUnit::Point,
            delta: egui::vec2(0.0, -400.0),
            modifiers: egui::Modifiers::NONE,
            phase: egui::TouchPhase::Move,
            source: egui::MouseWheelSource::Wheel,
        });
        h.step();
    }
    let scrolling = start.elapsed() / frames;
    eprintln!(
        "10,000 placeholder tiles: {still:?} per frame still, {scrolling:?} per frame scrolling"
    );
    // Virtualized: only the rows that were on screen asked for thumbnails.
    let asked = h.state().thumbnail_requests();
    assert!(asked > 0 && asked < 400, "{asked} thumbnails asked for");
}

#[test]
fn a_fresh_start_downloads_the_model_then_it_is_ready() {
    let server = common::hub_server::HubServer::start(&common::model_dir(), "vec-ai/tiny-lychee");
    let cache = tempfile::tempdir().unwrap();
    let hub = HubConfig {
        endpoint: server.endpoint.clone(),
        cache: HfCache::new(cache.path().join("hub")),
        token: None,
        offline: false,
    };
    let mut h = harness_with(cache.path(), "vec-ai/tiny-lychee".into(), Some(hub));
    h.step();
    // one sentence and one button: what, how big, from where, to where
    assert!(matches!(
        h.state().session.model,
        ModelStatus::Missing { .. }
    ));
    h.get(
        by().label_contains(
            "The model vec-ai/tiny-lychee (several GB) will be downloaded once from",
        ),
    );
    // (the embedder, not loaded in this test, offers its own download below)
    h.get(by().label("Download several GB")).click();
    h.step();
    wait_for(&mut h, "the download and the model", |a| {
        matches!(a.session.model, ModelStatus::Ready(_))
    });
    match &h.state().session.model {
        ModelStatus::Ready(info) => assert_eq!(info.name, "vec-ai/tiny-lychee"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn clear_all_stops_the_ranking_it_leaves_behind() {
    let cache = tempfile::tempdir().unwrap();
    let photos = tempfile::tempdir().unwrap();
    for i in 0..60 {
        for f in ["beach_landscape.jpg", "portrait.png", "large_photo.jpg"] {
            std::fs::copy(
                common::photo_dir().join(f),
                photos.path().join(format!("{i:03}-{f}")),
            )
            .unwrap();
        }
    }
    let mut h = harness(cache.path());
    wait_for(&mut h, "the model", |a| {
        matches!(a.session.model, ModelStatus::Ready(_))
    });
    drop_folder(&mut h, photos.path());
    type_query(&mut h);
    h.get_by_label("Rerank").click();
    h.step();
    wait_for(&mut h, "a few scores", |a| {
        a.session.run.as_ref().is_some_and(|r| r.done >= 3)
    });
    let cancel = Arc::clone(
        &h.state()
            .session
            .run
            .as_ref()
            .unwrap()
            .handle
            .as_ref()
            .unwrap()
            .cancel,
    );
    h.get_by_label("Clear all").click();
    h.step();
    assert!(
        cancel.load(std::sync::atomic::Ordering::SeqCst),
        "the cleared photos' ranking was told to stop"
    );
    assert!(h.state().session.run.is_none());
    assert!(h.state().session.library.is_empty());
    // the next ranking runs at once, not behind the cleared one
    drop_folder(&mut h, &common::photo_dir());
    h.get_by_label("Rerank").click();
    h.step();
    wait_for(&mut h, "the next ranking", |a| {
        a.session.run.as_ref().is_some_and(|r| !r.active())
    });
    let run = h.state().session.run.as_ref().unwrap();
    assert!(
        matches!(run.end, Some(lychee_rerank::app::RunEnd::Finished { .. })),
        "{:?}",
        run.end
    );
    assert_eq!(run.photos.len(), common::reference().photos.len());
}

#[test]
fn a_photo_without_a_preview_says_why() {
    let cache = tempfile::tempdir().unwrap();
    let photos = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::photo_dir().join("portrait.png"),
        photos.path().join("portrait.png"),
    )
    .unwrap();
    let broken = photos.path().join("broken.jpg");
    std::fs::write(&broken, b"this is a note, not a photo").unwrap();
    let reason = lychee_rerank::library::decode_photo(&broken)
        .unwrap_err()
        .to_string();
    let mut h = harness_with(cache.path(), "no/model-here".into(), None);
    drop_folder(&mut h, photos.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        h.step();
        if h.query(by().label_contains("no preview: ")).is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "no tile said it has no preview");
        std::thread::sleep(Duration::from_millis(10));
    }
    // the broken photo's tile names the reason
    h.get(by().label_contains(&format!("broken.jpg · no preview: {reason}")));
}

#[test]
fn two_stages_show_the_first_guess_then_the_judges_order() {
    let cache = tempfile::tempdir().unwrap();
    let embedder = common::fixtures().join("tiny-siglip");
    let mut h = harness_full(
        cache.path(),
        common::model_dir().to_string_lossy().into_owned(),
        None,
        Some(embedder.clone()),
    );
    wait_for(&mut h, "the model and the embedder", |a| {
        matches!(a.session.model, ModelStatus::Ready(_)) && a.session.index.ready()
    });
    h.get(by().label_contains("Index (first stage)"));
    h.state_mut().state.shortlist = 4;
    drop_folder(&mut h, &common::photo_dir());
    wait_for(&mut h, "the library to be indexed", |a| {
        a.session.index.complete()
    });
    let n = common::reference().photos.len();
    h.get(by().label_contains(&format!("{n} of {n} photos indexed")));
    type_query(&mut h);
    h.get_by_label("Rerank").click();
    h.step();
    wait_for(&mut h, "the first stage", |a| {
        a.session
            .run
            .as_ref()
            .is_some_and(|r| r.first_stage.is_some())
    });
    // every photo is shown at once, in the first stage's order, as a first guess
    assert_eq!(h.state_mut().ranked().len(), n);
    h.get(by().label_contains("First guess #5 ·"));
    wait_for(&mut h, "the judge", |a| {
        a.session.run.as_ref().is_some_and(|r| !r.active())
    });
    assert_eq!(
        h.state().session.outcomes.len(),
        4,
        "the judge saw the shortlist only"
    );

    // the same as the command line's two stages
    let out = Command::new(env!("CARGO_BIN_EXE_lychee-rerank"))
        .env("LYCHEE_CACHE_DIR", cache.path().join("cli"))
        .args([
            "rank",
            "--json",
            "--no-cache",
            "--shortlist",
            "4",
            "--query",
            QUERY,
        ])
        .arg("--embedder")
        .arg(&embedder)
        .arg("--model")
        .arg(common::model_dir())
        .arg(common::photo_dir())
        .output()
        .unwrap();
    assert!(out.status.success());
    let cli_order: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            Path::new(v["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let app_order = names(&h.state_mut().ranked());
    assert_eq!(
        app_order[..4],
        cli_order[..],
        "judged photos first, best first"
    );
    assert_eq!(
        app_order.len(),
        n,
        "the rest stay reachable, in the first stage's order"
    );

    // the best photo's model output shows both stages
    h.get(by().label_contains("Rank 1 ·")).click();
    h.run_steps(3);
    h.get_by_label("First-stage rank");
    h.get_by_label("First-stage similarity");
    h.key_press(egui::Key::Escape);
    h.state_mut().session.inspect = None;
    h.step();

    // "show more" judges the next four
    h.get(by().label_contains("Show more (judge the next 4)"))
        .click();
    h.step();
    wait_for(&mut h, "the next four", |a| {
        a.session.run.as_ref().is_some_and(|r| !r.active()) && a.session.outcomes.len() == 8
    });
}

#[test]
fn the_window_keeps_drawing_while_ten_thousand_photos_are_indexed() {
    let cache = tempfile::tempdir().unwrap();
    let photos = tempfile::tempdir().unwrap();
    let base = std::fs::read(common::photo_dir().join("tiny_icon.png")).unwrap();
    let n = 10_000;
    for i in 0..n {
        let mut bytes = base.clone();
        bytes.extend_from_slice(format!("photo {i}").as_bytes());
        std::fs::write(photos.path().join(format!("{i:04}.png")), bytes).unwrap();
    }
    let mut h = harness_full(
        cache.path(),
        common::model_dir().to_string_lossy().into_owned(),
        None,
        Some(common::fixtures().join("tiny-siglip")),
    );
    wait_for(&mut h, "the embedder", |a| a.session.index.ready());
    drop_folder(&mut h, photos.path());
    // Frames while the index thread works: the window never waits for it.
    let (mut frames, mut slowest) = (0u32, Duration::ZERO);
    let mut saw_progress = false;
    let deadline = Instant::now() + Duration::from_secs(300);
    while !h.state().session.index.complete() {
        assert!(Instant::now() < deadline, "indexing did not finish");
        let start = Instant::now();
        h.step();
        slowest = slowest.max(start.elapsed());
        frames += 1;
        let index = &h.state().session.index;
        saw_progress |= index.running && index.indexed > 0 && index.indexed < n;
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(h.state().session.index.indexed, n);
    assert!(saw_progress, "the progress was shown while indexing");
    assert!(frames > 10, "{frames} frames");
    eprintln!("indexed {n} photos over {frames} frames; the slowest frame took {slowest:?}");
}

#[test]
fn the_model_panel_lists_the_gpus_and_a_choice_reloads_the_model() {
    let cache = tempfile::tempdir().unwrap();
    let gpu = |ordinal: usize, name: &str| GpuInfo {
        ordinal,
        name: name.into(),
        memory_mib: 24 * 1024,
    };
    let mut h = harness_gpus(
        cache.path(),
        common::model_dir().to_string_lossy().into_owned(),
        None,
        None,
        Some(vec![gpu(0, "First GPU"), gpu(1, "Second GPU")]),
    );
    wait_for(&mut h, "the model", |a| {
        matches!(a.session.model, ModelStatus::Ready(_))
    });
    assert_eq!(h.state().state.gpus, None, "every GPU by default");
    // Leaving the second GPU out keeps the first and reloads the model there. This build
    // and machine have no GPU, so that load fails and says which GPU and what to do.
    h.get_by_label("GPU 1 · Second GPU · 24 GB").click();
    h.step();
    assert_eq!(h.state().state.gpus, Some(vec![0]));
    wait_for(&mut h, "the load on GPU 0", |a| {
        matches!(a.session.model, ModelStatus::Failed { .. })
    });
    let ModelStatus::Failed { reason, .. } = &h.state().session.model else {
        unreachable!()
    };
    assert!(reason.contains("GPU 0"), "{reason}");
    assert!(reason.contains("choose another GPU"), "{reason}");
    // The one GPU left cannot be unticked: nothing changes.
    h.get_by_label("GPU 0 · First GPU · 24 GB").click();
    h.step();
    assert_eq!(h.state().state.gpus, Some(vec![0]));
    // Both again: every GPU, and the model loads as before.
    h.get_by_label("GPU 1 · Second GPU · 24 GB").click();
    h.step();
    assert_eq!(h.state().state.gpus, None);
    wait_for(&mut h, "the model again", |a| {
        matches!(a.session.model, ModelStatus::Ready(_))
    });
}
