//! Hybrid search against the real OpenSearch node and the real model: every mode on a SciFact
//! subset written through the sidecar's own `_bulk` (chunked into passages), filters on both legs,
//! stable pages, explain that adds up, engine-side fusion, the ES-compatible `_search` (clause,
//! nesting, auto_hybrid, aggregations), the opensearch-py client, bad input, and the golden
//! request JSON of every dialect and fusion (the OpenSearch ones executed on the node).

mod common;

use std::path::PathBuf;

use common::{embed_with, encoder_settings, engine_url, unique_index};
use reqwest::Method;
use semantic_sidecar::commands::eval::{score, Dataset};
use semantic_sidecar::encoder::EncoderSet;
use semantic_sidecar::engine::dialect::{detect, Dialect};
use semantic_sidecar::engine::{EngineClient, EngineRequest};
use semantic_sidecar::http::{self, AppState};
use semantic_sidecar::ingest::mapping::{index_body, ModelShape};
use semantic_sidecar::query::build::{self, Capabilities};
use semantic_sidecar::query::request::{plan, Plan, SearchRequest, Target};
use semantic_sidecar::telemetry::Metrics;
use semantic_sidecar::types::pipeline::Pipeline;
use serde_json::{json, Value};
use tokio::sync::OnceCell;

const DOCS: usize = 120;

fn pipeline(index: &str) -> Pipeline {
    toml::from_str(&format!(
        "name = 'scifact-test'\nindex = '{index}'\nmodel = 'all-MiniLM-L6-v2'\nhash_field = 'content_hash'\n\
         [[fields]]\nsource = ['title', 'text']\nvector = 'text_vector'\n\
         [chunking]\nmax_tokens = 200\noverlap = 32\n\
         [search]\nfields = ['title^2', 'text']\nauto_hybrid = true\n"
    ))
    .unwrap()
}

fn dataset() -> Dataset {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/scifact");
    Dataset::load(&dir, "train", Some(DOCS)).expect("../shared/data/scifact (the evaluation data)")
}

