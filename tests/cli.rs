//! The offline commands with the real model: `embed` (jsonl and npy) and `whiten fit`, run as
//! the real binary.

mod common;

use std::path::Path;
use std::process::Command;

use common::{cosine, default_model_dir, golden, ort_library};
use semantic_sidecar::encoder::{EncodeOptions, Encoder, Input, Pooled};
use semantic_sidecar::telemetry::Metrics;
use serde_json::Value;

fn sidecar(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_semantic-sidecar"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ORT_DYLIB_PATH", ort_library())
        .output()
        .unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn embed_writes_jsonl_and_npy_that_match_the_golden_vectors() {
    let tmp = tempfile::tempdir().unwrap();
    let gold = golden();
    let input = tmp.path().join("in.jsonl");
    let lines: Vec<String> = gold
        .iter()
        .enumerate()
        .map(|(i, g)| serde_json::json!({"_id": format!("d{i}"), "text": g.text}).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let model = default_model_dir();

    let embed_to = |out: &Path| {
        let o = sidecar(&[
            "embed",
            "--model",
            path(&model),
            "--input",
            path(&input),
            "--output",
            path(out),
            "--kind",
            "raw",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };

    let out_jsonl = tmp.path().join("out.jsonl");
    embed_to(&out_jsonl);
    let rows: Vec<Value> =
        std::fs::read_to_string(&out_jsonl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), gold.len());
    for (i, (row, g)) in rows.iter().zip(&gold).enumerate() {
        assert_eq!(row["index"], i);
        assert_eq!(row["id"], format!("d{i}"));
        let v: Vec<f32> = row["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert!(cosine(&v, &g.embedding) >= 0.9999, "{:?}", g.text);
    }

    let out_npy = tmp.path().join("out.npy");
    embed_to(&out_npy);
    let bytes = std::fs::read(&out_npy).unwrap();
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(header.contains(&format!("'shape': ({}, 384)", gold.len())), "{header}");
    let first: Vec<f32> =
        bytes[10 + hlen..10 + hlen + 384 * 4].chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert!(cosine(&first, &gold[0].embedding) >= 0.9999);

    let bad = sidecar(&["embed", "--model", path(&model), "--input", path(&input), "--output", "/tmp/x.csv"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains(".jsonl or .npy"));
    let missing = sidecar(&["embed", "--model", "no-such-model", "--input", path(&input), "--output", path(&out_npy)]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no-such-model"));
}

/// 500 distinct synthetic sentences (deterministic).
fn sample_sentences() -> Vec<String> {
    let subjects = [
        "the patient",
        "a protein",
        "the algorithm",
        "our study",
        "the engine",
        "a cell",
        "the court",
        "the market",
        "a river",
        "the team",
    ];
    let verbs =
        ["increases", "reduces", "predicts", "binds", "indexes", "blocks", "rewards", "explains", "floods", "measures"];
    let objects = [
        "blood pressure",
        "gene expression",
        "query latency",
        "vitamin levels",
        "search quality",
        "insulin release",
        "tax revenue",
        "crop yield",
        "memory usage",
        "tumour growth",
    ];
    let mut out = Vec::new();
    for s in subjects {
        for v in verbs {
            for o in objects {
                out.push(format!("{s} {v} {o}"));
            }
        }
    }
    out.into_iter().step_by(2).collect()
}

#[tokio::test]
async fn whiten_fit_makes_the_sample_zero_mean_identity_covariance() {
    let tmp = tempfile::tempdir().unwrap();
    let src = default_model_dir();
    for f in ["model.onnx", "tokenizer.json"] {
        std::os::unix::fs::symlink(src.join(f), tmp.path().join(f)).unwrap();
    }
    std::fs::copy(src.join("model.toml"), tmp.path().join("model.toml")).unwrap();
    let sentences = sample_sentences();
    let input = tmp.path().join("sample.txt");
    std::fs::write(&input, sentences.join("\n")).unwrap();

    let o = sidecar(&["whiten", "fit", "--model", path(tmp.path()), "--input", path(&input), "--dims", "32"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let manifest = std::fs::read_to_string(tmp.path().join("model.toml")).unwrap();
    assert!(manifest.contains("[whitening]") && manifest.contains("dims = 32"), "{manifest}");

    let s = common::encoder_settings(&[]);
    let enc = Encoder::load(tmp.path(), &s.encoder, &Metrics::new().encoder).unwrap();
    assert_eq!(enc.info().dims, 32);
    let inputs = sentences.iter().map(|t| Input::Text(t.clone())).collect();
    let raw = EncodeOptions {
        kind: semantic_sidecar::encoder::TextKind::Passage,
        normalize: Some(false),
        lane: semantic_sidecar::encoder::Lane::Bulk,
        ..Default::default()
    };
    let out = enc.encode(inputs, raw).await.unwrap();
    let ys: Vec<Vec<f64>> = out
        .outputs
        .into_iter()
        .map(|o| match o {
            Pooled::Vector(v) => v.into_iter().map(f64::from).collect(),
            Pooled::Tokens(_) => unreachable!(),
        })
        .collect();
    let n = ys.len() as f64;
    let k = ys[0].len();
    assert_eq!(k, 32);
    let mean: Vec<f64> = (0..k).map(|j| ys.iter().map(|y| y[j]).sum::<f64>() / n).collect();
    let mut worst_mean = 0f64;
    let mut worst_cov = 0f64;
    for a in 0..k {
        worst_mean = worst_mean.max(mean[a].abs());
        for b in 0..k {
            let c = ys.iter().map(|y| (y[a] - mean[a]) * (y[b] - mean[b])).sum::<f64>() / n;
            worst_cov = worst_cov.max((c - if a == b { 1.0 } else { 0.0 }).abs());
        }
    }
    println!("whitened fit sample: max |mean| {worst_mean:.2e}, max |cov - I| {worst_cov:.2e}");
    assert!(worst_mean < 1e-2, "{worst_mean}");
    assert!(worst_cov < 2e-2, "{worst_cov}");

    // normalised output (the manifest's default) is unit length in the reduced space
    let out = enc.encode(vec![Input::Text("the team measures crop yield".into())], Default::default()).await.unwrap();
    let Pooled::Vector(v) = &out.outputs[0] else { unreachable!() };
    assert!((v.iter().map(|x| x * x).sum::<f32>().sqrt() - 1.0).abs() < 1e-4);
}
