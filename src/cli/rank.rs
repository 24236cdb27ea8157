//! `lychee-rerank rank`: the headless ranking, through the same code as the window.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::bail;
use serde_json::json;

use super::{ModelArgs, RankArgs};
use crate::cache::scores::ScoreCache;
use crate::hub::ModelSource;
use crate::library::scan_paths;
use crate::model::Reranker;
use crate::worker::{
    PhotoScore, RankEvent, RankOutcome, RankRequest, RankSettings, load_reranker, run_ranking,
};

/// Runs the command; the exit code is non-zero only when nothing could be ranked.
pub fn run(args: RankArgs) -> ExitCode {
    match rank(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lychee-rerank: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the model named by `args`, saying where and on what device on stderr.
pub fn load_model(args: &ModelArgs) -> anyhow::Result<Reranker> {
    let source = ModelSource::parse(&args.model, None)?;
    let (device, note) = args.compute_device();
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    eprintln!(
        "loading {} on {} ({})",
        source.display(),
        device.name,
        device.dtype_name()
    );
    let loaded = load_reranker(&source, device)?;
    if loaded.model.device.is_gpu() {
        eprintln!(
            "model ready in {:.1} s (GPU kernels loaded in {:.1} s)",
            loaded.load_seconds,
            loaded.warm_up.as_secs_f64()
        );
    } else {
        eprintln!("model ready in {:.1} s", loaded.load_seconds);
    }
    Ok(loaded.model)
}

fn rank(args: RankArgs) -> anyhow::Result<ExitCode> {
    let query_text = args.query.clone().unwrap_or_default();
    if query_text.trim().is_empty() && args.query_image.is_none() {
        bail!("give a --query, a --query-image, or both");
    }
    let scan = scan_paths(&args.paths);
    for (path, reason) in &scan.problems {
        eprintln!("skipped {}: {reason}", path.display());
    }
    if scan.photos.is_empty() {
        bail!("no photos found in {}", join_paths(&args.paths));
    }
    eprintln!(
        "{} photos{}",
        scan.photos.len(),
        if scan.ignored > 0 {
            format!(" ({} other files left out)", scan.ignored)
        } else {
            String::new()
        }
    );
    let model = load_model(&args.model)?;
    let request = RankRequest::new(query_text, scan.photos.clone())
        .with_query_image(args.query_image.clone())
        .with_instruction(args.instruction.clone())
        .with_pixels(args.min_pixels, args.max_pixels);
    let total = request.photos.len();
    let mut results: Vec<Option<Result<(PhotoScore, bool), String>>> = vec![None; total];
    let mut progress = Progress::new(total);
    let settings = RankSettings::for_model(&model);
    let cache = if args.no_cache {
        None
    } else {
        match ScoreCache::open(&ScoreCache::default_path()) {
            Ok((cache, warning)) => {
                if let Some(w) = warning {
                    eprintln!("warning: {w}");
                }
                Some(std::sync::Mutex::new(cache))
            }
            Err(e) => {
                eprintln!("warning: {e}; ranking without it");
                None
            }
        }
    };
    let outcome = run_ranking(
        &model,
        &request,
        settings,
        cache.as_ref(),
        &AtomicBool::new(false),
        |event| match event {
            RankEvent::PhotoScored {
                index,
                score,
                cached,
            } => {
                progress.step(&request.photos[index]);
                results[index] = Some(Ok((score, cached)));
            }
            RankEvent::PhotoFailed { index, reason } => {
                progress.step(&request.photos[index]);
                results[index] = Some(Err(reason));
            }
            RankEvent::Notice { text } => progress.note(&text),
            RankEvent::Started { .. } | RankEvent::PhotoStarted { .. } => {}
        },
    )?;
    progress.finish();
    debug_assert_eq!(outcome, RankOutcome::Finished);

    let mut scored: Vec<(&PathBuf, &PhotoScore, bool)> = Vec::new();
    let mut failed: Vec<(&PathBuf, &str)> = Vec::new();
    for (path, result) in request.photos.iter().zip(&results) {
        match result {
            Some(Ok((score, cached))) => scored.push((path, score, *cached)),
            Some(Err(reason)) => failed.push((path, reason)),
            None => failed.push((path, "not scored")),
        }
    }
    scored.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then_with(|| a.0.cmp(b.0)));
    let shown = args.top.unwrap_or(scored.len()).min(scored.len());
    let mut out = std::io::stdout().lock();
    if args.json {
        for (rank, (path, s, cached)) in scored.iter().take(shown).enumerate() {
            let line = json!({
                "cached": cached,
                "path": path.to_string_lossy(),
                "rank": rank + 1,
                "score": s.score,
                "logit_yes": s.logit_yes,
                "logit_no": s.logit_no,
                "visual_tokens": s.visual_tokens,
                "input_size": [s.input_size.0, s.input_size.1],
                "original_size": [s.original_size.0, s.original_size.1],
                "seconds": s.seconds,
                "lowered_resolution": s.lowered_resolution,
            });
            writeln!(out, "{line}")?;
        }
        for (path, reason) in &failed {
            writeln!(
                out,
                "{}",
                json!({ "path": path.to_string_lossy(), "error": reason })
            )?;
        }
    } else {
        writeln!(out, "{:>5}  {:>6}  photo", "rank", "score")?;
        for (rank, (path, s, _)) in scored.iter().take(shown).enumerate() {
            writeln!(out, "{:>5}  {:>6.4}  {}", rank + 1, s.score, path.display())?;
        }
        for (path, reason) in &failed {
            eprintln!("could not score {}: {reason}", path.display());
        }
    }
    out.flush()?;
    if scored.is_empty() {
        bail!("none of the {total} photos could be scored");
    }
    Ok(ExitCode::SUCCESS)
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Progress on stderr: one updating line on a terminal, a line per photo otherwise.
struct Progress {
    total: usize,
    done: usize,
    start: Instant,
    terminal: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        Progress {
            total,
            done: 0,
            start: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn step(&mut self, path: &std::path::Path) {
        self.done += 1;
        let secs = self.start.elapsed().as_secs_f64();
        let rate = self.done as f64 / secs.max(1e-9);
        let left = (self.total - self.done) as f64 / rate.max(1e-9);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let line = format!(
            "photo {} of {} · {rate:.1} photos/s · {left:.0} s left · {name}",
            self.done, self.total
        );
        if self.terminal {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }

    /// A line of its own, above the progress line.
    fn note(&self, text: &str) {
        if self.terminal {
            eprint!("\r\x1b[2K");
        }
        eprintln!("note: {text}");
    }

    fn finish(&self) {
        if self.terminal {
            eprintln!();
        }
        let secs = self.start.elapsed().as_secs_f64();
        eprintln!("ranked {} photos in {secs:.1} s", self.done);
    }
}
