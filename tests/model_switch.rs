//! Changing an index's model without downtime, on the real engine with two real models
//! (all-MiniLM-L6-v2 → bge-small-en-v1.5), while a client keeps querying through the alias:
//!
//! 1. live: alias → v1, pipeline with one vector field (MiniLM), served by sidecar A;
//! 2. the pipeline gains a second `[[fields]]` entry with `model = "bge-small-en-v1.5"`; a reindex
//!    v1 → v2 fills both fields and moves the alias, while queries keep using the MiniLM field;
//! 3. `[search] vector` names the new field: sidecar B (the new configuration) takes the queries
//!    from A, as a rolling restart behind a load balancer would; both answer correctly meanwhile,
//!    because v2 holds both fields;
//! 4. the old field is dropped: a pipeline without it reindexes v2 → v3 (the stale vector field
//!    stays out of the read and of the mapping) and sidecar C takes over.
//!
//! Every query of the client answers 200 with hits throughout; explain names the field and model
//! that answered; the stored vectors of each field equal `/embed` of its own model.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cosine, encoder_settings, engine_url, unique_index};
use reqwest::Method;
use semantic_sidecar::encoder::EncoderSet;
use semantic_sidecar::engine::{EngineClient, EngineRequest};
use semantic_sidecar::http::{self, AppState};
use semantic_sidecar::ingest::mapping::{index_body, ModelShape};
use semantic_sidecar::telemetry::Metrics;
use semantic_sidecar::types::pipeline::Pipeline;
use serde_json::{json, Value};

const OLD: &str = "all-MiniLM-L6-v2";
const NEW: &str = "bge-small-en-v1.5";

fn models_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn pipeline(alias: &str, fields: &str, search: &str, model: &str) -> Pipeline {
    let text = format!(
        "name = 'switch'\nindex = '{alias}'\nmodel = '{model}'\nhash_field = 'content_hash'\n{fields}\n[search]\n{search}\n"
    );
    let p: Pipeline = toml::from_str(&text).unwrap();
    p.validate().unwrap_or_else(|e| panic!("{e:?}"));
    p
}

const OLD_FIELD: &str = "[[fields]]\nsource = ['title', 'text']\nvector = 'text_vector'\n";
const NEW_FIELD: &str =
    "[[fields]]\nsource = ['title', 'text']\nvector = 'text_vector_bge'\nmodel = 'bge-small-en-v1.5'\n";

struct Sidecar {
    url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn sidecar(p: Pipeline) -> Sidecar {
    let new_model = models_dir().join(NEW);
    assert!(
        new_model.join("model.onnx").is_file(),
        "{} is missing: run scripts/setup --models {NEW} (or --models all)",
        new_model.display()
    );
    let models = format!("{},{}", common::default_model_dir().display(), new_model.display());
    let settings = encoder_settings(&[("SIDECAR__ENGINE__URLS", &engine_url()), ("SIDECAR__ENCODER__MODELS", &models)]);
    let engine = EngineClient::new(&settings.engine).unwrap();
    let metrics = Metrics::new();
    let (es, em) = (settings.encoder.clone(), metrics.encoder.clone());
    let encoders = tokio::task::spawn_blocking(move || EncoderSet::load(&es, &em)).await.unwrap().unwrap();
    let state = AppState::with_encoders(settings, engine, metrics, encoders).with_pipelines(vec![p]).unwrap();
    let (url, tx) = http::serve_local(state).await.unwrap();
    Sidecar { url, _stop: tx }
}

fn scifact(n: usize) -> Vec<Value> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/scifact/corpus.jsonl");
    std::fs::read_to_string(path).unwrap().lines().take(n).map(|l| serde_json::from_str(l).unwrap()).collect()
}

