//! The query path with the real model and ONNX Runtime: a query encoded on its own (the fast
//! path of an idle queue) gets the vector it gets inside a padded batch; a query is not held up
//! by a concurrent bulk load, read from the queue-wait and batch-time histograms; the
//! query-vector cache never hands a vector to another model or another prefix.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{cosine, default_model_dir, encoder_settings};
use semantic_sidecar::encoder::{EncodeOptions, Encoder, EncoderSet, Input, Lane, Pooled, TextKind};
use semantic_sidecar::telemetry::Metrics;

fn vector(p: &Pooled) -> &[f32] {
    match p {
        Pooled::Vector(v) => v,
        Pooled::Tokens(_) => panic!("expected a sentence vector"),
    }
}

/// The sum of a counter or histogram series in a `/metrics` text, by name and label filter.
fn series(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `(upper bound, cumulative count)` of a histogram's buckets, for one label set.
fn buckets(text: &str, name: &str, labels: &[&str]) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut out: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&prefix) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The bucket bounds that hold quantile `q`: (lower, upper) in seconds.
fn quantile_bounds(b: &[(f64, f64)], q: f64) -> (f64, f64) {
    let total = b.last().map_or(0.0, |x| x.1);
    let want = (q * total).ceil().max(1.0);
    let mut lower = 0.0;
    for &(le, count) in b {
        if count >= want {
            return (lower, le);
        }
        lower = le;
    }
    (lower, f64::INFINITY)
}

/// The static int8 copy of the default model that `scripts/setup` makes for the query path.
fn static_int8_dir() -> std::path::PathBuf {
    let dir = default_model_dir().with_file_name("all-MiniLM-L6-v2-int8-static");
    assert!(dir.join("model.onnx").is_file(), "{} is missing: run scripts/setup", dir.display());
    dir
}

/// A query encoded alone (batch of one, no padding) against the same query inside padded
/// batches of both lanes: cosine at least `min`.
async fn alone_vs_batched(model: &Path, min: f64) {
    let s = encoder_settings(&[]);
    let metrics = Metrics::new();
    let enc = Encoder::load(model, &s.encoder, &metrics.encoder).unwrap();
    let queries = ["vitamin d deficiency", "stem cells", "DNA repair in yeast after radiation damage"];
    let longer = [
        "The effects of long-term exposure to air pollution on the risk of cardiovascular disease in adults",
        "A randomised controlled trial of exercise therapy for patients with chronic lower back pain and sciatica",
        "Genome-wide association studies identify common variants associated with susceptibility to type 2 diabetes",
        "Mitochondrial dysfunction and oxidative stress in the pathogenesis of neurodegenerative disorders",
    ];
    let q = EncodeOptions { kind: TextKind::Query, lane: Lane::Interactive, ..Default::default() };
    for query in queries {
        let before = metrics.render();
        let alone = enc.encode(vec![Input::Text(query.into())], q).await.unwrap();
        let after_alone = metrics.render();
        let padding = |a: &str, b: &str| {
            series(b, "sidecar_encoder_padded_tokens_total", &[])
                - series(a, "sidecar_encoder_padded_tokens_total", &[])
        };
        assert_eq!(padding(&before, &after_alone) as usize, alone.tokens[0], "a batch of one has no padding");
        let mut inputs: Vec<Input> = longer.iter().map(|t| Input::Text(t.to_string())).collect();
        inputs.insert(2, Input::Text(query.into()));
        for lane in [Lane::Interactive, Lane::Bulk] {
            let before = metrics.render();
            let batched = enc.encode(inputs.clone(), EncodeOptions { lane, ..q }).await.unwrap();
            let after = metrics.render();
            assert!(
                padding(&before, &after) as usize > batched.tokens.iter().sum::<usize>(),
                "the query was padded to its longer batch mates"
            );
            assert_eq!(batched.tokens[2], alone.tokens[0]);
            let c = cosine(vector(&alone.outputs[0]), vector(&batched.outputs[2]));
            assert!(c >= min, "{}: `{query}` alone vs batched ({lane:?}): cosine {c}", model.display());
        }
    }
}

