//! The fine-tuning recipe (`models/finetune.py`) on a tiny SciFact subset, with BM25 hard
//! negatives mined from an index on the real engine: a few MNRL steps lower the loss on the
//! probe batch; a run interrupted half-way and resumed ends with exactly the weights of an
//! uninterrupted one (deterministic, resumable); the export passes its parity gate and records
//! the recipe in the manifest; the sidecar loads the result and serves the reference vectors.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{cosine, encoder_settings, engine_url, unique_index};
use reqwest::Method;
use semantic_sidecar::encoder::Encoder;
use semantic_sidecar::engine::{EngineClient, EngineRequest};
use semantic_sidecar::telemetry::Metrics;
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// 24 judged SciFact train queries, their documents and 60 others, as a BEIR folder.
fn tiny_dataset(dir: &Path) -> Vec<Value> {
    let src = root().join("../shared/data/scifact");
    let qrels = std::fs::read_to_string(src.join("qrels/train.tsv")).unwrap();
    let rows: Vec<Vec<String>> =
        qrels.lines().skip(1).take(24).map(|l| l.split('\t').map(String::from).collect()).collect();
    let judged: BTreeSet<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    let queries: BTreeSet<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    let corpus: Vec<Value> = std::fs::read_to_string(src.join("corpus.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .enumerate()
        .filter(|(i, d)| judged.contains(d["_id"].as_str().unwrap()) || *i < 60)
        .map(|(_, d)| json!({"_id": d["_id"], "title": d["title"], "text": d["text"].as_str().unwrap().chars().take(600).collect::<String>()}))
        .collect();
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    let lines: Vec<String> = corpus.iter().map(Value::to_string).collect();
    std::fs::write(dir.join("corpus.jsonl"), lines.join("\n") + "\n").unwrap();
    let q: Vec<String> = std::fs::read_to_string(src.join("queries.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| queries.contains(serde_json::from_str::<Value>(l).unwrap()["_id"].as_str().unwrap()))
        .map(String::from)
        .collect();
    std::fs::write(dir.join("queries.jsonl"), q.join("\n") + "\n").unwrap();
    let mut tsv = String::from("query-id\tcorpus-id\tscore\n");
    for r in &rows {
        tsv.push_str(&format!("{}\t{}\t{}\n", r[0], r[1], r[2]));
    }
    std::fs::write(dir.join("qrels/ft-train.tsv"), tsv).unwrap();
    corpus
}

fn train(dir: &Path, work: &str, extra: &[&str]) -> (i32, String) {
    let out = Command::new(common::python())
        .arg(root().join("models/finetune.py"))
        .args([
            "train",
            "--method",
            "mnrl",
            "--quiet",
            "--batch-size",
            "8",
            "--max-steps",
            "6",
            "--epochs",
            "3",
            "--lr",
            "1e-4",
        ])
        .args(["--max-seq-len", "128", "--save-every", "2", "--threads", "2", "--engine", &engine_url()])
        .arg("--dataset")
        .arg(dir)
        .arg("--work")
        .arg(dir.join(work))
        .arg("--out")
        .arg(dir.join(format!("{work}-model")))
        .args(extra)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
}

fn report(dir: &Path, work: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(work).join("finetune.json")).unwrap()).unwrap()
}

#[tokio::test]
async fn a_few_mnrl_steps_lower_the_loss_resume_exactly_and_export_a_model_the_sidecar_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let corpus = tiny_dataset(dir);
    // the index BM25 negatives come from
    let settings = encoder_settings(&[("SIDECAR__ENGINE__URLS", &engine_url())]);
    let engine = EngineClient::new(&settings.engine).unwrap();
    let index = unique_index("ft");
    let mut bulk = String::new();
    for d in &corpus {
        bulk.push_str(&json!({"index": {"_index": index, "_id": d["_id"]}}).to_string());
        bulk.push('\n');
        bulk.push_str(&json!({"title": d["title"], "text": d["text"]}).to_string());
        bulk.push('\n');
    }
    common::engine_bulk(&engine, bulk).await;

    // straight through, without export
    let (rc, err) = train(dir, "straight", &["--index", &index, "--no-export"]);
    assert_eq!(rc, 0, "{err}");
    let straight = report(dir, "straight");
    // interrupted after 3 steps, then the same command resumes and exports
    let (rc, err) = train(dir, "resumed", &["--index", &index, "--stop-at", "3"]);
    assert_eq!(rc, 3, "the interrupted run says so: {err}");
    assert!(!dir.join("resumed/finetune.json").exists());
    let (rc, err) = train(dir, "resumed", &["--index", &index]);
    assert_eq!(rc, 0, "{err}");
    assert!(err.contains("resuming"), "{err}");
    let resumed = report(dir, "resumed");

    let (before, after) =
        (straight["probe_loss_before"].as_f64().unwrap(), straight["probe_loss_after"].as_f64().unwrap());
    assert!(after < before, "the probe loss did not go down: {before} -> {after}");
    assert_eq!(straight["steps"], 6);
    assert!(straight["data"]["hard_negatives"].as_str().unwrap().starts_with("BM25"), "{}", straight["data"]);
    assert!(straight["data"]["pairs"].as_u64().unwrap() >= 24, "{}", straight["data"]);
    let resumed_after = resumed["probe_loss_after"].as_f64().unwrap();
    assert!((resumed_after - after).abs() < 1e-5, "resumed {resumed_after} vs straight {after}");
    assert_eq!(straight["config_hash"], resumed["config_hash"]);

    // the export: parity report, manifest with the recipe
    let model = dir.join("resumed-model");
    let parity: Value = serde_json::from_str(&std::fs::read_to_string(model.join("parity.json")).unwrap()).unwrap();
    assert!(parity.to_string().contains("cosine"), "{parity}");
    let manifest = semantic_sidecar::encoder::manifest::ModelDir::load(&model).unwrap().manifest;
    let ft = manifest.source.finetune.as_ref().expect("[source.finetune] in model.toml");
    assert_eq!(ft.method, "mnrl");
    assert!(ft.base.contains("minilm") || ft.base.contains("MiniLM"), "{}", ft.base);
    assert!(ft.data.contains("ft-train"), "{}", ft.data);
    assert!(ft.hyperparameters.contains("\"lr\": 0.0001"), "{}", ft.hyperparameters);
    assert_eq!(ft.steps, 6);

    // the sidecar loads it and gives the reference vectors
    let s = encoder_settings(&[]);
    let enc = Encoder::load(&model, &s.encoder, &Metrics::new().encoder).unwrap();
    let gold: Value = serde_json::from_str(&std::fs::read_to_string(model.join("golden.json")).unwrap()).unwrap();
    let stock: Value =
        serde_json::from_str(&std::fs::read_to_string(common::default_model_dir().join("golden.json")).unwrap())
            .unwrap();
    let mut moved = 0.0f64;
    for (g, st) in gold["sentences"].as_array().unwrap().iter().zip(stock["sentences"].as_array().unwrap()) {
        let text = g["text"].as_str().unwrap().to_string();
        let out =
            enc.encode(vec![semantic_sidecar::encoder::Input::Text(text.clone())], Default::default()).await.unwrap();
        let semantic_sidecar::encoder::Pooled::Vector(v) = &out.outputs[0] else { panic!("a vector") };
        let want: Vec<f32> = g["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert!(cosine(v, &want) > 0.9999, "{text}: {}", cosine(v, &want));
        let base: Vec<f32> = st["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        if st["text"] == g["text"] {
            moved = moved.max(1.0 - cosine(v, &base));
        }
    }
    assert!(moved > 1e-4, "the fine-tuned vectors equal the stock model's: training changed nothing");
    let _ = engine.send(EngineRequest::new(Method::DELETE, format!("/{index}"))).await;
}

/// A catalog encoder served from ONNX alone gets its PyTorch checkpoint back (models/recover.py),
/// so finetune.py can start from it: the recovered model encodes like the graph (cosine ≥ 0.9999
/// on the parity sentences), and bge-zh's lowercasing becomes part of its tokenizer. The folder
/// loaded the way training loads it (sentence-transformers' own tokenizer wrapper) must tokenize
/// like the sidecar: a cased wrapper around bge-en's lowercasing tokenizer once turned every
/// capitalised word into [UNK] and made every bge fine-tune worse than its base.
#[test]
fn onnx_only_encoders_recover_a_torch_checkpoint_that_matches_their_graph() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, layers, width) in [("bge-small-en-v1.5", 12, 384), ("bge-small-zh-v1.5", 4, 512)] {
        let model = root().join("models").join(name);
        assert!(model.join("model.onnx").is_file(), "{name} is missing: run scripts/setup --models {name}");
        let out = tmp.path().join(name);
        let run = Command::new(common::python())
            .arg(root().join("models/recover.py"))
            .arg("--model")
            .arg(&model)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(run.status.success(), "{name}: {}", String::from_utf8_lossy(&run.stderr));
        let r: Value = serde_json::from_str(&std::fs::read_to_string(out.join("recovered.json")).unwrap()).unwrap();
        assert!(r["min_cosine"].as_f64().unwrap() >= 0.9999, "{name}: {r}");
        assert_eq!(r["sentence_transformers_same_token_ids"], true, "{name}: {r}");
        assert!(r["sentence_transformers_min_cosine"].as_f64().unwrap() >= 0.9999, "{name}: {r}");
        assert_eq!(r["config"]["num_hidden_layers"], layers, "{name}");
        assert_eq!(r["config"]["hidden_size"], width, "{name}");
        let tok: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("0_Transformer/tokenizer.json")).unwrap()).unwrap();
        // both vocabularies are uncased: bge-en's tokenizer says so itself, bge-zh's only in the manifest
        assert_eq!(tok["normalizer"]["lowercase"], true, "{name}: {}", tok["normalizer"]);
    }
}