struct Sidecar {
    url: String,
    engine: EngineClient,
    index: String,
    http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn sidecar_for(index: &str) -> Sidecar {
    sidecar_with(pipeline(index), &[]).await.unwrap()
}

/// A sidecar serving `p`, with the default model and the model folders `extra` loaded.
async fn sidecar_with(p: Pipeline, extra: &[&str]) -> Result<Sidecar, String> {
    let mut settings = encoder_settings(&[("SIDECAR__ENGINE__URLS", &engine_url())]);
    for m in extra {
        settings.encoder.models.push(common::default_model_dir().with_file_name(m));
    }
    let engine = EngineClient::new(&settings.engine).unwrap();
    let metrics = Metrics::new();
    let (es, em) = (settings.encoder.clone(), metrics.encoder.clone());
    let encoders = tokio::task::spawn_blocking(move || EncoderSet::load(&es, &em)).await.unwrap().unwrap();
    let index = p.index.clone();
    let state = AppState::with_encoders(settings, engine.clone(), metrics, encoders)
        .with_pipelines(vec![p])
        .map_err(|e| e.to_string())?;
    let (url, tx) = http::serve_local(state).await.unwrap();
    Ok(Sidecar { url, engine, index, http: reqwest::Client::new(), _stop: tx })
}

static INDEX: OnceCell<String> = OnceCell::const_new();

/// One index for the whole file: the subset written through the sidecar's `_bulk`, each
/// document with a `group` (even / odd position) to filter on.
async fn index() -> String {
    INDEX
        .get_or_init(|| async {
            let index = unique_index("search");
            let s = sidecar_for(&index).await;
            let info = s.engine.info().await.unwrap();
            let body = index_body(&info, &pipeline(&index), ModelShape { dims: 384, normalized: true, language: None })
                .unwrap();
            s.engine.send(EngineRequest::new(Method::PUT, format!("/{index}")).json(&body)).await.unwrap();
            let mut bulk = String::new();
            for (i, d) in dataset().docs.iter().enumerate() {
                bulk.push_str(&json!({"index": {"_index": index, "_id": d["_id"]}}).to_string());
                bulk.push('\n');
                let group = if i % 2 == 0 { "even" } else { "odd" };
                bulk.push_str(&json!({"title": d["title"], "text": d["text"], "group": group}).to_string());
                bulk.push('\n');
            }
            let r: Value = s
                .http
                .post(format!("{}/_bulk?refresh=true", s.url))
                .header("content-type", "application/x-ndjson")
                .body(bulk)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(r["errors"], false, "{r}");
            index
        })
        .await
        .clone()
}

async fn fixture() -> Sidecar {
    let index = index().await;
    sidecar_for(&index).await
}

impl Sidecar {
    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.http.post(format!("{}{path}", self.url)).json(body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post_status(&self, path: String, body: Value) -> (u16, Value) {
        self.post(&path, &body).await
    }

    async fn search(&self, body: Value) -> Value {
        let mut body = body;
        body["index"] = json!(self.index);
        let (status, v) = self.post("/search", &body).await;
        assert_eq!(status, 200, "{body} -> {v}");
        v
    }
}

fn ids(v: &Value) -> Vec<String> {
    v["hits"]["hits"].as_array().unwrap().iter().map(|h| h["_id"].as_str().unwrap().to_string()).collect()
}

fn modes() -> Vec<(&'static str, Value)> {
    vec![
        ("bm25", json!({"mode": "bm25"})),
        ("knn", json!({"mode": "knn"})),
        ("hybrid-rrf", json!({"fusion": {"rrf": {"rank_constant": 60}}})),
        ("hybrid-linear", json!({"fusion": {"linear": {"weight": 0.4, "normalization": "minmax"}}})),
        ("hybrid-engine", json!({"fusion": {"engine": {"method": "boost", "weight": 0.3}}})),
    ]
}

fn with(base: &Value, extra: &Value) -> Value {
    let mut b = base.clone();
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

#[tokio::test]
async fn every_mode_finds_the_judged_documents_and_answers_the_same_twice() {
    let s = fixture().await;
    let data = dataset();
    let queries: Vec<&(String, String)> = data.queries.iter().take(25).collect();
    for (name, extra) in modes() {
        let mut ndcg = 0.0;
        for (qid, text) in &queries {
            let v = s.search(with(&extra, &json!({"query": text, "size": 10}))).await;
            ndcg += score(&ids(&v), &data.qrels[qid]).ndcg_at_10;
        }
        ndcg /= queries.len() as f64;
        println!("{name}: nDCG@10 {ndcg:.4} over {} queries, {DOCS} documents", queries.len());
        assert!(ndcg > 0.6, "{name}: nDCG@10 {ndcg:.4} is not sensible");
        let body = with(&extra, &json!({"query": queries[0].1, "size": 10}));
        let (a, b) = (s.search(body.clone()).await, s.search(body).await);
        assert_eq!(a["hits"]["hits"], b["hits"]["hits"], "{name} is not deterministic");
    }
}

/// `[search] query_model`: queries embedded by the static int8 copy search the fp32 passages and
/// find what the fp32 queries find; a dynamic int8 copy is refused at startup.
#[tokio::test]
async fn a_static_int8_query_model_searches_the_fp32_vectors_and_a_dynamic_one_is_refused() {
    let fp32 = fixture().await;
    let mut p = pipeline(&fp32.index);
    p.search.query_model = Some("all-MiniLM-L6-v2-int8-static".into());
    let int8 = sidecar_with(p.clone(), &["all-MiniLM-L6-v2-int8-static"]).await.unwrap();
    let data = dataset();
    let (mut same, mut total) = (0usize, 0usize);
    for (_, text) in data.queries.iter().take(20) {
        let body = json!({"query": text, "size": 10, "mode": "knn"});
        let (a, b) = (ids(&fp32.search(body.clone()).await), ids(&int8.search(body).await));
        same += b.iter().filter(|id| a.contains(id)).count();
        total += a.len();
    }
    println!("static int8 queries: {same} of {total} fp32 kNN top-10 hits found");
    assert!(same * 10 >= total * 9, "only {same} of {total} fp32 hits");
    let v = int8.search(json!({"query": data.queries[0].1, "explain": true})).await;
    assert_eq!(v["vector"]["model"], "all-MiniLM-L6-v2");
    assert_eq!(v["vector"]["query_model"], "all-MiniLM-L6-v2-int8-static");

    p.search.query_model = Some("all-MiniLM-L6-v2-int8".into());
    let e = sidecar_with(p, &["all-MiniLM-L6-v2-int8"]).await.err().expect("a dynamic int8 query model is refused");
    assert!(e.contains("search.query_model") && e.contains("dynamic int8"), "{e}");
}

#[tokio::test]
async fn filters_restrict_both_legs() {
    let s = fixture().await;
    let filter = json!([{"term": {"group.keyword": "even"}}]);
    for (name, extra) in modes() {
        let v = s
            .search(with(
                &extra,
                &json!({"query": "stem cells", "filter": filter, "size": 30, "explain": true, "_source": ["group"]}),
            ))
            .await;
        let hits = v["hits"]["hits"].as_array().unwrap();
        assert!(!hits.is_empty(), "{name}: nothing found");
        for h in hits {
            assert_eq!(h["_source"]["group"], "even", "{name}: {h}");
        }
        if name.starts_with("hybrid") {
            let both = hits.iter().filter(|h| h["_explain"]["bm25"].is_object() && h["_explain"]["knn"].is_object());
            assert!(both.count() > 0, "{name}: the legs never agreed under the filter");
        }
    }
}

#[tokio::test]
async fn pages_are_stable_slices_of_the_fused_list() {
    let s = fixture().await;
    for (name, extra) in modes() {
        let all = ids(&s.search(with(&extra, &json!({"query": "cancer therapy", "size": 20, "k": 50}))).await);
        let mut paged = Vec::new();
        for from in (0..20).step_by(5) {
            let body = with(&extra, &json!({"query": "cancer therapy", "size": 5, "from": from, "k": 50}));
            paged.extend(ids(&s.search(body).await));
        }
        assert_eq!(all, paged, "{name}");
        assert_eq!(all.len(), 20, "{name}");
    }
}

#[tokio::test]
async fn explain_adds_up() {
    let s = fixture().await;
    let v = s
        .search(json!({"query": "DNA repair", "explain": true, "size": 20, "fusion": {"rrf": {"rank_constant": 60}}}))
        .await;
    for h in v["hits"]["hits"].as_array().unwrap() {
        let e = &h["_explain"];
        let mut sum = 0.0;
        for leg in ["bm25", "knn"] {
            if let Some(rank) = e[leg]["rank"].as_f64() {
                let c = e[leg]["contribution"].as_f64().unwrap();
                assert!((c - 1.0 / (60.0 + rank)).abs() < 1e-12, "{e}");
                sum += c;
            }
        }
        assert!((sum - h["_score"].as_f64().unwrap()).abs() < 1e-12, "{e}");
        assert_eq!(e["fused"], h["_score"]);
    }
    let v = s
        .search(json!({"query": "DNA repair", "explain": true, "size": 20, "fusion": {"linear": {"weight": 0.3, "normalization": "minmax"}}}))
        .await;
    for h in v["hits"]["hits"].as_array().unwrap() {
        let e = &h["_explain"];
        let (b, k) =
            (e["bm25"]["contribution"].as_f64().unwrap_or(0.0), e["knn"]["contribution"].as_f64().unwrap_or(0.0));
        assert!(b <= 0.3 + 1e-12 && k <= 0.7 + 1e-12, "{e}");
        assert!((b + k - h["_score"].as_f64().unwrap()).abs() < 1e-12, "{e}");
    }
}

#[tokio::test]
async fn chunked_documents_come_back_with_their_best_passage() {
    let s = fixture().await;
    let v = s
        .search(json!({"query": "stem cell labeling with nanoparticles", "mode": "knn", "_source": ["title", "text"]}))
        .await;
    let hits = v["hits"]["hits"].as_array().unwrap();
    assert!(!hits.is_empty());
    for h in hits {
        let p = &h["passage"];
        let text = p["text"].as_str().unwrap_or_else(|| panic!("no passage: {h}"));
        assert!(!text.is_empty() && p["offset"].is_u64(), "{p}");
        // the kNN score of the document is its best passage's (Elasticsearch 9 prints the two
        // float32 scores with different digits: compare to float32 precision)
        let (ps, ds) = (p["score"].as_f64().unwrap(), h["_score"].as_f64().unwrap());
        assert!((ps - ds).abs() <= 1e-6 * ds.abs().max(1.0), "{ps} vs {ds}: {h}");
        let doc = format!("{}\n{}", h["_source"]["title"].as_str().unwrap(), h["_source"]["text"].as_str().unwrap());
        let head: String = text.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
        assert!(doc.split_whitespace().collect::<Vec<_>>().join(" ").contains(&head), "`{head}` not in the document");
        assert!(h.get("inner_hits").is_none());
        assert!(h["_source"].get("passages").is_none(), "vectors and passages stay out of _source");
    }
}

#[tokio::test]
async fn engine_fusion_says_what_it_used_and_refuses_what_the_cluster_lacks() {
    let s = fixture().await;
    let v = s.search(json!({"query": "stem cells", "fusion": {"engine": {}}, "explain": true})).await;
    assert_eq!(v["fusion"]["by"], "engine");
    assert_eq!(v["fusion"]["method"], "boost");
    // what each test node lacks: neural-search (OpenSearch); the rank-rrf module (the
    // Elasticsearch integ-test distribution; its licence is basic too, never a trial)
    let (lacks, cases) = if common::on_elasticsearch() {
        ("rank-rrf", [("rrf", "rank-rrf"), ("linear", "not offered on Elasticsearch")])
    } else {
        ("neural-search", [("rrf", "neural-search"), ("linear", "neural-search")])
    };
    assert!(v["fusion"]["note"].as_str().unwrap().contains(lacks), "{}", v["fusion"]);
    let annotated = v["hits"]["hits"].as_array().unwrap().iter().filter(|h| h["_explain"]["knn"]["rank"].is_u64());
    assert!(annotated.count() > 0);
    for (method, needle) in cases {
        let (status, e) =
            s.post("/search", &json!({"index": s.index, "query": "x", "fusion": {"engine": {"method": method}}})).await;
        assert_eq!(status, 400, "{e}");
        assert!(e["error"]["reason"].as_str().unwrap().contains(needle), "{e}");
    }
}

#[tokio::test]
async fn bad_input_gets_a_4xx_json_error_naming_the_problem() {
    let s = fixture().await;
    let i = s.index.clone();
    let cases = [
        (json!({"index": i, "query": "x", "fusion": {"borda": {}}}), 400, "borda"),
        (json!({"index": i, "query": "x", "fusion": {"linear": {"weight": 1.5}}}), 400, "between 0 and 1"),
        (json!({"index": i, "query": "x", "k": 5000}), 422, "max_k"),
        (json!({"index": i, "query": "x", "size": 1000}), 422, "max_size"),
        (json!({"index": i, "query": "   "}), 400, "empty"),
        (json!({"index": i, "query": "x", "filter": {"range": {"group": {"bogus": 1}}}}), 400, "filter"),
        (json!({"index": i, "query": "x", "filter": {"script": {"script": "true"}}}), 400, "script"),
        (json!({"index": i, "query": "x", "filter": "group:even"}), 400, "filter"),
        (json!({"index": "no-such-index", "query": "x"}), 404, "no-such-index"),
        (json!({"query": "x"}), 400, "index"),
    ];
    for (body, status, needle) in cases {
        let (got, v) = s.post("/search", &body).await;
        assert_eq!(got, status, "{body} -> {v}");
        let reason = v["error"]["reason"].as_str().unwrap_or_else(|| panic!("no JSON error for {body}: {v}"));
        assert!(reason.contains(needle), "{body}: `{reason}` should mention `{needle}`");
    }
    let r = s.http.post(format!("{}/search", s.url)).body("{not json").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // the ES-compatible endpoint: a malformed clause, and a sort that cannot go with fusion
    let (got, v) = s.post(&format!("/{i}/_search"), &json!({"query": {"hybrid": {"query": "x", "boost": 2}}})).await;
    assert_eq!(got, 400, "{v}");
    let (got, v) =
        s.post(&format!("/{i}/_search"), &json!({"query": {"hybrid": {"query": "x"}}, "sort": ["_doc"]})).await;
    assert_eq!(got, 400, "{v}");
    assert!(v["error"]["reason"].as_str().unwrap().contains("sort"));
}

#[tokio::test]
async fn es_compatible_search_passes_through_rewrites_the_clause_and_keeps_aggregations() {
    let s = fixture().await;
    let i = s.index.clone();
    // an ordinary body: the engine's answer, unchanged
    let plain = json!({"query": {"term": {"group.keyword": "odd"}}, "size": 3, "sort": ["_doc"]});
    let (status, via) = s.post(&format!("/{i}/_search"), &plain).await;
    assert_eq!(status, 200);
    let direct: Value = s
        .engine
        .send(EngineRequest::new(Method::POST, format!("/{i}/_search")).json(&plain))
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(via["hits"], direct["hits"]);
    // the clause as the whole query: fused hits, ES shape, aggregations from the BM25 leg
    let body = json!({
        "query": {"hybrid": {"query": "stem cells", "fusion": {"rrf": {}}}},
        "size": 5,
        "aggs": {"groups": {"terms": {"field": "group.keyword"}}},
        "_source": ["title"],
    });
    let (status, v) = s.post(&format!("/{i}/_search"), &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["hits"]["hits"].as_array().unwrap().len(), 5);
    assert!(v["hits"]["total"]["value"].as_u64().unwrap() > 0);
    assert!(v["aggregations"]["groups"]["buckets"].as_array().unwrap().len() == 2, "{v}");
    assert!(v["took"].is_u64() && v["_shards"].is_object());
    let same = s.search(json!({"query": "stem cells", "size": 5, "fusion": {"rrf": {}}})).await;
    assert_eq!(ids(&v), ids(&same), "the clause and /search agree");
    // nested in a bool, next to a filter: the engine scores it
    let body = json!({"query": {"bool": {"must": [{"hybrid": {"query": "stem cells"}}], "filter": [{"term": {"group.keyword": "odd"}}]}}, "_source": ["group"]});
    let (status, v) = s.post(&format!("/{i}/_search"), &body).await;
    assert_eq!(status, 200, "{v}");
    let hits = v["hits"]["hits"].as_array().unwrap();
    assert!(!hits.is_empty() && hits.iter().all(|h| h["_source"]["group"] == "odd"), "{v}");
    // auto_hybrid: a plain match on a configured field becomes hybrid; on another field it does not
    let (_, auto) =
        s.post(&format!("/{i}/_search"), &json!({"query": {"match": {"text": "stem cells"}}, "size": 5})).await;
    let clause = s.search(json!({"query": "stem cells", "size": 5, "fields": ["text"]})).await;
    assert_eq!(ids(&auto), ids(&clause));
    let (_, other) =
        s.post(&format!("/{i}/_search"), &json!({"query": {"match": {"group": "odd"}}, "size": 200})).await;
    assert!(other["hits"]["hits"].as_array().unwrap().iter().all(|h| h["_source"]["group"] == "odd"));
    assert!(other["hits"]["hits"][0].get("passage").is_none(), "passed through, not rewritten");
}

/// Every URL parameter of a search the sidecar fuses is honoured where the engines put it, or
/// refused with a 400 naming it; `hits.total` counts the union of the legs.
#[tokio::test]
async fn a_fused_search_honours_every_url_parameter_and_counts_the_union() {
    let s = fixture().await;
    let i = s.index.clone();
    let body = json!({
        "query": {"hybrid": {"query": "stem cells", "fusion": {"rrf": {}}}},
        "aggs": {"groups": {"terms": {"field": "group.keyword"}}},
    });
    let get = |q: &str| s.post_status(format!("/{i}/_search?{q}"), body.clone());
    // size and from from the URL (they win over the body's, as on the engines)
    let (st, v) = get("size=3&from=2").await;
    assert_eq!(st, 200, "{v}");
    let same = s.search(json!({"query": "stem cells", "size": 3, "from": 2, "fusion": {"rrf": {}}})).await;
    assert_eq!(ids(&v), ids(&same));
    // typed_keys: the aggregation named by its type, as the Java client needs to read it
    let (_, v) = get("typed_keys=true").await;
    assert!(v["aggregations"]["sterms#groups"]["buckets"].is_array(), "{v}");
    // filter_path, applied by the sidecar to the answer it shaped
    let (_, v) = get("filter_path=hits.hits._id,hits.total&size=2").await;
    assert_eq!(v.as_object().unwrap().keys().collect::<Vec<_>>(), ["hits"], "{v}");
    assert_eq!(v["hits"]["hits"][0].as_object().unwrap().len(), 1, "{v}");
    let (_, v) = get("filter_path=-hits.hits._source,-aggregations&size=2").await;
    assert!(v.get("aggregations").is_none() && v["hits"]["hits"][0].get("_source").is_none(), "{v}");
    assert!(v["hits"]["hits"][0]["_id"].is_string(), "{v}");
    // _source filtering from the URL
    let (_, v) = get("_source=title").await;
    let keys: Vec<&String> = v["hits"]["hits"][0]["_source"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["title"], "{v}");
    let (_, v) = get("_source_excludes=text,title").await;
    assert!(
        v["hits"]["hits"][0]["_source"].get("text").is_none() && v["hits"]["hits"][0]["_source"]["group"].is_string()
    );
    let (_, v) = get("_source=false").await;
    assert!(v["hits"]["hits"][0].get("_source").is_none(), "{v}");
    // totals: the union of the legs, as a number with rest_total_hits_as_int, absent untracked
    let (_, v) = get("size=100").await;
    let t = &v["hits"]["total"];
    let distinct = ids(&v).len() as u64;
    assert!(t["value"].as_u64().unwrap() >= distinct && distinct > 0, "{t} for {distinct} hits");
    let bm25_only: Value = s
        .engine
        .send(
            EngineRequest::new(Method::POST, format!("/{i}/_count"))
                .json(&json!({"query": {"multi_match": {"query": "stem cells", "fields": ["title^2", "text"]}}})),
        )
        .await
        .unwrap()
        .json()
        .unwrap();
    assert!(t["value"].as_u64().unwrap() >= bm25_only["count"].as_u64().unwrap(), "{t} vs {bm25_only}");
    let (_, v) = get("rest_total_hits_as_int=true").await;
    assert!(v["hits"]["total"].is_u64(), "{v}");
    let (_, v) = get("track_total_hits=false").await;
    assert!(v["hits"].get("total").is_none(), "{v}");
    // routing, preference, timeout, version: honoured, not refused
    let (st, v) = get("routing=r1&preference=_local&timeout=5s&version=true&request_cache=false").await;
    assert_eq!(st, 200, "{v}");
    assert!(v["hits"]["hits"].as_array().unwrap().iter().all(|h| h["_version"].is_u64()), "{v}");
    // what a fused search cannot honour: a 400 naming the parameter, never ignored
    for (q, name) in [("scroll=1m", "scroll"), ("sort=title", "sort"), ("q=cells", "q"), ("nope=1", "nope")] {
        let (st, v) = get(q).await;
        assert_eq!(st, 400, "{q}: {v}");
        assert!(v["error"]["reason"].as_str().unwrap().contains(&format!("`{name}`")), "{q}: {v}");
    }
}

#[tokio::test]
async fn opensearch_py_search_works_unchanged_against_the_sidecar() {
    let s = fixture().await;
    let python = std::env::var("SIDECAR_TEST_PYTHON").unwrap_or_else(|_| {
        PathBuf::from(env!("HOME")).join(".cache/semantic-sidecar/venv/bin/python").to_string_lossy().into()
    });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/opensearch_py_search.py");
    let (url, index) = (s.url.clone(), s.index.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python).arg(&script).arg(&url).arg(&index).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "opensearch-py failed");
    let direct = s.search(json!({"query": "stem cells", "size": 5})).await;
    let line = stdout.lines().find(|l| l.starts_with("hybrid ids:")).unwrap();
    assert_eq!(line.trim_start_matches("hybrid ids:").trim(), ids(&direct).join(","));
}

/// The request JSON of every dialect and fusion, with the 384 floats of the vector elided.
fn elide(v: &Value) -> Value {
    match v {
        Value::Array(a) if a.len() == 384 && a.iter().all(Value::is_number) => json!("<384 floats>"),
        Value::Array(a) => Value::Array(a.iter().map(elide).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), elide(x))).collect()),
        other => other.clone(),
    }
}