#[tokio::test]
async fn a_query_alone_gets_the_vector_it_gets_in_a_padded_batch() {
    alone_vs_batched(&default_model_dir(), 0.99999).await;
}

/// Fixed activation scales: the static int8 query model is as batch-independent as fp32 (dynamic
/// int8 is not: 0.9655 at export), matches Python onnxruntime's vectors, and stays next to the
/// fp32 model whose index it searches.
#[tokio::test]
async fn the_static_int8_query_model_is_deterministic_and_close_to_fp32() {
    let dir = static_int8_dir();
    alone_vs_batched(&dir, 0.99999).await;
    let s = encoder_settings(&[]);
    let metrics = Metrics::new();
    let enc = Encoder::load(&dir, &s.encoder, &metrics.encoder).unwrap();
    let manifest = enc.manifest();
    assert_eq!(manifest.source.quantization.as_deref(), Some("int8-static"));
    assert_eq!(manifest.source.quantized_from.as_deref(), Some("all-MiniLM-L6-v2"));
    let gold: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
    };
    let mut worst_fp32 = 1.0f64;
    for g in gold["sentences"].as_array().unwrap() {
        let text = g["text"].as_str().unwrap().to_string();
        // golden texts carry the query prefix already: encode them as passages (no prefix)
        let opts = EncodeOptions { kind: TextKind::Passage, lane: Lane::Interactive, ..Default::default() };
        let out = enc.encode(vec![Input::Text(text.clone())], opts).await.unwrap();
        let v = vector(&out.outputs[0]);
        let c = cosine(v, &floats(&g["onnxruntime"]));
        assert!(c >= 0.99999, "`{text}`: Rust vs Python onnxruntime cosine {c}");
        worst_fp32 = worst_fp32.min(cosine(v, &floats(&g["fp32"])));
    }
    assert!(worst_fp32 >= 0.99, "static int8 vs fp32: min cosine {worst_fp32}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_is_not_held_up_by_a_concurrent_bulk_load() {
    // small bulk batches so the test is quick; still each is many times a query's run
    let s = encoder_settings(&[("SIDECAR__ENCODER__MAX_BATCH_TOKENS", "2048")]);
    assert!(s.encoder.sessions_per_model >= 2 && s.encoder.reserve_interactive_session, "the defaults");
    let metrics = Metrics::new();
    let enc = Arc::new(Encoder::load(&s.encoder.models[0], &s.encoder, &metrics.encoder).unwrap());
    let passage = "Long-term exposure to fine particulate matter was associated with incident cardiovascular \
                   events in a cohort of adults followed for a decade, after adjustment for smoking, income \
                   and other risk factors; the association was stronger in older participants. "
        .repeat(3);
    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..2)
        .map(|w| {
            let (enc, stop, passage) = (enc.clone(), stop.clone(), passage.clone());
            tokio::spawn(async move {
                let bulk = EncodeOptions { lane: Lane::Bulk, wait_for_room: true, ..Default::default() };
                while !stop.load(Ordering::Relaxed) {
                    let inputs = (0..32).map(|i| Input::Text(format!("{w} {i} {passage}"))).collect();
                    enc.encode(inputs, bulk).await.unwrap();
                }
            })
        })
        .collect();
    // the bulk lane is busy before the first query
    while series(&metrics.render(), "sidecar_encoder_batch_seconds_count", &["lane=\"bulk\""]) < 1.0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let q = EncodeOptions { kind: TextKind::Query, lane: Lane::Interactive, ..Default::default() };
    for i in 0..30 {
        enc.encode(vec![Input::Text(format!("query number {i} about air pollution"))], q).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(7)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        l.await.unwrap();
    }
    let text = metrics.render();
    let waits = buckets(&text, "sidecar_encoder_queue_wait_seconds", &["lane=\"interactive\""]);
    let bulk = buckets(&text, "sidecar_encoder_batch_seconds", &["lane=\"bulk\""]);
    assert_eq!(waits.last().map(|b| b.1), Some(30.0), "every query's wait was recorded");
    assert!(bulk.last().map_or(0.0, |b| b.1) >= 2.0, "bulk batches ran meanwhile: {bulk:?}");
    let (_, wait_p99) = quantile_bounds(&waits, 0.99);
    let (bulk_p50, _) = quantile_bounds(&bulk, 0.5);
    // Without the reserved session a query waits for the running bulk batch: up to a whole one.
    assert!(
        wait_p99 <= bulk_p50 / 4.0,
        "interactive queue wait p99 ≤ {wait_p99}s, bulk batch p50 ≥ {bulk_p50}s: queries waited behind bulk work"
    );
}

