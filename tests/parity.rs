//! The scorer against transformers on the tiny checkpoint (f32, CPU): token ids, image
//! grids, pixel values, the vision tower, the yes/no logits, and whole scores from the
//! photo files. The references come from scripts/make_fixture.py.

mod common;

use std::sync::OnceLock;

use common::{photo_dir, reference, rel_err, tensor};
use lychee_rerank::library::decode_photo;
use lychee_rerank::model::preprocess::{patchify, preprocess, resize_for_model};
use lychee_rerank::model::prompt::full_prompt_ids;
use lychee_rerank::model::resample::Rgb8;
use lychee_rerank::model::{ComputeDevice, PhotoInput, QueryInput, Reranker};

/// Relative tolerance of f32 results fed the reference's own inputs.
const F32_TOLERANCE: f64 = 1e-4;

fn reranker() -> &'static Reranker {
    static MODEL: OnceLock<Reranker> = OnceLock::new();
    MODEL.get_or_init(|| {
        Reranker::load(&common::model_dir(), ComputeDevice::cpu()).expect("tiny model loads")
    })
}

/// The reference's resized image of `key`, as the model reads it.
fn reference_resized(key: &str) -> Rgb8 {
    let t = tensor(&format!("{key}.resized_u8"));
    let (h, w, _) = t.dims3().unwrap();
    Rgb8::new(w, h, t.flatten_all().unwrap().to_vec1::<u8>().unwrap()).unwrap()
}

/// The reference's pixel values of `key` (rebuilt from its resized image).
fn reference_input(key: &str) -> PhotoInput {
    let m = reranker();
    let p = &reference().photos[key];
    patchify(
        &reference_resized(key),
        &m.config.vision,
        &m.preprocess,
        (p.original_size[0], p.original_size[1]),
    )
}

fn visual_tokens(key: &str) -> usize {
    let g = reference().photos[key].grid_thw;
    g[1] * g[2] / 4
}

#[test]
fn token_ids_equal_transformers() {
    let r = reference();
    let tok = &reranker().tokenizer;
    assert_eq!((tok.ids.yes, tok.ids.no), (r.yes_id, r.no_id));
    for case in &r.cases {
        let q = &r.queries[&case.query];
        let ids = full_prompt_ids(
            tok,
            r.instruction(q),
            &q.text,
            q.image.as_deref().map(visual_tokens),
            visual_tokens(&case.photo),
        )
        .unwrap();
        assert_eq!(ids, case.input_ids, "{} / {}", case.query, case.photo);
    }
}

#[test]
fn grids_and_resized_images_match() {
    let r = reference();
    let m = reranker();
    let mut report = Vec::new();
    for key in r.photo_keys() {
        let p = &r.photos[key];
        let photo =
            decode_photo(&photo_dir().join(&p.file)).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(
            [photo.image.width, photo.image.height],
            p.original_size,
            "{key}: size as displayed"
        );
        let input = preprocess(&photo.image, &m.config.vision, &m.preprocess).unwrap();
        assert_eq!(
            [1, input.grid_h, input.grid_w],
            p.grid_thw,
            "{key}: grid_thw"
        );
        assert_eq!(
            [input.input_size.0, input.input_size.1],
            p.input_size,
            "{key}"
        );

        let ours = resize_for_model(&photo.image, &m.config.vision, &m.preprocess).unwrap();
        let theirs = reference_resized(key);
        let diffs: Vec<i32> = ours
            .data
            .iter()
            .zip(&theirs.data)
            .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
            .collect();
        let max = *diffs.iter().max().unwrap();
        let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
        report.push(format!("{key:12} {:20} max {max:3} mean {mean:.4}", p.file));
        // Lossless formats decode to the same pixels, and the resize is the reference's
        // integer arithmetic: equal to the bit. Lossy formats differ by the decoders'
        // rounding (libjpeg-turbo / libwebp in the reference, zune-jpeg / image-webp here).
        let lossless = [".png", ".gif"].iter().any(|e| p.file.ends_with(e));
        if lossless {
            assert_eq!(max, 0, "{key}: resized pixels differ");
        } else {
            assert!(
                max <= 8 && mean < 0.6,
                "{key}: resized pixels differ by up to {max} (mean {mean})"
            );
        }
    }
    eprintln!(
        "resized image vs transformers (levels of 255):\n{}",
        report.join("\n")
    );
}

