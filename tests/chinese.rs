//! The Chinese WordPiece path: a model that ships only `vocab.txt` (like bert-base-chinese).
//!
//! No Chinese encoder with trained weights is obtainable offline here, so scripts/setup builds a
//! 2-layer BERT with random (seeded) weights and a Chinese vocabulary (models/make_tiny_chinese.py)
//! and exports it with `--tokenizer vocab`. The export recorded token ids from Python's
//! `BertTokenizer` and vectors from torch and from Python onnxruntime; the sidecar must build the
//! same tokenizer from vocab.txt alone and produce the same vectors.

mod common;

use std::path::PathBuf;

use common::{cosine, encoder_settings};
use semantic_sidecar::encoder::manifest::ModelDir;
use semantic_sidecar::encoder::tokenize::TextTokenizer;
use semantic_sidecar::encoder::{EncodeOptions, Encoder, Input, Lane, Pooled};
use semantic_sidecar::telemetry::Metrics;
use serde_json::Value;

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tiny-chinese-random")
}

fn golden() -> Vec<Value> {
    let path = model_dir().join("golden.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}; run scripts/setup", path.display()));
    serde_json::from_str::<Value>(&text).unwrap()["sentences"].as_array().unwrap().clone()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn the_manifest_names_only_a_vocab_file() {
    let m = ModelDir::load(&model_dir()).unwrap().manifest;
    assert!(m.tokenizer.is_none());
    assert_eq!(m.vocab.as_ref().map(|v| v.file.as_str()), Some("vocab.txt"));
}

#[test]
fn tokens_match_python_bert_tokenizer() {
    let model = ModelDir::load(&model_dir()).unwrap();
    let tk = TextTokenizer::load(&model).unwrap();
    let gold = golden();
    let mut chinese = 0;
    for g in &gold {
        let text = g["text"].as_str().unwrap();
        let want: Vec<i64> = g["input_ids"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
        assert_eq!(tk.encode(text).unwrap().ids, want, "{text:?}");
        chinese += usize::from(text.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)));
    }
    assert!(chinese >= 5, "the golden set has Chinese sentences");
    // per-character CJK splitting: every character of a Chinese sentence is its own token
    let ids = tk.encode("北京是首都").unwrap().ids;
    assert_eq!(ids.len(), 5 + 2);
}

#[tokio::test]
async fn vectors_match_torch_and_python_onnxruntime() {
    let s = encoder_settings(&[]);
    let enc = Encoder::load(&model_dir(), &s.encoder, &Metrics::new().encoder).unwrap();
    let gold = golden();
    let inputs = gold.iter().map(|g| Input::Text(g["text"].as_str().unwrap().to_string())).collect();
    let out = enc.encode(inputs, EncodeOptions { lane: Lane::Bulk, ..Default::default() }).await.unwrap();
    let (mut vs_torch, mut vs_ort) = (1.0f64, 1.0f64);
    for (o, g) in out.outputs.iter().zip(&gold) {
        let Pooled::Vector(v) = o else { panic!("vectors expected") };
        assert_eq!(v.len(), 128);
        vs_torch = vs_torch.min(cosine(v, &floats(&g["embedding"])));
        vs_ort = vs_ort.min(cosine(v, &floats(&g["onnxruntime"])));
    }
    println!("tiny Chinese model: min cosine vs torch {vs_torch:.9}, vs Python onnxruntime {vs_ort:.9}");
    assert!(vs_torch >= 0.9999 && vs_ort >= 0.9999);
}
