//! The official clients, unchanged, through the sidecar, against the engine under test:
//! elasticsearch-py 8.x against Elasticsearch 8, 9.x against Elasticsearch 9 (the client's major
//! must match the server's), opensearch-py against OpenSearch. Each runs a day of an app's calls
//! (tests/clients/*.py); then every document on the engine must carry its vector. Also: the
//! headers that must cross the sidecar both ways, and that client values cannot steer the engine
//! path into another API.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{encoder_settings, engine_url, on_elasticsearch, unique_index};
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
    body: Value,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A sidecar with a pipeline for a fresh index that does not exist yet (the client creates it).
async fn fixture() -> Fixture {
    fixture_with_keys(Vec::new()).await
}

async fn fixture_with_keys(keys: Vec<semantic_sidecar::settings::ApiKeySetting>) -> Fixture {
    let mut settings = encoder_settings(&[("SIDECAR__ENGINE__URLS", &engine_url())]);
    settings.server.api_keys = keys;
    let engine = EngineClient::new(&settings.engine).unwrap();
    let index = unique_index("clients");
    let p: Pipeline = toml::from_str(&format!(
        "name = 'clients'\nindex = '{index}'\nmodel = 'all-MiniLM-L6-v2'\n\
         [[fields]]\nsource = ['title', 'text']\nvector = 'text_vector'\n\
         [search]\nfields = ['title^2', 'text']\n"
    ))
    .unwrap();
    let info = engine.info().await.unwrap();
    let body = index_body(&info, &p, ModelShape { dims: 384, normalized: true, language: None }).unwrap();
    let metrics = Metrics::new();
    let (es, em) = (settings.encoder.clone(), metrics.encoder.clone());
    let encoders = tokio::task::spawn_blocking(move || EncoderSet::load(&es, &em)).await.unwrap().unwrap();
    let state = AppState::with_encoders(settings, engine.clone(), metrics, encoders).with_pipelines(vec![p]).unwrap();
    let (url, tx) = http::serve_local(state).await.unwrap();
    Fixture { url, index, engine, body, _stop: tx }
}

fn python() -> String {
    let python = std::env::var("SIDECAR_TEST_PYTHON").unwrap_or_else(|_| {
        format!("{}/.cache/semantic-sidecar/venv/bin/python", std::env::var("HOME").unwrap_or_default())
    });
    assert!(std::path::Path::new(&python).is_file(), "no python at {python}: run scripts/setup");
    python
}

fn cache() -> String {
    std::env::var("SIDECAR_CACHE")
        .unwrap_or_else(|_| format!("{}/.cache/semantic-sidecar", std::env::var("HOME").unwrap_or_default()))
}

/// Runs `script args` with the test venv's python (and `PYTHONPATH`), printing what it printed;
/// fails when it fails.
async fn run_python(script: PathBuf, args: Vec<String>, pythonpath: Option<String>) {
    let mut c = Command::new(python());
    c.arg(&script).args(&args);
    if let Some(p) = pythonpath {
        c.env("PYTHONPATH", p);
    }
    common::run_client(c).await;
}

