//! `lychee-rerank rank --documents FILE`: text, image and image+text documents ranked
//! from a shell, through the same scheduler as the server (and, with several GPUs, the
//! same dealing of its batches).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::RankArgs;
use crate::model::Reranker;
use crate::model::device::GpuChoice;
use crate::worker::{BatchLimits, Content, Dealer, PhotoPreparer, Scheduler, ScoreJob, ScoreReply};

/// One document of the file, as written.
struct Entry {
    line: usize,
    text: String,
    image: Option<PathBuf>,
}

fn read_documents(file: &Path) -> anyhow::Result<Vec<Entry>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the documents file {}", file.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{line_no} is not a JSON object", file.display()))?;
        let text = match v.get("text") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => bail!("{}:{line_no}: \"text\" must be a string", file.display()),
        };
        let image = match v.get("image") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => {
                let path = PathBuf::from(p);
                // Relative paths are relative to the documents file.
                Some(if path.is_relative() {
                    file.parent().unwrap_or(Path::new(".")).join(path)
                } else {
                    path
                })
            }
            Some(_) => bail!("{}:{line_no}: \"image\" must be a path", file.display()),
        };
        if text.is_empty() && image.is_none() {
            bail!(
                "{}:{line_no} has neither \"text\" nor \"image\"",
                file.display()
            );
        }
        out.push(Entry {
            line: line_no,
            text,
            image,
        });
    }
    Ok(out)
}

pub fn rank_documents(args: &RankArgs, file: &Path) -> anyhow::Result<ExitCode> {
    let mut entries = read_documents(file)?;
    if !args.paths.is_empty() {
        let scan = super::index::scan(&args.paths)?;
        entries.extend(scan.photos.into_iter().map(|p| Entry {
            line: 0,
            text: String::new(),
            image: Some(p),
        }));
    }
    if entries.is_empty() {
        bail!("{} has no documents", file.display());
    }
    // Every GPU by default, when there are several.
    let models = match GpuChoice::or_every(args.gpus.clone(), args.model.cpu) {
        None => vec![super::load::load_model(&args.model)?],
        Some(choice) => super::load::load_on_gpus(&args.model, &choice)?,
    };
    let model = &models[0];
    let mut preparer = PhotoPreparer::of(model);
    preparer.preprocess = preparer
        .preprocess
        .with_bounds(args.min_pixels, args.max_pixels);
    let load = |path: &Path| -> Result<_, String> {
        let photo = crate::library::decode_photo(path).map_err(|e| e.to_string())?;
        preparer.prepare(&photo.image)
    };
    let query_image =
        match &args.query_image {
            Some(p) => Some(load(p).map_err(|e| {
                anyhow::anyhow!("the query image {} cannot be used: {e}", p.display())
            })?),
            None => None,
        };
    let mut failed: Vec<(usize, String)> = Vec::new();
    let mut documents = Vec::new();
    let mut kept = Vec::new();
    // The images are read and prepared side by side.
    let images: Vec<Option<Result<_, String>>> = {
        use rayon::prelude::*;
        entries
            .par_iter()
            .map(|e| e.image.as_deref().map(load))
            .collect()
    };
    for (i, (e, image)) in entries.iter().zip(images).enumerate() {
        let image = match (image, &e.image) {
            (Some(Ok(input)), _) => Some(input),
            (Some(Err(reason)), Some(p)) => {
                failed.push((i, format!("{}: {reason}", p.display())));
                continue;
            }
            _ => None,
        };
        documents.push(Content {
            text: e.text.clone(),
            image,
        });
        kept.push(i);
    }
    let (reply, mut replies) = tokio::sync::mpsc::unbounded_channel();
    let limits = BatchLimits::for_models(&models);
    let mut scheduler = Scheduler::new(limits, Default::default());
    let query_image_key = query_image
        .as_ref()
        .map(|i| i.pixel_key.iter().map(|b| format!("{b:02x}")).collect());
    scheduler.push(ScoreJob {
        instruction: args.instruction.clone(),
        query: Content {
            text: args.query.clone().unwrap_or_default().trim().to_owned(),
            image: query_image,
        },
        query_image_key,
        documents,
        max_text_tokens: args.max_text_tokens,
        reply,
    });
    serve_all(models, &mut scheduler)?;
    let mut scored = Vec::new();
    while let Ok(r) = replies.try_recv() {
        match r {
            ScoreReply::Scored {
                index,
                judgement,
                truncated,
                tokens,
            } => scored.push((kept[index], judgement, truncated, tokens)),
            ScoreReply::DocumentFailed { index, reason } => failed.push((kept[index], reason)),
            ScoreReply::Failed { reason } => bail!("{reason}"),
            ScoreReply::Done { .. } => {}
        }
    }
    scored.sort_by(|a, b| b.1.score().total_cmp(&a.1.score()).then(a.0.cmp(&b.0)));
    let shown = args.top.unwrap_or(scored.len()).min(scored.len());
    let describe = |i: usize| {
        let e = &entries[i];
        let mut v = json!({});
        if e.line > 0 {
            v["line"] = json!(e.line);
        }
        if !e.text.is_empty() {
            v["text"] = json!(e.text);
        }
        if let Some(p) = &e.image {
            v["image"] = json!(p.to_string_lossy());
        }
        v
    };
    let mut out = std::io::stdout().lock();
    for (rank, (i, j, truncated, tokens)) in scored.iter().take(shown).enumerate() {
        let mut line = describe(*i);
        line["rank"] = json!(rank + 1);
        line["score"] = json!(j.score());
        line["logit_yes"] = json!(j.logit_yes);
        line["logit_no"] = json!(j.logit_no);
        line["truncated"] = json!(truncated);
        line["tokens"] = json!(tokens);
        if args.json {
            writeln!(out, "{line}")?;
        } else {
            let what = entries[*i]
                .image
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| entries[*i].text.chars().take(70).collect());
            writeln!(out, "{:>5}  {:>6.4}  {what}", rank + 1, j.score())?;
        }
    }
    for (i, reason) in &failed {
        if args.json {
            let mut line = describe(*i);
            line["error"] = json!(reason);
            writeln!(out, "{line}")?;
        } else {
            eprintln!("could not score document {}: {reason}", i + 1);
        }
    }
    out.flush()?;
    if scored.is_empty() {
        bail!("none of the {} documents could be scored", entries.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// Serves the scheduler's requests on `models`: in this thread with one, dealt over a
/// thread per model with several.
fn serve_all(models: Vec<Reranker>, scheduler: &mut Scheduler) -> anyhow::Result<()> {
    if models.len() == 1 {
        while !scheduler.is_idle() {
            scheduler.step(&models[0]);
        }
        return Ok(());
    }
    let models: Vec<std::sync::Arc<Reranker>> =
        models.into_iter().map(std::sync::Arc::new).collect();
    let mut dealer = Dealer::spawn(&models).context("starting a thread per GPU")?;
    dealer.serve_to_end(scheduler, |text| eprintln!("note: {text}"));
    Ok(())
}
