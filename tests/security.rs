//! The sidecar stands in front of a cluster with its own engine credentials. Two suites, against
//! the real engine under test:
//! - the scope matrix: every API class (read, write, admin) with every kind of key (read, write,
//!   admin, and a read key for another index), allowed exactly when the key's scope and index
//!   patterns cover it, 403 with a JSON reason otherwise, denials counted in `/metrics`;
//! - the same matrix over non-canonical spellings of every path (trailing slash, `//`, `%5F`,
//!   upper case), every place a body names an index (NDJSON `index`/`indices`, terms lookups,
//!   `more_like_this`, `percolate`, `_mtermvectors`, `_validate` rewrites, bulk items), remote
//!   names, and cluster-wide scroll and PIT clearing: allowed exactly when the key covers all of
//!   it, checked against the engine (another index's document neither read nor changed);
//! - the pipeline API: admin on every index only, under every spelling, whatever index its body
//!   names;
//! - scroll and PIT ids tied to the key they were handed to; the official clients' `ApiKey` and
//!   `Basic` credentials; exempt paths served read-only;
//! - hostile requests (traversal in index, id and job id, deep bodies, scripts in every filter
//!   position, a gzip bomb, huge counts) through a sidecar without keys (as admin) and again with
//!   a scoped admin key: each a 4xx JSON error, the engine untouched (cluster settings, index
//!   list, documents) and the sidecar healthy.

mod common;

use std::io::Write;

use common::{encoder_settings, engine_url, unique_index};
use reqwest::Method;
use semantic_sidecar::encoder::EncoderSet;
use semantic_sidecar::engine::{EngineClient, EngineRequest};
use semantic_sidecar::http::{self, AppState};
use semantic_sidecar::ingest::mapping::{index_body, ModelShape};
use semantic_sidecar::settings::{ApiKeySetting, Scope, Secret, Settings};
use semantic_sidecar::telemetry::Metrics;
use semantic_sidecar::types::pipeline::Pipeline;
use serde_json::{json, Value};

struct Sidecar {
    url: String,
    index: String,
    engine: EngineClient,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A sidecar with one pipeline index (created, with one document `d1`), and `keys`.
async fn sidecar(prefix: &str, keys: Vec<ApiKeySetting>) -> Sidecar {
    sidecar_with(prefix, keys, false).await
}

/// [`sidecar`], serving the cluster's pipelines (its own written there) when `cluster`, else a
/// fixed set.
async fn sidecar_with(prefix: &str, keys: Vec<ApiKeySetting>, cluster: bool) -> Sidecar {
    let mut settings: Settings = encoder_settings(&[("SIDECAR__ENGINE__URLS", &engine_url())]);
    settings.server.api_keys = keys;
    let engine = EngineClient::new(&settings.engine).unwrap();
    let index = unique_index(prefix);
    let p: Pipeline = toml::from_str(&format!(
        "name = '{index}'\nindex = '{index}'\nmodel = 'all-MiniLM-L6-v2'\n\
         [[fields]]\nsource = ['title', 'text']\nvector = 'text_vector'\n"
    ))
    .unwrap();
    let info = engine.info().await.unwrap();
    let body = index_body(&info, &p, ModelShape { dims: 384, normalized: true, language: None }).unwrap();
    engine.send(EngineRequest::new(Method::PUT, format!("/{index}")).json(&body)).await.unwrap();
    let metrics = Metrics::new();
    let (es, em) = (settings.encoder.clone(), metrics.encoder.clone());
    let encoders = tokio::task::spawn_blocking(move || EncoderSet::load(&es, &em)).await.unwrap().unwrap();
    let state = AppState::with_encoders(settings, engine.clone(), metrics, encoders);
    let state = match cluster {
        true => state.with_cluster_pipelines(vec![p]).await,
        false => state.with_pipelines(vec![p]).unwrap(),
    };
    let (url, tx) = http::serve_local(state).await.unwrap();
    let s = Sidecar { url, index, engine, _stop: tx };
    let r = s.call(Some("admin-key"), Method::PUT, &format!("/{}/_doc/d1?refresh=true", s.index), doc("first")).await;
    assert!(r.0 < 300, "{r:?}");
    s
}

fn doc(text: &str) -> Body {
    Body::Json(json!({"title": "t", "text": text}))
}

#[derive(Clone, Debug)]
enum Body {
    None,
    Json(Value),
    Ndjson(String),
    Raw(&'static str, Vec<u8>),
}

impl Sidecar {
    async fn call(&self, key: Option<&str>, method: Method, path: &str, body: Body) -> (u16, Value) {
        let auth = key.map(|k| ("x-api-key", k.to_string()));
        self.call_as(auth, method, path, body).await
    }