async fn reindex(s: &Sidecar, source: &str, target: &str, alias: &str) {
    let http = reqwest::Client::new();
    let body = json!({"pipeline": "switch", "source": source, "target": target, "alias": alias});
    let r = http.post(format!("{}/_jobs/reindex", s.url)).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let t = Instant::now();
    loop {
        let j: Value = http.get(format!("{}/_jobs/{id}", s.url)).send().await.unwrap().json().await.unwrap();
        if j["status"] != "running" {
            assert_eq!(j["status"], "done", "{j}");
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(600), "reindex {id} still running: {j}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn alias_target(engine: &EngineClient, alias: &str) -> String {
    let v: Value = engine.get_json(&format!("/_alias/{alias}")).await.unwrap();
    v.as_object().unwrap().keys().next().unwrap().clone()
}

async fn embed(url: &str, model: &str, text: &str) -> Vec<f32> {
    common::embed_model(url, Some(model), &[text.to_string()], "passage").await.remove(0)
}

/// The client: queries through whichever sidecar `target` names, until `stop`; returns the
/// answers (status, hits, the model explain names) and every failure.
fn client(
    target: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    alias: String,
    queries: Vec<String>,
) -> tokio::task::JoinHandle<(usize, Vec<String>, Vec<String>)> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let (mut ok, mut failures, mut models) = (0usize, Vec::new(), Vec::new());
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let url = target.lock().unwrap().clone();
            let q = &queries[i % queries.len()];
            i += 1;
            let body = json!({"index": alias, "query": q, "mode": "hybrid", "size": 5, "explain": true});
            match http.post(format!("{url}/search")).json(&body).send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    let hits = v.pointer("/hits/hits").and_then(Value::as_array).map_or(0, Vec::len);
                    if status == 200 && hits > 0 {
                        ok += 1;
                        let m = v.pointer("/vector/model").and_then(Value::as_str).unwrap_or("?").to_string();
                        if models.last() != Some(&m) {
                            models.push(m);
                        }
                    } else {
                        failures.push(format!("{status} with {hits} hits: {v}"));
                    }
                }
                Err(e) => failures.push(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        (ok, failures, models)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_changes_field_by_field_while_queries_answer_throughout() {
    let settings = encoder_settings(&[("SIDECAR__ENGINE__URLS", &engine_url())]);
    let engine = EngineClient::new(&settings.engine).unwrap();
    let alias = unique_index("switch-live");
    let (v1, v2, v3) = (format!("{alias}-v1"), format!("{alias}-v2"), format!("{alias}-v3"));

    // 1. live on the old model: alias → v1, written through sidecar A
    let p1 = pipeline(&alias, OLD_FIELD, "", OLD);
    let info = engine.info().await.unwrap();
    let old_manifest =
        semantic_sidecar::encoder::manifest::ModelDir::load(&common::default_model_dir()).unwrap().manifest;
    let mut body =
        index_body(&info, &Pipeline { index: v1.clone(), ..p1.clone() }, ModelShape::of(&old_manifest)).unwrap();
    let mut aliases = serde_json::Map::new();
    aliases.insert(alias.clone(), json!({}));
    body["aliases"] = Value::Object(aliases);
    engine.send(EngineRequest::new(Method::PUT, format!("/{v1}")).json(&body)).await.unwrap();
    let a = sidecar(p1).await;
    let docs = scifact(60);
    let mut bulk = String::new();
    for d in &docs {
        bulk.push_str(&json!({"index": {"_index": alias, "_id": d["_id"]}}).to_string());
        bulk.push('\n');
        let text: String = d["text"].as_str().unwrap().chars().take(400).collect();
        bulk.push_str(&json!({"title": d["title"], "text": text}).to_string());
        bulk.push('\n');
    }
    let r = common::post_ndjson(&format!("{}/_bulk?refresh=true", a.url), bulk).await;
    assert_eq!(r["errors"], false, "{r}");

    let target = Arc::new(Mutex::new(a.url.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let queries: Vec<String> = docs.iter().map(|d| d["title"].as_str().unwrap().to_string()).collect();
    let load = client(target.clone(), stop.clone(), alias.clone(), queries);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 2. the new model's field fills in a new index; queries stay on the old field
    let p2 = pipeline(&alias, &format!("{OLD_FIELD}{NEW_FIELD}"), "", OLD);
    let filler = sidecar(p2.clone()).await;
    reindex(&filler, &v1, &v2, &alias).await;
    assert_eq!(alias_target(&engine, &alias).await, v2);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 3. the search moves to the new field: sidecar B takes over from A
    let p3 = pipeline(&alias, &format!("{OLD_FIELD}{NEW_FIELD}"), "vector = 'text_vector_bge'", OLD);
    let b = sidecar(p3).await;
    *target.lock().unwrap() = b.url.clone();
    tokio::time::sleep(Duration::from_millis(300)).await; // the request in flight on A ends
    drop(a);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let doc: Value = engine.get_json(&format!("/{v2}/_doc/{}", docs[7]["_id"].as_str().unwrap())).await.unwrap();
    let src = &doc["_source"];
    let text = format!("{}\n{}", src["title"].as_str().unwrap(), src["text"].as_str().unwrap());
    let vec_of = |f: &str| -> Vec<f32> {
        src[f]
            .as_array()
            .unwrap_or_else(|| panic!("{f} missing: {src}"))
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    assert!(
        cosine(&vec_of("text_vector"), &embed(&b.url, OLD, &text).await) > 0.999,
        "the old field holds the old model"
    );
    assert!(
        cosine(&vec_of("text_vector_bge"), &embed(&b.url, NEW, &text).await) > 0.999,
        "the new field holds the new model"
    );

    // 4. the old field is dropped by a reindex with a pipeline that no longer writes it
    let p4 = pipeline(&alias, NEW_FIELD, "", NEW);
    let c = sidecar(p4).await;
    reindex(&c, &v2, &v3, &alias).await;
    assert_eq!(alias_target(&engine, &alias).await, v3);
    *target.lock().unwrap() = c.url.clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(b);
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failures, models) = load.await.unwrap();

    let mapping: Value = engine.get_json(&format!("/{v3}/_mapping")).await.unwrap();
    let props = &mapping[&v3]["mappings"]["properties"];
    assert!(props.get("text_vector").is_none(), "the dropped field is still mapped: {props}");
    assert!(props.get("text_vector_bge").is_some(), "{props}");
    let doc: Value = engine.get_json(&format!("/{v3}/_doc/{}", docs[7]["_id"].as_str().unwrap())).await.unwrap();
    assert!(doc["_source"].get("text_vector").is_none(), "the dropped vectors were copied: {}", doc["_source"]);
    let count: Value = engine.get_json(&format!("/{v3}/_count")).await.unwrap();
    assert_eq!(count["count"], docs.len());

    assert!(
        failures.is_empty(),
        "{} of {} queries failed during the switch, first: {}",
        failures.len(),
        ok + failures.len(),
        failures[0]
    );
    assert!(ok >= 20, "only {ok} queries ran");
    assert_eq!(models, [OLD, NEW], "the model that answered, in order");
    for i in [&v1, &v2, &v3] {
        let _ = engine.send(EngineRequest::new(Method::DELETE, format!("/{i}"))).await;
    }
}
