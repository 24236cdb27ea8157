//! `lychee-rerank bench`: ranks synthetic photos through the real pipeline (JPEG files
//! decoded on CPU threads, the model in batches) and reports speed and memory, as JSON
//! comparable with scripts/bench_transformers.py.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;

use crate::model::{Reranker, lychee_7b_config};
use crate::worker::rank::{RankEvent, RankRequest, RankSettings, run_ranking};

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// A model folder to measure; without it, random weights of the 7B shape.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// With random weights: the model folder whose tokenizer and preprocessor settings
    /// are used.
    #[arg(long, value_name = "DIR", default_value = "tests/fixtures/tiny-model")]
    pub tokenizer_from: PathBuf,
    /// Number of photos.
    #[arg(long, default_value_t = 64)]
    pub photos: usize,
    /// Photo size, WIDTHxHEIGHT.
    #[arg(long, default_value = "1024x768")]
    pub size: String,
    /// Photos per batch (default: as many as the GPU memory holds, up to 8).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Most pixels a photo is scaled to (default: the model's, at most 1280 tokens).
    #[arg(long)]
    pub max_pixels: Option<usize>,
    /// Also write the report to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Run on the CPU.
    #[arg(long)]
    pub cpu: bool,
    /// Number format: bf16 or f32.
    #[arg(long, value_parser = ["bf16", "f32"])]
    pub dtype: Option<String>,
    /// Also split each batch's time between the vision tower and the language model
    /// (one more wait for the device per batch).
    #[arg(long)]
    pub stages: bool,
    /// Then rank the same photos under a second query, whose photos' visual tokens come
    /// from memory (as when a user refines a description), and report its speed too.
    #[arg(long)]
    pub second_query: bool,
    /// Time single tensor operations at the model's shapes instead.
    #[arg(long, hide = true)]
    pub ops: bool,
}

pub fn run(args: BenchArgs) -> ExitCode {
    match bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lychee-rerank bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn parse_size(s: &str) -> anyhow::Result<(u32, u32)> {
    let (w, h) = s.split_once('x').context("--size is WIDTHxHEIGHT")?;
    Ok((w.trim().parse()?, h.trim().parse()?))
}

/// Writes `n` distinct synthetic JPEG photos of `size` into `dir`.
pub fn write_photos(dir: &Path, n: usize, (w, h): (u32, u32)) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths = Vec::with_capacity(n);
    for i in 0..n {
        let seed = i as u32 * 2_654_435_761;
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let noise = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663) ^ seed) % 23;
            let sky = y * 255 / h.max(1);
            let sun = {
                let (cx, cy) = ((seed % w.max(1)) as i64, (h / 4) as i64);
                let d2 = (x as i64 - cx).pow(2) + (y as i64 - cy).pow(2);
                d2 < (h as i64 / 8).pow(2)
            };
            if sun {
                image::Rgb([250, 220, 90])
            } else if y > h * 2 / 3 {
                image::Rgb([
                    (120 + noise * 3) as u8,
                    (100 + (x * 7 / w.max(1)) * 10) as u8,
                    60,
                ])
            } else {
                image::Rgb([
                    (90 + noise) as u8,
                    (140 + sky / 4) as u8,
                    (200 + sky / 8).min(255) as u8,
                ])
            }
        });
        let path = dir.join(format!("bench-{i:05}.jpg"));
        img.save(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        paths.push(path);
    }
    Ok(paths)
}

fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    let size = parse_size(&args.size)?;
    if args.photos == 0 {
        bail!("--photos must be at least 1");
    }
    let (device, note) = super::ModelArgs {
        model: String::new(),
        cpu: args.cpu,
        dtype: args.dtype.clone(),
    }
    .compute_device();
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    if args.ops {
        eprintln!(
            "single operations on {} ({})",
            device.name,
            device.dtype_name()
        );
        return Ok(super::ops::run(&device.device, device.dtype)?);
    }
    let device_name = device.name.clone();
    let dtype = device.dtype_name();
    // The photos first, so that the time from loading to the first score is the model's.
    let tmp = tempfile_dir()?;
    let photos = write_photos(&tmp, args.photos, size)?;
    let load_start = Instant::now();
    let (model, model_name) = match &args.model {
        Some(dir) => (Reranker::load(dir, device)?, dir.display().to_string()),
        None => (
            Reranker::random(lychee_7b_config(), &args.tokenizer_from, device).with_context(
                || {
                    format!(
                        "random 7B weights with the tokenizer of {}",
                        args.tokenizer_from.display()
                    )
                },
            )?,
            "random weights, Lychee-rerank-mm 7B shape".to_owned(),
        ),
    };
    let load_s = load_start.elapsed().as_secs_f64();
    let warmup_s = model.warm_up()?.as_secs_f64();
    let after_load = model.device.memory();
    let pool_after_load = model.device.memory_pool();
    model.device.reset_memory_peaks();

    let request = RankRequest::new("a red umbrella on a sunny beach", photos)
        .with_pixels(None, args.max_pixels);
    let settings = RankSettings {
        max_batch: args.batch.unwrap_or_else(|| model.suggested_batch()),
        time_stages: args.stages,
    };
    eprintln!(
        "{} photos of {}x{} on {device_name} ({dtype}), batches of up to {}",
        args.photos, size.0, size.1, settings.max_batch
    );
    crate::model::reset_stage_totals();
    // The warm-up's marks (LYCHEE_GAPS) are not the ranking's.
    let _ = crate::model::device_gaps();
    let start = Instant::now();
    let mut first_score = None;
    let mut first_score_since_load = None;
    let mut last_score = start;
    let mut scored = 0usize;
    let mut failed = Vec::new();
    let mut vision_s = 0.0;
    let mut total_s = 0.0;
    let mut tokens = 0;
    let mut lowered = 0usize;
    let mut notices = Vec::new();
    let mut peak_used = after_load.map(|(f, t)| t - f).unwrap_or(0);
    run_ranking(
        &model,
        &request,
        settings,
        None,
        &AtomicBool::new(false),
        |event| match event {
            RankEvent::PhotoScored { score, .. } => {
                let now = Instant::now();
                first_score.get_or_insert(now - start);
                first_score_since_load.get_or_insert(now - load_start);
                last_score = now;
                scored += 1;
                vision_s += score.vision_seconds.unwrap_or(0.0);
                total_s += score.seconds;
                tokens = score.visual_tokens;
                lowered += usize::from(score.lowered_resolution);
                if let Some((free, total)) = model.device.memory() {
                    peak_used = peak_used.max(total - free);
                }
            }
            RankEvent::PhotoFailed { index, reason } => failed.push(format!("{index}: {reason}")),
            RankEvent::Notice { text } => {
                eprintln!("note: {text}");
                notices.push(text);
            }
            _ => {}
        },
    )?;
    let wall = (last_score - start).as_secs_f64();
    // LYCHEE_GAPS=1: the device's own time between the points the model marks.
    let gaps: serde_json::Map<String, serde_json::Value> = crate::model::device_gaps()
        .into_iter()
        .map(|g| {
            let per_photo = |ms: f64| ms / scored.max(1) as f64;
            let per_time = g.queued_ahead_ms / g.times.max(1) as f64;
            (
                g.pair,
                json!({"ms": g.device_ms, "times": g.times, "ms_per_photo": per_photo(g.device_ms),
                       "host_ms_per_photo": per_photo(g.host_ms), "queued_ahead_ms": per_time}),
            )
        })
        .collect();
    let pool_peak = model.device.memory_pool();
    let second = if args.second_query {
        let request = RankRequest {
            query_text: "a grey city street at night".into(),
            ..request
        };
        let hits_before = model.visual_cache_stats().2;
        let start = Instant::now();
        let mut scored = 0usize;
        run_ranking(
            &model,
            &request,
            settings,
            None,
            &AtomicBool::new(false),
            |event| scored += usize::from(matches!(event, RankEvent::PhotoScored { .. })),
        )?;
        let wall = start.elapsed().as_secs_f64();
        Some((
            scored as f64 / wall,
            model.visual_cache_stats().2 - hits_before,
        ))
    } else {
        None
    };
    let _ = std::fs::remove_dir_all(&tmp);
    if scored == 0 {
        bail!("no photo was scored: {}", failed.join("; "));
    }
    let report = json!({
        "impl": "candle",
        "device": device_name,
        "dtype": dtype,
        "model": model_name,
        "photos": scored,
        "failed": failed.len(),
        "first_failure": failed.first(),
        "lowered_resolution": lowered,
        "notices": notices,
        "size": [size.0, size.1],
        "visual_tokens": tokens,
        "batch": settings.max_batch,
        "photos_per_s": scored as f64 / wall,
        "ms_per_photo": 1e3 * wall / scored as f64,
        "vision_ms_per_photo": args.stages.then(|| 1e3 * vision_s / scored as f64),
        "text_ms_per_photo": args.stages.then(|| 1e3 * (total_s - vision_s) / scored as f64),
        "first_score_ms": first_score.map(|d| d.as_secs_f64() * 1e3),
        "load_s": load_s,
        // From the start of loading (weights read from disk or the page cache, kernels
        // loaded) to the first photo's score: what a user waits for at a cold start.
        "load_to_first_score_s": first_score_since_load.map(|d| d.as_secs_f64()),
        "warmup_s": warmup_s,
        "gpu_mib_after_load": after_load.map(|(f, t)| (t - f) >> 20),
        "gpu_mib_peak_sampled": (peak_used > 0).then_some(peak_used >> 20),
        // The memory pool: in use after loading, and the most in use (and reserved) while
        // ranking; their difference is what the batches took.
        "pool_mib_after_load": pool_after_load.map(|(now, _, _)| now >> 20),
        "pool_mib_used_peak": pool_peak.map(|(_, high, _)| high >> 20),
        "pool_mib_reserved_peak": pool_peak.map(|(_, _, high)| high >> 20),
        "measured_mib_per_photo": model.measured_photo_bytes().map(|b| b >> 20),
        "estimated_mib_per_photo": model.bytes_per_photo(model.preprocess.with_bounds(None, args.max_pixels).max_pixels) >> 20,
        "second_query_photos_per_s": second.map(|(rate, _)| rate),
        "second_query_tokens_from_memory": second.map(|(_, hits)| hits),
        "device_gaps": (!gaps.is_empty()).then_some(gaps),
    });
    println!("{report}");
    let profile = crate::model::stage_totals();
    if !profile.is_empty() {
        eprintln!(
            "{:<22} {:>10} {:>8} {:>10}",
            "stage", "total ms", "calls", "ms/photo"
        );
        for (name, total, calls) in profile {
            let ms = total.as_secs_f64() * 1e3;
            eprintln!(
                "{name:<22} {ms:>10.1} {calls:>8} {:>10.2}",
                ms / scored as f64
            );
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, format!("{report}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("lychee-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
