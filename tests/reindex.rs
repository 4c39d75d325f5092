//! Reindex jobs against the real engine node and the real model: a few thousand SciFact-derived
//! documents get vectors equal to `/embed`, the alias moves; the CLI is SIGKILLed at three points
//! and resumed; the engine restarts mid-job; bulk items get 429s through the fault proxy; a
//! document that can never be written lands in the error index; a job is cancelled and resumed;
//! two sidecar processes share a job through its lease and the survivor adopts it when its owner is
//! SIGKILLed; and (Elasticsearch) a node of a three-node cluster is killed during a reindex and a
//! query load.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    cosine, embed_passages, encoder_settings, engine_url, ort_library, unique_index, Fault, FaultProxy, ServeProcess,
};
use reqwest::Method;
use semantic_sidecar::encoder::EncoderSet;
use semantic_sidecar::engine::{EngineClient, EngineRequest};
use semantic_sidecar::http::{self, AppState};
use semantic_sidecar::telemetry::Metrics;
use semantic_sidecar::types::pipeline::Pipeline;
use serde_json::{json, Value};

/// Title-only embedding keeps thousands of documents quick on two cores.
fn pipeline_toml(index: &str) -> String {
    format!(
        "name = 'rx-{index}'\nindex = '{index}'\nmodel = 'all-MiniLM-L6-v2'\nhash_field = 'content_hash'\n\
         [[fields]]\nsource = ['title']\nvector = 'title_vector'\n"
    )
}

fn pipeline(index: &str) -> Pipeline {
    toml::from_str(&pipeline_toml(index)).unwrap()
}

fn scifact(n: usize) -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/scifact/corpus.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines().take(n).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A plain source index (no vectors) with `n` SciFact documents, written straight to the engine.
async fn source_index(engine: &EngineClient, n: usize, year: impl Fn(usize) -> Value) -> String {
    source_index_with(engine, n, 0, year).await
}

async fn source_index_with(engine: &EngineClient, n: usize, replicas: u32, year: impl Fn(usize) -> Value) -> String {
    let index = unique_index("rxsrc");
    let body = json!({"settings": {"number_of_shards": 2, "number_of_replicas": replicas}, "mappings": {"properties": {"year": {"type": "keyword"}}}});
    engine.send(EngineRequest::new(Method::PUT, format!("/{index}")).json(&body)).await.unwrap();
    for (c, chunk) in scifact(n).chunks(1000).enumerate() {
        let mut bulk = String::new();
        for (i, d) in chunk.iter().enumerate() {
            bulk.push_str(&json!({"index": {"_index": index, "_id": d["_id"]}}).to_string());
            bulk.push('\n');
            let text: String = d["text"].as_str().unwrap().chars().take(300).collect();
            bulk.push_str(&json!({"title": d["title"], "text": text, "year": year(c * 1000 + i)}).to_string());
            bulk.push('\n');
        }
        common::engine_bulk(engine, bulk).await;
    }
    index
}

