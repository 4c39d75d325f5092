//! The encoder with the real exported model and the real ONNX Runtime library: parity with the
//! golden vectors of the export (every pooling strategy), truncation accounting, provider
//! fallback, and manifest/graph mismatches.

mod common;

use std::path::Path;

use common::{cosine, default_model_dir, encoder_settings, golden};
use semantic_sidecar::encoder::{EncodeOptions, Encoder, EncoderError, Input, Lane, Pooled, Provider};
use semantic_sidecar::telemetry::Metrics;

fn load(extra: &[(&str, &str)]) -> Encoder {
    let s = encoder_settings(extra);
    Encoder::load(&s.encoder.models[0], &s.encoder, &Metrics::new().encoder).unwrap()
}

fn vectors(out: Vec<Pooled>) -> Vec<Vec<f32>> {
    out.into_iter()
        .map(|o| match o {
            Pooled::Vector(v) => v,
            Pooled::Tokens(_) => panic!("expected vectors"),
        })
        .collect()
}

/// A deterministic shuffle (no RNG crate needed for a permutation).
fn shuffled(n: usize, seed: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (i * 7919 + seed * 104_729) % (i + 1);
        idx.swap(i, j);
    }
    idx
}

#[tokio::test]
async fn parity_with_the_golden_vectors_at_batch_1_and_32_in_shuffled_order() {
    let enc = load(&[]);
    let gold = golden();
    assert!(gold.len() >= 20);

    // one at a time
    let mut min_single = 1.0f64;
    for g in &gold {
        let out = enc.encode(vec![Input::Text(g.text.clone())], EncodeOptions::default()).await.unwrap();
        let v = &vectors(out.outputs)[0];
        min_single = min_single.min(cosine(v, &g.embedding));
        assert_eq!(out.tokens[0], g.input_ids.len(), "{:?}", g.text);
    }

    // 32 inputs (every golden sentence, then repeats) in shuffled order, one call
    let order: Vec<usize> = shuffled(32, 3).into_iter().map(|i| i % gold.len()).collect();
    let inputs = order.iter().map(|&i| Input::Text(gold[i].text.clone())).collect();
    let opts = EncodeOptions { lane: Lane::Bulk, ..Default::default() };
    let out = enc.encode(inputs, opts).await.unwrap();
    let vs = vectors(out.outputs);
    let min_batch = order.iter().zip(&vs).map(|(&i, v)| cosine(v, &gold[i].embedding)).fold(1.0, f64::min);
    println!("parity: min cosine batch 1 = {min_single:.9}, batch 32 shuffled = {min_batch:.9}");
    assert!(min_single >= 0.9999, "{min_single}");
    assert!(min_batch >= 0.9999, "{min_batch}");
    for v in &vs {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}

#[tokio::test]
async fn truncation_is_counted_and_can_be_refused() {
    let enc = load(&[]);
    let long = golden().into_iter().find(|g| g.input_ids.len() == 256).expect("a truncated golden sentence");
    let out = enc
        .encode(vec![Input::Text(long.text.clone()), Input::Text("short".into())], EncodeOptions::default())
        .await
        .unwrap();
    assert_eq!(out.tokens[0], 256);
    assert!(out.truncated[0] > 0, "the long sentence lost tokens");
    assert_eq!(out.truncated[1], 0);

    let strict = EncodeOptions { truncate: false, ..Default::default() };
    let err = enc.encode(vec![Input::Text("fine".into()), Input::Text(long.text)], strict).await.unwrap_err();
    match err {
        EncoderError::TooManyTokens { index, tokens, max } => {
            assert_eq!((index, max), (1, 256));
            assert_eq!(tokens, 256 + out.truncated[0]);
        }
        other => panic!("{other:?}"),
    }
}

/// A model folder that reuses the exported graph and tokenizer with a rewritten manifest.
fn variant(dir: &Path, edit: impl Fn(&mut toml::Table)) {
    let src = default_model_dir();
    for f in ["model.onnx", "tokenizer.json"] {
        std::os::unix::fs::symlink(src.join(f), dir.join(f)).unwrap();
    }
    let mut t: toml::Table = std::fs::read_to_string(src.join("model.toml")).unwrap().parse().unwrap();
    edit(&mut t);
    std::fs::write(dir.join("model.toml"), toml::to_string(&t).unwrap()).unwrap();
}

fn load_dir(dir: &Path) -> Result<Encoder, EncoderError> {
    let s = encoder_settings(&[]);
    Encoder::load(dir, &s.encoder, &Metrics::new().encoder)
}

#[tokio::test]
async fn every_pooling_strategy_matches_the_python_reference() {
    let gold = golden();
    for strategy in ["cls", "pooler", "mean", "first_last_avg", "last2_avg"] {
        let tmp = tempfile::tempdir().unwrap();
        variant(tmp.path(), |t| {
            t.insert("pooling".into(), strategy.into());
            t.insert("normalize".into(), false.into());
            t.insert("name".into(), format!("minilm-{strategy}").into());
        });
        let enc = load_dir(tmp.path()).unwrap();
        let inputs = gold.iter().map(|g| Input::Text(g.text.clone())).collect();
        let out = enc.encode(inputs, EncodeOptions { lane: Lane::Bulk, ..Default::default() }).await.unwrap();
        let mut worst = 1.0f64;
        let mut max_abs = 0f32;
        for (g, v) in gold.iter().zip(vectors(out.outputs)) {
            let want = &g.pooled[strategy];
            worst = worst.min(cosine(&v, want));
            max_abs = v.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(max_abs, f32::max);
        }
        println!("pooling {strategy}: min cosine {worst:.9}, max abs diff {max_abs:.2e}");
        assert!(worst >= 0.9999, "{strategy}: {worst}");
        assert!(max_abs < 1e-3, "{strategy}: raw (unnormalised) values differ by {max_abs}");
    }
}

#[tokio::test]
async fn pooling_none_returns_one_vector_per_real_token() {
    let tmp = tempfile::tempdir().unwrap();
    variant(tmp.path(), |t| {
        t.insert("pooling".into(), "none".into());
        t.insert("name".into(), "minilm-tokens".into());
    });
    let enc = load_dir(tmp.path()).unwrap();
    let out = enc
        .encode(vec![Input::Text("hello world".into()), Input::Text("a".into())], EncodeOptions::default())
        .await
        .unwrap();
    match &out.outputs[..] {
        [Pooled::Tokens(a), Pooled::Tokens(b)] => {
            assert_eq!(a.len(), 4, "[CLS] hello world [SEP]");
            assert_eq!(b.len(), 3, "[CLS] a [SEP], no padding");
            assert!(a.iter().chain(b).all(|t| t.len() == 384));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_manifest_that_does_not_fit_the_graph_is_refused_with_the_mismatch_named() {
    let tmp = tempfile::tempdir().unwrap();
    variant(tmp.path(), |t| {
        t.insert("dims".into(), 512.into());
    });
    let err = load_dir(tmp.path()).err().expect("dims mismatch");
    assert!(matches!(err, EncoderError::ModelMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("384") && err.to_string().contains("512"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    variant(tmp.path(), |t| {
        let outputs = t.get_mut("outputs").unwrap().as_table_mut().unwrap();
        outputs.insert("last_hidden_state".into(), "hidden".into());
    });
    let err = load_dir(tmp.path()).err().expect("output mismatch");
    assert!(err.to_string().contains("`hidden`"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    variant(tmp.path(), |t| {
        t.insert("inputs".into(), toml::Value::Array(vec!["input_ids".into(), "attention_mask".into()]));
    });
    let err = load_dir(tmp.path()).err().expect("input mismatch");
    assert!(err.to_string().contains("token_type_ids"), "{err}");
}

#[tokio::test]
async fn cuda_falls_back_to_cpu_unless_a_gpu_is_required() {
    // The CPU-only ONNX Runtime library of scripts/setup has no CUDA provider: a real failure.
    let enc = load(&[("SIDECAR__ENCODER__EXECUTION_PROVIDERS", "cuda,cpu")]);
    assert_eq!(enc.provider(), Provider::Cpu);
    let out = enc.encode(vec![Input::Text("still works".into())], EncodeOptions::default()).await.unwrap();
    assert_eq!(vectors(out.outputs)[0].len(), 384);

    let s = encoder_settings(&[
        ("SIDECAR__ENCODER__EXECUTION_PROVIDERS", "cuda,cpu"),
        ("SIDECAR__ENCODER__REQUIRE_GPU", "true"),
    ]);
    let err = Encoder::load(&s.encoder.models[0], &s.encoder, &Metrics::new().encoder).err().expect("GPU required");
    assert!(err.to_string().contains("require_gpu") && err.to_string().to_lowercase().contains("cuda"), "{err}");
}

#[tokio::test]
async fn prefixes_from_the_manifest_apply_by_text_kind() {
    let tmp = tempfile::tempdir().unwrap();
    variant(tmp.path(), |t| {
        let p = t.get_mut("prefixes").unwrap().as_table_mut().unwrap();
        p.insert("query".into(), "query: ".into());
    });
    let enc = load_dir(tmp.path()).unwrap();
    let q = EncodeOptions { kind: semantic_sidecar::encoder::TextKind::Query, ..Default::default() };
    let with = enc.encode(vec![Input::Text("vitamin d".into())], q).await.unwrap();
    let raw = enc.encode(vec![Input::Text("query: vitamin d".into())], EncodeOptions::default()).await.unwrap();
    let (a, b) = (vectors(with.outputs), vectors(raw.outputs));
    assert!(cosine(&a[0], &b[0]) > 0.99999);
    assert_eq!(with.tokens, raw.tokens);
}

#[tokio::test]
async fn request_limits_are_checked_before_queueing() {
    let enc = load(&[("SIDECAR__ENCODER__MAX_INPUTS_PER_REQUEST", "3"), ("SIDECAR__ENCODER__MAX_INPUT_CHARS", "50")]);
    let four = (0..4).map(|i| Input::Text(format!("text {i}"))).collect();
    assert!(matches!(
        enc.encode(four, EncodeOptions::default()).await,
        Err(EncoderError::TooManyInputs { got: 4, max: 3 })
    ));
    let long = vec![Input::Text("x".repeat(51))];
    assert!(matches!(
        enc.encode(long, EncodeOptions::default()).await,
        Err(EncoderError::InputTooLong { index: 0, .. })
    ));
    assert!(matches!(enc.encode(vec![], EncodeOptions::default()).await, Err(EncoderError::NoInputs)));
}

#[tokio::test]
async fn the_int8_variant_runs_like_python_and_stays_close_to_fp32() {
    let dir = default_model_dir().with_file_name("all-MiniLM-L6-v2-int8");
    let s = encoder_settings(&[]);
    let enc = Encoder::load(&dir, &s.encoder, &Metrics::new().encoder).unwrap();
    assert_eq!(enc.manifest().name, "all-MiniLM-L6-v2-int8");
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let sentences = g["sentences"].as_array().unwrap();
    let floats =
        |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect::<Vec<_>>();
    // One text per call: dynamic int8 scales activations over the whole batch, so a vector
    // depends on its batch-mates; the golden vectors were taken one at a time too.
    let mut one_by_one = Vec::new();
    for s in sentences {
        let input = vec![Input::Text(s["text"].as_str().unwrap().to_string())];
        one_by_one.extend(vectors(enc.encode(input, EncodeOptions::default()).await.unwrap().outputs));
    }
    let (mut vs_python, mut vs_fp32, mut sum_fp32) = (1.0f64, 1.0f64, 0.0f64);
    for (v, s) in one_by_one.iter().zip(sentences) {
        vs_python = vs_python.min(cosine(v, &floats(&s["onnxruntime"])));
        let c = cosine(v, &floats(&s["fp32"]));
        vs_fp32 = vs_fp32.min(c);
        sum_fp32 += c;
    }
    let mean_fp32 = sum_fp32 / sentences.len() as f64;
    println!("int8: min cosine vs Python int8 {vs_python:.6}, vs fp32 min {vs_fp32:.4} mean {mean_fp32:.4}");
    assert!(vs_python >= 0.9999, "Rust and Python run the same int8 graph: {vs_python}");
    assert!(mean_fp32 > 0.95, "int8 drifted too far from fp32: mean {mean_fp32}");
}
