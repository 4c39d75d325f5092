//! Helpers shared by the integration tests: the real engine's URL, settings built from an
//! environment map, unique index names, and a fault-injecting HTTP proxy.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use semantic_sidecar::settings::Settings;
use tokio::net::TcpListener;

/// The URL of the real OpenSearch node that `scripts/test` started (SIDECAR_TEST_ENGINE_URL),
/// or the one `scripts/engine start` left in .run/engine.url. Fails loudly when there is none:
/// these tests never fall back to a stand-in.
pub fn engine_url() -> String {
    if let Ok(u) = std::env::var("SIDECAR_TEST_ENGINE_URL") {
        if !u.trim().is_empty() {
            return u.trim().to_string();
        }
    }
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".run/engine.url");
    match std::fs::read_to_string(&file) {
        Ok(u) if !u.trim().is_empty() => u.trim().to_string(),
        _ => panic!(
            "no engine for the integration tests: run them through scripts/test, or start one with \
             `scripts/engine start` (it writes {})",
            file.display()
        ),
    }
}

/// The engine flavour the tests run against: SIDECAR_TEST_ENGINE_FLAVOR (set by `scripts/test`),
/// else the one `scripts/engine start` recorded in .run/engine.flavor, else OpenSearch.
pub fn engine_flavor_name() -> String {
    if let Ok(f) = std::env::var("SIDECAR_TEST_ENGINE_FLAVOR") {
        if !f.trim().is_empty() {
            return f.trim().to_string();
        }
    }
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".run/engine.flavor");
    std::fs::read_to_string(file).map(|f| f.trim().to_string()).unwrap_or_else(|_| "opensearch".into())
}

/// The product the tests run against (`elasticsearch9` is Elasticsearch too).
pub fn engine_flavor() -> semantic_sidecar::engine::Flavor {
    use semantic_sidecar::engine::Flavor;
    if engine_flavor_name().starts_with("elasticsearch") {
        Flavor::Elasticsearch
    } else {
        Flavor::Opensearch
    }
}

/// True when the tests run against Elasticsearch.
pub fn on_elasticsearch() -> bool {
    engine_flavor() == semantic_sidecar::engine::Flavor::Elasticsearch
}

/// Prints why a test does not run its engine-specific part here, so nothing is skipped silently.
pub fn not_on_this_engine(test: &str, why: &str) {
    println!("NOT RUN on {}: {test}: {why}", engine_flavor_name());
}

/// Settings from the embedded defaults plus `pairs` as if they were the process environment.
pub fn settings(pairs: &[(&str, &str)]) -> Settings {
    let env: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Settings::load(None, &env).expect("test settings are valid")
}

/// Settings pointing at `url` with fast retries.
pub fn engine_settings(url: &str, extra: &[(&str, &str)]) -> Settings {
    let mut pairs = vec![
        ("SIDECAR__ENGINE__URLS", url),
        ("SIDECAR__ENGINE__RETRY__INITIAL_BACKOFF", "10ms"),
        ("SIDECAR__ENGINE__RETRY__MAX_BACKOFF", "50ms"),
        ("SIDECAR__ENGINE__CONNECT_TIMEOUT", "2s"),
    ];
    pairs.extend_from_slice(extra);
    settings(&pairs)
}

/// An index name no other test (or earlier run) uses.
pub fn unique_index(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// A URL on which nothing listens (a port that was just free).
pub async fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

/// What the proxy does with one incoming request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status and an Elasticsearch-shaped error body, without forwarding.
    Status(u16),
    /// Close the connection without answering (the request may have been seen).
    Drop,
    /// For a `_bulk` of index/create actions: reject the first `n` items with a per-item 429
    /// (they are not forwarded), forward the rest, and splice the answers together.
    BulkItems429(usize),
}

