//! Elastic's `semantic_text` served by the sidecar on a cluster without an inference service
//! (the local Elasticsearch builds run a Basic licence): the requests of Elastic's "semantic
//! search with semantic_text" and "hybrid search with semantic_text" tutorials, sent in their
//! shape through the sidecar. The mapping is created with the pipeline behind it (stored in the
//! cluster), reads back as `semantic_text`, documents read back as written, and the `semantic`,
//! `match` and `knn` queries, the semantic highlighter and the `rrf` retriever over them answer
//! in Elastic's shape with the hits of the sidecar's own search for the same parameters.
//! Real engine, real model; Elasticsearch only (OpenSearch has no `semantic_text`).

mod common;

use std::path::PathBuf;

use common::{on_elasticsearch, unique_index, JsonClient};
use reqwest::Method;
use semantic_sidecar::commands::eval::Dataset;
use serde_json::{json, Value};

const MODEL: &str = "all-MiniLM-L6-v2";
const TEXT: &str = "stem cells differentiate";

struct Sidecar {
    client: JsonClient,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl std::ops::Deref for Sidecar {
    type Target = JsonClient;
    fn deref(&self) -> &JsonClient {
        &self.client
    }
}

/// A sidecar whose pipelines live in the cluster (as `semantic_text` needs), on Elasticsearch
/// only (OpenSearch has no `semantic_text`: the test says so and stops).
async fn sidecar() -> Option<Sidecar> {
    if !on_elasticsearch() {
        common::not_on_this_engine("semantic_text", "semantic_text is Elasticsearch's field type");
        return None;
    }
    let (url, tx) = common::serve_with_cluster_pipelines().await;
    Some(Sidecar { client: JsonClient::new(url), _stop: tx })
}

/// A `GET` that must answer 200.
async fn get(s: &Sidecar, path: &str) -> Value {
    let (status, v) = s.call(Method::GET, path, None).await;
    assert_eq!(status, 200, "{path} -> {v}");
    v
}

fn ids(v: &Value) -> Vec<String> {
    v["hits"]["hits"].as_array().unwrap().iter().map(|h| h["_id"].as_str().unwrap().to_string()).collect()
}

fn scores(v: &Value) -> Vec<f64> {
    v["hits"]["hits"].as_array().unwrap().iter().map(|h| h["_score"].as_f64().unwrap()).collect()
}

/// 80 SciFact documents, as the hybrid tutorial writes them (`content` copied to the
/// `semantic_text` field).
async fn load(s: &Sidecar, index: &str) -> Vec<Value> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/scifact");
    let data = Dataset::load(&dir, "train", Some(80)).unwrap();
    let mut bulk = String::new();
    let mut docs = Vec::new();
    for (i, d) in data.docs.iter().enumerate() {
        bulk.push_str(&json!({"index": {"_index": index, "_id": d["_id"]}}).to_string());
        bulk.push('\n');
        let doc = json!({"title": d["title"], "content": d["text"], "group": if i % 2 == 0 { "even" } else { "odd" }});
        bulk.push_str(&doc.to_string());
        bulk.push('\n');
        docs.push(doc);
    }
    let r: Value = common::post_ndjson(&format!("{}/_bulk?refresh=true", s.url), bulk).await;
    assert_eq!(r["errors"], false, "{r}");
    docs
}