fn caps(flavor: &str, version: &str, license: Option<&str>, neural: bool) -> Capabilities {
    let root = if flavor == "opensearch" {
        json!({"cluster_name": "c", "version": {"distribution": "opensearch", "number": version}})
    } else {
        json!({"cluster_name": "c", "version": {"number": version, "build_flavor": "default"}, "tagline": "You Know, for Search"})
    };
    let info = detect(root.to_string().as_bytes()).unwrap();
    let mut c = Capabilities::of(info);
    c.rrf_licensed = matches!(license, Some("enterprise" | "trial"));
    c.license = license.map(String::from);
    c.neural_search = neural;
    c
}

fn golden_plan(index: &str, passages: bool, fusion: Value) -> Plan {
    let req: SearchRequest = serde_json::from_value(json!({
        "index": index, "query": "stem cells in ageing", "fusion": fusion, "size": 10, "k": 40,
        "filter": [{"term": {"group.keyword": "even"}}], "highlight": {"fields": {"text": {}}},
    }))
    .unwrap();
    let mut target = Target::of(&pipeline(index));
    if !passages {
        target.passages = None;
    }
    let limits = semantic_sidecar::settings::Settings::load(None, &Default::default()).unwrap().search;
    plan(req, target, &pipeline(index).search, &limits).unwrap()
}

