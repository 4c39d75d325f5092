//! OpenSearch's `neural` query served by the sidecar on a cluster without the neural-search
//! and ml-commons plugins (the local OpenSearch has neither): the request shapes of OpenSearch's
//! neural query page, sent through the sidecar's `_search` and `_msearch`, become `knn` queries
//! with the query vector of the sidecar model the `model_id` names, and answer in OpenSearch's
//! shape with the hits of the sidecar's own kNN search for the same parameters.
//! Real engine, real model; OpenSearch only (Elasticsearch has no `neural` query).

mod common;

use std::path::PathBuf;

use common::{unique_index, JsonClient};
use reqwest::Method;
use semantic_sidecar::commands::eval::Dataset;
use serde_json::{json, Value};

const MODEL: &str = "all-MiniLM-L6-v2";
const TEXT: &str = "stem cells differentiate";
/// The k-NN method of the pages' mappings on the local OpenSearch, which has the Lucene engine
/// only (the pages leave it to the default, a native library).
fn lucene() -> Value {
    json!({"name": "hnsw", "engine": "lucene"})
}

struct Sidecar {
    client: JsonClient,
    index: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn ids(v: &Value) -> Vec<String> {
    v["hits"]["hits"].as_array().unwrap().iter().map(|h| h["_id"].as_str().unwrap().to_string()).collect()
}

/// A sidecar with a pipeline index of 80 SciFact documents (title and text embedded, passages
/// of 64 tokens), half of them in group `even`; OpenSearch only.
async fn sidecar() -> Option<Sidecar> {
    if common::on_elasticsearch() {
        common::not_on_this_engine("neural", "the neural query is OpenSearch's");
        return None;
    }
    let (url, stop) = common::serve_with_cluster_pipelines().await;
    let client = JsonClient::new(url);
    let index = unique_index("neural");
    let pipeline = json!({"index": index, "model": MODEL,
        "fields": [{"source": ["title", "text"], "vector": "text_vector"}],
        "chunking": {"max_tokens": 64, "overlap": 8, "passages_field": "passages"}});
    client.ok(Method::PUT, &format!("/_sidecar/pipeline/{index}"), pipeline).await;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/scifact");
    let data = Dataset::load(&dir, "train", Some(80)).unwrap();
    let mut bulk = String::new();
    for (i, d) in data.docs.iter().enumerate() {
        bulk.push_str(&format!("{}\n", json!({"index": {"_index": index, "_id": d["_id"]}})));
        let group = if i % 2 == 0 { "even" } else { "odd" };
        bulk.push_str(&format!("{}\n", json!({"title": d["title"], "text": d["text"], "group": group})));
    }
    let r = common::post_ndjson(&format!("{}/_bulk?refresh=true", client.url), bulk).await;
    assert_eq!(r["errors"], false, "{r}");
    Some(Sidecar { client, index, _stop: stop })
}

fn neural(field: &str, extra: Value) -> Value {
    let mut params = json!({"query_text": TEXT, "model_id": MODEL});
    params.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    json!({"neural": {field: params}})
}

#[tokio::test]
async fn the_neural_query_pages_shapes_run_on_a_cluster_without_the_plugins() {
    let Some(s) = sidecar().await else { return };
    let search = format!("/{}/_search", s.index);
    // the plain shape, in OpenSearch's shape: the hits of the same knn query with the sidecar's
    // query embedding of the text, sent straight to the engine
    let v = s
        .client
        .ok(
            Method::POST,
            &search,
            json!({"size": 10, "_source": false, "query": neural("text_vector", json!({"k": 10}))}),
        )
        .await;
    assert!(v["_shards"].is_object() && v["hits"]["total"].is_object(), "{v}");
    let vector = common::embed_model(&s.client.url, Some(MODEL), &[TEXT.to_string()], "query").await.remove(0);
    let direct = json!({"size": 10, "_source": false, "query": {"knn": {"text_vector": {"vector": vector, "k": 10}}}});
    let own = common::post_json(&format!("{}/{}/_search", common::engine_url(), s.index), &direct).await;
    assert_eq!(ids(&v), ids(&own), "neural {v}\ndirect {own}");
    assert_eq!(ids(&v).len(), 10);
    // `filter` (and method parameters) in the clause, and the clause inside bool with a filter:
    // only `even` documents
    let filtered = neural(
        "text_vector",
        json!({"k": 10, "filter": {"term": {"group": "even"}}, "method_parameters": {"ef_search": 100}}),
    );
    let in_bool =
        json!({"bool": {"must": [neural("text_vector", json!({"k": 40}))], "filter": [{"term": {"group": "even"}}]}});
    for q in [filtered, in_bool] {
        let v = s.client.ok(Method::POST, &search, json!({"size": 10, "query": q, "_source": ["group"]})).await;
        let groups: Vec<&str> =
            v["hits"]["hits"].as_array().unwrap().iter().map(|h| h["_source"]["group"].as_str().unwrap()).collect();
        assert!(!groups.is_empty() && groups.iter().all(|g| *g == "even"), "{q} -> {v}");
    }
    // radial search: every hit at least `min_score`
    let v =
        s.client.ok(Method::POST, &search, json!({"query": neural("text_vector", json!({"min_score": 0.7}))})).await;
    let scores: Vec<f64> =
        v["hits"]["hits"].as_array().unwrap().iter().map(|h| h["_score"].as_f64().unwrap()).collect();
    assert!(!scores.is_empty() && scores.iter().all(|x| *x >= 0.7), "{v}");
    // the passages, through a nested query: the document of the best passage first
    let nested = json!({"nested": {"path": "passages", "score_mode": "max",
        "query": neural("passages.vector", json!({"k": 20}))}});
    let v = s.client.ok(Method::POST, &search, json!({"size": 5, "query": nested})).await;
    assert_eq!(ids(&v).len(), 5, "{v}");
    // in _msearch, beside a plain search
    let body = format!(
        "{}\n{}\n{}\n{}\n",
        json!({"index": s.index}),
        json!({"size": 3, "_source": false, "query": neural("text_vector", json!({"k": 10}))}),
        json!({"index": s.index}),
        json!({"size": 1, "query": {"match_all": {}}})
    );
    let v = common::post_ndjson(&format!("{}/_msearch", s.client.url), body).await;
    assert_eq!(ids(&v["responses"][0]), ids(&own)[..3], "{v}");
    assert_eq!(ids(&v["responses"][1]).len(), 1, "{v}");
    // _count, _explain and _validate/query take the clause too
    let q = json!({"query": neural("text_vector", json!({"k": 5}))});
    let v = s.client.ok(Method::POST, &format!("/{}/_count", s.index), q.clone()).await;
    assert_eq!(v["count"], 5, "{v}");
    let top = &ids(&own)[0];
    let v = s.client.ok(Method::POST, &format!("/{}/_explain/{top}", s.index), q.clone()).await;
    assert_eq!(v["matched"], true, "{v}");
    let v = s.client.ok(Method::POST, &format!("/{}/_validate/query", s.index), q).await;
    assert_eq!(v["valid"], true, "{v}");
}

#[tokio::test]
async fn a_neural_query_the_sidecar_cannot_serve_is_a_400_naming_the_problem() {
    let Some(s) = sidecar().await else { return };
    let search = format!("/{}/_search", s.index);
    for (params, want) in [
        (json!({"query_text": TEXT, "model_id": "aFj3xQ9ModelId", "k": 5}), MODEL),
        (json!({"query_text": TEXT, "k": 5}), "model_id"),
        (json!({"query_image": "aGVsbG8=", "model_id": MODEL}), "image"),
        (json!({"query_text": TEXT, "model_id": MODEL, "k": 5, "max_distance": 0.5}), "one of"),
    ] {
        let body = json!({"query": {"neural": {"text_vector": params.clone()}}});
        let (status, v) = s.client.call(Method::POST, &search, Some(body)).await;
        assert_eq!(status, 400, "{params} -> {v}");
        assert!(v["error"]["reason"].as_str().unwrap_or("").contains(want), "{params} -> {v}");
    }
}

/// ml-commons' model API as discovery code uses it: search the models, read one, predict with
/// it, then name its id in a neural query.
#[tokio::test]
async fn code_that_discovers_its_model_through_ml_commons_finds_the_sidecar_models() {
    let Some(s) = sidecar().await else { return };
    let found = s
        .client
        .ok(
            Method::POST,
            "/_plugins/_ml/models/_search",
            json!({"query": {"term": {"model_state": "DEPLOYED"}}, "size": 100}),
        )
        .await;
    let id = found["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["_source"]["name"] == MODEL)
        .map(|h| h["_id"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("{found}"));
    let none = s
        .client
        .ok(Method::GET, "/_plugins/_ml/models/_search", json!({"query": {"term": {"algorithm": "SPARSE_ENCODING"}}}))
        .await;
    assert_eq!(none["hits"]["total"]["value"], 0, "{none}");
    let (status, m) = s.client.call(Method::GET, &format!("/_plugins/_ml/models/{id}"), None).await;
    assert_eq!(status, 200, "{m}");
    assert_eq!((m["algorithm"].as_str(), m["model_state"].as_str()), (Some("TEXT_EMBEDDING"), Some("DEPLOYED")), "{m}");
    assert_eq!(m["model_config"]["embedding_dimension"], 384, "{m}");
    let (status, e) = s.client.call(Method::GET, "/_plugins/_ml/models/aFj3xQ9ModelId", None).await;
    assert_eq!(status, 404, "{e}");
    assert!(e["error"]["reason"].as_str().unwrap().contains(MODEL), "{e}");
    // _predict: the document embeddings /embed gives
    let texts = ["Stem cells differentiate.".to_string(), "Tides follow the moon.".to_string()];
    let p = s
        .client
        .ok(
            Method::POST,
            &format!("/_plugins/_ml/_predict/text_embedding/{id}"),
            json!({"text_docs": texts, "return_number": true, "target_response": ["sentence_embedding"]}),
        )
        .await;
    let want = common::embed_model(&s.client.url, Some(MODEL), &texts, "passage").await;
    for (r, w) in p["inference_results"].as_array().unwrap().iter().zip(&want) {
        let out = &r["output"][0];
        assert_eq!((out["name"].as_str(), out["shape"][0].as_u64()), (Some("sentence_embedding"), Some(384)), "{out}");
        let got: Vec<f32> = out["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert!(common::cosine(&got, w) > 0.9999, "predict and /embed agree");
    }
    let (status, e) = s
        .client
        .call(Method::POST, &format!("/_plugins/_ml/_predict/sparse_encoding/{id}"), Some(json!({"text_docs": ["x"]})))
        .await;
    assert_eq!(status, 400, "{e}");
    // the id found is the one a neural query names
    let v = s
        .client
        .ok(
            Method::POST,
            &format!("/{}/_search", s.index),
            json!({"size": 3, "_source": false,
        "query": {"neural": {"text_vector": {"query_text": TEXT, "model_id": id, "k": 3}}}}),
        )
        .await;
    assert_eq!(ids(&v).len(), 3, "{v}");
}

/// The hits (id, score) of one sub-query sent straight to the engine, as a ranked list.
async fn leg(index: &str, query: Value, size: usize) -> Vec<semantic_sidecar::query::fusion::LegHit> {
    let v = common::post_json(
        &format!("{}/{index}/_search", common::engine_url()),
        &json!({"size": size, "_source": false, "query": query}),
    )
    .await;
    v["hits"]["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|h| semantic_sidecar::query::fusion::LegHit {
            id: format!("{index}/{}", h["_id"].as_str().unwrap()),
            score: h["_score"].as_f64().unwrap(),
        })
        .collect()
}

/// What the sidecar's fusion gives for sub-queries sent straight to the engine.
async fn expected(index: &str, queries: &[Value], depth: usize, pipeline: &Value) -> Vec<(String, f64)> {
    let mut lists = Vec::new();
    for q in queries {
        lists.push(leg(index, q.clone(), depth).await);
    }
    let scoring = semantic_sidecar::query::os_hybrid::parse_pipeline(pipeline)
        .unwrap()
        .and_then(|p| p.scoring)
        .unwrap_or_default();
    semantic_sidecar::query::os_hybrid::combine(&lists, &scoring)
        .into_iter()
        .map(|r| (r.id.rsplit('/').next().unwrap().to_string(), r.score))
        .collect()
}

fn scored(v: &Value) -> Vec<(String, f64)> {
    v["hits"]["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|h| (h["_id"].as_str().unwrap().to_string(), h["_score"].as_f64().unwrap()))
        .collect()
}

fn same_hits(got: &[(String, f64)], want: &[(String, f64)], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.0, w.0, "{what}: {got:?} vs {want:?}");
        assert!((g.1 - w.1).abs() < 1e-5, "{what}: {got:?} vs {want:?}");
    }
}

/// The hybrid search page's shapes: a search pipeline with a normalization-processor (and
/// one with a score-ranker-processor) kept by the sidecar, a `hybrid` query of a `match` and a
/// `neural` query through `?search_pipeline=`, through the index's default pipeline, paged
/// with `pagination_depth`, filtered, aggregated; each answer's hits are the sidecar's fusion
/// of the same sub-queries sent straight to the engine.
#[tokio::test]
async fn hybrid_queries_are_scored_by_the_search_pipelines_the_sidecar_keeps() {
    let Some(s) = sidecar().await else { return };
    let search = format!("/{}/_search", s.index);
    let norm_name = format!("nlp-search-pipeline-{}", s.index);
    let norm = json!({"description": "Post processor for hybrid search", "phase_results_processors": [{
        "normalization-processor": {"normalization": {"technique": "min_max"},
            "combination": {"technique": "arithmetic_mean", "parameters": {"weights": [0.3, 0.7]}}}}]});
    let v = s.client.ok(Method::PUT, &format!("/_search/pipeline/{norm_name}"), norm.clone()).await;
    assert_eq!(v["acknowledged"], true, "{v}");
    let (_, v) = s.client.call(Method::GET, &format!("/_search/pipeline/{norm_name}"), None).await;
    assert_eq!(v[&norm_name], norm, "GET answers the pipeline as written");
    let (_, all) = s.client.call(Method::GET, "/_search/pipeline", None).await;
    assert_eq!(all[&norm_name], norm);
    let queries = [json!({"match": {"text": {"query": TEXT}}}), neural("text_vector", json!({"k": 10}))];
    let vector = common::embed_model(&s.client.url, Some(MODEL), &[TEXT.to_string()], "query").await.remove(0);
    let direct = [queries[0].clone(), json!({"knn": {"text_vector": {"vector": vector, "k": 10}}})];
    // the documented request: _source excludes, ?search_pipeline=
    let body = json!({"_source": {"exclude": ["text_vector", "passages"]}, "query": {"hybrid": {"queries": queries}}});
    let v = s.client.ok(Method::POST, &format!("{search}?search_pipeline={norm_name}"), body.clone()).await;
    assert!(v["_shards"].is_object() && v["hits"]["total"]["value"].as_u64().unwrap() >= 10, "{v}");
    let hit = &v["hits"]["hits"][0];
    assert!(hit["_source"]["text"].is_string() && hit["_source"].get("text_vector").is_none(), "{hit}");
    let want = expected(&s.index, &direct, 10, &norm).await;
    same_hits(&scored(&v), &want[..10], "min_max arithmetic_mean");
    // the pipeline named in the body works the same
    let mut in_body = body.clone();
    in_body["search_pipeline"] = json!(norm_name);
    same_hits(&scored(&s.client.ok(Method::POST, &search, in_body).await), &want[..10], "body search_pipeline");
    // pagination_depth with from and size: the second page of the same fused list
    let paged = json!({"from": 5, "size": 5, "query": {"hybrid": {"pagination_depth": 20, "queries": queries}}});
    let v = s.client.ok(Method::POST, &format!("{search}?search_pipeline={norm_name}"), paged).await;
    let want20 = expected(&s.index, &direct, 20, &norm).await;
    same_hits(&scored(&v), &want20[5..10], "page 2 at depth 20");
    // the hybrid query's filter, and aggregations over what any sub-query matched
    let filtered = json!({"size": 10, "aggs": {"groups": {"terms": {"field": "group.keyword"}}},
        "query": {"hybrid": {"filter": {"term": {"group": "even"}}, "queries": queries}}});
    let v = s.client.ok(Method::POST, &format!("{search}?search_pipeline={norm_name}"), filtered).await;
    let buckets = v["aggregations"]["groups"]["buckets"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!((buckets.len(), buckets[0]["key"].as_str()), (1, Some("even")), "{v}");
    let f = json!({"term": {"group": "even"}});
    let filtered_direct = [
        json!({"bool": {"must": [direct[0].clone()], "filter": [f.clone()]}}),
        json!({"knn": {"text_vector": {"vector": direct[1]["knn"]["text_vector"]["vector"], "k": 10, "filter": f}}}),
    ];
    same_hits(&scored(&v), &expected(&s.index, &filtered_direct, 10, &norm).await[..10], "filtered");
    // score-ranker (RRF) as the index's default search pipeline: no search_pipeline needed, and
    // plain searches on the index still pass (the engine keeps the pipeline's empty rest)
    let rrf_name = format!("rrf-pipeline-{}", s.index);
    let rrf = json!({"description": "Post processor for hybrid RRF search", "phase_results_processors": [
        {"score-ranker-processor": {"combination": {"technique": "rrf", "rank_constant": 40}}}]});
    s.client.ok(Method::PUT, &format!("/_search/pipeline/{rrf_name}"), rrf.clone()).await;
    s.client
        .ok(Method::PUT, &format!("/{}/_settings", s.index), json!({"index.search.default_pipeline": rrf_name}))
        .await;
    let v = s.client.ok(Method::POST, &search, json!({"query": {"hybrid": {"queries": queries}}})).await;
    same_hits(&scored(&v), &expected(&s.index, &direct, 10, &rrf).await[..10], "rrf by default");
    let v = s.client.ok(Method::POST, &search, json!({"query": {"match": {"text": TEXT}}})).await;
    assert_eq!(ids(&v).len(), 10, "{v}");
    // neural_query_enricher: a neural query without model_id takes the pipeline's default
    let enrich_name = format!("enrich-{}", s.index);
    let enrich = json!({"request_processors": [{"neural_query_enricher": {"default_model_id": MODEL}}],
        "phase_results_processors": [{"normalization-processor": {"normalization": {"technique": "l2"},
            "combination": {"technique": "harmonic_mean"}}}]});
    s.client.ok(Method::PUT, &format!("/_search/pipeline/{enrich_name}"), enrich.clone()).await;
    let bare = [queries[0].clone(), json!({"neural": {"text_vector": {"query_text": TEXT, "k": 10}}})];
    let v = s
        .client
        .ok(
            Method::POST,
            &format!("{search}?search_pipeline={enrich_name}"),
            json!({"query": {"hybrid": {"queries": bare}}}),
        )
        .await;
    same_hits(&scored(&v), &expected(&s.index, &direct, 10, &enrich).await[..10], "l2 harmonic_mean, enriched");
    // what the plugin refuses, the sidecar refuses, naming it
    let bad = json!({"phase_results_processors": [{"normalization-processor": {"combination": {"parameters": {"weights": [0.5, 0.6]}}}}]});
    let (status, e) = s.client.call(Method::PUT, "/_search/pipeline/bad-weights", Some(bad)).await;
    assert!(status == 400 && e["error"]["reason"].as_str().unwrap().contains("sum of weights"), "{e}");
    let three = json!({"query": {"hybrid": {"queries": [queries[0].clone(), queries[1].clone(), {"match_all": {}}]}}});
    let (status, e) = s.client.call(Method::POST, &format!("{search}?search_pipeline={norm_name}"), Some(three)).await;
    assert!(status == 400 && e["error"]["reason"].as_str().unwrap().contains("number of weights"), "{e}");
    let sorted = json!({"sort": ["_doc"], "query": {"hybrid": {"queries": queries}}});
    let (status, e) = s.client.call(Method::POST, &search, Some(sorted)).await;
    assert!(status == 400 && e["error"]["reason"].as_str().unwrap().contains("`sort`"), "{e}");
    // DELETE: gone from the sidecar and the engine
    s.client.ok(Method::PUT, &format!("/{}/_settings", s.index), json!({"index.search.default_pipeline": null})).await;
    for name in [&norm_name, &rrf_name, &enrich_name] {
        let (_, v) = s.client.call(Method::DELETE, &format!("/_search/pipeline/{name}"), None).await;
        assert_eq!(v["acknowledged"], true, "{v}");
        let (status, _) = s.client.call(Method::GET, &format!("/_search/pipeline/{name}"), None).await;
        assert_eq!(status, 404);
    }
}

/// The neural search tutorial's and the text chunking page's ingest pipelines, kept by the
/// sidecar: documents written with `?pipeline=`, through the index's `default_pipeline`, by
/// `_bulk`, `_doc`, `_create` and `_update` get the vectors the sidecar's model gives their
/// text; `_simulate` shows the same. (The local OpenSearch has no ingest-common module, so the
/// engine's part of each pipeline here is empty; `os_pipeline`'s unit tests split a pipeline
/// with a `set` processor.)
#[tokio::test]
async fn text_embedding_and_text_chunking_ingest_pipelines_run_on_a_cluster_without_the_plugins() {
    let Some(s) = sidecar().await else { return };
    let embed_name = format!("nlp-ingest-pipeline-{}", s.index);
    let embed = json!({"description": "A text embedding pipeline", "processors": [
        {"text_embedding": {"model_id": MODEL, "field_map": {"passage_text": "passage_embedding"}}}]});
    let v = s.client.ok(Method::PUT, &format!("/_ingest/pipeline/{embed_name}"), embed.clone()).await;
    assert_eq!(v["acknowledged"], true, "{v}");
    let (_, got) = s.client.call(Method::GET, &format!("/_ingest/pipeline/{embed_name}"), None).await;
    assert_eq!(got[&embed_name], embed, "GET answers the pipeline as written");
    let index = format!("{}-nlp", s.index);
    s.client
        .ok(
            Method::PUT,
            &format!("/{index}"),
            json!({"settings": {"index.knn": true, "default_pipeline": embed_name},
                "mappings": {"properties": {"id": {"type": "text"}, "passage_text": {"type": "text"},
                    "passage_embedding": {"type": "knn_vector", "dimension": 384, "method": lucene()}}}}),
        )
        .await;
    let texts =
        ["Stem cells differentiate into many cell types.", "Tides follow the moon.", "Vaccines train immunity."];
    let bulk: String = texts[..2]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!("{}\n{}\n", json!({"index": {"_index": index, "_id": i.to_string()}}), json!({"passage_text": t}))
        })
        .collect();
    let r = common::post_ndjson(&format!("{}/_bulk?refresh=true", s.client.url), bulk).await;
    assert_eq!(r["errors"], false, "{r}");
    s.client.ok(Method::PUT, &format!("/{index}/_create/2?refresh=true"), json!({"passage_text": texts[2]})).await;
    let want = common::embed_model(
        &s.client.url,
        Some(MODEL),
        &texts.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        "passage",
    )
    .await;
    let vector_of = |v: &Value| -> Vec<f32> {
        v["_source"]["passage_embedding"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    for (i, w) in want.iter().enumerate() {
        let (_, d) = s.client.call(Method::GET, &format!("/{index}/_doc/{i}"), None).await;
        assert!(common::cosine(&vector_of(&d), w) > 0.9999, "{d}");
    }
    // _update with a partial doc: the new text's vector
    s.client
        .ok(Method::POST, &format!("/{index}/_update/1?refresh=true"), json!({"doc": {"passage_text": texts[2]}}))
        .await;
    let (_, d) = s.client.call(Method::GET, &format!("/{index}/_doc/1"), None).await;
    assert!(common::cosine(&vector_of(&d), &want[2]) > 0.9999, "{d}");
    // a neural query finds them, and a hybrid query through a search pipeline too
    let q =
        json!({"query": {"neural": {"passage_embedding": {"query_text": "immune system", "model_id": MODEL, "k": 3}}}});
    let v = s.client.ok(Method::POST, &format!("/{index}/_search"), q).await;
    assert!(["1", "2"].contains(&ids(&v)[0].as_str()), "{v}");
    // the text chunking page: chunks, then an embedding per chunk in a nested field
    let chunk_name = format!("text-chunking-embedding-ingest-pipeline-{}", s.index);
    let chunking = json!({"description": "A text chunking and embedding ingest pipeline", "processors": [
        {"text_chunking": {"algorithm": {"fixed_token_length": {"token_limit": 10, "overlap_rate": 0.2, "tokenizer": "standard"}},
            "field_map": {"passage_text": "passage_chunk"}}},
        {"text_embedding": {"model_id": MODEL, "field_map": {"passage_chunk": "passage_chunk_embedding"}}}]});
    s.client.ok(Method::PUT, &format!("/_ingest/pipeline/{chunk_name}"), chunking).await;
    let chunked = format!("{}-chunked", s.index);
    s.client
        .ok(
            Method::PUT,
            &format!("/{chunked}"),
            json!({"settings": {"index": {"knn": true}}, "mappings": {"properties": {"passage_text": {"type": "text"},
                "passage_chunk_embedding": {"type": "nested", "properties": {"knn": {"type": "knn_vector", "dimension": 384, "method": lucene()}}}}}}),
        )
        .await;
    let text = "This is an example document to be chunked. The document contains a single paragraph, two sentences and 24 tokens by standard tokenizer in OpenSearch.";
    s.client
        .ok(
            Method::POST,
            &format!("/{chunked}/_doc/1?pipeline={chunk_name}&refresh=true"),
            json!({"passage_text": text}),
        )
        .await;
    let (_, d) = s.client.call(Method::GET, &format!("/{chunked}/_doc/1"), None).await;
    assert_eq!(
        d["_source"]["passage_chunk"],
        json!([
            "This is an example document to be chunked. The document ",
            "The document contains a single paragraph, two sentences and 24 ",
            "and 24 tokens by standard tokenizer in OpenSearch."
        ]),
        "the documented passages"
    );
    let per_chunk = d["_source"]["passage_chunk_embedding"].as_array().unwrap_or_else(|| panic!("{d}"));
    assert_eq!(per_chunk.len(), 3);
    assert_eq!(per_chunk[0]["knn"].as_array().unwrap().len(), 384);
    let nested = json!({"query": {"nested": {"score_mode": "max", "path": "passage_chunk_embedding",
        "query": {"neural": {"passage_chunk_embedding.knn": {"query_text": "document", "model_id": MODEL}}}}}});
    let v = s.client.ok(Method::POST, &format!("/{chunked}/_search"), nested).await;
    assert_eq!(ids(&v), ["1"], "{v}");
    // _simulate, by id and inline
    let sim = json!({"docs": [{"_index": "testindex1", "_id": "1", "_source": {"passage_text": "hello world"}}]});
    let v = s.client.ok(Method::POST, &format!("/_ingest/pipeline/{embed_name}/_simulate"), sim.clone()).await;
    let src = &v["docs"][0]["doc"]["_source"];
    assert_eq!(src["passage_embedding"].as_array().map(Vec::len), Some(384), "{v}");
    let mut inline = sim;
    inline["pipeline"] = embed.clone();
    let v = s.client.ok(Method::POST, "/_ingest/pipeline/_simulate", inline).await;
    assert_eq!(v["docs"][0]["doc"]["_source"]["passage_embedding"].as_array().map(Vec::len), Some(384), "{v}");
    // what the sidecar cannot run is a 400 naming it
    for (def, want) in [
        (json!({"processors": [{"sparse_encoding": {"model_id": "x", "field_map": {"a": "b"}}}]}), "no sparse model"),
        (json!({"processors": [{"text_embedding": {"model_id": "aFj3xQ9ModelId", "field_map": {"a": "b"}}}]}), MODEL),
    ] {
        let (status, e) = s.client.call(Method::PUT, "/_ingest/pipeline/refused", Some(def.clone())).await;
        assert!(status == 400 && e["error"]["reason"].as_str().unwrap_or("").contains(want), "{def} -> {e}");
    }
    s.client.ok(Method::PUT, &format!("/{index}/_settings"), json!({"index.default_pipeline": null})).await;
    for name in [&embed_name, &chunk_name] {
        let (status, v) = s.client.call(Method::DELETE, &format!("/_ingest/pipeline/{name}"), None).await;
        assert_eq!((status, v["acknowledged"].clone()), (200, json!(true)), "{v}");
        let (status, _) = s.client.call(Method::GET, &format!("/_ingest/pipeline/{name}"), None).await;
        assert_eq!(status, 404);
    }
}
