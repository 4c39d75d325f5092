//! Elastic's documented semantic APIs served by the sidecar on a cluster without the licence
//! or modules they need (the local Elasticsearch builds have no rank-rrf, inference or ml):
//! the `rrf` and `linear` retrievers (every field their pages use, nested, filtered, paged,
//! with aggregations), `query_vector_builder.text_embedding` in a top-level `knn`, a `knn`
//! query and a `knn` retriever, and the `_inference` text-embedding API (stored in the cluster,
//! seen by a second sidecar). Each answers 2xx in Elastic's shape, and its hits equal the
//! sidecar's own hybrid for the same parameters. Real engine, real model.

mod common;

use std::path::PathBuf;

use common::{encoder_settings, engine_url, on_elasticsearch, unique_index, JsonClient};
use reqwest::Method;
use semantic_sidecar::commands::eval::Dataset;
use semantic_sidecar::encoder::EncoderSet;
use semantic_sidecar::engine::{EngineClient, EngineRequest};
use semantic_sidecar::http::{self, AppState};
use semantic_sidecar::ingest::mapping::{index_body, ModelShape};
use semantic_sidecar::telemetry::Metrics;
use semantic_sidecar::types::pipeline::Pipeline;
use serde_json::{json, Value};
use tokio::sync::OnceCell;

const MODEL: &str = "all-MiniLM-L6-v2";

fn pipeline(index: &str) -> Pipeline {
    toml::from_str(&format!(
        "name = 'elastic-apis'\nindex = '{index}'\nmodel = '{MODEL}'\n\
         [[fields]]\nsource = ['title', 'text']\nvector = 'text_vector'\n\
         [search]\nfields = ['title^2', 'text']\n"
    ))
    .unwrap()
}

