//! The fixtures made by scripts/make_fixture.py: the tiny model, the photos and
//! transformers' reference outputs.
#![allow(dead_code)]

pub mod hub_server;
pub mod server;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use serde::Deserialize;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

pub fn model_dir() -> PathBuf {
    fixtures().join("tiny-model")
}

pub fn photo_dir() -> PathBuf {
    fixtures().join("photos")
}

/// The fixture photos, sorted by name.
pub fn photos() -> Vec<PathBuf> {
    let mut photos: Vec<PathBuf> = std::fs::read_dir(photo_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    photos.sort();
    photos
}

#[derive(Debug, Deserialize)]
pub struct Photo {
    pub file: String,
    pub covers: String,
    pub original_size: [usize; 2],
    pub input_size: [usize; 2],
    pub grid_thw: [usize; 3],
}

#[derive(Debug, Deserialize)]
pub struct Query {
    pub text: String,
    pub image: Option<String>,
    pub instruction: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Case {
    pub query: String,
    pub photo: String,
    pub input_ids: Vec<u32>,
    pub logit_yes: f64,
    pub logit_no: f64,
    pub score: f64,
}

#[derive(Debug, Deserialize)]
pub struct Reference {
    pub transformers: String,
    pub system: String,
    pub default_instruction: String,
    pub yes_id: u32,
    pub no_id: u32,
    pub min_pixels: usize,
    pub max_pixels: usize,
    pub photos: HashMap<String, Photo>,
    pub queries: HashMap<String, Query>,
    pub cases: Vec<Case>,
}

impl Reference {
    pub fn instruction<'a>(&'a self, query: &'a Query) -> &'a str {
        query
            .instruction
            .as_deref()
            .unwrap_or(&self.default_instruction)
    }

    /// Photo keys in a stable order.
    pub fn photo_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.photos.keys().map(String::as_str).collect();
        keys.sort();
        keys
    }
}

pub fn reference() -> &'static Reference {
    static REF: OnceLock<Reference> = OnceLock::new();
    REF.get_or_init(|| {
        let text = std::fs::read_to_string(fixtures().join("reference/reference.json"))
            .expect("reference.json");
        serde_json::from_str(&text).expect("reference.json parses")
    })
}

pub fn tensors() -> &'static HashMap<String, Tensor> {
    static T: OnceLock<HashMap<String, Tensor>> = OnceLock::new();
    T.get_or_init(|| {
        candle_core::safetensors::load(
            fixtures().join("reference/reference.safetensors"),
            &Device::Cpu,
        )
        .expect("reference.safetensors loads")
    })
}

pub fn tensor(name: &str) -> &'static Tensor {
    tensors()
        .get(name)
        .unwrap_or_else(|| panic!("reference has no {name}"))
}

/// ‖a − b‖ / ‖b‖ over all elements.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// Loads the tiny model into `worker` on the CPU and waits until it is ready.
pub fn load_tiny(worker: &mut lychee_rerank::worker::InferenceThread) {
    use lychee_rerank::hub::ModelSource;
    use lychee_rerank::model::device::DevicePreference;
    use lychee_rerank::worker::{Command, Event};
    assert!(worker.send(Command::LoadModel {
        gpus: None,
        source: ModelSource::Folder(model_dir()),
        device: DevicePreference::Cpu,
        name: None,
    }));
    loop {
        match worker.recv_timeout(std::time::Duration::from_secs(60)) {
            Some(Event::ModelReady(_)) => return,
            Some(Event::ModelFailed { reason, .. }) => panic!("{reason}"),
            Some(_) => {}
            None => panic!("the model did not load"),
        }
    }
}