/// A model folder that reuses the exported graph and tokenizer under another name and prefixes.
fn variant(dir: &Path, name: &str, query: &str, passage: &str) {
    let src = default_model_dir();
    for f in ["model.onnx", "tokenizer.json"] {
        std::os::unix::fs::symlink(src.join(f), dir.join(f)).unwrap();
    }
    let mut t: toml::Table = std::fs::read_to_string(src.join("model.toml")).unwrap().parse().unwrap();
    t.insert("name".into(), name.into());
    let p = t.get_mut("prefixes").unwrap().as_table_mut().unwrap();
    p.insert("query".into(), query.into());
    p.insert("passage".into(), passage.into());
    std::fs::write(dir.join("model.toml"), toml::to_string(&t).unwrap()).unwrap();
}

#[tokio::test]
async fn the_query_cache_never_hands_a_vector_to_another_model_or_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    variant(tmp.path(), "minilm-prefixed", "query: ", "passage: ");
    let int8 = default_model_dir().with_file_name("all-MiniLM-L6-v2-int8");
    let models = [default_model_dir(), tmp.path().to_path_buf(), int8];
    let list = models.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",");
    let s = encoder_settings(&[("SIDECAR__ENCODER__MODELS", &list), ("SIDECAR__ENCODER__QUERY_CACHE_ENTRIES", "64")]);
    let metrics = Metrics::new();
    let set = EncoderSet::load(&s.encoder, &metrics.encoder).unwrap();
    let names = ["all-MiniLM-L6-v2", "minilm-prefixed", "all-MiniLM-L6-v2-int8"];
    let text = "vitamin d and bone density";
    let kinds = [TextKind::Query, TextKind::Passage, TextKind::Raw];
    // what each (model, kind) gives without the cache
    let mut fresh = Vec::new();
    for name in names {
        let enc = set.get(Some(name)).unwrap();
        for kind in kinds {
            let o = EncodeOptions { kind, cache: false, ..Default::default() };
            fresh.push(enc.encode(vec![Input::Text(text.into())], o).await.unwrap().outputs.remove(0));
        }
    }
    // twice through the cache, every model and kind in turn: the second pass is all hits
    for pass in 0..2 {
        let mut i = 0;
        for name in names {
            let enc = set.get(Some(name)).unwrap();
            for kind in kinds {
                let o = EncodeOptions { kind, cache: true, ..Default::default() };
                let out = enc.encode(vec![Input::Text(text.into())], o).await.unwrap();
                assert_eq!(
                    out.outputs[0], fresh[i],
                    "{name} {kind:?}, pass {pass}: the vector of its own model and prefix"
                );
                i += 1;
            }
        }
    }
    // the prefixed model's query and passage vectors differ from its raw one (the prefix is applied)
    assert!(cosine(vector(&fresh[3]), vector(&fresh[5])) < 0.9999);
    assert!(cosine(vector(&fresh[4]), vector(&fresh[5])) < 0.9999);
    let m = metrics.render();
    let hits = series(&m, "sidecar_encoder_cache_lookups_total", &["outcome=\"hit\""]);
    let misses = series(&m, "sidecar_encoder_cache_lookups_total", &["outcome=\"miss\""]);
    // The first pass misses once for each distinct model input: the plain and int8 models have
    // no prefixes, so their query, passage and raw texts are one input each (1 miss, 2 hits);
    // the prefixed model has three (3 misses). The second pass hits all 9.
    assert_eq!((hits, misses), (4.0 + 9.0, 5.0), "hits and misses in /metrics");
}