/// Every shape for one cluster; errors recorded as `{"error": reason}`.
fn shapes(c: &Capabilities, index: &str, vector: &[f32]) -> Vec<(String, Value, Option<String>)> {
    let mut out = Vec::new();
    for passages in [false, true] {
        let p = golden_plan(index, passages, json!({"rrf": {}}));
        let tag = if passages { "passages" } else { "flat" };
        let legs = [build::bm25_leg(&p, p.k), build::knn_leg(&p, vector, c.info.dialect, p.k)];
        let ndjson = build::msearch(&p, &legs);
        let lines: Vec<Value> = ndjson.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        out.push((format!("sidecar_msearch_{tag}"), Value::Array(lines), None));
        for method in ["auto", "boost", "rrf", "linear"] {
            let p = golden_plan(index, passages, json!({"engine": {"method": method, "weight": 0.4}}));
            let (v, pipeline) = match build::engine_query(&p, vector, c) {
                Ok(q) => (
                    json!({"method": q.method, "body": q.body, "search_pipeline": q.pipeline.as_ref().map(|x| json!({"name": x.0, "definition": x.1})), "note": q.note}),
                    q.pipeline.map(|x| x.0),
                ),
                Err(e) => (json!({"error": e.to_string()}), None),
            };
            out.push((format!("engine_{method}_{tag}"), v, pipeline));
        }
        let p = golden_plan(index, passages, json!({"engine": {"method": "boost", "weight": 0.5}}));
        let nested = build::nested_hybrid(&p, vector, c).map_err(|e| json!({"error": e.to_string()}));
        out.push((format!("nested_clause_{tag}"), nested.unwrap_or_else(|e| e), None));
    }
    out
}

