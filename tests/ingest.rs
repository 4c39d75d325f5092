//! The ES-compatible write endpoints against the real OpenSearch node and the real model:
//! vectors arrive equal to `/embed`, per-item failures land at their positions while valid items
//! are stored, malformed requests store nothing, other indices pass through untouched.

mod common;

use std::path::PathBuf;

use common::{cosine, embed_passages, encoder_settings, engine_url, unique_index, Fault, FaultProxy};
use reqwest::Method;
use semantic_sidecar::encoder::EncoderSet;
use semantic_sidecar::engine::{EngineClient, EngineRequest};
use semantic_sidecar::http::{self, AppState};
use semantic_sidecar::ingest::mapping::{index_body, ModelShape};
use semantic_sidecar::telemetry::Metrics;
use semantic_sidecar::types::pipeline::Pipeline;
use serde_json::{json, Value};

struct Fixture {
    url: String,
    index: String,
    engine: EngineClient,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The test pipeline; `extra` goes before `[[fields]]` when it is plain keys, after it when it
/// is a table (TOML keys after a table header belong to that table).
fn pipeline(index: &str, extra: &str) -> Pipeline {
    let (top, tail) = if extra.trim_start().starts_with('[') { ("", extra) } else { (extra, "") };
    toml::from_str(&format!(
        "name = 'docs'\nindex = '{index}'\nmodel = 'all-MiniLM-L6-v2'\nhash_field = 'content_hash'\n{top}\
         [[fields]]\nsource = ['title', 'text']\nvector = 'text_vector'\n{tail}"
    ))
    .unwrap()
}

async fn fixture(extra: &[(&str, &str)]) -> Fixture {
    fixture_on(&engine_url(), extra).await
}

async fn fixture_on(url: &str, extra: &[(&str, &str)]) -> Fixture {
    fixture_with(url, extra, "").await
}

async fn fixture_with(url: &str, extra: &[(&str, &str)], pipeline_extra: &str) -> Fixture {
    let mut pairs = vec![("SIDECAR__ENGINE__URLS", url)];
    pairs.extend_from_slice(extra);
    let settings = encoder_settings(&pairs);
    let engine = EngineClient::new(&settings.engine).unwrap();
    let index = unique_index("ingest");
    let p = pipeline(&index, pipeline_extra);
    let info = engine.info().await.unwrap();
    let body = index_body(&info, &p, ModelShape { dims: 384, normalized: true, language: None }).unwrap();
    engine.send(EngineRequest::new(Method::PUT, format!("/{index}")).json(&body)).await.unwrap();

    let metrics = Metrics::new();
    let (es, em) = (settings.encoder.clone(), metrics.encoder.clone());
    let encoders = tokio::task::spawn_blocking(move || EncoderSet::load(&es, &em)).await.unwrap().unwrap();
    let state = AppState::with_encoders(settings, engine.clone(), metrics, encoders).with_pipelines(vec![p]).unwrap();
    let (addr, tx) = http::serve_local(state).await.unwrap();
    Fixture { url: addr, index, engine, _stop: tx }
}

fn scifact(n: usize) -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/scifact/corpus.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (the evaluation data lives in ../shared/data)", path.display()));
    text.lines().take(n).map(|l| serde_json::from_str(l).unwrap()).collect()
}

async fn bulk(url: &str, body: String) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/_bulk?refresh=true"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn count(f: &Fixture) -> u64 {
    let v: Value = f.engine.get_json(&format!("/{}/_count", f.index)).await.unwrap();
    v["count"].as_u64().unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[tokio::test]