#[tokio::test]
async fn elastics_semantic_text_tutorials_run_unchanged_through_the_sidecar() {
    let Some(s) = sidecar().await else { return };
    let index = unique_index("semantic-text");
    // the hybrid tutorial's mapping, with an inference id naming the sidecar's model
    let mapping = json!({"mappings": {"properties": {
        "title": {"type": "text"},
        "content": {"type": "text", "copy_to": "semantic_text"},
        "semantic_text": {"type": "semantic_text", "inference_id": MODEL,
                          "chunking_settings": {"strategy": "word", "max_chunk_size": 60, "overlap": 20}},
        "group": {"type": "keyword"}
    }}});
    let v = s.ok(Method::PUT, &format!("/{index}"), mapping).await;
    assert_eq!(v["acknowledged"], true, "{v}");
    // the mapping reads back as the app wrote it, by both APIs
    for path in [format!("/{index}/_mapping"), format!("/{index}")] {
        let (status, v) = s.call(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{v}");
        let m = &v[&index]["mappings"];
        let st = &m["properties"]["semantic_text"];
        assert_eq!(st["type"], "semantic_text", "{v}");
        assert_eq!(st["inference_id"], MODEL);
        assert_eq!(st["model_settings"]["dimensions"], 384);
        assert_eq!(st["chunking_settings"]["strategy"], "word");
        assert_eq!(m["properties"].as_object().unwrap().len(), 4, "no field of the sidecar shows: {v}");
        assert!(m.get("_source").is_none() && m.get("_meta").is_none(), "{v}");
    }
    // the pipeline behind it is cluster state
    let (status, p) = s.call(Method::GET, &format!("/_sidecar/pipeline/semantic-text-{index}"), None).await;
    assert_eq!(status, 200, "{p}");
    let docs = load(&s, &index).await;
    // `_source` comes back as written
    let (_, d) = s.call(Method::GET, &format!("/{index}/_doc/{}", ids_of(&s, &index).await[0]), None).await;
    assert!(docs.contains(&d["_source"]), "{d}");

    // the semantic query, `match` on the field and `knn` on it: the sidecar's own kNN over the passages
    let own = s
        .ok(
            Method::POST,
            "/search",
            json!({"index": index, "query": TEXT, "mode": "knn", "k": 10, "num_candidates": 100}),
        )
        .await;
    let path = format!("/{index}/_search");
    let semantic =
        s.ok(Method::POST, &path, json!({"query": {"semantic": {"field": "semantic_text", "query": TEXT}}})).await;
    assert_eq!(ids(&semantic), ids(&own), "{semantic}");
    for (a, b) in scores(&semantic).iter().zip(scores(&own)) {
        assert!((a - b).abs() < 1e-5, "{a} {b}");
    }
    let matched = s.ok(Method::POST, &path, json!({"query": {"match": {"semantic_text": {"query": TEXT}}}})).await;
    assert_eq!(ids(&matched), ids(&own));
    let qvb = json!({"text_embedding": {"model_text": TEXT}});
    let knn_query = s
        .ok(Method::POST, &path, json!({"query": {"knn": {"field": "semantic_text", "k": 10, "num_candidates": 100, "query_vector_builder": qvb}}}))
        .await;
    assert_eq!(ids(&knn_query), ids(&own));
    let knn_section = s
        .ok(
            Method::POST,
            &path,
            json!({"knn": {"field": "semantic_text", "k": 10, "num_candidates": 100, "query_vector_builder": qvb}}),
        )
        .await;
    assert_eq!(ids(&knn_section), ids(&own));

    // the semantic highlighter: the best chunks, as many as asked for
    let body = json!({"query": {"semantic": {"field": "semantic_text", "query": TEXT}}, "_source": ["title"],
        "highlight": {"fields": {"semantic_text": {"type": "semantic", "number_of_fragments": 2, "order": "score"}}}});
    let v = s.ok(Method::POST, &path, body).await;
    assert_eq!(ids(&v), ids(&own));
    for h in v["hits"]["hits"].as_array().unwrap() {
        let chunks = h["highlight"]["semantic_text"].as_array().unwrap_or_else(|| panic!("{h}"));
        assert!(!chunks.is_empty() && chunks.len() <= 2, "{h}");
        assert!(h.get("inner_hits").is_none() && h["_source"].as_object().unwrap().len() == 1, "{h}");
        let content = docs.iter().find(|d| d["title"] == h["_source"]["title"]).unwrap()["content"].as_str().unwrap();
        assert!(content.contains(chunks[0].as_str().unwrap().split_whitespace().next().unwrap()), "{h}");
    }

    // the hybrid tutorial: rrf over a lexical match and the semantic query = the sidecar's own rrf
    let body = json!({"retriever": {"rrf": {"retrievers": [
        {"standard": {"query": {"match": {"content": TEXT}}}},
        {"standard": {"query": {"semantic": {"field": "semantic_text", "query": TEXT}}}}
    ], "rank_window_size": 50}}});
    let v = s.ok(Method::POST, &path, body).await;
    let own = s
        .ok(
            Method::POST,
            "/search",
            json!({"index": index, "query": TEXT, "fields": ["content"], "k": 50, "num_candidates": 100,
            "fusion": {"rrf": {"rank_constant": 60, "window": 50}}}),
        )
        .await;
    assert_eq!(ids(&v), ids(&own), "{v}\n{own}");
    for (a, b) in scores(&v).iter().zip(scores(&own)) {
        assert!((a - b).abs() < 1e-9, "{a} {b}");
    }
    assert_eq!(v["hits"]["hits"][0]["_rank"], 1);
    // the multi-field format (9.1) of the same search
    let short =
        json!({"retriever": {"rrf": {"query": TEXT, "fields": ["content", "semantic_text"], "rank_window_size": 50}}});
    assert_eq!(ids(&s.ok(Method::POST, &path, short).await), ids(&v));

    // `_update` re-embeds: the document moves to the top for its new text
    let id = ids_of(&s, &index).await[5].clone();
    let new_text = "Zebrafish fins regrow after amputation through blastema formation.";
    s.ok(Method::POST, &format!("/{index}/_update/{id}?refresh=true"), json!({"doc": {"content": new_text}})).await;
    let v = s
        .ok(
            Method::POST,
            &path,
            json!({"query": {"semantic": {"field": "semantic_text", "query": "zebrafish fin regeneration"}}}),
        )
        .await;
    assert_eq!(ids(&v)[0], id, "{v}");

    // deleting the index deletes the pipeline behind its field
    s.ok(Method::DELETE, &format!("/{index}"), json!({})).await;
    let (status, _) = s.call(Method::GET, &format!("/_sidecar/pipeline/semantic-text-{index}"), None).await;
    assert_eq!(status, 404);
}

async fn ids_of(s: &Sidecar, index: &str) -> Vec<String> {
    let v =
        s.ok(Method::POST, &format!("/{index}/_search"), json!({"size": 20, "sort": ["_doc"], "_source": false})).await;
    ids(&v)
}

#[tokio::test]
async fn what_semantic_text_cannot_take_is_a_400_naming_it() {
    let Some(s) = sidecar().await else { return };
    let index = unique_index("semantic-text-bad");
    for (body, want) in [
        (
            json!({"mappings": {"properties": {"a": {"type": "semantic_text"}, "b": {"type": "semantic_text"}}}}),
            "one semantic_text field",
        ),
        (json!({"mappings": {"properties": {"a": {"type": "semantic_text", "inference_id": "nope"}}}}), "nope"),
        (json!({"mappings": {"properties": {"o": {"properties": {"a": {"type": "semantic_text"}}}}}}), "top level"),
        (
            json!({"mappings": {"properties": {"a": {"type": "semantic_text", "chunking_settings": {"strategy": "recursive"}}}}}),
            "chunking_settings",
        ),
    ] {
        let (status, v) = s.call(Method::PUT, &format!("/{index}"), Some(body.clone())).await;
        assert_eq!(status, 400, "{body} -> {v}");
        assert!(v["error"]["reason"].as_str().unwrap().contains(want), "{body} -> {v}");
    }
    // nothing was left behind
    let (status, _) = s.call(Method::GET, &format!("/{index}"), None).await;
    assert_eq!(status, 404);
    // a legacy template is pointed to the composable one; a bad field in a template is named
    let (status, v) = s
        .call(
            Method::PUT,
            "/_template/semantic-template",
            Some(json!({"index_patterns": ["x-*"], "mappings": {"properties": {"a": {"type": "semantic_text"}}}})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]["reason"].as_str().unwrap().contains("_index_template"), "{v}");
    let (status, v) = s
        .call(
            Method::PUT,
            "/_index_template/semantic-template",
            Some(json!({"index_patterns": ["x-*"], "template": {"mappings": {"properties": {"a": {"type": "semantic_text", "inference_id": "nope"}}}}})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]["reason"].as_str().unwrap().contains("nope"), "{v}");
    let (status, _) = s.call(Method::GET, "/_index_template/semantic-template", None).await;
    assert_eq!(status, 404, "a refused template is not stored");
    // a semantic query on an index without the field names the problem
    s.ok(Method::PUT, &format!("/{index}"), json!({"mappings": {"properties": {"t": {"type": "text"}}}})).await;
    let (status, v) = s
        .call(
            Method::POST,
            &format!("/{index}/_search"),
            Some(json!({"query": {"semantic": {"field": "t", "query": "x"}}})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]["reason"].as_str().unwrap().contains("not a semantic_text field"), "{v}");
    s.ok(Method::DELETE, &format!("/{index}"), json!({})).await;
}

/// The first tutorial: an inference endpoint, a `semantic_text` mapping naming it, the data
/// loaded from a plain index with `_reindex` (in the background, followed with `_tasks`), then
/// searched; and `_reindex` waiting for completion.
#[tokio::test]
async fn the_semantic_search_tutorial_loads_with_reindex_and_an_inference_endpoint() {
    let Some(s) = sidecar().await else { return };
    let raw = unique_index("test-data");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/scifact");
    let data = Dataset::load(&dir, "train", Some(40)).unwrap();
    let mut bulk = String::new();
    for d in &data.docs {
        bulk.push_str(&json!({"index": {"_index": raw, "_id": d["_id"]}}).to_string());
        bulk.push('\n');
        bulk.push_str(&json!({"content": d["text"], "title": d["title"]}).to_string());
        bulk.push('\n');
    }
    let r: Value = common::post_ndjson(&format!("{}/_bulk?refresh=true", s.url), bulk).await;
    assert_eq!(r["errors"], false, "{r}");
    let eid = unique_index("my-e5-model");
    let endpoint = json!({"service": "elasticsearch", "service_settings": {"num_allocations": 1, "num_threads": 1, "model_id": MODEL}});
    s.ok(Method::PUT, &format!("/_inference/text_embedding/{eid}"), endpoint).await;
    let index = unique_index("semantic-embeddings");
    let mapping = json!({"mappings": {"properties": {"content": {"type": "semantic_text", "inference_id": eid}}}});
    s.ok(Method::PUT, &format!("/{index}"), mapping).await;
    let v = s
        .ok(
            Method::POST,
            "/_reindex?wait_for_completion=false",
            json!({"source": {"index": raw, "size": 10}, "dest": {"index": index}}),
        )
        .await;
    let task = v["task"].as_str().unwrap_or_else(|| panic!("{v}")).to_string();
    let t = std::time::Instant::now();
    let done = loop {
        let (status, v) = s.call(Method::GET, &format!("/_tasks/{task}"), None).await;
        assert_eq!(status, 200, "{v}");
        if v["completed"] == true {
            break v;
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(120), "{v}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    assert_eq!(done["response"]["created"], 40, "{done}");
    assert_eq!(done["task"]["status"]["total"], 40, "{done}");
    let (status, _) = s.call(Method::POST, &format!("/{index}/_refresh"), None).await;
    assert_eq!(status, 200);
    let v = s
        .ok(
            Method::POST,
            &format!("/{index}/_search"),
            json!({"query": {"semantic": {"field": "content", "query": "How does the immune system respond?"}}}),
        )
        .await;
    assert_eq!(v["hits"]["hits"].as_array().unwrap().len(), 10, "{v}");
    let (_, d) = s.call(Method::GET, &format!("/{index}/_doc/{}", ids(&v)[0]), None).await;
    assert_eq!(d["_source"].as_object().unwrap().keys().collect::<Vec<_>>(), ["content", "title"], "{d}");
    // waiting for completion: `_reindex`'s own answer; unknown options are named
    let again = unique_index("semantic-embeddings-2");
    let mapping = json!({"mappings": {"properties": {"content": {"type": "semantic_text", "inference_id": eid}}}});
    s.ok(Method::PUT, &format!("/{again}"), mapping).await;
    let body = json!({"source": {"index": raw, "query": {"match": {"title": "cells"}}}, "dest": {"index": again}});
    let v = s.ok(Method::POST, "/_reindex?refresh=true", body).await;
    let n = v["created"].as_u64().unwrap();
    assert!(n > 0 && n < 40 && v["total"] == n && v["failures"] == json!([]), "{v}");
    let (status, e) = s
        .call(
            Method::POST,
            "/_reindex",
            Some(json!({"source": {"index": raw}, "dest": {"index": again}, "script": {"source": "x"}})),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"]["reason"].as_str().unwrap().contains("script"), "{e}");
    for i in [&index, &again, &raw] {
        s.ok(Method::DELETE, &format!("/{i}"), json!({})).await;
    }
    s.ok(Method::DELETE, &format!("/_inference/text_embedding/{eid}"), json!({})).await;
}

fn ndcg_at_10(ranked: &[String], judged: &std::collections::BTreeMap<String, u32>) -> f64 {
    let gain = |g: u32| 2f64.powi(g as i32) - 1.0;
    let dcg: f64 = ranked
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, d)| gain(*judged.get(d).unwrap_or(&0)) / (i as f64 + 2.0).log2())
        .sum();
    let mut ideal: Vec<u32> = judged.values().copied().collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal.iter().take(10).enumerate().map(|(i, g)| gain(*g) / (i as f64 + 2.0).log2()).sum();
    if idcg == 0.0 {
        0.0
    } else {
        dcg / idcg
    }
}

/// Quality: SciFact train (200 documents, 150 of the queries judged on them) through `semantic_text`
/// and `retriever.rrf` scores the nDCG@10 of the pipeline path (a pipeline index of the same
/// texts, model, chunking and BM25 analysis, searched with the sidecar's own RRF).
#[tokio::test]
async fn scifact_through_semantic_text_and_rrf_scores_like_the_pipeline_path() {
    let Some(s) = sidecar().await else { return };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/scifact");
    let data = Dataset::load(&dir, "train", Some(200)).unwrap();
    let (semantic, piped) = (unique_index("scifact-semantic"), unique_index("scifact-pipeline"));
    let chunking = json!({"strategy": "word", "max_chunk_size": 150, "overlap": 50});
    let mapping = json!({"mappings": {"properties": {
        "title": {"type": "text", "copy_to": "body"}, "text": {"type": "text", "copy_to": "body"},
        "body": {"type": "semantic_text", "inference_id": MODEL, "chunking_settings": chunking}}}});
    s.ok(Method::PUT, &format!("/{semantic}"), mapping).await;
    let (max_tokens, overlap) = semantic_sidecar::ingest::semantic::token_chunking(&chunking, 256);
    let pipeline = json!({"index": piped, "model": MODEL, "analyzer": "standard",
        "fields": [{"source": ["title", "text"], "vector": "vector"}],
        "chunking": {"max_tokens": max_tokens, "overlap": overlap}, "search": {"fields": ["title", "text"]}});
    s.ok(Method::PUT, &format!("/_sidecar/pipeline/{piped}"), pipeline).await;
    for index in [&semantic, &piped] {
        for batch in data.docs.chunks(50) {
            let mut bulk = String::new();
            for d in batch {
                bulk.push_str(&json!({"index": {"_index": index, "_id": d["_id"]}}).to_string());
                bulk.push('\n');
                bulk.push_str(&json!({"title": d["title"], "text": d["text"]}).to_string());
                bulk.push('\n');
            }
            let r: Value = common::post_ndjson(&format!("{}/_bulk?refresh=true", s.url), bulk).await;
            assert_eq!(r["errors"], false, "{r}");
        }
    }
    let (mut a, mut b) = (0.0, 0.0);
    let queries = &data.queries[..data.queries.len().min(150)];
    for (qid, text) in queries {
        let body = json!({"retriever": {"rrf": {"retrievers": [
            {"standard": {"query": {"multi_match": {"query": text, "fields": ["title", "text"]}}}},
            {"standard": {"query": {"semantic": {"field": "body", "query": text}}}}
        ], "rank_window_size": 50}}, "size": 10, "_source": false});
        let v = s.ok(Method::POST, &format!("/{semantic}/_search"), body).await;
        a += ndcg_at_10(&ids(&v), &data.qrels[qid]);
        let own = json!({"index": piped, "query": text, "size": 10, "k": 50, "num_candidates": 100,
            "fusion": {"rrf": {"rank_constant": 60, "window": 50}}});
        b += ndcg_at_10(&ids(&s.ok(Method::POST, "/search", own).await), &data.qrels[qid]);
    }
    let n = queries.len() as f64;
    let (a, b) = (a / n, b / n);
    println!(
        "SciFact train, {} queries over {} documents: nDCG@10 semantic_text + rrf {a:.4}, pipeline {b:.4}",
        queries.len(),
        data.docs.len()
    );
    assert!(n >= 100.0, "{n} queries");
    assert!((a - b).abs() <= 0.005, "semantic_text + rrf {a:.4} vs pipeline {b:.4}");
    for index in [&semantic, &piped] {
        s.ok(Method::DELETE, &format!("/{index}"), json!({})).await;
    }
    s.call(Method::DELETE, &format!("/_sidecar/pipeline/{piped}"), None).await;
}

/// `PUT /{index}/_mapping` (either spelling) adding a `semantic_text` field to an existing
/// index: the pipeline is stored, the mapping reads back as written, new documents are embedded.
#[tokio::test]
async fn a_semantic_text_field_added_to_an_existing_index_is_served() {
    let Some(s) = sidecar().await else { return };
    let index = unique_index("semantic-text-added");
    s.ok(Method::PUT, &format!("/{index}"), json!({"mappings": {"properties": {"title": {"type": "text"}}}})).await;
    let add = json!({"properties": {"notes": {"type": "semantic_text", "inference_id": MODEL}}});
    s.ok(Method::PUT, &format!("/{index}/_mappings"), add.clone()).await;
    s.ok(Method::PUT, &format!("/{index}/_mapping"), add).await;
    let (_, v) = s.call(Method::GET, &format!("/{index}/_mapping"), None).await;
    let props = &v[&index]["mappings"]["properties"];
    assert_eq!(props["notes"]["type"], "semantic_text", "{v}");
    assert_eq!(props.as_object().unwrap().len(), 2, "{v}");
    for (id, notes) in
        [("1", "The cat sat on the warm windowsill all afternoon."), ("2", "Quarterly revenue grew by twelve percent.")]
    {
        s.ok(Method::PUT, &format!("/{index}/_doc/{id}?refresh=true"), json!({"title": id, "notes": notes})).await;
    }
    let v = s
        .ok(
            Method::POST,
            &format!("/{index}/_search"),
            json!({"query": {"semantic": {"field": "notes", "query": "a sleeping pet"}}}),
        )
        .await;
    assert_eq!(ids(&v), ["1", "2"], "{v}");
    // a list of texts, as Elastic's semantic_text takes
    let list = json!({"title": "3", "notes": ["Tides follow the moon.", "Sourdough needs a starter."]});
    s.ok(Method::PUT, &format!("/{index}/_doc/3?refresh=true"), list.clone()).await;
    let baking = json!({"query": {"semantic": {"field": "notes", "query": "baking bread"}}});
    let v = s.ok(Method::POST, &format!("/{index}/_search"), baking).await;
    assert_eq!(ids(&v)[0], "3", "{v}");
    let (_, d) = s.call(Method::GET, &format!("/{index}/_doc/3"), None).await;
    assert_eq!(d["_source"]["notes"], list["notes"], "{d}");
    let other = json!({"properties": {"more": {"type": "semantic_text"}}});
    let (status, e) = s.call(Method::PUT, &format!("/{index}/_mapping"), Some(other)).await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"]["reason"].as_str().unwrap().contains("one per index"), "{e}");
    s.ok(Method::DELETE, &format!("/{index}"), json!({})).await;
}

/// Elastic's templates: a component template with the field, an index template composed of it
/// (with a field copied into it), and an index template with the field of its own. Every index
/// they make gets its pipeline: made by `PUT /{index}`, by a first `_bulk`, by a first `_doc`.
#[tokio::test]
async fn semantic_text_in_templates_serves_every_index_made_from_them() {
    let Some(s) = sidecar().await else { return };
    let prefix = unique_index("semantic-tpl");
    let (component, composed, own) = (format!("{prefix}-c"), format!("{prefix}-t"), format!("{prefix}-own"));
    let chunking = json!({"strategy": "word", "max_chunk_size": 60, "overlap": 20});
    let field = json!({"type": "semantic_text", "inference_id": MODEL, "chunking_settings": chunking});
    s.ok(
        Method::PUT,
        &format!("/_component_template/{component}"),
        json!({"template": {"mappings": {"properties": {"body": field}}}}),
    )
    .await;
    let v = get(&s, &format!("/_component_template/{component}")).await;
    let shown = &v["component_templates"][0]["component_template"]["template"]["mappings"];
    assert_eq!(shown["properties"]["body"]["type"], "semantic_text", "{v}");
    assert_eq!(shown["properties"]["body"]["chunking_settings"], chunking, "{v}");
    assert_eq!(shown["properties"].as_object().unwrap().len(), 1, "the sidecar's fields are not shown: {v}");
    s.ok(
        Method::PUT,
        &format!("/_index_template/{composed}"),
        json!({"index_patterns": [format!("{prefix}-a-*")], "composed_of": [component], "priority": 500,
               "template": {"mappings": {"properties": {"title": {"type": "text", "copy_to": "body"}}}}}),
    )
    .await;
    s.ok(
        Method::PUT,
        &format!("/_index_template/{own}"),
        json!({"index_patterns": [format!("{prefix}-b-*")], "priority": 500,
               "template": {"mappings": {"properties": {"notes": {"type": "semantic_text"}}}}}),
    )
    .await;
    let v = get(&s, &format!("/_index_template/{own}")).await;
    let shown = &v["index_templates"][0]["index_template"]["template"]["mappings"]["properties"];
    assert_eq!(shown["notes"]["type"], "semantic_text", "{v}");
    let (status, v) = s.call(Method::POST, &format!("/_index_template/_simulate_index/{prefix}-a-1"), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["template"]["mappings"]["properties"]["body"]["type"], "semantic_text", "{v}");

    let texts = ["The cat sat on the warm windowsill all afternoon.", "Quarterly revenue grew by twelve percent."];
    let pet = |field: &str| json!({"query": {"semantic": {"field": field, "query": "a sleeping pet"}}});
    // made by a first _bulk
    let a1 = format!("{prefix}-a-1");
    let mut bulk = String::new();
    for (id, t) in texts.iter().enumerate() {
        bulk.push_str(&format!(
            "{}\n{}\n",
            json!({"index": {"_index": a1, "_id": id.to_string()}}),
            json!({"body": t})
        ));
    }
    let r = common::post_ndjson(&format!("{}/_bulk?refresh=true", s.url), bulk).await;
    assert_eq!(r["errors"], false, "{r}");
    let v = s.ok(Method::POST, &format!("/{a1}/_search"), pet("body")).await;
    assert_eq!(ids(&v), ["0", "1"], "both documents embedded, the cat first: {v}");
    let (_, d) = s.call(Method::GET, &format!("/{a1}/_doc/0"), None).await;
    assert_eq!(d["_source"], json!({"body": texts[0]}), "{d}");
    let v = get(&s, &format!("/{a1}/_mapping")).await;
    assert_eq!(v[&a1]["mappings"]["properties"]["body"]["chunking_settings"], chunking, "{v}");
    // made by PUT /{index}, written through the field copied into the semantic_text one
    let a2 = format!("{prefix}-a-2");
    let (status, v) = s.call(Method::PUT, &format!("/{a2}"), None).await;
    assert_eq!(status, 200, "{v}");
    for (id, t) in texts.iter().enumerate() {
        s.ok(Method::PUT, &format!("/{a2}/_doc/{id}?refresh=true"), json!({"title": t})).await;
    }
    let v = s.ok(Method::POST, &format!("/{a2}/_search"), pet("body")).await;
    assert_eq!(ids(&v), ["0", "1"], "{v}");
    // made by a first _doc, from a template with the field of its own (the default model)
    let b1 = format!("{prefix}-b-1");
    for (id, t) in texts.iter().enumerate() {
        s.ok(Method::PUT, &format!("/{b1}/_doc/{id}?refresh=true"), json!({"notes": t})).await;
    }
    let v = s.ok(Method::POST, &format!("/{b1}/_search"), pet("notes")).await;
    assert_eq!(ids(&v), ["0", "1"], "{v}");
    // each index has its own pipeline, which goes with it
    let pipelines = get(&s, "/_sidecar/pipeline").await.to_string();
    for i in [&a1, &a2, &b1] {
        assert!(pipelines.contains(&format!("semantic-text-{i}")), "{pipelines}");
        s.ok(Method::DELETE, &format!("/{i}"), json!({})).await;
    }
    let pipelines = get(&s, "/_sidecar/pipeline").await.to_string();
    assert!(!pipelines.contains(&prefix), "{pipelines}");
    for t in [
        format!("/_index_template/{composed}"),
        format!("/_index_template/{own}"),
        format!("/_component_template/{component}"),
    ] {
        let (status, v) = s.call(Method::DELETE, &t, None).await;
        assert_eq!(status, 200, "{t} -> {v}");
    }
}
