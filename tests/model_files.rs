//! Loading model folders in every layout the scorer accepts, and clear errors for the
//! ones it cannot use.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use lychee_rerank::model::files::{ModelFiles, TokenizerFiles};
use lychee_rerank::model::prompt::full_prompt_ids;
use lychee_rerank::model::tokenizer::PromptTokenizer;
use lychee_rerank::model::{ComputeDevice, ModelError, QueryInput, Reranker};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Scores of a few photos of the "en" query, computed from the reference pixels.
fn some_logits(dir: &Path) -> Vec<(f32, f32)> {
    let r = common::reference();
    let model = Reranker::load(dir, ComputeDevice::cpu()).unwrap();
    let query = &r.queries["en"];
    let prepared = model
        .prepare_query(
            r.instruction(query),
            &QueryInput {
                text: query.text.clone(),
                image: None,
            },
        )
        .unwrap();
    ["landscape", "tiny", "wide"]
        .iter()
        .map(|key| {
            let input = lychee_rerank::library::decode_photo(
                &common::photo_dir().join(&r.photos[*key].file),
            )
            .unwrap();
            let input = lychee_rerank::model::preprocess::preprocess(
                &input.image,
                &model.config.vision,
                &model.preprocess,
            )
            .unwrap();
            let tokens = model.encode_photos(&[&input]).unwrap().remove(0);
            let j = model.judge(&prepared, &tokens).unwrap();
            (j.logit_yes, j.logit_no)
        })
        .collect()
}

#[test]
fn nested_config_new_tensor_names_single_f32_file_give_the_same_scores() {
    let original = common::model_dir();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    copy_dir(&original, dir);
    // transformers 5's nested config.json
    std::fs::rename(dir.join("config_nested.json"), dir.join("config.json")).unwrap();
    // one f32 file with transformers 5's tensor names
    let mut all: HashMap<String, Tensor> = HashMap::new();
    for file in ModelFiles::locate(&original).unwrap().weights {
        for (name, t) in candle_core::safetensors::load(&file, &Device::Cpu).unwrap() {
            let name = if let Some(rest) = name.strip_prefix("visual.") {
                format!("model.visual.{rest}")
            } else if let Some(rest) = name.strip_prefix("model.") {
                format!("model.language_model.{rest}")
            } else {
                name
            };
            all.insert(name, t.to_dtype(DType::F32).unwrap());
        }
        std::fs::remove_file(dir.join(file.file_name().unwrap())).unwrap();
    }
    std::fs::remove_file(dir.join("model.safetensors.index.json")).unwrap();
    candle_core::safetensors::save(&all, dir.join("model.safetensors")).unwrap();

    let want = some_logits(&original);
    let got = some_logits(dir);
    for ((gy, gn), (wy, wn)) in got.iter().zip(&want) {
        assert!(
            (gy - wy).abs() < 1e-6 && (gn - wn).abs() < 1e-6,
            "{got:?} vs {want:?}"
        );
    }
}

#[test]
fn vocab_and_merges_tokenize_like_tokenizer_json() {
    let original = common::model_dir();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // vocab.json and merges.txt as older checkpoints ship them, from the same vocabulary.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(original.join("tokenizer.json")).unwrap())
            .unwrap();
    std::fs::write(dir.join("vocab.json"), json["model"]["vocab"].to_string()).unwrap();
    let mut merges = String::from("#version: 0.2\n");
    for m in json["model"]["merges"].as_array().unwrap() {
        let pair = match m {
            serde_json::Value::Array(p) => {
                format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap())
            }
            serde_json::Value::String(s) => s.clone(),
            other => panic!("unexpected merge {other}"),
        };
        merges.push_str(&pair);
        merges.push('\n');
    }
    std::fs::write(dir.join("merges.txt"), merges).unwrap();
    std::fs::copy(
        original.join("tokenizer_config.json"),
        dir.join("tokenizer_config.json"),
    )
    .unwrap();

    let files = TokenizerFiles::VocabMerges {
        vocab: dir.join("vocab.json"),
        merges: dir.join("merges.txt"),
        tokenizer_config: Some(dir.join("tokenizer_config.json")),
        added_tokens: None,
    };
    let rebuilt = PromptTokenizer::load(&files).unwrap();
    let reference =
        PromptTokenizer::load(&TokenizerFiles::Json(original.join("tokenizer.json"))).unwrap();
    assert_eq!(rebuilt.ids, reference.ids);
    let r = common::reference();
    for case in &r.cases {
        let q = &r.queries[&case.query];
        let qt = q
            .image
            .as_ref()
            .map(|k| r.photos[k].grid_thw[1] * r.photos[k].grid_thw[2] / 4);
        let g = r.photos[&case.photo].grid_thw;
        let ids =
            full_prompt_ids(&rebuilt, r.instruction(q), &q.text, qt, g[1] * g[2] / 4).unwrap();
        assert_eq!(ids, case.input_ids, "{}/{}", case.query, case.photo);
    }
    for text in [
        "Hello world!\n\n  indented 12345 café naïve ＡＢＣ 😀 don't",
        "雪山脚下骑马的藏族姑娘，红围巾",
    ] {
        assert_eq!(
            rebuilt.encode(text).unwrap(),
            reference.encode(text).unwrap(),
            "{text}"
        );
    }
}

fn load_err(dir: &Path) -> String {
    match Reranker::load(dir, ComputeDevice::cpu()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_and_damaged_files_are_named() {
    let original = common::model_dir();
    let case = |remove: &str| {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&original, tmp.path());
        std::fs::remove_file(tmp.path().join(remove)).unwrap();
        let msg = load_err(tmp.path());
        assert!(msg.contains(remove), "removing {remove}: {msg}");
    };
    case("config.json");
    case("preprocessor_config.json");
    case("tokenizer.json");
    case("model-00002-of-00003.safetensors");

    // A shard cut short, as an interrupted copy leaves it.
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&original, tmp.path());
    let shard = tmp.path().join("model-00001-of-00003.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    let msg = load_err(tmp.path());
    assert!(
        msg.contains("model-00001-of-00003.safetensors") && msg.contains("damaged"),
        "{msg}"
    );

    // A config that does not match the weights.
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&original, tmp.path());
    let config = std::fs::read_to_string(tmp.path().join("config.json")).unwrap();
    std::fs::write(
        tmp.path().join("config.json"),
        config.replace("\"intermediate_size\": 64", "\"intermediate_size\": 96"),
    )
    .unwrap();
    let msg = load_err(tmp.path());
    assert!(msg.contains("mlp") && msg.contains("config.json"), "{msg}");

    // Not a folder at all.
    assert!(matches!(
        Reranker::load(Path::new("/no/such/model"), ComputeDevice::cpu()),
        Err(ModelError::NoFolder(_))
    ));
}