struct Sidecar {
    url: String,
    http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn sidecar(engine_url: &str, pipelines: Vec<Pipeline>) -> Sidecar {
    sidecar_with(engine_url, pipelines, &[]).await
}

async fn sidecar_with(engine_url: &str, pipelines: Vec<Pipeline>, extra: &[(&str, &str)]) -> Sidecar {
    let mut pairs = vec![("SIDECAR__ENGINE__URLS", engine_url)];
    pairs.extend_from_slice(extra);
    let settings = encoder_settings(&pairs);
    let engine = EngineClient::new(&settings.engine).unwrap();
    let metrics = Metrics::new();
    let (es, em) = (settings.encoder.clone(), metrics.encoder.clone());
    let encoders = tokio::task::spawn_blocking(move || EncoderSet::load(&es, &em)).await.unwrap().unwrap();
    let state = AppState::with_encoders(settings, engine, metrics, encoders).with_pipelines(pipelines).unwrap();
    let (url, tx) = http::serve_local(state).await.unwrap();
    Sidecar { url, http: reqwest::Client::new(), _stop: tx }
}

impl Sidecar {
    async fn start(&self, body: Value) -> String {
        let r = self.http.post(format!("{}/_jobs/reindex", self.url)).json(&body).send().await.unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, 202, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    async fn job(&self, id: &str) -> Value {
        self.http.get(format!("{}/_jobs/{id}", self.url)).send().await.unwrap().json().await.unwrap()
    }

    async fn wait(&self, id: &str, limit: Duration) -> Value {
        let t = Instant::now();
        loop {
            let j = self.job(id).await;
            if j["status"] != "running" {
                return j;
            }
            assert!(t.elapsed() < limit, "job {id} still running: {}", j["progress"]);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn count(engine: &EngineClient, index: &str, query: Value) -> u64 {
    let v: Value = engine
        .send(EngineRequest::new(Method::POST, format!("/{index}/_count")).json(&json!({"query": query})))
        .await
        .unwrap()
        .json()
        .unwrap();
    v["count"].as_u64().unwrap_or(0)
}

/// Exactly `n` documents, every one with its vector.
async fn exact(engine: &EngineClient, target: &str, n: u64) {
    engine.send(EngineRequest::new(Method::POST, format!("/{target}/_refresh"))).await.unwrap();
    assert_eq!(count(engine, target, json!({"match_all": {}})).await, n, "documents in {target}");
    assert_eq!(count(engine, target, json!({"exists": {"field": "title_vector"}})).await, n, "with vectors");
}

fn progress(j: &Value, k: &str) -> u64 {
    j["progress"][k].as_u64().unwrap_or(u64::MAX)
}

#[tokio::test]
async fn a_few_thousand_documents_get_the_vectors_of_embed_and_the_alias_moves() {
    let url = engine_url();
    let engine = EngineClient::new(&encoder_settings(&[("SIDECAR__ENGINE__URLS", &url)]).engine).unwrap();
    let n = 3000;
    let source = source_index(&engine, n, |i| json!(format!("{}", 2000 + i % 20))).await;
    let target = format!("{source}-v2");
    let alias = format!("{source}-live");
    // the alias first points at the old index (blue/green)
    engine
        .send(
            EngineRequest::new(Method::POST, "/_aliases")
                .json(&json!({"actions": [{"add": {"index": source, "alias": alias}}]})),
        )
        .await
        .unwrap();
    let s = sidecar(&url, vec![pipeline(&source)]).await;
    let t = Instant::now();
    let id = s.start(json!({"pipeline": format!("rx-{source}"), "target": target, "alias": alias, "slices": 2})).await;
    let j = s.wait(&id, Duration::from_secs(600)).await;
    println!("reindexed {n} documents in {:.1}s: {}", t.elapsed().as_secs_f64(), j["progress"]);
    assert_eq!(j["status"], "done", "{j}");
    assert_eq!(
        (progress(&j, "source"), progress(&j, "read"), progress(&j, "written"), progress(&j, "failed")),
        (3000, 3000, 3000, 0)
    );
    exact(&engine, &target, n as u64).await;
    let a: Value = engine.get_json(&format!("/_alias/{alias}")).await.unwrap();
    assert_eq!(
        a.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec![&target],
        "the alias points at the new index only"
    );
    assert!(j["alias_swapped"].as_bool().unwrap());
    // the source's other fields keep their mapping
    let m: Value = engine.get_json(&format!("/{target}/_mapping")).await.unwrap();
    assert_eq!(m[&target]["mappings"]["properties"]["year"]["type"], "keyword");
    // every document's vector equals /embed of its title
    let f = |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect::<Vec<f32>>();
    let mut checked = 0;
    for chunk in scifact(n).chunks(500) {
        let titles: Vec<String> = chunk.iter().map(|d| d["title"].as_str().unwrap().to_string()).collect();
        let want = embed_passages(&s.url, &titles).await;
        let ids: Vec<&str> = chunk.iter().map(|d| d["_id"].as_str().unwrap()).collect();
        let got: Value = engine
            .send(EngineRequest::new(Method::POST, format!("/{target}/_mget")).json(&json!({"ids": ids})))
            .await
            .unwrap()
            .json()
            .unwrap();
        for (doc, want) in got["docs"].as_array().unwrap().iter().zip(&want) {
            let c = cosine(&f(&doc["_source"]["title_vector"]), want);
            assert!(c > 0.99999, "{}: cosine {c}", doc["_id"]);
            checked += 1;
        }
    }
    assert_eq!(checked, n);
    let metrics = s.http.get(format!("{}/metrics", s.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("sidecar_reindex_documents_total{outcome=\"written\"} 3000"), "{metrics}");
    // a finished job cannot be resumed; an unknown one is a 404
    let r = s.http.post(format!("{}/_jobs/reindex", s.url)).json(&json!({"resume": id})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(s.http.get(format!("{}/_jobs/rx-nope", s.url)).send().await.unwrap().status().as_u16(), 404);
}

fn cli(engine: &str, pipeline_file: &Path, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_semantic-sidecar"))
        .args(["reindex", "--quiet", "--pipeline"])
        .arg(pipeline_file)
        .args(args)
        .env("SIDECAR__ENGINE__URLS", engine)
        .env("ORT_DYLIB_PATH", ort_library())
        .env("SIDECAR__ENCODER__MODELS", common::default_model_dir())
        // a killed CLI's lease runs out quickly, so that the resuming one need not wait long
        .env("SIDECAR__REINDEX__LEASE", "3s")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The job id from the CLI's first line on stderr.
fn job_id(child: &mut std::process::Child) -> String {
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("job ") {
            let id = rest.split(':').next().unwrap().to_string();
            std::thread::spawn(move || for _ in lines {});
            return id;
        }
        assert!(!line.starts_with("error"), "{line}");
    }
    panic!("the CLI printed no job id");
}

async fn stored(engine: &EngineClient, id: &str) -> Value {
    let v: Value = engine.get_json(&format!("/.semantic-sidecar-jobs/_doc/{id}")).await.unwrap();
    v["_source"].clone()
}

fn read_of(job: &Value) -> u64 {
    job["slices"].as_array().map_or(0, |s| s.iter().map(|x| x["read"].as_u64().unwrap_or(0)).sum())
}

#[tokio::test]
async fn sigkill_at_three_points_then_resume_gives_exactly_n_documents_with_vectors() {
    let url = engine_url();
    let engine = EngineClient::new(&encoder_settings(&[("SIDECAR__ENGINE__URLS", &url)]).engine).unwrap();
    let n = 2000u64;
    let source = source_index(&engine, n as usize, |i| json!(i.to_string())).await;
    let target = format!("{source}-v2");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(&file, pipeline_toml(&source)).unwrap();
    let mut child = cli(&url, &file, &["--target", &target, "--slices", "2", "--page-size", "50", "--bulk-size", "50"]);
    let id = job_id(&mut child);
    for (point, at) in [(1, n / 5), (2, n / 2), (3, n * 4 / 5)] {
        let t = Instant::now();
        loop {
            let j = stored(&engine, &id).await;
            if read_of(&j) >= at {
                break;
            }
            assert!(child.try_wait().unwrap().is_none(), "the CLI ended before kill point {point}");
            assert!(t.elapsed() < Duration::from_secs(300), "no progress to {at}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let j = stored(&engine, &id).await;
        println!("killed at point {point}: checkpointed read {} (status {})", read_of(&j), j["status"]);
        assert_eq!(j["status"], "running", "a killed job stays `running` in its checkpoint");
        child = cli(&url, &file, &["--resume", &id]);
        assert_eq!(job_id(&mut child), id);
    }
    let out = child.wait_with_output().unwrap();
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{summary}");
    assert_eq!(summary["status"], "done");
    assert_eq!((summary["counts"]["read"].as_u64(), summary["counts"]["failed"].as_u64()), (Some(n), Some(0)));
    exact(&engine, &target, n).await;
    let j = stored(&engine, &id).await;
    assert_eq!(read_of(&j), n);
}

#[tokio::test]
async fn item_429s_shrink_the_bulk_size_and_every_document_lands_once() {
    let url = engine_url();
    let engine = EngineClient::new(&encoder_settings(&[("SIDECAR__ENGINE__URLS", &url)]).engine).unwrap();
    let n = 600u64;
    let source = source_index(&engine, n as usize, |i| json!(i.to_string())).await;
    let proxy = FaultProxy::start(&url, None).await;
    proxy.only_bulk(true);
    // a quarter of the items of the first 12 bulk requests are rejected
    proxy.inject(Fault::BulkItems429(25), 12);
    let s = sidecar(&proxy.url, vec![pipeline(&source)]).await;
    let target = format!("{source}-v2");
    let id = s
        .start(json!({"pipeline": format!("rx-{source}"), "target": target, "page_size": 100, "bulk_size": 100}))
        .await;
    let j = s.wait(&id, Duration::from_secs(300)).await;
    println!("bulk: {}", j["bulk"]);
    assert_eq!(j["status"], "done", "{j}");
    assert_eq!((progress(&j, "read"), progress(&j, "written"), progress(&j, "failed")), (n, n, 0));
    assert!(j["bulk"]["item_429s"].as_u64().unwrap() >= 12, "{}", j["bulk"]);
    assert!(
        j["bulk"]["shrinks"].as_u64().unwrap() > 0 && j["bulk"]["low_water"].as_u64().unwrap() < 100,
        "{}",
        j["bulk"]
    );
    exact(&engine, &target, n).await;
}

#[tokio::test]
async fn a_document_that_can_never_be_written_goes_to_the_error_index_with_its_reason() {
    let url = engine_url();
    let engine = EngineClient::new(&encoder_settings(&[("SIDECAR__ENGINE__URLS", &url)]).engine).unwrap();
    let n = 200u64;
    let source = source_index(&engine, n as usize, |i| {
        if i == 17 {
            json!("not a year")
        } else {
            json!(format!("{}", 1990 + i % 30))
        }
    })
    .await;
    // the target exists already and maps year as an integer
    let target = format!("{source}-v2");
    let body = if common::on_elasticsearch() {
        json!({"settings": {"index": {"number_of_replicas": 0}}, "mappings": {"properties": {
            "year": {"type": "integer"},
            "title_vector": {"type": "dense_vector", "dims": 384, "index": true, "similarity": "cosine"}}}})
    } else {
        json!({"settings": {"index": {"knn": true, "number_of_replicas": 0}}, "mappings": {"properties": {
            "year": {"type": "integer"},
            "title_vector": {"type": "knn_vector", "dimension": 384, "method": {"name": "hnsw", "engine": "lucene", "space_type": "cosinesimil"}}}}})
    };
    engine.send(EngineRequest::new(Method::PUT, format!("/{target}")).json(&body)).await.unwrap();
    let s = sidecar(&url, vec![pipeline(&source)]).await;
    let id = s.start(json!({"pipeline": format!("rx-{source}"), "target": target})).await;
    let j = s.wait(&id, Duration::from_secs(300)).await;
    assert_eq!(j["status"], "done", "{j}");
    assert_eq!((progress(&j, "read"), progress(&j, "written"), progress(&j, "failed")), (n, n - 1, 1));
    let bad = scifact(18)[17]["_id"].as_str().unwrap().to_string();
    let e: Value = engine.get_json(&format!("/.semantic-sidecar-errors/_doc/{id}:{bad}")).await.unwrap();
    let e = &e["_source"];
    assert_eq!(e["status"], 400, "{e}");
    assert!(e["type"].as_str().unwrap().contains("parsing"), "{e}");
    assert!(e["reason"].as_str().unwrap().contains("year"), "{e}");
    assert!(e["document"].as_str().unwrap().contains("not a year"));
    exact(&engine, &target, n - 1).await;
}

#[tokio::test]
async fn a_cancelled_job_resumes_later_with_exact_counts() {
    let url = engine_url();
    let engine = EngineClient::new(&encoder_settings(&[("SIDECAR__ENGINE__URLS", &url)]).engine).unwrap();
    let n = 1500u64;
    let source = source_index(&engine, n as usize, |i| json!(i.to_string())).await;
    let s = sidecar(&url, vec![pipeline(&source)]).await;
    let target = format!("{source}-v2");
    let id = s.start(json!({"pipeline": format!("rx-{source}"), "target": target, "page_size": 50, "slices": 3})).await;
    loop {
        let j = s.job(&id).await;
        if progress(&j, "read") >= 200 || j["status"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r: Value = s.http.delete(format!("{}/_jobs/{id}", s.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["status"], "cancelling");
    let j = s.wait(&id, Duration::from_secs(120)).await;
    assert_eq!(j["status"], "cancelled", "{j}");
    let part = progress(&j, "read");
    assert!(part < n, "cancelled after everything was read");
    assert_eq!(progress(&j, "written"), part, "what was read was written before stopping");
    let again = s.start(json!({"resume": id})).await;
    assert_eq!(again, id);
    let j = s.wait(&id, Duration::from_secs(300)).await;
    assert_eq!(j["status"], "done", "{j}");
    assert_eq!((progress(&j, "read"), progress(&j, "written")), (n, n));
    exact(&engine, &target, n).await;
}

/// An engine (one node or a cluster) of a test's own, in its own run folder; stopped when dropped.
struct OwnEngine {
    dir: tempfile::TempDir,
}

impl OwnEngine {
    fn new() -> Self {
        OwnEngine { dir: tempfile::tempdir().unwrap() }
    }

    /// `scripts/engine ARGS` on this engine; its stdout.
    fn cmd(&self, args: &[&str]) -> String {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(root.join("scripts/engine"))
            .args(args)
            .env("SIDECAR_RUN_DIR", self.dir.path())
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "scripts/engine {args:?} failed");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for OwnEngine {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.cmd(&["stop"])));
    }
}

/// A second engine node of this test's own (it is restarted mid-job), behind the fault proxy
/// so the sidecar keeps one URL while the node comes back on a new port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_restart_mid_job_is_waited_out_and_the_counts_are_exact() {
    let own = OwnEngine::new();
    let first = tokio::task::block_in_place(|| own.cmd(&["start", "--fresh"]));
    let proxy = FaultProxy::start(&first, None).await;
    let engine = EngineClient::new(&encoder_settings(&[("SIDECAR__ENGINE__URLS", &proxy.url)]).engine).unwrap();
    let n = 1200u64;
    let source = source_index(&engine, n as usize, |i| json!(i.to_string())).await;
    // a short per-request retry budget: the restart outlasts it, so the job itself must wait
    // (an engine that comes back within the client's budget would be absorbed unseen)
    let budget = [("SIDECAR__ENGINE__RETRY__MAX_RETRIES", "1"), ("SIDECAR__ENGINE__RETRY__MAX_ELAPSED", "1s")];
    let s = sidecar_with(&proxy.url, vec![pipeline(&source)], &budget).await;
    let target = format!("{source}-v2");
    let id =
        s.start(json!({"pipeline": format!("rx-{source}"), "target": target, "page_size": 50, "bulk_size": 50})).await;
    loop {
        let j = s.job(&id).await;
        if progress(&j, "read") >= 300 {
            break;
        }
        assert_eq!(j["status"], "running", "{j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::task::block_in_place(|| own.cmd(&["stop"]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = tokio::task::block_in_place(|| own.cmd(&["start"]));
    proxy.retarget(&second);
    let j = s.wait(&id, Duration::from_secs(300)).await;
    println!("after the restart: {} outages={}", j["progress"], j["slices"][0]["outages"]);
    assert_eq!(j["status"], "done", "{j}");
    assert_eq!((progress(&j, "read"), progress(&j, "written"), progress(&j, "failed")), (n, n, 0));
    assert!(j["slices"][0]["outages"].as_u64().unwrap() > 0, "the outage was not noticed: {j}");
    exact(&engine, &target, n).await;
}

/// Three master-eligible Elasticsearch nodes of this test's own on loopback, replicas 1, the
/// sidecar given all three URLs. The elected master is SIGKILLed while a reindex runs and
/// clients search through the sidecar: reads keep answering, `/readyz` shows the dead node, and
/// the reindex ends with exactly N documents, every one with its vector.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_a_node_of_three_keeps_reads_answering_and_the_reindex_exact() {
    if !common::on_elasticsearch() {
        common::not_on_this_engine(
            "losing_a_node_of_three",
            "the OpenSearch launcher runs one node in one JVM; the three-node test runs on Elasticsearch",
        );
        return;
    }
    let own = OwnEngine::new();
    let flavor = common::engine_flavor_name();
    tokio::task::block_in_place(|| own.cmd(&["start", "--fresh", "--flavor", &flavor, "--nodes", "3"]));
    let urls = tokio::task::block_in_place(|| own.cmd(&["urls"]));
    assert_eq!(urls.split(',').count(), 3, "{urls}");
    let engine = EngineClient::new(&encoder_settings(&[("SIDECAR__ENGINE__URLS", &urls)]).engine).unwrap();
    let n = 1500u64;
    let source = source_index_with(&engine, n as usize, 1, |i| json!(i.to_string())).await;
    let health: Value =
        engine.get_json(&format!("/_cluster/health/{source}?wait_for_status=green&timeout=60s")).await.unwrap();
    assert_eq!(health["status"], "green", "{health}");
    let mut p = pipeline(&source);
    p.replicas = 1;
    let s = sidecar(&urls, vec![p]).await;
    let target = format!("{source}-v2");
    let id =
        s.start(json!({"pipeline": format!("rx-{source}"), "target": target, "page_size": 50, "bulk_size": 50})).await;

    // a query load through the sidecar for the whole test: ES _search passthrough and _count
    let stop_load = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (url, source, stop) = (s.url.clone(), source.clone(), stop_load.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = http
                    .post(format!("{url}/{source}/_search"))
                    .json(&json!({"query": {"match": {"title": "cell"}}, "size": 3}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => ok += 1,
                    Ok(r) => failed.push(format!("{} {}", r.status(), r.text().await.unwrap_or_default())),
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        })
    };
    loop {
        let j = s.job(&id).await;
        if progress(&j, "read") >= 300 {
            break;
        }
        assert_eq!(j["status"], "running", "{j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SIGKILL the elected master
    let master: Value = engine.get_json("/_cat/master?format=json").await.unwrap();
    let name = master[0]["node"].as_str().unwrap().to_string();
    let pid_file = own.dir.path().join(format!("engine-home/{name}/server.pid"));
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
    let killed = Command::new("kill").args(["-KILL", &pid]).status().unwrap();
    assert!(killed.success());
    println!("killed the elected master {name} (pid {pid}) at read >= 300");

    // /readyz names the dead node and stays ready
    let mut degraded = Value::Null;
    for _ in 0..100 {
        let r: Value = s.http.get(format!("{}/readyz", s.url)).send().await.unwrap().json().await.unwrap();
        if r["engine"]["degraded"] == true {
            degraded = r;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(degraded["status"], "ready", "{degraded}");
    let down: Vec<&Value> =
        degraded["engine"]["nodes"].as_array().unwrap().iter().filter(|n| n["up"] == false).collect();
    assert_eq!(down.len(), 1, "{degraded}");

    let j = s.wait(&id, Duration::from_secs(600)).await;
    stop_load.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = load.await.unwrap();
    println!(
        "query load: {ok} answered, {} failed {:?}; job {}",
        failed.len(),
        failed.iter().take(3).collect::<Vec<_>>(),
        j["progress"]
    );
    assert!(ok > 0);
    assert!(failed.is_empty(), "reads failed while a node was down: {failed:?}");
    assert_eq!(j["status"], "done", "{j}");
    assert_eq!((progress(&j, "read"), progress(&j, "written"), progress(&j, "failed")), (n, n, 0));
    exact(&engine, &target, n).await;
}

/// A `serve` process on `engine` with the default model, `pipeline_file`, and a 3 s lease.
fn serve_process(engine: &str, pipeline_file: &Path) -> ServeProcess {
    ServeProcess::start(&[
        ("SIDECAR__ENGINE__URLS", engine.to_string()),
        ("SIDECAR__ENCODER__MODELS", common::default_model_dir().display().to_string()),
        ("SIDECAR__INGEST__PIPELINES", pipeline_file.display().to_string()),
        ("SIDECAR__REINDEX__LEASE", "3s".to_string()),
    ])
}

/// Two sidecars on one cluster: the job runs on exactly one (its lease names it, the other does
/// not run it), and when that one is SIGKILLed the other adopts the job within a lease period and
/// ends it with exactly N documents, every one with its vector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sidecar_adopts_the_job_of_a_killed_one_and_nothing_is_lost_or_doubled() {
    let url = engine_url();
    let engine = EngineClient::new(&encoder_settings(&[("SIDECAR__ENGINE__URLS", &url)]).engine).unwrap();
    let n = 1500u64;
    let source = source_index(&engine, n as usize, |i| json!(i.to_string())).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(&file, pipeline_toml(&source)).unwrap();
    let (a, b) = tokio::task::block_in_place(|| (serve_process(&url, &file), serve_process(&url, &file)));
    let mut a = a;
    let http = reqwest::Client::new();
    let job = |base: &str, id: &str| {
        let (http, u) = (http.clone(), format!("{base}/_jobs/{id}"));
        async move { http.get(u).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let target = format!("{source}-v2");
    let r = http
        .post(format!("{}/_jobs/reindex", a.url))
        .json(&json!({"pipeline": format!("rx-{source}"), "target": target, "page_size": 50, "bulk_size": 50}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let id = v["id"].as_str().unwrap_or_else(|| panic!("{v}")).to_string();
    loop {
        let j = job(&a.url, &id).await;
        assert_eq!(j["status"], "running", "{j}");
        if progress(&j, "read") >= 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // one runner: A holds the lease, B sees the job but does not run it, for longer than a lease
    let owner_a = job(&a.url, &id).await["lease"]["owner"].as_str().unwrap().to_string();
    for _ in 0..8 {
        let on_b = job(&b.url, &id).await;
        assert_eq!(on_b["running_here"], false, "{on_b}");
        assert_eq!(on_b["lease"]["owner"], owner_a.as_str(), "{on_b}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed_at = Instant::now();
    println!("SIGKILLed the owner {owner_a} at {}", job(&b.url, &id).await["progress"]);
    let adopted = loop {
        let j = job(&b.url, &id).await;
        if j["running_here"] == true || j["status"] == "done" {
            break killed_at.elapsed();
        }
        assert!(killed_at.elapsed() < Duration::from_secs(30), "no adoption within 30 s: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("adopted by the second sidecar {:.1} s after the kill (lease 3 s)", adopted.as_secs_f64());
    let t = Instant::now();
    let j = loop {
        let j = job(&b.url, &id).await;
        if j["status"] != "running" {
            break j;
        }
        assert!(t.elapsed() < Duration::from_secs(300), "still running: {j}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(j["status"], "done", "{j}");
    assert_eq!((progress(&j, "read"), progress(&j, "written"), progress(&j, "failed")), (n, n, 0));
    exact(&engine, &target, n).await;
    let s = stored(&engine, &id).await;
    assert!(s["lease"].is_null(), "an ended job holds no lease: {s}");
    drop(b);
}

#[tokio::test]
async fn a_job_the_engine_refuses_creates_no_target() {
    let url = engine_url();
    let engine = EngineClient::new(&encoder_settings(&[("SIDECAR__ENGINE__URLS", &url)]).engine).unwrap();
    let source = source_index(&engine, 10, |i| json!(i.to_string())).await;
    let s = sidecar(&url, vec![pipeline(&source)]).await;
    let target = format!("{source}-refused");
    let body = json!({"pipeline": format!("rx-{source}"), "target": target, "query": {"no_such_query": {}}});
    let r = s.http.post(format!("{}/_jobs/reindex", s.url)).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert!((400..500).contains(&status), "{status} {v}");
    let exists = engine.send(EngineRequest::new(Method::HEAD, format!("/{target}"))).await;
    assert!(exists.map(|r| r.status.as_u16() == 404).unwrap_or(true), "the target was not created");
    engine.send(EngineRequest::new(Method::DELETE, format!("/{source}"))).await.unwrap();
}