/// A small HTTP proxy in front of the real engine that injects faults on demand.
///
/// Each request takes the next scripted fault, if any, else `default_fault`, else is forwarded
/// to the engine. `required_basic` makes it answer 401 like a secured cluster when the
/// `Authorization` header does not carry those credentials.
pub struct FaultProxy {
    pub url: String,
    pub requests: Arc<AtomicUsize>,
    script: Arc<Mutex<VecDeque<Fault>>>,
    default_fault: Arc<Mutex<Option<Fault>>>,
    bulk_only: Arc<AtomicBool>,
    target: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(target: &str, required_basic: Option<(&str, &str)>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let default_fault = Arc::new(Mutex::new(None));
        let expected_auth = required_basic.map(|(u, p)| {
            use base64_lite::encode;
            format!("Basic {}", encode(format!("{u}:{p}").as_bytes()))
        });
        let bulk_only = Arc::new(AtomicBool::new(false));
        let target = Arc::new(Mutex::new(target.trim_end_matches('/').to_string()));
        let ctx = Arc::new(ProxyCtx {
            target: target.clone(),
            bulk_only: bulk_only.clone(),
            client: reqwest::Client::new(),
            requests: requests.clone(),
            script: script.clone(),
            default_fault: default_fault.clone(),
            expected_auth,
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(ctx.clone(), req));
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        FaultProxy { url: format!("http://{addr}"), requests, script, default_fault, bulk_only, target, task }
    }

    /// The next `n` requests get `fault`.
    pub fn inject(&self, fault: Fault, n: usize) {
        let mut s = self.script.lock().unwrap();
        for _ in 0..n {
            s.push_back(fault.clone());
        }
    }

    /// Every request not covered by the script gets `fault` (None: forward).
    pub fn always(&self, fault: Option<Fault>) {
        *self.default_fault.lock().unwrap() = fault;
    }

    /// Faults (scripted and default) apply only to `_bulk` requests, and only they are counted;
    /// others are forwarded.
    pub fn only_bulk(&self, yes: bool) {
        self.bulk_only.store(yes, Ordering::SeqCst);
    }

    /// Forwards to another engine URL from now on (an engine restarted on a new port).
    pub fn retarget(&self, url: &str) {
        *self.target.lock().unwrap() = url.trim_end_matches('/').to_string();
    }

    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn reset_count(&self) {
        self.requests.store(0, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct ProxyCtx {
    target: Arc<Mutex<String>>,
    bulk_only: Arc<AtomicBool>,
    client: reqwest::Client,
    requests: Arc<AtomicUsize>,
    script: Arc<Mutex<VecDeque<Fault>>>,
    default_fault: Arc<Mutex<Option<Fault>>>,
    expected_auth: Option<String>,
}

#[derive(Debug)]
struct Dropped;
impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}
impl std::error::Error for Dropped {}

fn error_response(status: u16, kind: &str, reason: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
        "status": status
    });
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn handle(ctx: Arc<ProxyCtx>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Dropped> {
    let eligible = !ctx.bulk_only.load(Ordering::SeqCst) || req.uri().path().ends_with("_bulk");
    if eligible {
        ctx.requests.fetch_add(1, Ordering::SeqCst);
    }
    let fault = if eligible {
        ctx.script.lock().unwrap().pop_front().or_else(|| ctx.default_fault.lock().unwrap().clone())
    } else {
        None
    };
    let target = ctx.target.lock().unwrap().clone();
    match fault {
        Some(Fault::Drop) => return Err(Dropped),
        Some(Fault::Status(429)) => {
            return Ok(error_response(
                429,
                "rejected_execution_exception",
                "rejected execution of coordinating operation",
            ))
        }
        Some(Fault::Status(s)) => return Ok(error_response(s, "injected_fault", "fault injected by the test proxy")),
        Some(Fault::BulkItems429(n)) => return Ok(bulk_with_rejections(&ctx, req, n).await),
        None => {}
    }
    if let Some(expected) = &ctx.expected_auth {
        let got = req.headers().get("authorization").and_then(|v| v.to_str().ok());
        if got != Some(expected.as_str()) {
            return Ok(error_response(
                401,
                "security_exception",
                "missing authentication credentials for REST request [/]",
            ));
        }
    }
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
    let path = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let content_type = req.headers().get("content-type").cloned();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mut fwd = ctx.client.request(method, format!("{target}{path}")).body(body);
    if let Some(ct) = content_type {
        fwd = fwd.header("content-type", ct.as_bytes());
    }
    let Ok(resp) = fwd.send().await else {
        return Ok(error_response(502, "proxy_error", "the proxy could not reach the engine"));
    };
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").cloned();
    let bytes = resp.bytes().await.unwrap_or_default();
    let mut out = Response::builder().status(status);
    if let Some(ct) = ct {
        out = out.header("content-type", ct.as_bytes());
    }
    Ok(out.body(Full::new(bytes)).unwrap())
}

async fn bulk_with_rejections(ctx: &ProxyCtx, req: Request<Incoming>, n: usize) -> Response<Full<Bytes>> {
    let path = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/_bulk".into());
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let text = String::from_utf8_lossy(&body).to_string();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let pairs: Vec<(&str, &str)> = lines.chunks(2).map(|c| (c[0], c[1])).collect();
    let n = n.min(pairs.len());
    let mut rejected = Vec::new();
    for (action, _) in &pairs[..n] {
        let a: serde_json::Value = serde_json::from_str(action).unwrap();
        let (name, meta) = a.as_object().unwrap().iter().next().map(|(k, v)| (k.clone(), v.clone())).unwrap();
        rejected.push(serde_json::json!({ name: {
            "_index": meta["_index"], "_id": meta["_id"], "status": 429,
            "error": {"type": "es_rejected_execution_exception", "reason": "rejected execution of write (test proxy)"}
        }}));
    }
    let mut items = rejected;
    let mut took = 0;
    if n < pairs.len() {
        let rest: String = pairs[n..].iter().map(|(a, s)| format!("{a}\n{s}\n")).collect();
        let resp = ctx
            .client
            .post(format!("{}{}", ctx.target.lock().unwrap().clone(), path))
            .header("content-type", "application/x-ndjson")
            .body(rest)
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = resp.json().await.unwrap();
        took = v["took"].as_u64().unwrap_or(0);
        items.extend(v["items"].as_array().unwrap().iter().cloned());
    }
    let body = serde_json::json!({"took": took, "errors": true, "items": items});
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// Minimal base64 (standard alphabet, padded) for the proxy's expected Basic credentials.
mod base64_lite {
    pub fn encode(input: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in input.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            out.push(T[(n >> 18) as usize & 63] as char);
            out.push(T[(n >> 12) as usize & 63] as char);
            out.push(if chunk.len() > 1 { T[(n >> 6) as usize & 63] as char } else { '=' });
            out.push(if chunk.len() > 2 { T[n as usize & 63] as char } else { '=' });
        }
        out
    }

    #[test]
    fn matches_known_vectors() {
        assert_eq!(encode(b"elastic:changeme"), "ZWxhc3RpYzpjaGFuZ2VtZQ==");
        assert_eq!(encode(b"ab"), "YWI=");
    }
}

/// The ONNX Runtime library scripts/setup fetched (ORT_DYLIB_PATH wins). Fails loudly when missing.
pub fn ort_library() -> String {
    if let Ok(p) = std::env::var("ORT_DYLIB_PATH") {
        if std::path::Path::new(&p).is_file() {
            return p;
        }
    }
    let home = std::env::var("SIDECAR_CACHE")
        .unwrap_or_else(|_| format!("{}/.cache/semantic-sidecar", std::env::var("HOME").unwrap_or_default()));
    let p = format!("{home}/ort/1.32.0/libonnxruntime.so.1.32.0");
    assert!(std::path::Path::new(&p).is_file(), "no ONNX Runtime library at {p}: run scripts/setup");
    p
}

/// The exported default model's folder.
pub fn default_model_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2")
}

/// Settings with the default model loaded on CPU.
pub fn encoder_settings(extra: &[(&str, &str)]) -> Settings {
    let model = default_model_dir().to_string_lossy().to_string();
    let ort = ort_library();
    let mut pairs = vec![("SIDECAR__ENCODER__MODELS", model.as_str()), ("SIDECAR__ENCODER__ORT_LIBRARY", ort.as_str())];
    pairs.extend_from_slice(extra);
    settings(&pairs)
}

/// The golden file the export wrote: (text, input ids, pooled vectors by strategy, reference embedding).
pub struct Golden {
    pub text: String,
    pub input_ids: Vec<i64>,
    pub pooled: HashMap<String, Vec<f32>>,
    pub embedding: Vec<f32>,
}

pub fn golden() -> Vec<Golden> {
    let path = default_model_dir().join("golden.json");
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}; run scripts/setup", path.display())),
    )
    .unwrap();
    let floats = |a: &serde_json::Value| a.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    v["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Golden {
            text: s["text"].as_str().unwrap().to_string(),
            input_ids: s["input_ids"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect(),
            pooled: s["pooled"].as_object().unwrap().iter().map(|(k, a)| (k.clone(), floats(a))).collect(),
            embedding: floats(&s["embedding"]),
        })
        .collect()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

/// `/embed` of the sidecar at `url` with the given prompt (`passage` for documents, `query`).
pub async fn embed_with(url: &str, texts: &[String], prompt: &str) -> Vec<Vec<f32>> {
    embed_model(url, None, texts, prompt).await
}

/// `/embed` with a named model (`None`: the default one).
pub async fn embed_model(url: &str, model: Option<&str>, texts: &[String], prompt: &str) -> Vec<Vec<f32>> {
    let mut req = serde_json::json!({"inputs": texts, "truncate": true, "prompt_name": prompt});
    if let Some(m) = model {
        req["model"] = m.into();
    }
    let r: serde_json::Value = post_json(&format!("{url}/embed"), &req).await;
    r.as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .iter()
        .map(|v| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect()
}

/// POST a JSON body, the answer's JSON (any status).
pub async fn post_json(url: &str, body: &serde_json::Value) -> serde_json::Value {
    reqwest::Client::new().post(url).json(body).send().await.unwrap().json().await.unwrap()
}

/// POST an NDJSON body (`_bulk`), the answer's JSON (any status).
pub async fn post_ndjson(url: &str, body: String) -> serde_json::Value {
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub async fn embed_passages(url: &str, texts: &[String]) -> Vec<Vec<f32>> {
    embed_with(url, texts, "passage").await
}

/// The Python of the project's venv (models/ tools, client tests): `SIDECAR_TEST_PYTHON` or the
/// one scripts/setup installs.
pub fn python() -> String {
    let python = std::env::var("SIDECAR_TEST_PYTHON").unwrap_or_else(|_| {
        format!("{}/.cache/semantic-sidecar/venv/bin/python", std::env::var("HOME").unwrap_or_default())
    });
    assert!(std::path::Path::new(&python).is_file(), "no python at {python}: run scripts/setup");
    python
}

/// `_bulk?refresh=true` straight to the engine (no sidecar), asserting that no item failed.
pub async fn engine_bulk(engine: &semantic_sidecar::engine::EngineClient, ndjson: String) {
    let r: serde_json::Value = engine
        .send(semantic_sidecar::engine::EngineRequest::new(reqwest::Method::POST, "/_bulk?refresh=true").ndjson(ndjson))
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["errors"], false, "{r}");
}

/// A `semantic-sidecar serve` process of the test's own (killed on drop; `child` can be
/// SIGKILLed): ONNX Runtime, loopback on port 0 and warn logs, then `env` on top (the engine URL,
/// models, pipelines, ...). Requests made before it serves wait in its listener's backlog.
pub struct ServeProcess {
    pub child: std::process::Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl ServeProcess {
    pub fn start(env: &[(&str, String)]) -> ServeProcess {
        let dir = tempfile::tempdir().unwrap();
        let url_file = dir.path().join("url");
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_semantic-sidecar"));
        c.arg("serve")
            .arg("--url-file")
            .arg(&url_file)
            .env("ORT_DYLIB_PATH", ort_library())
            .env("SIDECAR__SERVER__LISTEN", "127.0.0.1:0")
            .env("SIDECAR__LOG__LEVEL", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit());
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().unwrap();
        let t = std::time::Instant::now();
        while !url_file.exists() {
            assert!(t.elapsed() < std::time::Duration::from_secs(60), "serve did not start");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let url = std::fs::read_to_string(&url_file).unwrap().trim().to_string();
        ServeProcess { child, url, _dir: dir }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// JSON calls to a sidecar under test: the status and the JSON answer (`Null` when not JSON).
pub struct JsonClient {
    pub url: String,
    http: reqwest::Client,
}

impl JsonClient {
    pub fn new(url: String) -> JsonClient {
        JsonClient { url, http: reqwest::Client::new() }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// The answer of a call that must succeed (200 or 201).
    pub async fn ok(&self, method: reqwest::Method, path: &str, body: serde_json::Value) -> serde_json::Value {
        let (status, v) = self.call(method, path, Some(body.clone())).await;
        assert!(status == 200 || status == 201, "{path} {body} -> {status} {v}");
        v
    }
}

/// An in-process sidecar with the configured models whose pipelines live in the cluster (what a
/// `semantic_text` mapping or the pipeline API needs): its URL and the sender that stops it.
pub async fn serve_with_cluster_pipelines() -> (String, tokio::sync::oneshot::Sender<()>) {
    use semantic_sidecar::{encoder::EncoderSet, engine::EngineClient, http, telemetry::Metrics};
    let settings = encoder_settings(&[("SIDECAR__ENGINE__URLS", &engine_url())]);
    let engine = EngineClient::new(&settings.engine).unwrap();
    let metrics = Metrics::new();
    let (es, em) = (settings.encoder.clone(), metrics.encoder.clone());
    let encoders = tokio::task::spawn_blocking(move || EncoderSet::load(&es, &em)).await.unwrap().unwrap();
    let state =
        http::AppState::with_encoders(settings, engine, metrics, encoders).with_cluster_pipelines(Vec::new()).await;
    http::serve_local(state).await.unwrap()
}

/// Runs a client program, prints what it printed, and fails when it fails.
pub async fn run_client(mut command: std::process::Command) {
    let out = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "{text}");
}
