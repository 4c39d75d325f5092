//! What scripts/setup leaves for the encoder: the exported default model, its manifest, the
//! parity report and the golden vectors. Checks their invariants, so a broken export or a
//! tokenizer file with baked-in padding fails here rather than in a later capability.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2")
}

fn read_json(name: &str) -> Value {
    let path = model_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/setup to export the default model", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn manifest() -> toml::Table {
    let text = std::fs::read_to_string(model_dir().join("model.toml")).unwrap();
    text.parse::<toml::Table>().unwrap()
}

#[test]
fn the_manifest_matches_the_issue_contract() {
    let m = manifest();
    assert_eq!(m["name"].as_str(), Some("all-MiniLM-L6-v2"));
    assert_eq!(m["dims"].as_integer(), Some(384));
    assert_eq!(m["max_seq_len"].as_integer(), Some(256));
    assert_eq!(m["pooling"].as_str(), Some("mean"));
    assert_eq!(m["normalize"].as_bool(), Some(true));
    let inputs: Vec<&str> = m["inputs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(inputs, ["input_ids", "attention_mask", "token_type_ids"]);
    let outputs = m["outputs"].as_table().unwrap();
    for needed in ["last_hidden_state", "first_hidden_state", "second_last_hidden_state"] {
        assert!(outputs.contains_key(needed), "missing output {needed}");
    }
    for file in [m["onnx"].as_str().unwrap(), m["tokenizer"].as_str().unwrap()] {
        let p = model_dir().join(file);
        assert!(p.is_file(), "{} is missing: run scripts/setup", p.display());
    }
}

#[test]
fn the_parity_report_clears_the_threshold() {
    let r = read_json("parity.json");
    let min = r["min_cosine"].as_f64().unwrap();
    assert!(min >= 0.9999, "min cosine {min}");
    assert!(r["sentences"].as_u64().unwrap() >= 20);
    assert!(r["reference"].as_str().unwrap().starts_with("sentence-transformers"));
}

#[test]
fn the_tokenizer_file_has_no_baked_in_padding_or_truncation() {
    let t = read_json("tokenizer.json");
    assert!(t["padding"].is_null(), "padding must come from the manifest: {}", t["padding"]);
    assert!(t["truncation"].is_null(), "truncation must come from the manifest: {}", t["truncation"]);
}

#[test]
fn golden_vectors_cover_the_hard_inputs_and_are_consistent() {
    let g = read_json("golden.json");
    let sentences = g["sentences"].as_array().unwrap();
    assert!(sentences.len() >= 20);
    let texts: Vec<&str> = sentences.iter().map(|s| s["text"].as_str().unwrap()).collect();
    assert!(texts.iter().any(|t| t.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))), "a Chinese sentence");
    assert!(texts.iter().any(|t| t.chars().any(|c| c as u32 >= 0x1F300)), "an emoji sentence");
    assert!(texts.iter().any(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_punctuation())), "punctuation only");
    assert!(texts.contains(&""), "the empty string");

    let mut truncated = 0;
    for s in sentences {
        let ids = s["input_ids"].as_array().unwrap();
        assert!(ids.len() >= 2 && ids.len() <= 256, "{} ids", ids.len());
        assert_eq!(ids[0].as_i64(), Some(101), "starts with [CLS]");
        assert_eq!(ids.last().unwrap().as_i64(), Some(102), "ends with [SEP]");
        truncated += usize::from(ids.len() == 256);

        let emb: Vec<f64> = s["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(emb.len(), 384);
        let norm = emb.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "normalised reference, norm {norm}");

        // the reference (sentence-transformers) equals the torch mean-pooled vector, normalised
        let mean: Vec<f64> = s["pooled"]["mean"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let mnorm = mean.iter().map(|x| x * x).sum::<f64>().sqrt();
        let cos = emb.iter().zip(&mean).map(|(a, b)| a * b).sum::<f64>() / mnorm;
        assert!(cos > 0.9999, "{:?}: cos {cos}", s["text"]);
        for strategy in ["cls", "mean", "first_last_avg", "last2_avg", "pooler"] {
            assert_eq!(s["pooled"][strategy].as_array().map(Vec::len), Some(384), "{strategy}");
        }
    }
    assert!(truncated >= 1, "at least one sentence exercises truncation at max_seq_len");
}