#[tokio::test]
async fn the_official_client_works_unchanged_through_the_sidecar() {
    let f = fixture().await;
    let info = f.engine.info().await.unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let (script, pythonpath) = if on_elasticsearch() {
        let major = info.version.major;
        let lib = format!("{}/pyclients/es{major}", cache());
        assert!(
            std::path::Path::new(&lib).join("elasticsearch").is_dir(),
            "no elasticsearch-py {major}.x at {lib}: run scripts/setup"
        );
        (dir.join("elasticsearch_py.py"), Some(lib))
    } else {
        (dir.join("opensearch_py.py"), None)
    };
    let tmp = tempfile::tempdir().unwrap();
    let mapping = tmp.path().join("mapping.json");
    std::fs::write(&mapping, f.body.to_string()).unwrap();
    let args = vec![f.url.clone(), f.index.clone(), mapping.to_string_lossy().into_owned()];
    run_python(script, args, pythonpath).await;

    // on the engine: 50 documents, each with the vector the sidecar computed
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
    let hits = hits["hits"]["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 50);
    for h in hits {
        assert_eq!(h["_source"]["text_vector"].as_array().map(Vec::len), Some(384), "{}", h["_id"]);
    }
    f.engine.send(EngineRequest::new(Method::DELETE, format!("/{}", f.index))).await.unwrap();
}

/// Elastic's semantic_text tutorial with elasticsearch-py, through a sidecar whose pipelines
/// live in the cluster (the mapping creates one).
#[tokio::test]
async fn elasticsearch_py_runs_the_semantic_text_tutorial_unchanged() {
    if !on_elasticsearch() {
        common::not_on_this_engine("semantic_text client", "semantic_text is Elasticsearch's field type");
        return;
    }
    let engine = EngineClient::new(&encoder_settings(&[("SIDECAR__ENGINE__URLS", &engine_url())]).engine).unwrap();
    let major = engine.info().await.unwrap().version.major;
    let (url, _stop) = common::serve_with_cluster_pipelines().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/elasticsearch_py_semantic.py");
    let lib = format!("{}/pyclients/es{major}", cache());
    run_python(script, vec![url, unique_index("clients-semantic")], Some(lib)).await;
}

/// LangChain's ElasticsearchStore with `DenseVectorStrategy(hybrid=True)` (an `rrf` retriever)
/// and `DenseVectorStrategy(model_id=...)` (a `query_vector_builder`) on a pipeline index.
#[tokio::test]
async fn langchain_elasticsearch_store_searches_hybrid_and_by_model_id() {
    if !on_elasticsearch() {
        common::not_on_this_engine("LangChain ElasticsearchStore", "it is Elasticsearch's LangChain store");
        return;
    }
    let (url, _stop) = common::serve_with_cluster_pipelines().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/langchain_store.py");
    let lib = format!("{}/pyclients/langchain", cache());
    let args = vec![
        url,
        unique_index("clients-langchain"),
        unique_index("clients-langchain-piped"),
        "all-MiniLM-L6-v2".into(),
    ];
    run_python(script, args, Some(lib)).await;
}

/// Elastic's semantic APIs with the official JS client, through a sidecar whose pipelines live
/// in the cluster.
#[tokio::test]
async fn the_js_client_runs_elastics_semantic_apis_unchanged() {
    if !on_elasticsearch() {
        common::not_on_this_engine("JS client semantic APIs", "semantic_text and retrievers are Elasticsearch's API");
        return;
    }
    let modules = format!("{}/jsclients/node_modules", cache());
    assert!(
        std::path::Path::new(&modules).join("@elastic/elasticsearch").is_dir(),
        "no JS client at {modules}: run scripts/setup"
    );
    let (url, _stop) = common::serve_with_cluster_pipelines().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/js/elastic_semantic.js");
    let index = unique_index("clients-js");
    let mut node = Command::new("node");
    node.arg(script).args([url, index, "all-MiniLM-L6-v2".into()]).env("NODE_PATH", modules);
    common::run_client(node).await;
}

/// OpenSearch's neural search with the official JS client, on a cluster without neural-search
/// or ml-commons.
#[tokio::test]
async fn the_js_client_runs_opensearchs_neural_search_unchanged() {
    if on_elasticsearch() {
        common::not_on_this_engine("JS client neural search", "the neural query and ml-commons are OpenSearch's API");
        return;
    }
    let modules = format!("{}/jsclients/node_modules", cache());
    assert!(
        std::path::Path::new(&modules).join("@opensearch-project/opensearch").is_dir(),
        "no OpenSearch JS client at {modules}: run scripts/setup"
    );
    let (url, _stop) = common::serve_with_cluster_pipelines().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/js/opensearch_neural.js");
    let index = unique_index("clients-js-neural");
    let mut node = Command::new("node");
    node.arg(script).args([url, index, "all-MiniLM-L6-v2".into()]).env("NODE_PATH", modules);
    common::run_client(node).await;
}

/// Elastic's semantic APIs with the official Java client, which always asks for `typed_keys`.
#[tokio::test]
async fn the_java_client_reads_typed_aggregations_of_semantic_and_fused_searches() {
    if !on_elasticsearch() {
        common::not_on_this_engine("Java client semantic APIs", "semantic_text and retrievers are Elasticsearch's API");
        return;
    }
    let lib = format!("{}/javaclients/lib", cache());
    assert!(std::path::Path::new(&lib).is_dir(), "no Java client at {lib}: run scripts/setup");
    let (url, _stop) = common::serve_with_cluster_pipelines().await;
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/java/SemanticApis.java");
    let index = unique_index("clients-java");
    let mut java = Command::new("java");
    java.arg("-cp").arg(format!("{lib}/*")).arg(source).args([url, index, "all-MiniLM-L6-v2".into()]);
    common::run_client(java).await;
}

/// The client of the engine under test: its script's interpreter arguments and `PYTHONPATH`.
async fn client_lib(f: &Fixture) -> Option<String> {
    if !on_elasticsearch() {
        return None;
    }
    let major = f.engine.info().await.unwrap().version.major;
    Some(format!("{}/pyclients/es{major}", cache()))
}

#[tokio::test]
async fn the_official_clients_authenticate_with_a_scoped_key() {
    use semantic_sidecar::settings::{ApiKeySetting, Scope};
    let app = ApiKeySetting::scoped("app", "app-key", Scope::Read, &["clients-*"]);
    let f = fixture_with_keys(vec![app]).await;
    f.engine.send(EngineRequest::new(Method::PUT, format!("/{}", f.index)).json(&f.body)).await.unwrap();
    let ndjson: String = (0..30)
        .map(|n| {
            format!(
                "{}\n{}\n",
                json!({"index": {"_index": f.index, "_id": n.to_string()}}),
                json!({"title": "t", "text": format!("doc {n}")})
            )
        })
        .collect();
    common::engine_bulk(&f.engine, ndjson).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/scoped_keys.py");
    let flavor = if on_elasticsearch() { "elasticsearch" } else { "opensearch" };
    let lib = client_lib(&f).await;
    run_python(script, vec![f.url.clone(), f.index.clone(), flavor.into()], lib).await;
    f.engine.send(EngineRequest::new(Method::DELETE, format!("/{}", f.index))).await.unwrap();
}

#[tokio::test]
async fn engine_headers_cross_the_sidecar_both_ways() {
    let f = fixture().await;
    let http = reqwest::Client::new();
    let r = http.get(format!("{}/", f.url)).header("x-opaque-id", "trace-me-1").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("x-opaque-id").map(|v| v.to_str().unwrap()), Some("trace-me-1"));
    let product = r.headers().get("x-elastic-product").map(|v| v.to_str().unwrap().to_string());
    let root: Value = r.json().await.unwrap();
    assert!(root["version"]["number"].is_string(), "{root}");
    let head = http.head(format!("{}/", f.url)).send().await.unwrap();
    assert_eq!(head.status(), 200);
    if on_elasticsearch() {
        assert_eq!(product.as_deref(), Some("Elasticsearch"));
        // an answer the sidecar builds itself (a fused hybrid search) carries the header too
        f.engine.send(EngineRequest::new(Method::PUT, format!("/{}", f.index)).json(&f.body)).await.unwrap();
        let r = http
            .post(format!("{}/search", f.url))
            .json(&json!({"index": f.index, "query": "anything", "fusion": {"rrf": {}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers().get("x-elastic-product").unwrap(), "Elasticsearch");
        f.engine.send(EngineRequest::new(Method::DELETE, format!("/{}", f.index))).await.unwrap();
    } else {
        assert_eq!(product, None, "OpenSearch sends no product header and the sidecar invents none");
    }
}

#[tokio::test]
async fn client_values_cannot_steer_the_engine_path_into_another_api() {
    let f = fixture().await;
    let http = reqwest::Client::new();
    f.engine.send(EngineRequest::new(Method::PUT, format!("/{}", f.index)).json(&f.body)).await.unwrap();
    f.engine
        .send(
            EngineRequest::new(Method::PUT, format!("/{}/_doc/keep?refresh=true", f.index))
                .json(&json!({"title": "t", "text": "x"})),
        )
        .await
        .unwrap();
    // an index name that decodes to another API, an id that would climb out of _doc (an HTTP
    // client folds `..` and `%2E%2E` segments itself before sending, so those never arrive)
    for (method, path) in [
        (Method::DELETE, format!("/{}%2F_doc%2Fkeep%3Frefresh%3Dtrue%23", f.index)),
        (Method::GET, "/_cluster%2Fsettings%23".to_string()),
        (Method::DELETE, format!("/{}/_doc/..%2F..%2F_cluster%2Fsettings", f.index)),
        (Method::GET, format!("/{}/_count?a%2Fb=1", f.index)),
        (Method::PUT, "/UPPER".to_string()),
        // a job id that would climb out of the jobs index into the cluster settings
        (Method::GET, "/_jobs/..%2F..%2F_cluster%2Fsettings%23".to_string()),
        (Method::DELETE, "/_jobs/rx-1-0000%2F..%2F..%2F_cluster%2Fsettings".to_string()),
    ] {
        let r = http.request(method.clone(), format!("{}{path}", f.url)).send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!((400..500).contains(&status), "{method} {path}: {status} {body}");
        // refused by the sidecar with a reason, or (the id case) one id the engine did not find
        let one_id = body["_id"] == "../../_cluster/settings" && body["result"] == "not_found";
        assert!(body["error"]["reason"].is_string() || one_id, "{method} {path}: {body}");
    }
    let r =
        http.post(format!("{}/_jobs/reindex", f.url)).json(&json!({"resume": "../../_cluster/settings"})).send().await;
    let r = r.unwrap();
    assert_eq!(r.status(), 404, "resuming a job id that is a path");
    assert!(r.text().await.unwrap().contains("job ids look like"));
    // an id with every special character stays one id
    let odd = "a/b?c#d e%";
    let enc: String = odd.bytes().map(|b| format!("%{b:02X}")).collect();
    let r = http
        .put(format!("{}/{}/_doc/{enc}?refresh=true", f.url, f.index))
        .json(&json!({"title": "odd", "text": "id"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let got: Value = http.get(format!("{}/{}/_doc/{enc}", f.url, f.index)).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["_id"], odd, "{got}");
    let n: Value = f.engine.get_json(&format!("/{}/_count", f.index)).await.unwrap();
    assert_eq!(n["count"], 2, "nothing was deleted: {n}");
    // a JSON body that is not an object is refused before the engine sees it
    let r = http.put(format!("{}/{}-new", f.url, f.index)).body("[1,2]").send().await.unwrap();
    assert_eq!(r.status(), 400);
    f.engine.send(EngineRequest::new(Method::DELETE, format!("/{}", f.index))).await.unwrap();
}

#[tokio::test]
async fn gzip_bodies_are_decoded_and_bounded() {
    use std::io::Write;
    let f = fixture().await;
    f.engine.send(EngineRequest::new(Method::PUT, format!("/{}", f.index)).json(&f.body)).await.unwrap();
    let ndjson = format!(
        "{}\n{}\n",
        json!({"index": {"_index": f.index, "_id": "z"}}),
        json!({"title": "zipped", "text": "a gzip body"})
    );
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(ndjson.as_bytes()).unwrap();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/_bulk?refresh=true", f.url))
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "gzip")
        .body(enc.finish().unwrap())
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"], false, "{v}");
    let got: Value = f.engine.get_json(&format!("/{}/_doc/z", f.index)).await.unwrap();
    assert_eq!(got["_source"]["text_vector"].as_array().map(Vec::len), Some(384));
    // not gzip at all, and an encoding the sidecar does not speak
    let r = http
        .post(format!("{}/_bulk", f.url))
        .header("content-encoding", "gzip")
        .body("plain text")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http.post(format!("{}/_bulk", f.url)).header("content-encoding", "br").body("x").send().await.unwrap();
    assert_eq!(r.status(), 415);
    f.engine.send(EngineRequest::new(Method::DELETE, format!("/{}", f.index))).await.unwrap();
}