async fn a_thousand_scifact_documents_arrive_with_the_vectors_of_embed() {
    // one request embeds 1,000 abstracts (~40 s alone on 2 cores, more beside the other tests)
    let f = fixture(&[("SIDECAR__SERVER__REQUEST_TIMEOUT", "600s")]).await;
    let docs = scifact(1000);
    let mut body = String::new();
    for d in &docs {
        body.push_str(&json!({"index": {"_index": f.index, "_id": d["_id"]}}).to_string());
        body.push('\n');
        body.push_str(&json!({"title": d["title"], "text": d["text"]}).to_string());
        body.push('\n');
    }
    let (st, resp) = bulk(&f.url, body).await;
    assert_eq!(st, 200, "{resp}");
    assert_eq!(resp["errors"], false, "{resp}");
    assert_eq!(resp["items"].as_array().unwrap().len(), 1000);
    assert_eq!(count(&f).await, 1000);

    // every 20th document: stored vector == /embed of the same joined text
    let sample: Vec<&Value> = docs.iter().step_by(20).collect();
    let texts: Vec<String> =
        sample.iter().map(|d| format!("{}\n{}", d["title"].as_str().unwrap(), d["text"].as_str().unwrap())).collect();
    let want = embed_passages(&f.url, &texts).await;
    let ids: Vec<&Value> = sample.iter().map(|d| &d["_id"]).collect();
    let got: Value = f
        .engine
        .send(
            EngineRequest::new(Method::POST, format!("/{}/_mget", f.index)).json(&json!({"ids": ids})).idempotent(true),
        )
        .await
        .unwrap()
        .json()
        .unwrap();
    let mut worst = 1.0f64;
    for (doc, w) in got["docs"].as_array().unwrap().iter().zip(&want) {
        let v = floats(&doc["_source"]["text_vector"]);
        assert_eq!(v.len(), 384);
        assert_eq!(doc["_source"]["content_hash"].as_str().map(str::len), Some(64));
        worst = worst.min(cosine(&v, w));
    }
    println!("bulk vs /embed: min cosine {worst:.9} over {} documents", want.len());
    assert!(worst >= 0.9999);
}

#[tokio::test]
async fn bad_items_fail_alone_and_valid_ones_are_stored() {
    let f = fixture(&[("SIDECAR__ENCODER__MAX_INPUT_CHARS", "2000")]).await;
    let i = &f.index;
    let lines = [
        json!({"index": {"_index": i, "_id": "ok1"}}),
        json!({"title": "Vitamin D", "text": "and respiratory infections", "year": 2011}),
        json!({"index": {"_index": i, "_id": "num"}}),
        json!({"title": 42, "text": "a number is not text"}),
        json!({"index": {"_index": i, "_id": "big"}}),
        json!({"title": "huge", "text": "x".repeat(3000)}),
        json!({"index": {"_index": i, "_id": "obj"}}),
        json!({"title": "engine rejects", "text": "fine", "text_vector": "not a vector"}),
        json!({"create": {"_index": i, "_id": "ok2"}}),
        json!({"title": "Second", "text": "valid document"}),
        json!({"delete": {"_index": i, "_id": "missing"}}),
        json!({"index": {"_index": i, "_id": "badyear"}}),
        json!({"title": "Engine-side rejection", "text": "year is mapped as a number", "year": {"not": "a number"}}),
    ];
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let (st, resp) = bulk(&f.url, body).await;
    assert_eq!(st, 200, "{resp}");
    assert_eq!(resp["errors"], true);
    let items = resp["items"].as_array().unwrap();
    assert_eq!(items.len(), 7);
    let status = |k: usize, action: &str| items[k][action]["status"].as_u64().unwrap();
    assert_eq!(status(0, "index"), 201);
    assert_eq!(status(1, "index"), 400);
    assert!(items[1]["index"]["error"]["reason"].as_str().unwrap().contains("[title] must be text"));
    assert_eq!(status(2, "index"), 413);
    assert!(items[2]["index"]["error"]["reason"].as_str().unwrap().contains("max_input_chars"));
    // a client may not set the vector the pipeline computes
    assert_eq!(status(3, "index"), 400);
    assert!(items[3]["index"]["error"]["reason"].as_str().unwrap().contains("[text_vector] is computed by pipeline"));
    assert_eq!(status(4, "create"), 201);
    assert_eq!(status(5, "delete"), 404);
    assert_eq!(status(6, "index"), 400, "the engine's own per-item error: {}", items[6]);
    // OpenSearch and Elasticsearch 8.x before 8.x's rename say mapper_parsing_exception,
    // Elasticsearch 8.19/9 document_parsing_exception
    let kind = items[6]["index"]["error"]["type"].as_str().unwrap();
    assert!(matches!(kind, "mapper_parsing_exception" | "document_parsing_exception"), "{}", items[6]);
    assert_eq!(count(&f).await, 2, "ok1 and ok2 stored; num, big and obj not");
}