#[tokio::test]
async fn golden_request_json_for_every_dialect_and_fusion_and_the_opensearch_ones_run() {
    let s = fixture().await;
    let vector = embed_with(&s.url, &["stem cells in ageing".to_string()], "query").await.remove(0);
    let clusters = [
        ("es8_12_basic", caps("elasticsearch", "8.12.2", Some("basic"), false)),
        ("es8_basic", caps("elasticsearch", "8.15.3", Some("basic"), false)),
        ("es8_trial", caps("elasticsearch", "8.17.0", Some("trial"), false)),
        ("es9_enterprise", caps("elasticsearch", "9.1.0", Some("enterprise"), false)),
        ("os2", caps("opensearch", "2.19.1", None, false)),
        ("os2_neural", caps("opensearch", "2.19.1", None, true)),
        ("os3_neural", caps("opensearch", "3.0.0", None, true)),
    ];
    for (name, c) in &clusters {
        let all = shapes(c, "docs", &vector);
        let snap: serde_json::Map<String, Value> = all.iter().map(|(k, v, _)| (k.clone(), elide(v))).collect();
        insta::assert_json_snapshot!(format!("goldens_{name}"), Value::Object(snap));
    }
    // the shapes of the engine under test that this node can run (no neural-search on the
    // OpenSearch node; a basic licence and no rank-rrf module on the Elasticsearch one), on the
    // real index, with the real node's version
    let info = s.engine.info().await.unwrap();
    let c = match info.dialect {
        Dialect::Opensearch => caps("opensearch", &info.version.to_string(), None, false),
        Dialect::Elasticsearch => caps("elasticsearch", &info.version.to_string(), Some("basic"), false),
    };
    let mut ran = 0;
    for (name, v, pipeline) in shapes(&c, &s.index, &vector) {
        if v.get("error").is_some() {
            continue;
        }
        assert!(pipeline.is_none());
        let resp = if name.starts_with("sidecar_msearch") {
            let ndjson: String = v.as_array().unwrap().iter().map(|l| format!("{l}\n")).collect();
            let r: Value = s
                .engine
                .send(EngineRequest::new(Method::POST, "/_msearch").ndjson(ndjson))
                .await
                .unwrap()
                .json()
                .unwrap();
            for item in r["responses"].as_array().unwrap() {
                assert_eq!(item["status"], 200, "{name}: {item}");
                assert!(!item["hits"]["hits"].as_array().unwrap().is_empty(), "{name}");
            }
            continue;
        } else if name.starts_with("nested") {
            json!({"query": v})
        } else {
            v["body"].clone()
        };
        let r: Value = s
            .engine
            .send(EngineRequest::new(Method::POST, format!("/{}/_search", s.index)).json(&resp))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .json()
            .unwrap();
        let hits = r["hits"]["hits"].as_array().unwrap();
        assert!(!hits.is_empty(), "{name}: no hits");
        assert!(hits.iter().all(|h| h["_id"].is_string()), "{name}");
        ran += 1;
    }
    assert!(ran >= 6, "ran {ran} {:?} shapes", info.dialect);
    let test = "golden_request_json (engine-fused shapes)";
    match info.dialect {
        Dialect::Elasticsearch => common::not_on_this_engine(
            test,
            "retriever.rrf: the test node has no rank-rrf module and a basic licence; golden-tested only",
        ),
        Dialect::Opensearch => common::not_on_this_engine(
            test,
            "hybrid query + search pipelines: the test node has no neural-search plugin; golden-tested only",
        ),
    }
}

