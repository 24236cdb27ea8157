//! Indexing over several embedders (copies on several GPUs with `index --gpus`; two CPU
//! copies of the tiny SigLIP here): the catalog is the one a single embedder builds, both
//! copies embed, every photo is embedded once, and a run stopped after its first batch
//! keeps the vectors of the batches already under way.

mod common;

use std::path::PathBuf;

use lychee_rerank::embed::Embedder;
use lychee_rerank::index::{Catalog, Flow, IndexEvent, run_indexing, run_indexing_on};
use lychee_rerank::model::ComputeDevice;

fn embedder() -> Embedder {
    Embedder::load(
        &common::fixtures().join("tiny-siglip"),
        ComputeDevice::cpu(),
    )
    .expect("the tiny SigLIP loads")
}

/// The fixture photos twice over (the second time under other names is not needed: no
/// index file is used, so each path is embedded), so that there are several batches.
fn photos() -> Vec<PathBuf> {
    let mut photos = common::photos();
    let again = photos.clone();
    photos.extend(again);
    photos
}

#[test]
fn two_embedders_build_the_catalog_one_builds_and_both_embed() {
    let photos = photos();
    let one = embedder();
    let mut alone = Catalog::default();
    let summary = run_indexing(&one, &photos, None, &mut alone, |_, _| Flow::Continue).unwrap();
    assert_eq!(summary.indexed, photos.len());

    let (a, b) = (embedder(), embedder());
    let mut dealt = Catalog::default();
    let mut reported = vec![0usize; photos.len()];
    let summary = run_indexing_on(&[&a, &b], &photos, None, &mut dealt, |_, e| {
        if let IndexEvent::Indexed { index, .. } = e {
            reported[index] += 1;
        }
        Flow::Continue
    })
    .unwrap();
    assert!(summary.complete);
    assert_eq!((summary.indexed, summary.failed), (photos.len(), 0));
    assert!(reported.iter().all(|&n| n == 1), "{reported:?}");
    assert!(
        a.images_embedded() > 0 && b.images_embedded() > 0,
        "one embedder did all the work: {} and {}",
        a.images_embedded(),
        b.images_embedded()
    );
    assert_eq!(
        (a.images_embedded() + b.images_embedded()) as usize,
        photos.len(),
        "every photo is embedded once"
    );
    // The same vectors: every query ranks the photos with the same similarities.
    let query = one
        .embed_texts(&["a beach under the sun"])
        .unwrap()
        .remove(0);
    let by_photo = |c: &Catalog| {
        let mut s = vec![None; photos.len()];
        for hit in c.search(&query) {
            s[hit.photo] = Some(hit.similarity);
        }
        s
    };
    let (x, y) = (by_photo(&alone), by_photo(&dealt));
    for (i, (x, y)) in x.iter().zip(&y).enumerate() {
        let (x, y) = (x.expect("indexed alone"), y.expect("indexed by two"));
        assert!((x - y).abs() < 1e-3, "{}: {x} and {y}", photos[i].display());
    }
}

#[test]
fn a_stopped_run_over_two_embedders_keeps_the_batches_under_way() {
    let photos = photos();
    let (a, b) = (embedder(), embedder());
    let mut catalog = Catalog::default();
    let mut batches = 0;
    let summary = run_indexing_on(&[&a, &b], &photos, None, &mut catalog, |_, e| {
        if e == IndexEvent::Batch {
            batches += 1;
            return Flow::Stop;
        }
        Flow::Continue
    })
    .unwrap();
    assert!(!summary.complete);
    assert_eq!(batches, 1, "the run goes on after it was stopped");
    // Whatever was embedded is in the catalog, and not everything was.
    let embedded = (a.images_embedded() + b.images_embedded()) as usize;
    assert!(embedded > 0 && embedded < photos.len(), "{embedded}");
    assert_eq!(summary.indexed, embedded);
    assert_eq!(catalog.indexed(), embedded);
}