#[tokio::test]
async fn malformed_requests_store_nothing_and_name_the_line() {
    let f = fixture(&[]).await;
    let i = &f.index;
    for (body, needle) in [
        (format!("{}\n{}\n{{oops\n", json!({"index": {"_index": i}}), json!({"title": "a", "text": "b"})), "line [3]"),
        (format!("{}\n{}\n", json!({"upsert": {"_index": i}}), json!({"title": "a"})), "[upsert]"),
    ] {
        let (st, resp) = bulk(&f.url, body).await;
        assert_eq!(st, 400, "{resp}");
        assert!(resp["error"]["reason"].as_str().unwrap().contains(needle), "{resp}");
    }
    f.engine.send(EngineRequest::new(Method::POST, format!("/{i}/_refresh")).idempotent(true)).await.unwrap();
    assert_eq!(count(&f).await, 0);
}

#[tokio::test]
async fn other_indices_pass_through_untouched() {
    let f = fixture(&[]).await;
    let plain = unique_index("plain");
    let body =
        format!("{}\n{}\n", json!({"index": {"_index": plain, "_id": "1"}}), json!({"title": "no pipeline here"}));
    let (st, resp) = bulk(&f.url, body).await;
    assert_eq!(st, 200, "{resp}");
    let doc: Value = f.engine.get_json(&format!("/{plain}/_doc/1")).await.unwrap();
    assert_eq!(doc["_source"], json!({"title": "no pipeline here"}), "no vector, nothing added");
    f.engine.send(EngineRequest::new(Method::DELETE, format!("/{plain}"))).await.unwrap();
}