#[tokio::test]
async fn every_stage_of_a_search_is_timed_in_explain_server_timing_and_metrics() {
    let s = fixture().await;
    let body = json!({"index": s.index, "query": "stem cell differentiation", "explain": true, "size": 5});
    let r = s.http.post(format!("{}/search", s.url)).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let header = r.headers().get("server-timing").expect("Server-Timing").to_str().unwrap().to_string();
    let v: Value = r.json().await.unwrap();
    let t = &v["timings_ms"];
    for stage in ["parse", "tokenize", "queue_wait", "ort_run", "encode", "engine", "fusion"] {
        assert!(t[stage].as_f64().is_some_and(|ms| ms >= 0.0), "timings_ms.{stage} in {t}");
        assert!(header.contains(&format!("{stage};dur=")), "{stage} in Server-Timing: {header}");
    }
    assert!(t["ort_run"].as_f64().unwrap() > 0.0 && t["engine"].as_f64().unwrap() > 0.0, "{t}");
    assert!(t["encode"].as_f64().unwrap() >= t["ort_run"].as_f64().unwrap(), "the encode holds the run: {t}");
    let total: f64 = header
        .split(", ")
        .find_map(|p| p.strip_prefix("total;dur="))
        .and_then(|d| d.parse().ok())
        .expect("total in Server-Timing");
    assert!(total >= t["engine"].as_f64().unwrap() + t["encode"].as_f64().unwrap() * 0.99, "{header}");
    let metrics = s.http.get(format!("{}/metrics", s.url)).send().await.unwrap().text().await.unwrap();
    for stage in ["parse", "encode", "engine", "fusion", "serialize", "total"] {
        let line = format!("sidecar_search_stage_seconds_count{{stage=\"{stage}\"}}");
        let n = metrics.lines().find_map(|l| l.strip_prefix(&line)).map(|c| c.trim().parse::<f64>().unwrap());
        assert!(n.is_some_and(|n| n >= 1.0), "{line} in /metrics");
    }
    // asked again: the vector comes from the query cache, so no encoder stage ran for it
    let r = s.http.post(format!("{}/search", s.url)).json(&body).send().await.unwrap();
    let again: Value = r.json().await.unwrap();
    assert!(again["timings_ms"].get("ort_run").is_none(), "{}", again["timings_ms"]);
    assert_eq!(ids(&again), ids(&v), "the cached vector finds the same hits");
    let metrics = s.http.get(format!("{}/metrics", s.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("sidecar_encoder_cache_lookups_total{model=\"all-MiniLM-L6-v2\",outcome=\"hit\"}"));
}