#[test]
fn pixel_values_match() {
    let r = reference();
    let mut checked = 0;
    for key in r.photo_keys() {
        let name = format!("{key}.pixel_values");
        if !common::tensors().contains_key(&name) {
            continue;
        }
        let want = tensor(&name)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = reference_input(key).pixel_values;
        let max = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert_eq!(got.len(), want.len(), "{key}");
        assert!(max == 0.0, "{key}: pixel values differ by {max}");
        checked += 1;
    }
    assert!(
        checked >= 3,
        "the reference holds pixel values for a few photos"
    );
}

#[test]
fn vision_tower_matches() {
    let r = reference();
    let m = reranker();
    let mut worst = 0.0f64;
    for key in r.photo_keys() {
        let input = reference_input(key);
        let ours = m.encode_photos(&[&input]).unwrap().remove(0);
        let want = tensor(&format!("{key}.vision"));
        assert_eq!(ours.tokens.dims(), want.dims(), "{key}");
        let err = rel_err(
            &ours.tokens.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            &want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert!(
            err < F32_TOLERANCE,
            "{key}: vision tower relative error {err:e}"
        );
        worst = worst.max(err);
    }
    eprintln!("vision tower: worst relative error {worst:.2e}");
}

#[test]
fn several_photos_in_one_vision_batch_equal_one_at_a_time() {
    // A model of its own with no visual tokens kept: otherwise "alone" could be the
    // batched result read back from memory, and the test could not fail.
    let m = Reranker::load(&common::model_dir(), ComputeDevice::cpu()).unwrap();
    m.set_visual_cache_limit(0);
    let keys = ["tiny", "wide", "landscape"];
    let inputs: Vec<_> = keys.iter().map(|k| reference_input(k)).collect();
    let together = m.encode_photos(&inputs.iter().collect::<Vec<_>>()).unwrap();
    for (input, batched) in inputs.iter().zip(&together) {
        let alone = m.encode_photos(&[input]).unwrap().remove(0);
        let err = rel_err(
            &batched
                .tokens
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            &alone
                .tokens
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
        );
        assert!(err < 1e-6, "batched vision differs: {err:e}");
    }
    assert_eq!(
        m.visual_cache_stats(),
        (0, 0, 0),
        "every photo went through the vision tower"
    );
}

fn query_input(query: &common::Query, from_files: bool) -> QueryInput {
    let image = query.image.as_deref().map(|key| {
        if from_files {
            photo_input_from_file(key)
        } else {
            reference_input(key)
        }
    });
    QueryInput {
        text: query.text.clone(),
        image,
    }
}

fn photo_input_from_file(key: &str) -> PhotoInput {
    let m = reranker();
    let photo = decode_photo(&photo_dir().join(&reference().photos[key].file)).unwrap();
    preprocess(&photo.image, &m.config.vision, &m.preprocess).unwrap()
}

#[test]
fn logits_match_on_the_reference_pixels() {
    let r = reference();
    let m = reranker();
    let mut ours_all = Vec::new();
    let mut want_all = Vec::new();
    for (qkey, query) in &r.queries {
        let prepared = m
            .prepare_query(r.instruction(query), &query_input(query, false))
            .unwrap();
        for case in r.cases.iter().filter(|c| &c.query == qkey) {
            let tokens = m
                .encode_photos(&[&reference_input(&case.photo)])
                .unwrap()
                .remove(0);
            assert_eq!(
                m.prompt_ids(&prepared, tokens.count()),
                case.input_ids,
                "{qkey}/{}",
                case.photo
            );
            let j = m.judge(&prepared, &tokens).unwrap();
            for (got, want, what) in [
                (j.logit_yes, case.logit_yes, "yes"),
                (j.logit_no, case.logit_no, "no"),
            ] {
                let err = (f64::from(got) - want).abs() / want.abs().max(1.0);
                assert!(
                    err < F32_TOLERANCE,
                    "{qkey}/{}: {what} logit {got} vs {want}",
                    case.photo
                );
            }
            ours_all.extend([j.logit_yes, j.logit_no]);
            want_all.extend([case.logit_yes as f32, case.logit_no as f32]);
        }
    }
    let err = rel_err(&ours_all, &want_all);
    eprintln!(
        "yes/no logits over {} cases: relative error {err:.2e}",
        r.cases.len()
    );
    assert!(err < F32_TOLERANCE);
}

#[test]
fn scores_from_the_photo_files_match() {
    let r = reference();
    let m = reranker();
    let mut worst = (0.0f64, String::new());
    for (qkey, query) in &r.queries {
        let prepared = m
            .prepare_query(r.instruction(query), &query_input(query, true))
            .unwrap();
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for case in r.cases.iter().filter(|c| &c.query == qkey) {
            let tokens = m
                .encode_photos(&[&photo_input_from_file(&case.photo)])
                .unwrap()
                .remove(0);
            let score = m.judge(&prepared, &tokens).unwrap().score();
            let diff = (score - case.score).abs();
            if diff > worst.0 {
                worst = (diff, format!("{qkey}/{}", case.photo));
            }
            ours.push((score, case.photo.clone()));
            theirs.push((case.score, case.photo.clone()));
        }
        // Photos whose reference scores are clearly apart keep their order.
        for a in &theirs {
            for b in &theirs {
                if a.0 > b.0 + 0.02 {
                    let sa = ours.iter().find(|o| o.1 == a.1).unwrap().0;
                    let sb = ours.iter().find(|o| o.1 == b.1).unwrap().0;
                    assert!(sa > sb, "{qkey}: {} should rank above {}", a.1, b.1);
                }
            }
        }
    }
    eprintln!(
        "scores from files: largest difference {:.2e} ({})",
        worst.0, worst.1
    );
    assert!(
        worst.0 < 0.01,
        "score differs by {} at {}",
        worst.0,
        worst.1
    );
}

#[test]
fn a_batch_of_photos_scores_like_one_at_a_time() {
    let r = reference();
    let m = reranker();
    let q = &r.queries["zh"];
    let prepared = m
        .prepare_query(r.instruction(q), &query_input(q, false))
        .unwrap();
    // "landscape" and "exif" share one grid
    let tokens: Vec<_> = ["landscape", "exif"]
        .iter()
        .map(|k| m.encode_photos(&[&reference_input(k)]).unwrap().remove(0))
        .collect();
    assert_eq!(tokens[0].merged, tokens[1].merged);
    let together = m
        .judge_batch(&prepared, &tokens.iter().collect::<Vec<_>>())
        .unwrap();
    for (t, j) in tokens.iter().zip(&together) {
        let alone = m.judge(&prepared, t).unwrap();
        assert!(
            (alone.logit_yes - j.logit_yes).abs() < 1e-5
                && (alone.logit_no - j.logit_no).abs() < 1e-5
        );
    }
    assert!(
        (together[0].logit_yes - together[1].logit_yes).abs() > 1e-3,
        "different photos, different logits"
    );
}

#[test]
fn batches_queued_ahead_score_like_batches_judged_in_turn() {
    let r = reference();
    let m = reranker();
    let q = &r.queries["en"];
    let prepared = m
        .prepare_query(r.instruction(q), &query_input(q, false))
        .unwrap();
    let keys = r.photo_keys();
    let tokens: Vec<_> = keys
        .iter()
        .map(|k| m.encode_photos(&[&reference_input(k)]).unwrap().remove(0))
        .collect();
    // Every photo queued before any score is read, then read in reverse order.
    let pending: Vec<_> = tokens
        .iter()
        .map(|t| m.queue_batch(&prepared, &[t]).unwrap())
        .collect();
    let mut read: Vec<_> = pending
        .into_iter()
        .rev()
        .map(|p| m.collect(p).unwrap())
        .collect();
    read.reverse();
    for ((k, t), got) in keys.iter().zip(&tokens).zip(&read) {
        let alone = m.judge(&prepared, t).unwrap();
        assert_eq!(got.len(), 1, "{k}: one score per photo");
        assert_eq!(
            (got[0].logit_yes, got[0].logit_no),
            (alone.logit_yes, alone.logit_no),
            "{k}"
        );
    }
    let none = m.queue_batch(&prepared, &[]).unwrap();
    assert!(m.collect(none).unwrap().is_empty());
}

#[derive(Debug, serde::Deserialize)]
struct DocumentFixture {
    documents: Vec<FixtureDocument>,
    cases: Vec<DocumentCase>,
}

#[derive(Debug, serde::Deserialize)]
struct FixtureDocument {
    key: String,
    text: String,
    image: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct DocumentCase {
    query: String,
    document: String,
    input_ids: Vec<u32>,
    logit_yes: f64,
    logit_no: f64,
}

fn close(got: f32, want: f64) -> bool {
    (f64::from(got) - want).abs() / want.abs().max(1.0) < F32_TOLERANCE
}

/// Text documents and image + text documents (scripts/make_document_fixture.py): the
/// prompt's ids, and the logits with the text documents judged together in one padded
/// batch, each read at its own last token.
#[test]
fn text_and_image_text_documents_equal_transformers() {
    use lychee_rerank::model::DocumentTokens;
    let text = std::fs::read_to_string(common::fixtures().join("reference/documents.json"))
        .expect("documents.json");
    let fixture: DocumentFixture = serde_json::from_str(&text).unwrap();
    let r = reference();
    let m = reranker();
    let mut checked = 0;
    for (qkey, query) in &r.queries {
        let prepared = m
            .prepare_query(r.instruction(query), &query_input(query, false))
            .unwrap();
        let case = |doc: &str| {
            fixture
                .cases
                .iter()
                .find(|c| &c.query == qkey && c.document == doc)
                .unwrap()
        };
        // every text document in one batch
        let texts: Vec<&FixtureDocument> = fixture
            .documents
            .iter()
            .filter(|d| d.image.is_none())
            .collect();
        let ids: Vec<Vec<u32>> = texts
            .iter()
            .map(|d| m.document_ids(false, &d.text, usize::MAX).unwrap().0)
            .collect();
        for (d, ids) in texts.iter().zip(&ids) {
            assert_eq!(
                m.document_prompt_ids(&prepared, ids, None),
                case(&d.key).input_ids,
                "{qkey}/{}",
                d.key
            );
        }
        let docs: Vec<DocumentTokens> = ids
            .iter()
            .map(|ids| DocumentTokens { ids, visual: None })
            .collect();
        let together = m.judge_documents(&prepared, &docs).unwrap();
        for ((d, j), doc) in texts.iter().zip(&together).zip(&docs) {
            let c = case(&d.key);
            assert!(
                close(j.logit_yes, c.logit_yes) && close(j.logit_no, c.logit_no),
                "{qkey}/{}: ({}, {}) vs ({}, {})",
                d.key,
                j.logit_yes,
                j.logit_no,
                c.logit_yes,
                c.logit_no
            );
            // alone, unpadded: the same
            let alone = m
                .judge_documents(&prepared, std::slice::from_ref(doc))
                .unwrap()[0];
            assert!((alone.logit_yes - j.logit_yes).abs() < 1e-5);
            checked += 1;
        }
        // an image followed by text
        for d in fixture.documents.iter().filter(|d| d.image.is_some()) {
            let visual = m
                .encode_photos(&[&reference_input(d.image.as_deref().unwrap())])
                .unwrap()
                .remove(0);
            let (ids, cut) = m.document_ids(true, &d.text, usize::MAX).unwrap();
            assert!(!cut);
            assert_eq!(
                m.document_prompt_ids(&prepared, &ids, Some(visual.count())),
                case(&d.key).input_ids,
                "{qkey}/{}",
                d.key
            );
            let doc = DocumentTokens {
                ids: &ids,
                visual: Some(&visual),
            };
            let j = m.judge_documents(&prepared, &[doc]).unwrap()[0];
            let c = case(&d.key);
            assert!(
                close(j.logit_yes, c.logit_yes) && close(j.logit_no, c.logit_no),
                "{qkey}/{}",
                d.key
            );
            checked += 1;
        }
    }
    assert_eq!(checked, fixture.cases.len());
}

#[test]
fn long_text_is_cut_from_the_right_and_said_so() {
    let m = reranker();
    let long = "The harbour at noon, with fishing boats and gulls. ".repeat(40);
    let (full, cut) = m.document_ids(false, &long, usize::MAX).unwrap();
    assert!(!cut);
    let (short, cut) = m.document_ids(false, &long, 50).unwrap();
    assert!(cut);
    assert!(
        short.len() < full.len() && short.len() <= 50 + 16,
        "{}",
        short.len()
    );
    // the end of the turn is kept
    assert_eq!(short[short.len() - 5..], full[full.len() - 5..]);
    // a text that fits is not cut
    assert!(!m.document_ids(false, "cat", 50).unwrap().1);
    assert!(m.document_ids(false, "", 50).is_err());
}