#[tokio::test]
async fn writes_through_an_alias_of_a_pipeline_index_get_its_vectors() {
    let f = fixture(&[]).await;
    let (i, alias) = (f.index.clone(), format!("{}-alias", f.index));
    let actions = json!({"actions": [{"add": {"index": i, "alias": alias, "is_write_index": true}}]});
    f.engine.send(EngineRequest::new(Method::POST, "/_aliases").json(&actions)).await.unwrap();
    let c = reqwest::Client::new();
    let doc = |t: &str| json!({"title": t, "text": format!("{t} through the alias")});
    let body = format!("{}\n{}\n", json!({"index": {"_index": alias, "_id": "bulk-item"}}), doc("Bulk item"));
    let (st, resp) = bulk(&f.url, body).await;
    assert_eq!(st, 200, "{resp}");
    let r = c
        .post(format!("{}/{alias}/_bulk?refresh=true", f.url))
        .header("content-type", "application/x-ndjson")
        .body(format!("{}\n{}\n", json!({"index": {"_id": "path-bulk"}}), doc("Path bulk")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.put(format!("{}/{alias}/_doc/single?refresh=true", f.url)).json(&doc("Single")).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = c
        .post(format!("{}/{alias}/_update/single?refresh=true", f.url))
        .json(&json!({"doc": {"text": "changed through the alias"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    for (id, text) in [
        ("bulk-item", "Bulk item\nBulk item through the alias"),
        ("path-bulk", "Path bulk\nPath bulk through the alias"),
        ("single", "Single\nchanged through the alias"),
    ] {
        let stored: Value = f.engine.get_json(&format!("/{i}/_doc/{id}")).await.unwrap();
        let want = embed_passages(&f.url, &[text.to_string()]).await;
        let got = floats(&stored["_source"]["text_vector"]);
        assert!(!got.is_empty() && cosine(&got, &want[0]) >= 0.9999, "{id}: {stored}");
    }
}

#[tokio::test]
async fn single_document_endpoints_embed_and_keep_the_engine_answers() {
    let f = fixture(&[]).await;
    let c = reqwest::Client::new();
    let i = &f.index;
    let doc = json!({"title": "Hybrid search", "text": "BM25 and kNN together"});
    let r = c.put(format!("{}/{i}/_doc/a?refresh=true", f.url)).json(&doc).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["result"], "created");
    let r = c.post(format!("{}/{i}/_doc?refresh=true", f.url)).json(&doc).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let auto_id = r.json::<Value>().await.unwrap()["_id"].as_str().unwrap().to_string();
    let r = c.put(format!("{}/{i}/_create/a", f.url)).json(&doc).send().await.unwrap();
    assert_eq!(r.status(), 409, "the engine's version conflict comes back as it was");
    let r = c.put(format!("{}/{i}/_doc/b", f.url)).json(&json!({"title": ["not", "text"]})).send().await.unwrap();
    assert_eq!(r.status(), 400);

    let want = embed_passages(&f.url, &["Hybrid search\nBM25 and kNN together".to_string()]).await;
    for id in ["a", auto_id.as_str()] {
        let stored: Value = f.engine.get_json(&format!("/{i}/_doc/{id}")).await.unwrap();
        assert!(cosine(&floats(&stored["_source"]["text_vector"]), &want[0]) >= 0.9999);
    }

    // partial updates: all sources re-embed; some of them are refused
    let upd = |doc: Value| format!("{}\n{}\n", json!({"update": {"_index": i, "_id": "a"}}), json!({"doc": doc}));
    let (_, resp) = bulk(&f.url, upd(json!({"title": "New title", "text": "new text"}))).await;
    assert_eq!(resp["items"][0]["update"]["status"], 200, "{resp}");
    let stored: Value = f.engine.get_json(&format!("/{i}/_doc/a")).await.unwrap();
    let want = embed_passages(&f.url, &["New title\nnew text".to_string()]).await;
    assert!(cosine(&floats(&stored["_source"]["text_vector"]), &want[0]) >= 0.9999);
    let (_, resp) = bulk(&f.url, upd(json!({"title": "Only the title"}))).await;
    assert_eq!(resp["items"][0]["update"]["status"], 400, "{resp}");
    assert!(resp["items"][0]["update"]["error"]["reason"].as_str().unwrap().contains("send them all"));
}

#[tokio::test]
async fn a_full_encoder_queue_answers_429_and_stores_nothing_of_that_request() {
    let f = fixture(&[
        ("SIDECAR__ENCODER__QUEUE_CAPACITY", "8"),
        ("SIDECAR__ENCODER__MAX_INPUTS_PER_REQUEST", "8"),
        ("SIDECAR__ENCODER__INTRA_THREADS", "1"),
    ])
    .await;
    let docs = scifact(8);
    let body: String = docs
        .iter()
        .map(|d| {
            format!("{}\n{}\n", json!({"index": {"_index": f.index}}), json!({"title": d["title"], "text": d["text"]}))
        })
        .collect();
    let sends = (0..6).map(|_| bulk(&f.url, body.clone()));
    let results = futures_util::future::join_all(sends).await;
    let rejected = results.iter().filter(|(st, _)| *st == 429).count();
    let ok = results.iter().filter(|(st, _)| *st == 200).count();
    assert!(rejected > 0 && ok > 0, "{:?}", results.iter().map(|r| r.0).collect::<Vec<_>>());
    assert!(results.iter().all(|(st, _)| *st == 200 || *st == 429));
    f.engine.send(EngineRequest::new(Method::POST, format!("/{}/_refresh", f.index)).idempotent(true)).await.unwrap();
    assert_eq!(count(&f).await, 8 * ok as u64, "a 429 stores nothing; every 200 stored all eight");
}

async fn inputs_encoded(url: &str) -> f64 {
    let text = reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(r#"sidecar_encoder_inputs_total{model="all-MiniLM-L6-v2"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn unchanged_documents_keep_their_stored_vectors_without_encoding() {
    let f = fixture(&[]).await;
    let docs = scifact(20);
    let body = |docs: &[Value]| -> String {
        docs.iter()
            .map(|d| {
                format!(
                    "{}\n{}\n",
                    json!({"index": {"_index": f.index, "_id": d["_id"]}}),
                    json!({"title": d["title"], "text": d["text"]})
                )
            })
            .collect()
    };
    let (st, _) = bulk(&f.url, body(&docs)).await;
    assert_eq!(st, 200);
    let first = inputs_encoded(&f.url).await;
    assert_eq!(first, 20.0);

    let (st, resp) = bulk(&f.url, body(&docs)).await;
    assert_eq!((st, resp["errors"].as_bool()), (200, Some(false)), "{resp}");
    assert_eq!(inputs_encoded(&f.url).await, first, "re-sending unchanged documents encodes nothing");
    let id0 = docs[0]["_id"].as_str().unwrap();
    let stored: Value = f.engine.get_json(&format!("/{}/_doc/{id0}", f.index)).await.unwrap();
    assert_eq!(stored["_source"]["text_vector"].as_array().map(Vec::len), Some(384), "the stored vector was kept");

    let mut changed = docs.clone();
    changed[3]["text"] = json!("A completely different abstract about hybrid retrieval.");
    let (st, _) = bulk(&f.url, body(&changed)).await;
    assert_eq!(st, 200);
    assert_eq!(inputs_encoded(&f.url).await, first + 1.0, "only the changed document is encoded");
    let id3 = docs[3]["_id"].as_str().unwrap();
    let stored: Value = f.engine.get_json(&format!("/{}/_doc/{id3}", f.index)).await.unwrap();
    let want = embed_passages(
        &f.url,
        &[format!("{}\nA completely different abstract about hybrid retrieval.", docs[3]["title"].as_str().unwrap())],
    )
    .await;
    assert!(cosine(&floats(&stored["_source"]["text_vector"]), &want[0]) >= 0.9999);
}

#[tokio::test]
async fn the_opensearch_py_client_works_unchanged_through_the_sidecar() {
    let f = fixture(&[]).await;
    let python = std::env::var("SIDECAR_TEST_PYTHON").unwrap_or_else(|_| {
        format!("{}/.cache/semantic-sidecar/venv/bin/python", std::env::var("HOME").unwrap_or_default())
    });
    assert!(std::path::Path::new(&python).is_file(), "no python with opensearch-py at {python}: run scripts/setup");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/opensearch_py_client.py");
    let (url, index) = (f.url.clone(), f.index.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python).arg(script).arg(url).arg(index).output().unwrap()
    })
    .await
    .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "{text}");
    assert_eq!(count(&f).await, 51);
    let hits: Value = f
        .engine
        .send(
            EngineRequest::new(Method::POST, format!("/{}/_search", f.index))
                .json(&json!({"size": 100, "_source": ["text_vector"]}))
                .idempotent(true),
        )
        .await
        .unwrap()
        .json()
        .unwrap();
    for h in hits["hits"]["hits"].as_array().unwrap() {
        assert_eq!(h["_source"]["text_vector"].as_array().map(Vec::len), Some(384), "{}", h["_id"]);
    }
}

#[tokio::test]
async fn item_level_429s_from_the_engine_are_retried_until_every_document_is_stored_once() {
    let proxy = FaultProxy::start(&engine_url(), None).await;
    let f = fixture_on(
        &proxy.url,
        &[("SIDECAR__ENGINE__RETRY__INITIAL_BACKOFF", "10ms"), ("SIDECAR__ENGINE__RETRY__MAX_BACKOFF", "50ms")],
    )
    .await;
    // auto-generated ids: a document sent twice would be stored twice
    let body: String = (0..10)
        .map(|i| {
            format!("{}\n{}\n", json!({"index": {"_index": f.index}}), json!({"title": format!("t{i}"), "text": "x"}))
        })
        .collect();
    // the sidecar's other reads (capabilities, kept ingest pipelines) are neither faulted nor counted
    proxy.only_bulk(true);
    proxy.reset_count();
    proxy.inject(Fault::BulkItems429(3), 2); // first send: 3 rejected; their retry: all 3 rejected again
    let (st, resp) = bulk(&f.url, body).await;
    assert_eq!(st, 200, "{resp}");
    assert_eq!(resp["errors"], false, "{resp}");
    assert!(resp["items"].as_array().unwrap().iter().all(|i| i["index"]["status"] == 201), "{resp}");
    assert_eq!(proxy.count(), 3, "one bulk, then two retries of the rejected items only");
    assert_eq!(count(&f).await, 10, "every document stored exactly once");
}

#[tokio::test]
async fn long_documents_become_overlapping_passages_with_their_own_vectors() {
    let f =
        fixture_with(&engine_url(), &[], "[chunking]\nmax_tokens = 64\noverlap = 16\npassages_field = 'passages'\n")
            .await;
    let d = scifact(5).into_iter().max_by_key(|d| d["text"].as_str().unwrap().len()).unwrap();
    let full = format!("{}\n{}", d["title"].as_str().unwrap(), d["text"].as_str().unwrap());
    let r = reqwest::Client::new()
        .put(format!("{}/{}/_doc/long?refresh=true", f.url, f.index))
        .json(&json!({"title": d["title"], "text": d["text"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let stored: Value = f.engine.get_json(&format!("/{}/_doc/long", f.index)).await.unwrap();
    let passages = stored["_source"]["passages"].as_array().unwrap();
    assert!(passages.len() >= 3, "{} passages", passages.len());
    let texts: Vec<String> = passages.iter().map(|p| p["text"].as_str().unwrap().to_string()).collect();
    for t in &texts {
        assert!(full.contains(t.as_str()), "a passage is a slice of the document: {t:?}");
    }
    assert!(texts[0].starts_with(d["title"].as_str().unwrap()));
    let want = embed_passages(&f.url, &texts).await;
    for (p, w) in passages.iter().zip(&want) {
        assert!(cosine(&floats(&p["vector"]), w) >= 0.9999);
    }
    // the last passage, beyond what one 256-token window would keep, finds the document
    let last = want.last().unwrap();
    let knn = if common::on_elasticsearch() {
        json!({"knn": {"field": "passages.vector", "query_vector": last, "k": 3}})
    } else {
        json!({"knn": {"passages.vector": {"vector": last, "k": 3}}})
    };
    let q = json!({"size": 1, "query": {"nested": {"path": "passages", "query": knn}}});
    let hits: Value = f
        .engine
        .send(EngineRequest::new(Method::POST, format!("/{}/_search", f.index)).json(&q).idempotent(true))
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(hits["hits"]["hits"][0]["_id"], "long", "{hits}");
}

#[tokio::test]
async fn the_pipelines_engine_ingest_pipeline_is_passed_through() {
    let name = unique_index("sidecar-ingest-pipeline");
    let f = fixture_with(&engine_url(), &[], &format!("engine_pipeline = '{name}'\n")).await;
    let one = |id: &str| {
        format!("{}\n{}\n", json!({"index": {"_index": f.index, "_id": id}}), json!({"title": "t", "text": "x"}))
    };
    // not created yet: the engine itself names the missing pipeline, so the parameter reached it
    let (_, resp) = bulk(&f.url, one("a")).await;
    let reason = resp["items"][0]["index"]["error"]["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains(&name), "{resp}");
    let r = reqwest::Client::new()
        .put(format!("{}/{}/_doc/b", f.url, f.index))
        .json(&json!({"text": "y"}))
        .send()
        .await
        .unwrap();
    assert!(!r.status().is_success(), "single documents use it too");

    f.engine
        .send(EngineRequest::new(Method::PUT, format!("/_ingest/pipeline/{name}")).json(&json!({"processors": []})))
        .await
        .unwrap();
    let (_, resp) = bulk(&f.url, one("c")).await;
    assert_eq!(resp["items"][0]["index"]["status"], 201, "{resp}");
    f.engine.send(EngineRequest::new(Method::DELETE, format!("/_ingest/pipeline/{name}"))).await.unwrap();
}

#[tokio::test]
async fn vectors_belong_to_the_pipeline_and_follow_the_text() {
    let f = fixture(&[]).await;
    let i = f.index.clone();
    let fake: Vec<f32> = vec![0.5; 384];
    let http = reqwest::Client::new();
    let put = |id: &str, body: Value| http.put(format!("{}/{i}/_doc/{id}?refresh=true", f.url)).json(&body).send();
    // a stored document with its real vector
    let r = put("a", json!({"title": "Cells", "text": "stem cells divide"})).await.unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    // clients cannot set a vector: not in _doc, not in a bulk index, update or upsert, not in _update
    let r = put("b", json!({"title": "x", "text": "y", "text_vector": fake})).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["reason"].as_str().unwrap().contains("[text_vector] is computed by pipeline"), "{v}");
    let lines = [
        json!({"index": {"_index": i, "_id": "c"}}),
        json!({"title": "t", "text": "u", "text_vector": fake}),
        json!({"update": {"_index": i, "_id": "a"}}),
        json!({"doc": {"text_vector": fake}}),
        json!({"update": {"_index": i, "_id": "d"}}),
        json!({"doc": {"title": "t"}, "upsert": {"title": "t", "text": "", "text_vector": fake}}),
        json!({"update": {"_index": i, "_id": "a"}}),
        json!({"script": {"source": "ctx._source.text_vector = params.v", "params": {"v": fake}}}),
        json!({"update": {"_index": i, "_id": "a"}}),
        json!({"doc": {"content_hash": "forged"}}),
    ];
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let (status, v) = bulk(&f.url, body).await;
    assert_eq!(status, 200, "{v}");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 5, "{v}");
    for item in items {
        let (_, r) = item.as_object().unwrap().iter().next().unwrap();
        assert_eq!(r["status"], 400, "every one refused: {v}");
    }
    let r = http
        .post(format!("{}/{i}/_update/a", f.url))
        .json(&json!({"doc": {"text_vector": fake}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let stored: Value = f.engine.get_json(&format!("/{i}/_doc/a")).await.unwrap();
    let real = floats(&stored["_source"]["text_vector"]);
    assert!(cosine(&real, &fake) < 0.99, "the model's vector is still there");
    assert_eq!(count(&f).await, 1, "nothing else was written");
    // a text made empty takes its vector with it: through _update, and through a bulk partial doc
    let r = http
        .post(format!("{}/{i}/_update/a?refresh=true", f.url))
        .json(&json!({"doc": {"title": "", "text": ""}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let stored: Value = f.engine.get_json(&format!("/{i}/_doc/a")).await.unwrap();
    assert!(stored["_source"].get("text_vector").is_none_or(Value::is_null), "{stored}");
    let r = put("e", json!({"title": "Cells", "text": "stem cells divide"})).await.unwrap();
    assert!(r.status().is_success());
    let body =
        format!("{}\n{}\n", json!({"update": {"_index": i, "_id": "e"}}), json!({"doc": {"title": "", "text": ""}}));
    let (status, v) = bulk(&f.url, body).await;
    assert_eq!((status, v["errors"].as_bool()), (200, Some(false)), "{v}");
    let stored: Value = f.engine.get_json(&format!("/{i}/_doc/e")).await.unwrap();
    assert!(stored["_source"]["text_vector"].is_null(), "{stored}");
    f.engine.send(EngineRequest::new(Method::DELETE, format!("/{i}"))).await.unwrap();
}

#[tokio::test]
async fn a_pipeline_that_accepts_client_vectors_stores_them() {
    let f = fixture_with(&engine_url(), &[], "accept_client_vectors = true\n").await;
    // unit length: Elasticsearch's dot_product similarity takes nothing else
    let fake: Vec<f32> = (0..384).map(|n| if n == 0 { 1.0 } else { 0.0 }).collect();
    let r = reqwest::Client::new()
        .put(format!("{}/{}/_doc/p?refresh=true", f.url, f.index))
        .json(&json!({"title": "", "text": "", "text_vector": fake}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let stored: Value = f.engine.get_json(&format!("/{}/_doc/p", f.index)).await.unwrap();
    assert!(cosine(&floats(&stored["_source"]["text_vector"]), &fake) > 0.999, "{stored}");
    f.engine.send(EngineRequest::new(Method::DELETE, format!("/{}", f.index))).await.unwrap();
}