    /// A call with one credential header (`(name, value)`), or none.
    async fn call_as(&self, auth: Option<(&str, String)>, method: Method, path: &str, body: Body) -> (u16, Value) {
        let mut r = reqwest::Client::new().request(method, format!("{}{path}", self.url));
        if let Some((name, value)) = auth {
            r = r.header(name, value);
        }
        r = match body {
            Body::None => r,
            Body::Json(v) => r.json(&v),
            Body::Ndjson(s) => r.header("content-type", "application/x-ndjson").body(s),
            Body::Raw(encoding, bytes) => {
                r.header("content-type", "application/json").header("content-encoding", encoding).body(bytes)
            }
        };
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The indices a hostile request of this suite could create or delete: this sidecar's own
    /// (and names it prefixes) and the names its requests use; other suites run beside it on the
    /// same engine.
    async fn index_list(&self) -> Vec<String> {
        let v: Value = self.engine.get_json("/_cat/indices?format=json&h=index").await.unwrap();
        let ours = |n: &str| n.starts_with(&self.index) || n == "x" || n.starts_with("_cluster");
        let mut names: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["index"].as_str().map(String::from))
            .filter(|n| ours(n))
            .collect();
        names.sort();
        names
    }
}

fn scoped(name: &str, key: &str, scope: Scope, indices: &[&str]) -> ApiKeySetting {
    ApiKeySetting::scoped(name, key, scope, indices)
}

#[tokio::test]
async fn every_scope_reaches_exactly_its_api_classes_and_indices() {
    let keys = vec![
        scoped("reader", "read-key", Scope::Read, &["sec-*"]),
        scoped("stranger", "other-key", Scope::Read, &["other"]),
        scoped("writer", "write-key", Scope::Write, &["sec-*"]),
        ApiKeySetting::Plain(Secret::new("admin-key")),
    ];
    let s = sidecar("sec", keys).await;
    let i = s.index.clone();
    // (what, method, path, body, scope it needs, names only `i`: false = needs every index)
    let calls: Vec<(&str, Method, String, Body, Scope, bool)> = vec![
        ("get", Method::GET, format!("/{i}/_doc/d1"), Body::None, Scope::Read, true),
        ("exists", Method::HEAD, format!("/{i}"), Body::None, Scope::Read, true),
        ("search", Method::POST, format!("/{i}/_search"), Body::Json(json!({"size": 1})), Scope::Read, true),
        ("count", Method::POST, format!("/{i}/_count"), Body::None, Scope::Read, true),
        ("mapping", Method::GET, format!("/{i}/_mapping"), Body::None, Scope::Read, true),
        ("cat", Method::GET, format!("/_cat/indices/{i}?format=json"), Body::None, Scope::Read, true),
        (
            "mget",
            Method::POST,
            "/_mget".into(),
            Body::Json(json!({"docs": [{"_index": i, "_id": "d1"}]})),
            Scope::Read,
            true,
        ),
        (
            "msearch",
            Method::POST,
            "/_msearch".into(),
            Body::Ndjson(format!("{{\"index\":\"{i}\"}}\n{{}}\n")),
            Scope::Read,
            true,
        ),
        (
            "hybrid",
            Method::POST,
            "/search".into(),
            Body::Json(json!({"index": i, "query": "first"})),
            Scope::Read,
            true,
        ),
        ("search all", Method::POST, "/_search".into(), Body::Json(json!({"size": 0})), Scope::Read, false),
        ("count all", Method::GET, "/_count".into(), Body::None, Scope::Read, false),
        ("index doc", Method::PUT, format!("/{i}/_doc/d2"), doc("second"), Scope::Write, true),
        (
            "update",
            Method::POST,
            format!("/{i}/_update/d2"),
            Body::Json(json!({"doc": {"title": "u"}})),
            Scope::Write,
            true,
        ),
        (
            "bulk",
            Method::POST,
            "/_bulk".into(),
            Body::Ndjson(format!(
                "{{\"index\":{{\"_index\":\"{i}\",\"_id\":\"d3\"}}}}\n{{\"title\":\"b\",\"text\":\"c\"}}\n"
            )),
            Scope::Write,
            true,
        ),
        ("delete doc", Method::DELETE, format!("/{i}/_doc/d3"), Body::None, Scope::Write, true),
        ("refresh", Method::POST, format!("/{i}/_refresh"), Body::None, Scope::Write, true),
        ("create index", Method::PUT, format!("/{i}-extra"), Body::None, Scope::Admin, true),
        ("delete index", Method::DELETE, format!("/{i}-extra"), Body::None, Scope::Admin, true),
        ("cluster settings", Method::GET, "/_cluster/settings".into(), Body::None, Scope::Admin, false),
        (
            "aliases",
            Method::POST,
            "/_aliases".into(),
            Body::Json(json!({"actions": [{"add": {"index": i, "alias": format!("{i}-a")}}]})),
            Scope::Admin,
            false,
        ),
        ("reindex job", Method::GET, "/_jobs/rx-1-0000".into(), Body::None, Scope::Admin, false),
    ];
    let who: [(&str, &str, Scope, bool, bool); 4] = [
        // name, key, scope, covers `i`, covers every index
        ("reader", "read-key", Scope::Read, true, false),
        ("stranger", "other-key", Scope::Read, false, false),
        ("writer", "write-key", Scope::Write, true, false),
        ("key-3", "admin-key", Scope::Admin, true, true),
    ];
    let mut denied = 0;
    // every call again under each spelling the engines read as the same request; upper case
    // names no API of theirs and is refused to every key
    for how in ["as is", "trailing slash", "double slash", "encoded underscore", "upper case"] {
        for (what, method, path, body, needs, only_i) in &calls {
            let spelt = respell(path, how);
            for (name, key, scope, covers_i, covers_all) in who {
                let no_api = how == "upper case" && spelt != *path;
                let allowed = !no_api && scope >= *needs && if *only_i { covers_i } else { covers_all };
                let (status, v) = s.call(Some(key), method.clone(), &spelt, body.clone()).await;
                if allowed {
                    assert!(status != 401 && status != 403, "{name} {what} {method} {spelt}: {status} {v}");
                    // 404: what an earlier key of the loop deleted, or the job that does not exist
                    assert!(status < 300 || status == 404, "{name} {what} {spelt}: {status} {v}");
                } else {
                    denied += 1;
                    assert_eq!(status, 403, "{name} {what} {method} {spelt} must be denied: {v}");
                    if *method == Method::HEAD {
                        continue; // no body to read the reason from
                    }
                    assert_eq!(v["error"]["type"], "forbidden", "{v}");
                    assert!(v["error"]["reason"].as_str().unwrap().contains(name), "the reason names the key: {v}");
                }
            }
        }
    }
    for (key, want) in [(None, "missing API key"), (Some("nope"), "invalid API key")] {
        let (status, v) = s.call(key, Method::GET, &format!("/{i}/_doc/d1"), Body::None).await;
        assert_eq!(status, 401, "{v}");
        assert!(v["error"]["reason"].as_str().unwrap().contains(want), "{v}");
    }
    // a bulk whose items name an index the key does not cover is refused whole
    let body = format!(
        "{{\"index\":{{\"_index\":\"{i}\",\"_id\":\"d4\"}}}}\n{{\"text\":\"a\"}}\n{{\"delete\":{{\"_index\":\"other\",\"_id\":\"x\"}}}}\n"
    );
    let (status, _) = s.call(Some("write-key"), Method::POST, "/_bulk", Body::Ndjson(body)).await;
    assert_eq!(status, 403);
    let r = reqwest::Client::new().get(format!("{}/metrics", s.url)).header("x-api-key", "read-key").send().await;
    let metrics = r.unwrap().text().await.unwrap();
    let counted: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("sidecar_auth_denials_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted, (denied + 3) as f64, "every denial is counted:\n{metrics}");
    assert!(metrics.contains("key=\"stranger\"") && !metrics.contains("other-key"), "names, never keys");
    s.engine.send(EngineRequest::new(Method::DELETE, format!("/{i}"))).await.unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn hostile_requests_get_a_4xx_and_leave_the_engine_as_it_was() {
    hostile_requests(Vec::new(), None).await;
}

#[tokio::test]
async fn hostile_requests_with_a_scoped_key_get_a_4xx_and_leave_the_engine_as_it_was() {
    let keys = vec![
        scoped("ops", "scoped-admin", Scope::Admin, &["hostile-*", "x"]),
        ApiKeySetting::Plain(Secret::new("admin-key")),
    ];
    hostile_requests(keys, Some("scoped-admin")).await;
}

async fn hostile_requests(keys: Vec<ApiKeySetting>, key: Option<&str>) {
    let s = sidecar("hostile", keys).await;
    let i = s.index.clone();
    let alias = json!({"actions": [{"add": {"index": i, "alias": format!("{i}-alias")}}]});
    s.engine.send(EngineRequest::new(Method::POST, "/_aliases").json(&alias)).await.unwrap();
    let settings_before: Value = s.engine.get_json("/_cluster/settings?flat_settings=true").await.unwrap();
    let indices_before = s.index_list().await;
    let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let deep_query = json!({"query": {"bool": {"filter": serde_json::from_str::<Value>(&deep(60)).unwrap()}}});
    let bomb = gzip(&vec![b' '; 64 << 20]);
    let mut msearch_many = String::new();
    for _ in 0..1001 {
        msearch_many.push_str(&format!("{{\"index\":\"{i}\"}}\n{{}}\n"));
    }
    let many_hybrid = json!({"query": {"bool": {"should": vec![json!({"hybrid": {"query": "a"}}); 17]}}});
    let cases: Vec<(&str, Method, String, Body)> = vec![
        (
            "index decodes to another API",
            Method::POST,
            format!("/{i}%2F_delete_by_query%3Frefresh%3Dtrue%23/_search"),
            Body::None,
        ),
        ("index decodes to cluster settings", Method::PUT, "/_cluster%2Fsettings%23/_doc/x".into(), doc("x")),
        ("id climbs out of _doc", Method::PUT, format!("/{i}/_doc/..%2F..%2F_cluster%2Fsettings"), Body::None),
        ("job id climbs out", Method::GET, "/_jobs/..%2F..%2F_cluster%2Fsettings".into(), Body::None),
        (
            "job id to resume climbs out",
            Method::POST,
            "/_jobs/reindex".into(),
            Body::Json(json!({"resume": "../../_cluster/settings"})),
        ),
        (
            "deep search body",
            Method::POST,
            format!("/{i}/_search"),
            Body::Raw("identity", format!("{{\"query\":{}}}", deep(5000)).into_bytes()),
        ),
        (
            "deep bulk line",
            Method::POST,
            "/_bulk".into(),
            Body::Ndjson(format!("{{\"index\":{{\"_index\":\"{i}\"}}}}\n{{\"t\":{}}}\n", deep(5000))),
        ),
        (
            "deep document",
            Method::PUT,
            format!("/{i}/_doc/deep"),
            Body::Raw("identity", format!("{{\"t\":{}}}", deep(100)).into_bytes()),
        ),
        (
            "deep msearch",
            Method::POST,
            "/_msearch".into(),
            Body::Ndjson(format!("{{}}\n{{\"query\":{}}}\n", deep(5000))),
        ),
        (
            "deep under the limit still refused by the engine, not a crash",
            Method::POST,
            format!("/{i}/_search"),
            Body::Json(deep_query),
        ),
        (
            "script filter",
            Method::POST,
            "/search".into(),
            Body::Json(json!({"index": i, "query": "x", "filter": {"script": {"script": {"source": "1"}}}})),
        ),
        (
            "script in bool",
            Method::POST,
            "/search".into(),
            Body::Json(
                json!({"index": i, "query": "x", "filter": {"bool": {"must": [{"script_score": {"query": {"match_all": {}}, "script": {"source": "1"}}}]}}}),
            ),
        ),
        (
            "script in nested",
            Method::POST,
            "/search".into(),
            Body::Json(
                json!({"index": i, "query": "x", "filter": {"nested": {"path": "p", "query": {"function_score": {"script_score": {"script": "1"}}}}}}),
            ),
        ),
        (
            "terms_set script",
            Method::POST,
            "/search".into(),
            Body::Json(
                json!({"index": i, "query": "x", "filter": {"terms_set": {"tags": {"terms": ["a"], "minimum_should_match_script": {"source": "1"}}}}}),
            ),
        ),
        (
            "query string parser",
            Method::POST,
            "/search".into(),
            Body::Json(
                json!({"index": i, "query": "x", "filter": {"constant_score": {"filter": {"query_string": {"query": "*"}}}}}),
            ),
        ),
        (
            "highlight query script",
            Method::POST,
            "/search".into(),
            Body::Json(
                json!({"index": i, "query": "x", "highlight": {"fields": {"text": {"highlight_query": {"script": {"script": "1"}}}}}}),
            ),
        ),
        (
            "scripted update of a pipeline index",
            Method::POST,
            format!("/{i}/_update/d1"),
            Body::Json(json!({"script": {"source": "ctx._source.text = 'x'"}})),
        ),
        (
            "update_by_query of a pipeline index",
            Method::POST,
            format!("/{i}/_update_by_query"),
            Body::Json(json!({"script": {"source": "ctx._source.text = 'x'"}})),
        ),
        (
            "update_by_query through an alias of a pipeline index",
            Method::POST,
            format!("/{i}-alias/_update_by_query"),
            Body::Json(json!({"script": {"source": "ctx._source.text = 'x'"}})),
        ),
        (
            "update_by_query through a pattern covering a pipeline index",
            Method::POST,
            format!("/{i}*/_update_by_query"),
            Body::Json(json!({"script": {"source": "ctx._source.text = 'x'"}})),
        ),
        (
            "_reindex into an alias of a pipeline index",
            Method::POST,
            "/_reindex".into(),
            Body::Json(json!({"source": {"index": "x"}, "dest": {"index": format!("{i}-alias")}})),
        ),
        (
            "_reindex into a pipeline index",
            Method::POST,
            "/_reindex".into(),
            Body::Json(json!({"source": {"index": "x"}, "dest": {"index": i}})),
        ),
        ("gzip bomb", Method::POST, "/_bulk".into(), Body::Raw("gzip", bomb)),
        ("unknown encoding", Method::POST, "/_bulk".into(), Body::Raw("br", b"xx".to_vec())),
        (
            "huge size",
            Method::POST,
            "/search".into(),
            Body::Json(json!({"index": i, "query": "x", "size": 1_000_000_000u64})),
        ),
        (
            "huge k",
            Method::POST,
            "/search".into(),
            Body::Json(json!({"index": i, "query": "x", "k": 1_000_000_000u64})),
        ),
        ("too many searches", Method::POST, "/_msearch".into(), Body::Ndjson(msearch_many)),
        ("too many nested hybrid clauses", Method::POST, format!("/{i}/_search"), Body::Json(many_hybrid)),
        (
            "too many parameters",
            Method::GET,
            format!("/{i}/_count?{}", (0..65).map(|n| format!("p{n}=1")).collect::<Vec<_>>().join("&")),
            Body::None,
        ),
        ("a body that is not an object", Method::PUT, format!("/{i}-new"), Body::Raw("identity", b"[1,2]".to_vec())),
        ("a method that is not forwarded", Method::PATCH, format!("/{i}"), Body::None),
        (
            "a JSON array as a request object",
            Method::POST,
            "/search".into(),
            Body::Raw("identity", format!("[\"{i}\", \"x\"]").into_bytes()),
        ),
        ("a method no route has", Method::PUT, "/_jobs/rx-1-0000".into(), Body::None),
        (
            "a bulk body without its last newline",
            Method::POST,
            "/_bulk".into(),
            Body::Ndjson(format!("{{\"delete\":{{\"_index\":\"{i}\",\"_id\":\"d1\"}}}}")),
        ),
        (
            "a conditional update with half its condition",
            Method::POST,
            format!("/{i}/_update/d1?if_seq_no=0"),
            Body::Json(json!({"doc": {"title": "changed"}})),
        ),
    ];
    for (what, method, path, body) in cases {
        let (status, v) = s.call(key, method.clone(), &path, body).await;
        assert!((400..500).contains(&status), "{what}: {method} {}: {status} {v}", &path[..path.len().min(120)]);
        assert!(
            v["error"]["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{what}: a JSON error with a reason: {v}"
        );
        let (h, _) = s.call(key, Method::GET, "/healthz", Body::None).await;
        assert_eq!(h, 200, "{what}: the sidecar is healthy after it");
    }
    let settings_after: Value = s.engine.get_json("/_cluster/settings?flat_settings=true").await.unwrap();
    assert_eq!(settings_before, settings_after, "cluster settings unchanged");
    assert_eq!(indices_before, s.index_list().await, "no index created or deleted");
    assert!(indices_before.contains(&i), "{indices_before:?}");
    s.engine.send(EngineRequest::new(Method::POST, format!("/{i}/_refresh"))).await.unwrap();
    let n: Value = s.engine.get_json(&format!("/{i}/_count")).await.unwrap();
    assert_eq!(n["count"], 1, "the one document, and only it: {n}");
    let d: Value = s.engine.get_json(&format!("/{i}/_doc/d1")).await.unwrap();
    assert_eq!(d["_source"]["text"], "first", "unchanged: {d}");
    s.engine.send(EngineRequest::new(Method::DELETE, format!("/{i}"))).await.unwrap();
}

/// The pipeline API (`/_sidecar/pipeline[/{name}]`) changes what every replica embeds and creates
/// indices: only an admin key on every index reaches it, under every spelling, also when the body
/// names an index the key covers; a read, write or admin key on `sec-*` gets 403 naming the key.
#[tokio::test]
async fn the_pipeline_api_needs_admin_on_every_index_under_every_spelling() {
    let keys = vec![
        scoped("reader", "read-key", Scope::Read, &["sec-*"]),
        scoped("writer", "write-key", Scope::Write, &["sec-*"]),
        scoped("sec-admin", "sec-admin-key", Scope::Admin, &["sec-*"]),
        ApiKeySetting::Plain(Secret::new("admin-key")),
    ];
    let s = sidecar_with("sec", keys, true).await;
    let i = s.index.clone();
    let (new, new_index) = (format!("{i}-p"), format!("{i}-p"));
    let def = json!({"index": new_index, "model": "all-MiniLM-L6-v2", "fields": [{"source": ["text"], "vector": "v"}]});
    let calls: Vec<(&str, Method, String, Body)> = vec![
        ("list", Method::GET, "/_sidecar/pipeline".into(), Body::None),
        ("get", Method::GET, format!("/_sidecar/pipeline/{i}"), Body::None),
        ("put naming a covered index", Method::PUT, format!("/_sidecar/pipeline/{new}"), Body::Json(def)),
        ("delete", Method::DELETE, format!("/_sidecar/pipeline/{new}"), Body::None),
    ];
    let who = [("reader", "read-key"), ("writer", "write-key"), ("sec-admin", "sec-admin-key"), ("key-3", "admin-key")];
    for how in ["as is", "trailing slash", "double slash", "encoded underscore", "upper case"] {
        for (what, method, path, body) in &calls {
            let spelt = respell(path, how);
            for (name, key) in who {
                let allowed = key == "admin-key" && how != "upper case";
                let (status, v) = s.call(Some(key), method.clone(), &spelt, body.clone()).await;
                if allowed {
                    assert!(status < 300, "{name} {what} {method} {spelt}: {status} {v}");
                } else {
                    assert_eq!(status, 403, "{name} {what} {method} {spelt} must be denied: {v}");
                    assert!(v["error"]["reason"].as_str().unwrap().contains(name), "the reason names the key: {v}");
                }
            }
        }
    }
    // the denied PUTs changed nothing: the last DELETE left no pipeline, and the index the
    // allowed PUT created is the only trace
    let (status, _) = s.call(Some("admin-key"), Method::GET, &format!("/_sidecar/pipeline/{new}"), Body::None).await;
    assert_eq!(status, 404);
    for index in [i, new_index] {
        s.engine.send(EngineRequest::new(Method::DELETE, format!("/{index}"))).await.unwrap();
    }
}

/// The inference API under every spelling: reading and embedding need a read key; creating and
/// deleting an endpoint (cluster state) admin on every index; a denied PUT creates nothing.
#[tokio::test]
async fn the_inference_api_needs_read_to_embed_and_admin_on_every_index_to_change() {
    let keys = vec![
        scoped("reader", "read-key", Scope::Read, &["sec-*"]),
        scoped("sec-admin", "sec-admin-key", Scope::Admin, &["sec-*"]),
        ApiKeySetting::Plain(Secret::new("admin-key")),
    ];
    let s = sidecar_with("sec", keys, true).await;
    let id = format!("{}-endpoint", s.index);
    let def = json!({"service": "elasticsearch", "service_settings": {"model_id": "all-MiniLM-L6-v2"}});
    let calls: Vec<(&str, Method, String, Body, bool)> = vec![
        ("put", Method::PUT, format!("/_inference/text_embedding/{id}"), Body::Json(def), true),
        ("get", Method::GET, format!("/_inference/text_embedding/{id}"), Body::None, false),
        ("list", Method::GET, "/_inference/_all".into(), Body::None, false),
        ("embed", Method::POST, format!("/_inference/{id}"), Body::Json(json!({"input": "x"})), false),
        ("delete", Method::DELETE, format!("/_inference/{id}"), Body::None, true),
    ];
    let who = [("reader", "read-key"), ("sec-admin", "sec-admin-key"), ("key-2", "admin-key")];
    for how in ["as is", "trailing slash", "double slash", "encoded underscore", "upper case"] {
        for (what, method, path, body, admin) in &calls {
            let spelt = respell(path, how);
            for (name, key) in who {
                let allowed = (key == "admin-key" || !admin) && how != "upper case";
                let (status, v) = s.call(Some(key), method.clone(), &spelt, body.clone()).await;
                if allowed {
                    assert!(status < 300, "{name} {what} {method} {spelt}: {status} {v}");
                } else {
                    assert_eq!(status, 403, "{name} {what} {method} {spelt} must be denied: {v}");
                    assert!(v["error"]["reason"].as_str().unwrap().contains(name), "the reason names the key: {v}");
                }
            }
        }
    }
    let (status, _) = s.call(Some("admin-key"), Method::GET, &format!("/_inference/{id}"), Body::None).await;
    assert_eq!(status, 404, "the last DELETE left nothing; no denied PUT created it again");
}

/// The routes added for Elastic's semantic APIs under every spelling: trained-model inference
/// needs read (no index), a job's task and its cancel need admin on every index, `_reindex`
/// into a pipeline index (named only in the body) admin on every index; a `semantic_text`
/// index (which stores a pipeline) is created only by a key with admin on that index name.
#[tokio::test]
async fn the_semantic_api_routes_need_their_scope_under_every_spelling() {
    let keys = vec![
        scoped("reader", "read-key", Scope::Read, &["sec-*"]),
        scoped("sec-admin", "sec-admin-key", Scope::Admin, &["sec-*"]),
        ApiKeySetting::Plain(Secret::new("admin-key")),
    ];
    let s = sidecar_with("sec", keys, true).await;
    let docs = Body::Json(json!({"docs": [{"text_field": "stem cells"}]}));
    let reindex = Body::Json(json!({"source": {"index": "sec-no-such-source"}, "dest": {"index": s.index}}));
    // (what, method, path, body, needs admin on every index, the status an allowed key gets)
    let calls: Vec<(&str, Method, String, Body, bool, u16)> = vec![
        ("infer", Method::POST, "/_ml/trained_models/all-MiniLM-L6-v2/_infer".into(), docs.clone(), false, 200),
        (
            "deployment infer",
            Method::POST,
            "/_ml/trained_models/all-MiniLM-L6-v2/deployment/_infer".into(),
            docs,
            false,
            200,
        ),
        ("job task", Method::GET, "/_tasks/rx-1-abcd".into(), Body::None, true, 404),
        ("cancel job task", Method::POST, "/_tasks/rx-1-abcd/_cancel".into(), Body::None, true, 404),
        ("reindex into a pipeline index", Method::POST, "/_reindex".into(), reindex, true, 400),
    ];
    let who = [("reader", "read-key"), ("sec-admin", "sec-admin-key"), ("key-2", "admin-key")];
    for how in ["as is", "trailing slash", "double slash", "encoded underscore", "upper case"] {
        for (what, method, path, body, admin, ok) in &calls {
            let spelt = respell(path, how);
            for (name, key) in who {
                let (status, v) = s.call(Some(key), method.clone(), &spelt, body.clone()).await;
                if how == "upper case" || (*admin && key != "admin-key") {
                    assert_eq!(status, 403, "{name} {what} {method} {spelt} must be denied: {v}");
                    assert!(v["error"]["reason"].as_str().unwrap().contains(name), "the reason names the key: {v}");
                } else {
                    assert_eq!(status, *ok, "{name} {what} {method} {spelt}: {v}");
                }
            }
        }
    }
    if !common::on_elasticsearch() {
        common::not_on_this_engine("semantic_text index scopes", "semantic_text is Elasticsearch's field type");
        return;
    }
    let mapping = Body::Json(json!({"mappings": {"properties": {"body": {"type": "semantic_text"}}}}));
    for how in ["as is", "trailing slash", "double slash"] {
        let own = format!("{}-st", s.index);
        let other = unique_index("other-st");
        for (name, key, path) in [("reader", "read-key", &own), ("sec-admin", "sec-admin-key", &other)] {
            let (status, v) = s.call(Some(key), Method::PUT, &respell(&format!("/{path}"), how), mapping.clone()).await;
            assert_eq!(status, 403, "{name} {how} PUT /{path}: {v}");
            assert!(v["error"]["reason"].as_str().unwrap().contains(name), "the reason names the key: {v}");
        }
        for (i, p) in [(&own, "/_sidecar/pipeline/semantic-text-"), (&other, "/_sidecar/pipeline/semantic-text-")] {
            let (status, _) = s.call(Some("admin-key"), Method::GET, &format!("{p}{i}"), Body::None).await;
            assert_eq!(status, 404, "a denied PUT stored no pipeline for {i}");
        }
        let (status, v) =
            s.call(Some("sec-admin-key"), Method::PUT, &respell(&format!("/{own}"), how), mapping.clone()).await;
        assert_eq!(status, 200, "{how}: {v}");
        let (status, v) =
            s.call(Some("sec-admin-key"), Method::DELETE, &respell(&format!("/{own}"), how), Body::None).await;
        assert_eq!(status, 200, "{how}: {v}");
    }
    // a template reaches every index it may make: admin on every index, under every spelling
    let name = format!("{}-tpl", s.index);
    let template = Body::Json(json!({"index_patterns": [format!("{name}-*")],
        "template": {"mappings": {"properties": {"body": {"type": "semantic_text"}}}}}));
    let put = format!("/_index_template/{name}");
    let simulate = format!("/_index_template/_simulate_index/{name}-1");
    for how in ["as is", "trailing slash", "double slash", "encoded underscore"] {
        for (who, key) in [("reader", "read-key"), ("sec-admin", "sec-admin-key")] {
            for (method, path, body) in [(Method::PUT, &put, template.clone()), (Method::POST, &simulate, Body::None)] {
                let (status, v) = s.call(Some(key), method.clone(), &respell(path, how), body).await;
                assert_eq!(status, 403, "{who} {how} {method} {path}: {v}");
            }
        }
        let (status, _) = s.call(Some("admin-key"), Method::GET, &put, Body::None).await;
        assert_eq!(status, 404, "a denied PUT stored no template");
    }
    let (status, v) = s.call(Some("admin-key"), Method::PUT, &put, template).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = s.call(Some("admin-key"), Method::POST, &simulate, Body::None).await;
    assert_eq!(
        (status, &v["template"]["mappings"]["properties"]["body"]["type"]),
        (200, &json!("semantic_text")),
        "{v}"
    );
    let (status, v) = s.call(Some("admin-key"), Method::DELETE, &put, Body::None).await;
    assert_eq!(status, 200, "{v}");
}

/// OpenSearch's search and ingest pipeline APIs (kept by the sidecar where the cluster has no
/// neural-search) under every spelling: admin on every index for each call, a scoped admin and a
/// reader denied (naming the key), nothing stored by a denied PUT; and a `hybrid` query's
/// sub-queries are checked for the indices they name like any query.
#[tokio::test]
async fn the_search_and_ingest_pipeline_apis_need_admin_on_every_index_under_every_spelling() {
    let keys = vec![
        scoped("reader", "read-key", Scope::Read, &["sec-*"]),
        scoped("sec-admin", "sec-admin-key", Scope::Admin, &["sec-*"]),
        ApiKeySetting::Plain(Secret::new("admin-key")),
    ];
    let s = sidecar_with("sec", keys, true).await;
    let opensearch = !common::on_elasticsearch();
    let (sp, ip) = (format!("{}-sp", s.index), format!("{}-ip", s.index));
    let search_def =
        json!({"phase_results_processors": [{"score-ranker-processor": {"combination": {"technique": "rrf"}}}]});
    let ingest_def =
        json!({"processors": [{"text_embedding": {"model_id": "all-MiniLM-L6-v2", "field_map": {"t": "v"}}}]});
    let docs = json!({"docs": [{"_index": "sec-x", "_source": {"t": "hello"}}]});
    let mut inline = docs.clone();
    inline["pipeline"] = ingest_def.clone();
    let calls: Vec<(&str, Method, String, Body)> = vec![
        ("put search pipeline", Method::PUT, format!("/_search/pipeline/{sp}"), Body::Json(search_def)),
        ("get search pipeline", Method::GET, format!("/_search/pipeline/{sp}"), Body::None),
        ("list search pipelines", Method::GET, "/_search/pipeline".into(), Body::None),
        ("delete search pipeline", Method::DELETE, format!("/_search/pipeline/{sp}"), Body::None),
        ("put ingest pipeline", Method::PUT, format!("/_ingest/pipeline/{ip}"), Body::Json(ingest_def)),
        ("simulate by id", Method::POST, format!("/_ingest/pipeline/{ip}/_simulate"), Body::Json(docs)),
        ("simulate inline", Method::POST, "/_ingest/pipeline/_simulate".into(), Body::Json(inline)),
        ("delete ingest pipeline", Method::DELETE, format!("/_ingest/pipeline/{ip}"), Body::None),
    ];
    for how in ["as is", "trailing slash", "double slash", "encoded underscore", "upper case"] {
        for (what, method, path, body) in &calls {
            let spelt = respell(path, how);
            for (name, key) in [("reader", "read-key"), ("sec-admin", "sec-admin-key")] {
                let (status, v) = s.call(Some(key), method.clone(), &spelt, body.clone()).await;
                assert_eq!(status, 403, "{name} {what} {method} {spelt} must be denied: {v}");
                assert!(v["error"]["reason"].as_str().unwrap().contains(name), "the reason names the key: {v}");
            }
            let (status, v) = s.call(Some("admin-key"), method.clone(), &spelt, body.clone()).await;
            if how == "upper case" {
                assert_eq!(status, 403, "admin {what} {spelt}: {v}");
            } else if opensearch {
                // Elasticsearch has no search pipelines or text_embedding: its own answer, not a denial
                assert!(status < 300, "admin {what} {method} {spelt}: {status} {v}");
            } else {
                assert_ne!(status, 403, "admin {what} {method} {spelt}: {v}");
            }
        }
        if opensearch {
            let (status, _) =
                s.call(Some("admin-key"), Method::GET, &format!("/_search/pipeline/{sp}"), Body::None).await;
            assert_eq!(status, 404, "{how}: deleted, and no denied PUT stored it again");
        }
    }
    if !opensearch {
        common::not_on_this_engine("hybrid sub-query index checks", "the hybrid query is OpenSearch's");
        return;
    }
    let lookup = json!({"terms": {"t": {"index": "other-secret", "id": "1", "path": "t"}}});
    let body = json!({"query": {"hybrid": {"queries": [{"match_all": {}}, lookup]}}});
    for how in ["as is", "double slash", "encoded underscore"] {
        let path = respell(&format!("/{}/_search", s.index), how);
        let (status, v) = s.call(Some("read-key"), Method::POST, &path, Body::Json(body.clone())).await;
        assert_eq!(status, 403, "{how}: a sub-query's terms lookup names another index: {v}");
        assert!(v["error"]["reason"].as_str().unwrap().contains("other-secret"), "{v}");
    }
}

/// `path` spelt another way the engines read as the same request (`upper`: one they do not).
fn respell(path: &str, how: &str) -> String {
    let (p, q) = match path.split_once('?') {
        Some((p, q)) => (p.to_string(), format!("?{q}")),
        None => (path.to_string(), String::new()),
    };
    let p = match how {
        "trailing slash" => format!("{p}/"),
        "double slash" => p.replace('/', "//"),
        "encoded underscore" => p.replace("/_", "/%5F"),
        "upper case" => p
            .split('/')
            .map(|s| if s.starts_with('_') { s.to_uppercase() } else { s.to_string() })
            .collect::<Vec<_>>()
            .join("/"),
        _ => p,
    };
    format!("{p}{q}")
}

#[tokio::test]
async fn every_index_a_body_names_is_checked_and_nothing_else_is_read_or_changed() {
    let keys = vec![
        scoped("reader", "read-key", Scope::Read, &["sec-*"]),
        scoped("writer", "write-key", Scope::Write, &["sec-*"]),
        ApiKeySetting::Plain(Secret::new("admin-key")),
    ];
    let s = sidecar("sec", keys).await;
    let i = s.index.clone();
    let secret = unique_index("secret");
    let put = EngineRequest::new(Method::PUT, format!("/{secret}/_doc/s1?refresh=true"))
        .json(&json!({"title": "t", "text": "secret words", "tags": ["first"]}));
    assert!(s.engine.send(put).await.unwrap().status.as_u16() < 300);
    let lookup = |index: &str| json!({"terms": {"title": {"index": index, "id": "s1", "path": "tags"}}});
    let cases: Vec<(&str, &str, Method, String, Body, u16)> = vec![
        (
            "msearch indices header",
            "read-key",
            Method::POST,
            "/_msearch".into(),
            Body::Ndjson(format!("{{\"index\":\"{i}\",\"indices\":\"{secret}\"}}\n{{}}\n")),
            403,
        ),
        (
            "msearch body lookup",
            "read-key",
            Method::POST,
            "/_msearch".into(),
            Body::Ndjson(format!("{{\"index\":\"{i}\"}}\n{}\n", json!({"query": lookup(&secret)}))),
            403,
        ),
        (
            "terms lookup",
            "read-key",
            Method::POST,
            format!("/{i}/_search"),
            Body::Json(json!({"query": lookup(&secret)})),
            403,
        ),
        (
            "terms lookup in /search",
            "read-key",
            Method::POST,
            "/search".into(),
            Body::Json(json!({"index": i, "query": "x", "filter": lookup(&secret)})),
            403,
        ),
        (
            "validate rewrite with a lookup",
            "read-key",
            Method::POST,
            format!("/{i}/_validate/query?rewrite=true"),
            Body::Json(json!({"query": lookup(&secret)})),
            403,
        ),
        (
            "more_like_this",
            "read-key",
            Method::POST,
            format!("/{i}/_search"),
            Body::Json(
                json!({"query": {"more_like_this": {"fields": ["text"], "like": [{"_index": secret, "_id": "s1"}]}}}),
            ),
            403,
        ),
        (
            "percolate",
            "read-key",
            Method::POST,
            format!("/{i}/_search"),
            Body::Json(json!({"query": {"percolate": {"field": "q", "index": secret, "id": "s1"}}})),
            403,
        ),
        (
            "geo_shape indexed_shape",
            "read-key",
            Method::POST,
            format!("/{i}/_search"),
            Body::Json(
                json!({"query": {"geo_shape": {"loc": {"indexed_shape": {"index": secret, "id": "s1", "path": "p"}}}}}),
            ),
            403,
        ),
        (
            "mtermvectors",
            "read-key",
            Method::POST,
            format!("/{i}/_mtermvectors"),
            Body::Json(json!({"docs": [{"_index": secret, "_id": "s1", "fields": ["text"]}]})),
            403,
        ),
        (
            "mget non-string _index",
            "read-key",
            Method::POST,
            "/_mget".into(),
            Body::Json(json!({"docs": [{"_index": 123, "_id": "s1"}]})),
            400,
        ),
        (
            "bulk through /_bulk/",
            "write-key",
            Method::POST,
            "/_bulk/".into(),
            Body::Ndjson(format!("{{\"delete\":{{\"_index\":\"{secret}\",\"_id\":\"s1\"}}}}\n")),
            403,
        ),
        (
            "bulk through /%5Fbulk",
            "write-key",
            Method::POST,
            "/%5Fbulk".into(),
            Body::Ndjson(format!("{{\"delete\":{{\"_index\":\"{secret}\",\"_id\":\"s1\"}}}}\n")),
            403,
        ),
        (
            "bulk non-string _index",
            "write-key",
            Method::POST,
            "/_bulk".into(),
            Body::Ndjson("{\"delete\":{\"_index\":true,\"_id\":\"s1\"}}\n".into()),
            400,
        ),
        ("search all through /_search/", "read-key", Method::POST, "/_search/".into(), Body::Json(json!({})), 403),
        ("search all through /%5Fsearch", "read-key", Method::POST, "/%5Fsearch".into(), Body::Json(json!({})), 403),
        ("remote cluster name", "read-key", Method::POST, "/sec-x:secret/_search".into(), Body::Json(json!({})), 403),
        ("clear every scroll", "write-key", Method::DELETE, "/_search/scroll/_all".into(), Body::None, 403),
        (
            "clear every scroll by body",
            "read-key",
            Method::DELETE,
            "/_search/scroll".into(),
            Body::Json(json!({"scroll_id": "_all"})),
            403,
        ),
        ("list every PIT", "read-key", Method::GET, "/_search/point_in_time/_all".into(), Body::None, 403),
        ("delete every PIT", "read-key", Method::DELETE, "/_search/point_in_time/_all".into(), Body::None, 403),
        ("node APIs are off", "admin-key", Method::GET, "/_nodes".into(), Body::None, 403),
        (
            "security APIs are off",
            "admin-key",
            Method::POST,
            "/_security/api_key".into(),
            Body::Json(json!({"name": "x"})),
            403,
        ),
        ("snapshot APIs are off", "admin-key", Method::GET, "/_snapshot".into(), Body::None, 403),
        ("unlisted APIs need cluster_admin", "admin-key", Method::GET, "/_data_stream".into(), Body::None, 403),
        ("exempt paths are read-only", "", Method::PUT, "/healthz/".into(), Body::None, 403),
        (
            "search templates need *",
            "read-key",
            Method::POST,
            format!("/{i}/_search/template"),
            Body::Json(json!({"source": {"query": lookup(&secret)}})),
            403,
        ),
    ];
    for (what, key, method, path, body, want) in cases {
        let key = (!key.is_empty()).then_some(key);
        let (status, v) = s.call(key, method.clone(), &path, body).await;
        assert_eq!(status, want, "{what}: {method} {path}: {v}");
        assert!(v["error"]["reason"].as_str().is_some_and(|r| !r.is_empty()), "{what}: a reason: {v}");
    }
    // the same lookups into an index the key covers are served
    let (status, v) = s
        .call(
            Some("read-key"),
            Method::POST,
            &format!("/{i}/_search"),
            Body::Json(json!({"query": {"terms": {"title": {"index": i, "id": "d1", "path": "title"}}}})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = s.call(None, Method::GET, "/healthz/", Body::None).await;
    assert_eq!(status, 200, "an exempt probe, spelt another way: {v}");
    // nothing of the other index was changed, nothing named `healthz` was created
    let d: Value = s.engine.get_json(&format!("/{secret}/_doc/s1")).await.unwrap();
    assert_eq!(d["_source"]["text"], "secret words", "{d}");
    let r = s.engine.send(EngineRequest::new(Method::HEAD, "/healthz")).await;
    assert!(r.map(|r| r.status.as_u16() == 404).unwrap_or(true), "no index `healthz`");
    for index in [&i, &secret] {
        s.engine.send(EngineRequest::new(Method::DELETE, format!("/{index}"))).await.unwrap();
    }
}

#[tokio::test]
async fn the_official_clients_credentials_identify_a_key() {
    use base64::Engine as _;
    let keys =
        vec![scoped("reader", "read-key", Scope::Read, &["sec-*"]), ApiKeySetting::Plain(Secret::new("admin-key"))];
    let s = sidecar("sec", keys).await;
    let path = format!("/{}/_doc/d1", s.index);
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    for (header, value, want) in [
        ("authorization", "ApiKey read-key".to_string(), 200),
        ("authorization", format!("ApiKey {}", b64("reader:read-key")), 200),
        ("authorization", format!("Basic {}", b64("reader:read-key")), 200),
        ("authorization", "Bearer read-key".to_string(), 200),
        ("authorization", format!("Basic {}", b64("key-1:read-key")), 401),
        ("authorization", format!("ApiKey {}", b64("reader:wrong")), 401),
    ] {
        let (status, v) = s.call_as(Some((header, value.clone())), Method::GET, &path, Body::None).await;
        assert_eq!(status, want, "{value}: {v}");
    }
    // a bare key's name is key-N
    let (status, _) = s
        .call_as(Some(("authorization", format!("Basic {}", b64("key-1:admin-key")))), Method::GET, &path, Body::None)
        .await;
    assert_eq!(status, 200);
    s.engine.send(EngineRequest::new(Method::DELETE, format!("/{}", s.index))).await.unwrap();
}

#[tokio::test]
async fn scroll_and_pit_ids_belong_to_the_key_they_were_handed_to() {
    let keys = vec![
        scoped("reader", "read-key", Scope::Read, &["sec-*"]),
        scoped("other", "other-key", Scope::Read, &["sec-*"]),
        ApiKeySetting::Plain(Secret::new("admin-key")),
    ];
    let s = sidecar("sec", keys).await;
    let i = s.index.clone();
    let mine = |v: &Value, field: &str| {
        v[field]
            .as_str()
            .filter(|h| h.starts_with("ss1."))
            .unwrap_or_else(|| panic!("a handle in `{field}`: {v}"))
            .to_string()
    };
    // scroll: opened, continued and cleared by its key only
    let (status, v) = s
        .call(Some("read-key"), Method::POST, &format!("/{i}/_search?scroll=1m"), Body::Json(json!({"size": 1})))
        .await;
    assert_eq!(status, 200, "{v}");
    let h = mine(&v, "_scroll_id");
    let (status, v) = s
        .call(Some("other-key"), Method::POST, "/_search/scroll", Body::Json(json!({"scroll": "1m", "scroll_id": h})))
        .await;
    assert_eq!(status, 403, "another key's scroll: {v}");
    let (status, v) = s
        .call(Some("read-key"), Method::POST, "/_search/scroll", Body::Json(json!({"scroll": "1m", "scroll_id": h})))
        .await;
    assert_eq!(status, 200, "{v}");
    let h2 = mine(&v, "_scroll_id");
    let raw: Value = s
        .engine
        .send(EngineRequest::new(Method::POST, format!("/{i}/_search?scroll=1m")).json(&json!({"size": 1})))
        .await
        .unwrap()
        .json()
        .unwrap();
    let raw_id = raw["_scroll_id"].as_str().unwrap().to_string();
    let (status, v) = s
        .call(
            Some("read-key"),
            Method::POST,
            "/_search/scroll",
            Body::Json(json!({"scroll": "1m", "scroll_id": raw_id})),
        )
        .await;
    assert_eq!(status, 403, "an engine id the sidecar did not hand out: {v}");
    let (status, v) =
        s.call(Some("other-key"), Method::DELETE, "/_search/scroll", Body::Json(json!({"scroll_id": [h2]}))).await;
    assert_eq!(status, 403, "another key may not clear it: {v}");
    let (status, v) =
        s.call(Some("read-key"), Method::DELETE, "/_search/scroll", Body::Json(json!({"scroll_id": [h2]}))).await;
    assert_eq!(status, 200, "{v}");
    // point in time: the same, in each engine's own shape
    let es = common::on_elasticsearch();
    let (open, id_field) = if es {
        (format!("/{i}/_pit?keep_alive=1m"), "id")
    } else {
        (format!("/{i}/_search/point_in_time?keep_alive=1m"), "pit_id")
    };
    let (status, v) = s.call(Some("read-key"), Method::POST, &open, Body::None).await;
    assert_eq!(status, 200, "{v}");
    let pit = mine(&v, id_field);
    let search = |id: &str| Body::Json(json!({"pit": {"id": id, "keep_alive": "1m"}, "size": 5}));
    let (status, v) = s.call(Some("other-key"), Method::POST, "/_search", search(&pit)).await;
    assert_eq!(status, 403, "another key's PIT: {v}");
    let (status, v) = s.call(Some("read-key"), Method::POST, "/_search", search(&pit)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["hits"]["hits"][0]["_id"], "d1", "{v}");
    let next = mine(&v, "pit_id");
    let raw: Value = s.engine.send(EngineRequest::new(Method::POST, open.clone())).await.unwrap().json().unwrap();
    let raw_pit = raw[id_field].as_str().unwrap().to_string();
    let (status, v) = s.call(Some("read-key"), Method::POST, "/_search", search(&raw_pit)).await;
    assert_eq!(status, 403, "a PIT the sidecar did not hand out: {v}");
    let close =
        |id: &str| if es { ("/_pit", json!({"id": id})) } else { ("/_search/point_in_time", json!({"pit_id": [id]})) };
    let (path, body) = close(&next);
    let (status, v) = s.call(Some("other-key"), Method::DELETE, path, Body::Json(body.clone())).await;
    assert_eq!(status, 403, "{v}");
    let (status, v) = s.call(Some("read-key"), Method::DELETE, path, Body::Json(body)).await;
    assert_eq!(status, 200, "{v}");
    let (path, body) = close(&raw_pit);
    s.engine.send(EngineRequest::new(Method::DELETE, path).json(&body)).await.unwrap();
    s.engine.send(EngineRequest::new(Method::DELETE, format!("/{i}"))).await.unwrap();
}