struct Sidecar {
    client: JsonClient,
    index: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl std::ops::Deref for Sidecar {
    type Target = JsonClient;
    fn deref(&self) -> &JsonClient {
        &self.client
    }
}

async fn sidecar_for(index: &str) -> Sidecar {
    let settings = encoder_settings(&[("SIDECAR__ENGINE__URLS", &engine_url())]);
    let engine = EngineClient::new(&settings.engine).unwrap();
    let metrics = Metrics::new();
    let (es, em) = (settings.encoder.clone(), metrics.encoder.clone());
    let encoders = tokio::task::spawn_blocking(move || EncoderSet::load(&es, &em)).await.unwrap().unwrap();
    let state =
        AppState::with_encoders(settings, engine, metrics, encoders).with_pipelines(vec![pipeline(index)]).unwrap();
    let (url, tx) = http::serve_local(state).await.unwrap();
    Sidecar { client: JsonClient::new(url), index: index.to_string(), _stop: tx }
}

static INDEX: OnceCell<String> = OnceCell::const_new();

/// One index for the file: 120 SciFact documents written through the sidecar's `_bulk`, each
/// with a `group` (even / odd) to filter and aggregate on.
async fn index() -> String {
    INDEX
        .get_or_init(|| async {
            let index = unique_index("elastic-apis");
            let s = sidecar_for(&index).await;
            let settings = encoder_settings(&[("SIDECAR__ENGINE__URLS", &engine_url())]);
            let engine = EngineClient::new(&settings.engine).unwrap();
            let info = engine.info().await.unwrap();
            let body = index_body(&info, &pipeline(&index), ModelShape { dims: 384, normalized: true, language: None })
                .unwrap();
            engine.send(EngineRequest::new(Method::PUT, format!("/{index}")).json(&body)).await.unwrap();
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/scifact");
            let data = Dataset::load(&dir, "train", Some(120)).unwrap();
            let mut bulk = String::new();
            for (i, d) in data.docs.iter().enumerate() {
                bulk.push_str(&json!({"index": {"_index": index, "_id": d["_id"]}}).to_string());
                bulk.push('\n');
                let group = if i % 2 == 0 { "even" } else { "odd" };
                bulk.push_str(&json!({"title": d["title"], "text": d["text"], "group": group}).to_string());
                bulk.push('\n');
            }
            let r: Value = common::post_ndjson(&format!("{}/_bulk?refresh=true", s.url), bulk).await;
            assert_eq!(r["errors"], false, "{r}");
            index
        })
        .await
        .clone()
}

impl Sidecar {
    /// The sidecar's own hybrid (`POST /search`) for the same text and parameters.
    async fn own(&self, extra: Value) -> Value {
        let mut body = json!({"index": self.index, "query": TEXT, "k": 50, "num_candidates": 100});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.ok(Method::POST, "/search", body).await
    }
}

const TEXT: &str = "stem cells differentiate";

fn ids(v: &Value) -> Vec<String> {
    v["hits"]["hits"].as_array().unwrap().iter().map(|h| h["_id"].as_str().unwrap().to_string()).collect()
}

fn standard() -> Value {
    json!({"standard": {"query": {"multi_match": {"query": TEXT, "fields": ["title^2", "text"]}}}})
}

fn knn(model_id: &str) -> Value {
    json!({"knn": {"field": "text_vector", "k": 50, "num_candidates": 100,
        "query_vector_builder": {"text_embedding": {"model_id": model_id, "model_text": TEXT}}}})
}

async fn fixture() -> Option<Sidecar> {
    if !on_elasticsearch() {
        common::not_on_this_engine("retrievers", "retrievers and query_vector_builder are Elasticsearch's API");
        return None;
    }
    Some(sidecar_for(&index().await).await)
}

#[tokio::test]
async fn the_rrf_retriever_of_elastics_pages_equals_the_sidecars_own_rrf() {
    let Some(s) = fixture().await else { return };
    let path = format!("/{}/_search", s.index);
    // the documented hybrid example: standard + knn, rank_constant and rank_window_size
    let body = json!({"retriever": {"rrf": {"retrievers": [standard(), knn(MODEL)], "rank_constant": 60, "rank_window_size": 50}}});
    let v = s.ok(Method::POST, &path, body).await;
    let own = s.own(json!({"fusion": {"rrf": {"rank_constant": 60, "window": 50}}})).await;
    assert_eq!(ids(&v), ids(&own), "{v}");
    let hits = v["hits"]["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 10);
    assert_eq!(hits[0]["_rank"], 1);
    assert_eq!(hits[9]["_rank"], 10);
    for (a, b) in hits.iter().zip(own["hits"]["hits"].as_array().unwrap()) {
        assert!((a["_score"].as_f64().unwrap() - b["_score"].as_f64().unwrap()).abs() < 1e-9);
    }
    assert!(v["hits"]["total"]["value"].as_u64().unwrap() >= 10 && v["_shards"].is_object() && v["took"].is_u64());
    // the weighted (9.2) form: a weight moves the ranking, the default weight is 1
    let body = json!({"retriever": {"rrf": {"retrievers": [{"retriever": standard(), "weight": 1.0}, knn(MODEL)], "rank_window_size": 50}}});
    assert_eq!(ids(&s.ok(Method::POST, &path, body).await), ids(&own));
    let body = json!({"retriever": {"rrf": {"retrievers": [{"retriever": standard(), "weight": 100.0}, knn(MODEL)], "rank_window_size": 50}}});
    let heavy = s.ok(Method::POST, &path, body).await;
    let bm25 = s.own(json!({"mode": "bm25"})).await;
    assert_eq!(ids(&heavy)[0], ids(&bm25)[0], "a heavy BM25 weight puts its best first");
    // filter (on every retriever under it), from/size, _source, highlight, aggregations, typed_keys
    let body = json!({
        "retriever": {"rrf": {"retrievers": [standard(), knn(MODEL)], "rank_window_size": 50, "filter": {"term": {"group.keyword": "odd"}}}},
        "from": 2, "size": 5, "_source": ["title", "group"],
        "highlight": {"fields": {"text": {}}},
        "aggs": {"groups": {"terms": {"field": "group.keyword"}}},
    });
    let v = s.ok(Method::POST, &format!("{path}?typed_keys=true"), body).await;
    let own = s
        .own(json!({"fusion": {"rrf": {"window": 50}}, "filter": {"term": {"group.keyword": "odd"}}, "from": 2, "size": 5}))
        .await;
    assert_eq!(ids(&v), ids(&own));
    let hits = v["hits"]["hits"].as_array().unwrap();
    assert!(hits.iter().all(|h| h["_source"]["group"] == "odd" && h["_source"].get("text").is_none()), "{v}");
    assert_eq!(hits[0]["_rank"], 3);
    assert!(hits.iter().any(|h| h["highlight"]["text"].is_array()), "{v}");
    let buckets = v["aggregations"]["sterms#groups"]["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 1, "the filter holds for the aggregations too: {v}");
}

#[tokio::test]
async fn the_linear_retriever_equals_the_sidecars_own_linear_fusion() {
    let Some(s) = fixture().await else { return };
    let path = format!("/{}/_search", s.index);
    let body = json!({"retriever": {"linear": {"retrievers": [
        {"retriever": standard(), "weight": 0.4, "normalizer": "minmax"},
        {"retriever": knn(MODEL), "weight": 0.6, "normalizer": "minmax"}
    ], "rank_window_size": 50}}, "size": 10});
    let v = s.ok(Method::POST, &path, body).await;
    let own = s.own(json!({"fusion": {"linear": {"weight": 0.4, "normalization": "minmax"}}})).await;
    assert_eq!(ids(&v), ids(&own), "{v}");
    for (a, b) in v["hits"]["hits"].as_array().unwrap().iter().zip(own["hits"]["hits"].as_array().unwrap()) {
        assert!((a["_score"].as_f64().unwrap() - b["_score"].as_f64().unwrap()).abs() < 1e-6, "{a} {b}");
    }
    // the top-level normalizer is the default of each retriever; l2_norm
    let body = json!({"retriever": {"linear": {"retrievers": [
        {"retriever": standard(), "weight": 0.3}, {"retriever": knn(MODEL), "weight": 0.7}
    ], "normalizer": "l2_norm", "rank_window_size": 50}}});
    let l2 = s.ok(Method::POST, &path, body).await;
    let own = s.own(json!({"fusion": {"linear": {"weight": 0.3, "normalization": "l2"}}})).await;
    assert_eq!(ids(&l2), ids(&own));
    // nested: an rrf inside a linear, min_score
    let body = json!({"retriever": {"linear": {"retrievers": [
        {"retriever": {"rrf": {"retrievers": [standard(), knn(MODEL)], "rank_window_size": 30}}, "weight": 2, "normalizer": "minmax"},
        {"retriever": knn(MODEL), "weight": 1, "normalizer": "minmax"}
    ], "rank_window_size": 30, "min_score": 0.5}}, "size": 30});
    let v = s.ok(Method::POST, &path, body).await;
    let hits = v["hits"]["hits"].as_array().unwrap();
    assert!(!hits.is_empty() && hits.iter().all(|h| h["_score"].as_f64().unwrap() >= 0.5), "{v}");
}

#[tokio::test]
async fn query_vector_builder_embeds_with_a_sidecar_model_wherever_knn_is() {
    let Some(s) = fixture().await else { return };
    let path = format!("/{}/_search", s.index);
    let qvb = json!({"text_embedding": {"model_id": MODEL, "model_text": TEXT}});
    // the top-level knn of the kNN page
    let body = json!({"knn": {"field": "text_vector", "k": 10, "num_candidates": 100, "query_vector_builder": qvb}, "_source": ["title"]});
    let v = s.ok(Method::POST, &path, body).await;
    let own = s.own(json!({"mode": "knn", "k": 10, "num_candidates": 100})).await;
    assert_eq!(ids(&v), ids(&own), "{v}");
    // the knn query, inside a bool
    let body = json!({"query": {"bool": {"must": [{"knn": {"field": "text_vector", "k": 10, "num_candidates": 100, "query_vector_builder": qvb}}]}}, "size": 10});
    assert_eq!(ids(&s.ok(Method::POST, &path, body).await), ids(&own));
    // a knn retriever alone (the engine runs it, with the vector the sidecar built)
    let body = json!({"retriever": {"knn": {"field": "text_vector", "k": 10, "num_candidates": 100, "query_vector_builder": qvb}}});
    assert_eq!(ids(&s.ok(Method::POST, &path, body).await), ids(&own));
    // Elastic's spelling of a model id (a leading dot) names the same model
    let body = json!({"knn": {"field": "text_vector", "k": 10, "num_candidates": 100,
        "query_vector_builder": {"text_embedding": {"model_id": format!(".{MODEL}"), "model_text": TEXT}}}});
    assert_eq!(ids(&s.ok(Method::POST, &path, body).await), ids(&own));
    // an unknown id: 400 naming what is known
    let body = json!({"knn": {"field": "text_vector", "k": 10, "num_candidates": 100,
        "query_vector_builder": {"text_embedding": {"model_id": "no-such-model", "model_text": TEXT}}}});
    let (status, v) = s.call(Method::POST, &path, Some(body)).await;
    assert_eq!(status, 400, "{v}");
    let reason = v["error"]["reason"].as_str().unwrap();
    assert!(reason.contains("no-such-model") && reason.contains(MODEL), "{reason}");
}

#[tokio::test]
async fn what_a_retriever_search_cannot_do_is_a_400_naming_it() {
    let Some(s) = fixture().await else { return };
    let path = format!("/{}/_search", s.index);
    let cases = [
        (
            json!({"retriever": {"text_similarity_reranker": {"retriever": standard(), "field": "text", "inference_id": "x", "inference_text": TEXT}}}),
            "no reranking model",
        ),
        (json!({"retriever": {"rrf": {"retrievers": [standard(), knn(MODEL)]}}, "sort": ["_doc"]}), "`sort`"),
        (json!({"retriever": {"rrf": {"retrievers": [standard(), knn(MODEL)]}}, "size": 20}), "rank_window_size"),
        (json!({"retriever": {"rrf": {"retrievers": [standard()]}}}), "two or more"),
        (
            json!({"retriever": {"rrf": {"retrievers": [standard(), {"knn": {"field": "text_vector", "k": 3}}]}}}),
            "query_vector",
        ),
        (
            json!({"retriever": {"linear": {"retrievers": [{"retriever": standard(), "normalizer": "zscore"}]}}}),
            "normalizer",
        ),
    ];
    for (body, want) in cases {
        let (status, v) = s.call(Method::POST, &path, Some(body.clone())).await;
        assert_eq!(status, 400, "{body} -> {v}");
        assert!(v["error"]["reason"].as_str().unwrap().contains(want), "{body} -> {v}");
    }
    let (status, v) = s
        .call(
            Method::POST,
            &format!("{path}?scroll=1m"),
            Some(json!({"retriever": {"rrf": {"retrievers": [standard(), knn(MODEL)]}}})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]["reason"].as_str().unwrap().contains("`scroll`"), "{v}");
}

/// The inference API on both engines: endpoints are cluster state (a second sidecar sees
/// them), embed like `/embed` with the passage or query prefix, and name the model for
/// `query_vector_builder`.
#[tokio::test]
async fn inference_endpoints_are_stored_in_the_cluster_and_embed_in_elastics_shape() {
    let own = unique_index("inference");
    let (a, b) = (sidecar_for(&own).await, sidecar_for(&own).await);
    let id = unique_index("my-embeddings");
    let put = json!({"service": "elasticsearch", "service_settings": {"model_id": MODEL, "num_allocations": 1, "num_threads": 1}});
    let v = a.ok(Method::PUT, &format!("/_inference/text_embedding/{id}"), put.clone()).await;
    assert_eq!(v["inference_id"], id.as_str());
    assert_eq!(v["task_type"], "text_embedding");
    assert_eq!(v["service_settings"]["dimensions"], 384);
    assert_eq!(v["service_settings"]["num_threads"], 1, "what the client wrote comes back");
    assert_eq!(v["chunking_settings"]["strategy"], "sentence");
    let (status, e) = a.call(Method::PUT, &format!("/_inference/text_embedding/{id}"), Some(put)).await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"]["reason"].as_str().unwrap().contains("already exists"));
    // the other sidecar sees it (stored in the cluster), by either path
    let (status, v) = b.call(Method::GET, &format!("/_inference/{id}"), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["endpoints"][0]["inference_id"], id.as_str());
    let (_, all) = b.call(Method::GET, "/_inference/_all", None).await;
    assert!(all["endpoints"].as_array().unwrap().iter().any(|e| e["inference_id"] == id.as_str()), "{all}");
    // embedding: Elastic's answer, the vectors of /embed with the passage (ingest) or query prefix
    let texts = vec!["stem cells".to_string(), "the immune response".to_string()];
    let v = b.ok(Method::POST, &format!("/_inference/text_embedding/{id}"), json!({"input": texts})).await;
    let got: Vec<Vec<f32>> = v["text_embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_value(e["embedding"].clone()).unwrap())
        .collect();
    let want = common::embed_with(&b.url, &texts, "passage").await;
    for (g, w) in got.iter().zip(&want) {
        assert!(common::cosine(g, w) > 0.9999);
    }
    let q =
        b.ok(Method::POST, &format!("/_inference/{id}"), json!({"input": "stem cells", "input_type": "search"})).await;
    let qv: Vec<f32> = serde_json::from_value(q["text_embedding"][0]["embedding"].clone()).unwrap();
    let want = common::embed_with(&b.url, &texts[..1], "query").await;
    assert!(common::cosine(&qv, &want[0]) > 0.9999);
    // the trained-model inference API, as code that checks a model is deployed calls it
    for path in [format!("/_ml/trained_models/{MODEL}/_infer"), format!("/_ml/trained_models/{id}/deployment/_infer")] {
        let v = b.ok(Method::POST, &path, json!({"docs": [{"text_field": "stem cells"}]})).await;
        let got: Vec<f32> = serde_json::from_value(v["inference_results"][0]["predicted_value"].clone()).unwrap();
        assert!(common::cosine(&got, &want[0]) > 0.9999, "{v}");
    }
    let (status, v) =
        b.call(Method::POST, "/_ml/trained_models/nope/_infer", Some(json!({"docs": [{"text_field": "x"}]}))).await;
    assert_eq!(status, 404, "{v}");
    // what it does not serve, and bad input: 4xx naming the problem
    for (method, path, body, want) in [
        (
            Method::PUT,
            "/_inference/rerank/x",
            json!({"service": "elasticsearch", "service_settings": {"model_id": MODEL}}),
            "no reranking model",
        ),
        (
            Method::PUT,
            "/_inference/sparse_embedding/x",
            json!({"service": "elasticsearch", "service_settings": {"model_id": MODEL}}),
            "no sparse",
        ),
        (
            Method::PUT,
            "/_inference/text_embedding/openai-x",
            json!({"service": "openai", "service_settings": {"model_id": "text-embedding-3-small", "api_key": "k"}}),
            "service `openai`",
        ),
        (
            Method::PUT,
            "/_inference/text_embedding/x",
            json!({"service": "elasticsearch", "service_settings": {"model_id": "nope"}}),
            MODEL,
        ),
        (Method::POST, &format!("/_inference/text_embedding/{id}"), json!({"inputs": "x"}), "unknown key `inputs`"),
        (Method::POST, "/_inference/text_embedding/no-such-endpoint", json!({"input": "x"}), "not found"),
    ] {
        let (status, v) = b.call(method, path, Some(body)).await;
        assert!((400..500).contains(&status), "{path} -> {status} {v}");
        assert!(v["error"]["reason"].as_str().unwrap().contains(want), "{path} -> {v}");
    }
    if on_elasticsearch() {
        // the endpoint's id names its model in a query_vector_builder
        let target = index().await;
        let body = json!({"knn": {"field": "text_vector", "k": 5, "num_candidates": 50,
            "query_vector_builder": {"text_embedding": {"model_id": id, "model_text": TEXT}}}});
        let (status, v) = b.call(Method::POST, &format!("/{target}/_search"), Some(body)).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["hits"]["hits"].as_array().unwrap().len(), 5);
    }
    let v = a.ok(Method::DELETE, &format!("/_inference/text_embedding/{id}"), json!({})).await;
    assert_eq!(v["acknowledged"], true);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, _) = b.call(Method::GET, &format!("/_inference/text_embedding/{id}"), None).await;
    assert_eq!(status, 404, "gone for the other sidecar too, within its cache time");
}
