//! The first-stage embedder against transformers' `SiglipModel` on the tiny SigLIP 2
//! checkpoint made by scripts/make_siglip_fixture.py: token ids exactly, resized pixels
//! exactly (lossless formats; JPEG decoders differ from PIL by a few levels), pixel values,
//! and the embeddings within 1e-4 in f32.

mod common;

use std::collections::HashMap;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use lychee_rerank::embed::{Embedder, PreparedImage};
use lychee_rerank::model::ComputeDevice;
use lychee_rerank::model::resample::Rgb8;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Query {
    key: String,
    text: String,
    input_ids: Vec<u32>,
    text_embeds: Vec<f32>,
    text_embeds_normalized: Vec<f32>,
}

#[derive(Debug, Deserialize)]
struct Photo {
    file: String,
    image_embeds: Vec<f32>,
    image_embeds_normalized: Vec<f32>,
}

#[derive(Debug, Deserialize)]
struct Reference {
    logit_scale: f32,
    logit_bias: f32,
    queries: Vec<Query>,
    photos: Vec<Photo>,
    logits_per_text: Vec<Vec<f32>>,
}

fn reference() -> &'static Reference {
    static R: OnceLock<Reference> = OnceLock::new();
    R.get_or_init(|| {
        let text = std::fs::read_to_string(common::fixtures().join("reference/siglip.json"))
            .expect("siglip.json");
        serde_json::from_str(&text).expect("siglip.json parses")
    })
}

fn arrays() -> &'static HashMap<String, Tensor> {
    static T: OnceLock<HashMap<String, Tensor>> = OnceLock::new();
    T.get_or_init(|| {
        candle_core::safetensors::load(
            common::fixtures().join("reference/siglip.safetensors"),
            &Device::Cpu,
        )
        .expect("siglip.safetensors loads")
    })
}

fn embedder() -> &'static Embedder {
    static E: OnceLock<Embedder> = OnceLock::new();
    E.get_or_init(|| {
        Embedder::load(
            &common::fixtures().join("tiny-siglip"),
            ComputeDevice::cpu(),
        )
        .expect("the tiny SigLIP loads")
    })
}

fn resized_reference(file: &str) -> Rgb8 {
    let t = &arrays()[&format!("{file}.resized_u8")];
    let (h, w, _) = t.dims3().unwrap();
    Rgb8::new(w, h, t.flatten_all().unwrap().to_vec1::<u8>().unwrap()).unwrap()
}

fn decoded(file: &str) -> Rgb8 {
    lychee_rerank::library::decode_photo(&common::photo_dir().join(file))
        .unwrap()
        .image
}

#[test]
fn token_ids_equal_transformers() {
    let e = embedder();
    for q in &reference().queries {
        assert_eq!(e.tokenize(&q.text).unwrap(), q.input_ids, "query {}", q.key);
    }
}

#[test]
fn text_embeddings_equal_transformers() {
    let e = embedder();
    let texts: Vec<&str> = reference()
        .queries
        .iter()
        .map(|q| q.text.as_str())
        .collect();
    let raw = e.text_features(&texts).unwrap().to_vec2::<f32>().unwrap();
    let normalized = e.embed_texts(&texts).unwrap();
    for ((q, raw), normalized) in reference().queries.iter().zip(&raw).zip(&normalized) {
        let err = common::rel_err(raw, &q.text_embeds);
        eprintln!("text {}: relative error {err:.2e}", q.key);
        assert!(err < 1e-4, "query {}: relative error {err:e}", q.key);
        let err = common::rel_err(normalized, &q.text_embeds_normalized);
        assert!(
            err < 1e-4,
            "query {} normalized: relative error {err:e}",
            q.key
        );
    }
}

#[test]
fn photos_are_resized_as_transformers_resizes_them() {
    let e = embedder();
    let (w, h) = e.image.size;
    for p in &reference().photos {
        let ours =
            lychee_rerank::model::resample::resize_aa(&decoded(&p.file), w, h, e.image.filter);
        let theirs = resized_reference(&p.file);
        let max_diff = ours
            .data
            .iter()
            .zip(&theirs.data)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        let jpeg = p.file.ends_with(".jpg");
        // Lossless formats decode to the same pixels as PIL's, so the resize must match
        // to the bit; JPEG decoders differ from libjpeg by a few levels.
        let allowed = if jpeg { 8 } else { 0 };
        eprintln!("resized {}: max difference {max_diff}", p.file);
        assert!(
            max_diff <= allowed,
            "{}: resized pixels differ by up to {max_diff}",
            p.file
        );
    }
}

#[test]
fn pixel_values_equal_transformers() {
    let e = embedder();
    let mut checked = 0;
    for (name, t) in arrays() {
        let Some(file) = name.strip_suffix(".pixel_values") else {
            continue;
        };
        let ours = e.normalize(&resized_reference(file)).pixels;
        let theirs = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let max = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max < 1e-6, "{file}: pixel values differ by {max}");
        checked += 1;
    }
    assert!(checked >= 4);
}

#[test]
fn image_embeddings_equal_transformers() {
    let e = embedder();
    let by_file: HashMap<&str, &Photo> = reference()
        .photos
        .iter()
        .map(|p| (p.file.as_str(), p))
        .collect();
    // From transformers' own resized pixels: the vision tower alone.
    for p in &reference().photos {
        let prepared = e.normalize(&resized_reference(&p.file));
        let raw = e
            .image_features(&[&prepared])
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let err = common::rel_err(&raw[0], &p.image_embeds);
        eprintln!("image {}: relative error {err:.2e}", p.file);
        assert!(err < 1e-4, "{}: relative error {err:e}", p.file);
    }
    // From the file, through our decoder and resize, in one batch: the whole path.
    let files: Vec<&str> = by_file.keys().copied().collect();
    let prepared: Vec<PreparedImage> = files.iter().map(|f| e.prepare_image(&decoded(f))).collect();
    let refs: Vec<&PreparedImage> = prepared.iter().collect();
    let embedded = e.embed_images(&refs).unwrap();
    for (file, ours) in files.iter().zip(&embedded) {
        let theirs = &by_file[file].image_embeds_normalized;
        let cos: f32 = ours.iter().zip(theirs).map(|(a, b)| a * b).sum();
        let allowed = if file.ends_with(".jpg") { 1e-3 } else { 1e-5 };
        eprintln!("file {file}: 1 - cosine {:.2e}", 1.0 - cos);
        assert!(1.0 - cos < allowed, "{file}: cosine {cos}");
    }
}

#[test]
fn logits_equal_transformers() {
    let e = embedder();
    let r = reference();
    assert!((e.logit_scale - r.logit_scale.exp()).abs() < 1e-5);
    assert!((e.logit_bias - r.logit_bias).abs() < 1e-6);
    for (q, row) in r.queries.iter().zip(&r.logits_per_text) {
        for (p, theirs) in r.photos.iter().zip(row) {
            let cos: f32 = q
                .text_embeds_normalized
                .iter()
                .zip(&p.image_embeds_normalized)
                .map(|(a, b)| a * b)
                .sum();
            assert!(
                (e.logit(cos) - theirs).abs() < 1e-4,
                "{} x {}",
                q.key,
                p.file
            );
        }
    }
}
