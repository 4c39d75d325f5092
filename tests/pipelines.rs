//! Pipelines stored in the cluster, on the real engine: two `serve` processes on one cluster (a
//! pipeline put through one is served by the other within the watch period, a delete too; a
//! pipeline file is a bootstrap the cluster overrides), the README's reindex flow ending served
//! through the alias (the `/_jobs` API with `"scroll": true`, and the CLI), a model change refused
//! in place and done through a reindex job, concurrent updates answered 409, a replica without the
//! pipeline's model reporting it and refusing its writes, the content hash re-embedding after a
//! chunking change, and the owner resolver on every kind of name (index, alias, write alias, data
//! stream, date math, wildcard, comma list).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{default_model_dir, engine_url, on_elasticsearch, ort_library, unique_index, ServeProcess};
use reqwest::Client;
use semantic_sidecar::encoder::EncoderSet;
use semantic_sidecar::engine::{EngineClient, EngineRequest};
use semantic_sidecar::http::{self, AppState};
use semantic_sidecar::telemetry::Metrics;
use serde_json::{json, Value};

/// How often the test sidecars poll the pipeline store.
const WATCH: &str = "500ms";

fn int8_model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2-int8")
}

/// A `serve` process on the engine under test with `models`, bootstrap `files`, and the short watch.
fn sidecar(models: &[&Path], files: &[&Path]) -> ServeProcess {
    let join = |v: &[&Path]| v.iter().map(|m| m.display().to_string()).collect::<Vec<_>>().join(",");
    let mut env = vec![
        ("SIDECAR__ENGINE__URLS", engine_url()),
        ("SIDECAR__ENCODER__MODELS", join(models)),
        ("SIDECAR__INGEST__WATCH_INTERVAL", WATCH.to_string()),
    ];
    if !files.is_empty() {
        env.push(("SIDECAR__INGEST__PIPELINES", join(files)));
    }
    ServeProcess::start(&env)
}

/// A sidecar in this process, serving the cluster's pipelines.
async fn in_process(models: &[&Path]) -> (String, tokio::sync::oneshot::Sender<()>) {
    in_process_with(models, &[]).await
}

/// [`in_process`] with more settings (`SIDECAR__…` pairs).
async fn in_process_with(models: &[&Path], extra: &[(&str, &str)]) -> (String, tokio::sync::oneshot::Sender<()>) {
    let list = models.iter().map(|m| m.display().to_string()).collect::<Vec<_>>().join(",");
    let (url, ort) = (engine_url(), ort_library());
    let mut pairs = vec![
        ("SIDECAR__ENGINE__URLS", url.as_str()),
        ("SIDECAR__ENCODER__MODELS", list.as_str()),
        ("SIDECAR__ENCODER__ORT_LIBRARY", ort.as_str()),
        ("SIDECAR__INGEST__WATCH_INTERVAL", WATCH),
    ];
    pairs.extend_from_slice(extra);
    let settings = common::encoder_settings(&pairs);
    let engine = EngineClient::new(&settings.engine).unwrap();
    let metrics = Metrics::new();
    let (es, em) = (settings.encoder.clone(), metrics.encoder.clone());
    let encoders = tokio::task::spawn_blocking(move || EncoderSet::load(&es, &em)).await.unwrap().unwrap();
    let state = AppState::with_encoders(settings, engine, metrics, encoders).with_cluster_pipelines(Vec::new()).await;
    http::serve_local(state).await.unwrap()
}

fn engine() -> EngineClient {
    EngineClient::new(&common::engine_settings(&engine_url(), &[]).engine).unwrap()
}

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut r = Client::new().request(method, url);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn definition(index: &str, model: &str) -> Value {
    json!({"index": index, "model": model, "hash_field": "content_hash",
           "fields": [{"source": ["title", "text"], "vector": "text_vector"}]})
}

async fn put(url: &str, name: &str, body: &Value) -> (u16, Value) {
    call(reqwest::Method::PUT, format!("{url}/_sidecar/pipeline/{name}"), Some(body.clone())).await
}

/// Writes one document through `url` and returns its stored source (read from the engine).
async fn write_and_read(url: &str, index: &str, id: &str, doc: Value) -> Value {
    let (s, v) = call(reqwest::Method::PUT, format!("{url}/{index}/_doc/{id}?refresh=true"), Some(doc)).await;
    assert!(s < 300, "{s} {v}");
    let concrete = v["_index"].as_str().unwrap().to_string();
    let got: Value = engine().get_json(&format!("/{concrete}/_doc/{}", v["_id"].as_str().unwrap())).await.unwrap();
    got["_source"].clone()
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while !f().await {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.elapsed()
}

async fn served(url: &str, name: &str) -> bool {
    let (_, v) = call(reqwest::Method::GET, format!("{url}/readyz"), None).await;
    v["pipelines"]["served"].as_array().is_some_and(|a| a.iter().any(|n| n == name))
}

fn scifact(n: usize) -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/scifact/corpus.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines().take(n).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A plain index (one primary, no replica) holding `n` SciFact abstracts, written on the engine.
async fn plain_index(index: &str, n: usize) {
    let e = engine();
    e.send(
        EngineRequest::new(reqwest::Method::PUT, format!("/{index}"))
            .json(&json!({"settings": {"number_of_replicas": 0}})),
    )
    .await
    .unwrap();
    let mut body = String::new();
    for d in scifact(n) {
        body.push_str(&json!({"index": {"_index": index, "_id": d["_id"]}}).to_string());
        body.push('\n');
        body.push_str(&json!({"title": d["title"], "text": d["text"]}).to_string());
        body.push('\n');
    }
    common::engine_bulk(&e, body).await;
    e.send(EngineRequest::new(reqwest::Method::POST, format!("/{index}/_refresh"))).await.unwrap();
}

fn vector(src: &Value, field: &str) -> Vec<f32> {
    src[field]
        .as_array()
        .unwrap_or_else(|| panic!("no `{field}` in {src}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

async fn wait_job(url: &str, id: &str) -> Value {
    let t = Instant::now();
    loop {
        let (_, v) = call(reqwest::Method::GET, format!("{url}/_jobs/{id}"), None).await;
        if v["status"] != "running" {
            return v;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "the job did not end: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_put_through_one_sidecar_is_served_by_another_within_the_watch_period() {
    let model = default_model_dir();
    let name = unique_index("watch");
    // a pipeline file: written to the cluster by the first sidecar, and the cluster's definition
    // wins over a second file that disagrees
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("boot.toml");
    let boot = unique_index("boot");
    let boot_toml = |index: &str| {
        format!("name = '{boot}'\nindex = '{index}'\nmodel = 'all-MiniLM-L6-v2'\n[[fields]]\nsource = ['text']\nvector = 'v'\n")
    };
    std::fs::write(&file, boot_toml(&boot)).unwrap();
    let (a, b) = tokio::task::block_in_place(|| (sidecar(&[&model], &[&file]), sidecar(&[&model], &[])));
    wait_for("B serves the file A wrote to the cluster", Duration::from_secs(5), || served(&b.url, &boot)).await;
    let other = dir.path().join("other.toml");
    std::fs::write(&other, boot_toml("elsewhere")).unwrap();
    let c = tokio::task::block_in_place(|| sidecar(&[&model], &[&other]));
    let (_, ready) = call(reqwest::Method::GET, format!("{}/readyz", c.url), None).await;
    let notes = ready["pipelines"]["files"].to_string();
    assert!(notes.contains(&boot) && notes.contains("the cluster's is served"), "{ready}");
    let (_, got) = call(reqwest::Method::GET, format!("{}/_sidecar/pipeline/{boot}", c.url), None).await;
    assert_eq!(got[&boot]["definition"]["index"], boot.as_str(), "the cluster wins: {got}");
    drop(c);

    let (s, v) = put(&a.url, &name, &definition(&name, "all-MiniLM-L6-v2")).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!((v["index_created"].as_bool(), v["result"].as_str()), (Some(true), Some("created")), "{v}");
    let took = wait_for("B serves the pipeline", Duration::from_secs(5), || served(&b.url, &name)).await;
    println!("B served the pipeline {took:?} after A stored it (watch every {WATCH})");
    let src = write_and_read(&b.url, &name, "1", json!({"title": "Cells", "text": "Stem cells divide."})).await;
    assert_eq!(vector(&src, "text_vector").len(), 384, "written through B with its vector");
    let (_, state) = call(reqwest::Method::GET, format!("{}/_sidecar/pipeline/{name}", b.url), None).await;
    assert_eq!(state[&name]["state"]["documents"], 1, "{state}");
    assert_eq!(state[&name]["state"]["documents_without_vector"], 0, "{state}");

    let (s, v) = call(reqwest::Method::DELETE, format!("{}/_sidecar/pipeline/{name}", a.url), None).await;
    assert_eq!(s, 200, "{v}");
    wait_for("B stops serving it", Duration::from_secs(5), || async { !served(&b.url, &name).await }).await;
    let src = write_and_read(&b.url, &name, "2", json!({"title": "Plain", "text": "No pipeline now."})).await;
    assert!(src.get("text_vector").is_none(), "a deleted pipeline embeds nothing: {src}");
    let (s, _) = call(reqwest::Method::GET, format!("{}/_sidecar/pipeline/{name}", b.url), None).await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_reindex_flow_ends_served_through_the_alias_on_every_replica() {
    let model = default_model_dir();
    let (a, b) = tokio::task::block_in_place(|| (sidecar(&[&model], &[]), sidecar(&[&model], &[])));
    let articles = unique_index("articles");
    let live = format!("{articles}-live");
    plain_index(&articles, 40).await;
    let name = unique_index("articles-p");
    // the job checks its alias before copying: an existing index cannot become an alias
    let req = json!({"pipeline": name, "definition": definition(&articles, "all-MiniLM-L6-v2"), "alias": articles, "scroll": true});
    let (s, v) = call(reqwest::Method::POST, format!("{}/_jobs/reindex", a.url), Some(req)).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["reason"].as_str().unwrap().contains("is an index, not an alias"), "{v}");
    let target_count = |t: String| async move {
        engine()
            .send(EngineRequest::new(reqwest::Method::HEAD, format!("/{t}")).passthrough())
            .await
            .unwrap()
            .status
            .as_u16()
    };
    // read with scroll (PITs are the default): works on both engines
    let req = json!({"pipeline": name, "definition": definition(&articles, "all-MiniLM-L6-v2"), "alias": live, "scroll": true});
    let (s, v) = call(reqwest::Method::POST, format!("{}/_jobs/reindex", a.url), Some(req)).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["spec"]["scroll"], true);
    let job = wait_job(&a.url, v["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["reader"], "scroll", "{job}");
    assert_eq!(job["progress"]["written"], 40, "{job}");
    assert_eq!(target_count(job["spec"]["target"].as_str().unwrap().to_string()).await, 200);
    // served through the alias on B, at once or within the watch period
    wait_for("B serves the job's pipeline", Duration::from_secs(5), || served(&b.url, &name)).await;
    let (s, hits) = call(
        reqwest::Method::POST,
        format!("{}/search", b.url),
        Some(json!({"index": live, "query": "stem cells", "k": 10})),
    )
    .await;
    assert_eq!(s, 200, "{hits}");
    assert_eq!(hits["hits"]["hits"].as_array().unwrap().len(), 10, "{hits}");
    let body = json!({"query": {"hybrid": {"query": "stem cells"}}});
    let (s, es) = call(reqwest::Method::POST, format!("{}/{live}/_search", b.url), Some(body)).await;
    assert_eq!(s, 200, "{es}");
    assert!(!es["hits"]["hits"].as_array().unwrap().is_empty());
    // a write through the alias lands in the new index with its vector
    let src =
        write_and_read(&b.url, &live, "new-1", json!({"title": "Fresh", "text": "Written through the alias."})).await;
    assert_eq!(vector(&src, "text_vector").len(), 384);
    // and a bulk item through it too
    let bulk = format!(
        "{}\n{}\n",
        json!({"index": {"_index": live, "_id": "new-2"}}),
        json!({"title": "Bulk", "text": "Through the alias."})
    );
    let r = common::post_ndjson(&format!("{}/_bulk?refresh=true", b.url), bulk).await;
    assert_eq!(r["errors"], false, "{r}");
    let got: Value = engine().get_json(&format!("/{live}/_doc/new-2")).await.unwrap();
    assert_eq!(vector(&got["_source"], "text_vector").len(), 384, "{got}");

    // the CLI does the same with a pipeline file
    let cli_src = unique_index("cli-articles");
    plain_index(&cli_src, 12).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    let cli_name = unique_index("cli-p");
    std::fs::write(&file, format!("name = '{cli_name}'\nindex = '{cli_src}'\nmodel = 'all-MiniLM-L6-v2'\n[[fields]]\nsource = ['title', 'text']\nvector = 'text_vector'\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_semantic-sidecar"))
        .args(["reindex", "--quiet", "--pipeline"])
        .arg(&file)
        .args(["--alias", &format!("{cli_src}-live")])
        .env("SIDECAR__ENGINE__URLS", engine_url())
        .env("ORT_DYLIB_PATH", ort_library())
        .env("SIDECAR__ENCODER__MODELS", &model)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("B serves the CLI job's pipeline", Duration::from_secs(5), || served(&b.url, &cli_name)).await;
    let src =
        write_and_read(&b.url, &format!("{cli_src}-live"), "x", json!({"title": "CLI", "text": "after the swap"}))
            .await;
    assert_eq!(vector(&src, "text_vector").len(), 384);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_change_is_refused_in_place_and_done_through_a_reindex_job() {
    let (minilm, int8) = (default_model_dir(), int8_model_dir());
    let (url, _stop) = in_process(&[&minilm, &int8]).await;
    let name = unique_index("switch");
    let v1 = format!("{name}-v1");
    let (s, v) = put(&url, &name, &definition(&v1, "all-MiniLM-L6-v2")).await;
    assert_eq!(s, 201, "{v}");
    let before = write_and_read(&url, &v1, "d1", json!({"title": "Cells", "text": "Stem cells divide."})).await;
    let (s, v) = put(&url, &name, &definition(&v1, "all-MiniLM-L6-v2-int8")).await;
    assert_eq!(s, 409, "{v}");
    let reason = v["error"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("holds 1 vectors") && reason.contains("new vector field") && reason.contains("/_jobs/reindex"),
        "{reason}"
    );
    // deleting the pipeline does not open the way: the index's mapping records the model
    let (s, _) = call(reqwest::Method::DELETE, format!("{url}/_sidecar/pipeline/{name}"), None).await;
    assert_eq!(s, 200);
    let (s, v) = put(&url, &name, &definition(&v1, "all-MiniLM-L6-v2-int8")).await;
    assert_eq!(s, 409, "{v}");
    assert!(v["error"]["reason"].as_str().unwrap().contains("recorded in its mapping"), "{v}");
    let (s, v) = put(&url, &name, &definition(&v1, "all-MiniLM-L6-v2")).await;
    assert_eq!(s, 201, "the recorded model again: {v}");
    // a new vector field for the new model is fine: the mapping gets it
    let mut two = definition(&v1, "all-MiniLM-L6-v2");
    two["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"source": ["title", "text"], "vector": "v_int8", "model": "all-MiniLM-L6-v2-int8"}));
    let (s, v) = put(&url, &name, &two).await;
    assert_eq!((s, v["fields_added"].clone()), (200, json!(["v_int8"])), "{v}");
    // blue/green: a job with the new definition, ending on the alias
    let alias = format!("{name}-live");
    let req = json!({"pipeline": name, "source": v1, "definition": definition(&alias, "all-MiniLM-L6-v2-int8"), "alias": alias});
    let (s, v) = call(reqwest::Method::POST, format!("{url}/_jobs/reindex"), Some(req)).await;
    assert_eq!(s, 202, "{v}");
    let job = wait_job(&url, v["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "done", "{job}");
    let (_, got) = call(reqwest::Method::GET, format!("{url}/_sidecar/pipeline/{name}"), None).await;
    let def = &got[&name]["definition"];
    assert_eq!(
        (def["model"].as_str(), def["index"].as_str()),
        (Some("all-MiniLM-L6-v2-int8"), Some(alias.as_str())),
        "{got}"
    );
    let after: Value = engine().get_json(&format!("/{alias}/_doc/d1")).await.unwrap();
    let (old, new) = (vector(&before, "text_vector"), vector(&after["_source"], "text_vector"));
    let want =
        common::embed_model(&url, Some("all-MiniLM-L6-v2-int8"), &["Cells\nStem cells divide.".to_string()], "passage")
            .await
            .remove(0);
    assert!(common::cosine(&new, &want) > 0.9999, "the new index holds the new model's vectors");
    assert!(common::cosine(&old, &new) < 0.9999, "and they are not the old model's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_one_version_get_exactly_one_409() {
    let (url, _stop) = in_process(&[&default_model_dir()]).await;
    let name = unique_index("cas");
    let (s, v) = put(&url, &name, &definition(&name, "all-MiniLM-L6-v2")).await;
    assert_eq!(s, 201, "{v}");
    let (seq, term) = (v["_seq_no"].as_u64().unwrap(), v["_primary_term"].as_u64().unwrap());
    let at = |s: u64| format!("{url}/_sidecar/pipeline/{name}?if_seq_no={s}&if_primary_term={term}");
    let mut body = definition(&name, "all-MiniLM-L6-v2");
    body["search"] = json!({"auto_hybrid": true});
    let (r1, r2) = tokio::join!(
        call(reqwest::Method::PUT, at(seq), Some(body.clone())),
        call(reqwest::Method::PUT, at(seq), Some(body.clone()))
    );
    let mut statuses = [r1.0, r2.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{r1:?} {r2:?}");
    let conflict = if r1.0 == 409 { &r1.1 } else { &r2.1 };
    assert!(conflict["error"]["reason"].as_str().unwrap().contains("GET it and retry"), "{conflict}");
    // a stale version is refused too; a delete at a stale version as well
    let (s, _) = call(reqwest::Method::PUT, at(seq), Some(body)).await;
    assert_eq!(s, 409);
    let (s, _) = call(reqwest::Method::DELETE, at(seq), None).await;
    assert_eq!(s, 409);
    // half a version is a 400, a bad definition a 400 naming the key
    let (s, v) = call(
        reqwest::Method::PUT,
        format!("{url}/_sidecar/pipeline/{name}?if_seq_no=1"),
        Some(definition(&name, "all-MiniLM-L6-v2")),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let mut bad = definition(&name, "all-MiniLM-L6-v2");
    bad["fields"][0]["vector"] = json!("title");
    let (s, v) = put(&url, &name, &bad).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["reason"].as_str().unwrap().contains("fields[0].vector"), "{v}");
    // another pipeline on the same index: 409
    let (s, v) = put(&url, &unique_index("dup"), &definition(&name, "all-MiniLM-L6-v2")).await;
    assert_eq!(s, 409, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_the_pipelines_model_reports_it_and_refuses_its_writes() {
    // a copy of the default model under a name only sidecar A has
    let copy = tempfile::tempdir().unwrap();
    let src = default_model_dir();
    for f in ["model.onnx", "tokenizer.json"] {
        std::os::unix::fs::symlink(src.join(f), copy.path().join(f)).unwrap();
    }
    let model_name = unique_index("minilm-copy");
    let manifest = std::fs::read_to_string(src.join("model.toml"))
        .unwrap()
        .replace("name = \"all-MiniLM-L6-v2\"", &format!("name = \"{model_name}\""));
    std::fs::write(copy.path().join("model.toml"), manifest).unwrap();
    let (a, b) = tokio::task::block_in_place(|| (sidecar(&[&src, copy.path()], &[]), sidecar(&[&src], &[])));
    let name = unique_index("nomodel");
    let (s, v) = put(&a.url, &name, &definition(&name, &model_name)).await;
    assert_eq!(s, 201, "{v}");
    // B cannot put it itself
    let (s, v) = put(&b.url, &unique_index("nomodel-b"), &definition(&unique_index("x"), &model_name)).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["reason"].as_str().unwrap().contains("cannot be served by this sidecar"), "{v}");
    let reported = || async {
        let (_, r) = call(reqwest::Method::GET, format!("{}/readyz", b.url), None).await;
        r["pipelines"]["unavailable"][&name].as_str().is_some_and(|w| w.contains(&model_name))
    };
    wait_for("B reports the pipeline it cannot serve", Duration::from_secs(5), reported).await;
    let (s, r) = call(reqwest::Method::GET, format!("{}/readyz", b.url), None).await;
    assert_eq!(s, 200, "B stays ready for everything else: {r}");
    let (s, v) =
        call(reqwest::Method::PUT, format!("{}/{name}/_doc/1", b.url), Some(json!({"title": "t", "text": "x"}))).await;
    assert_eq!(s, 503, "{v}");
    assert!(v["error"]["reason"].as_str().unwrap().contains(&model_name), "{v}");
    let bulk = format!("{}\n{}\n", json!({"index": {"_index": name, "_id": "2"}}), json!({"title": "t", "text": "x"}));
    let r = common::post_ndjson(&format!("{}/_bulk", b.url), bulk).await;
    assert_eq!(r["items"][0]["index"]["status"], 503, "{r}");
    let (s, v) =
        call(reqwest::Method::POST, format!("{}/search", b.url), Some(json!({"index": name, "query": "x"}))).await;
    assert_eq!(s, 503, "{v}");
    let (c, _) =
        engine().get_json::<Value>(&format!("/{name}/_count")).await.map(|v| (v["count"].as_u64(), ())).unwrap();
    assert_eq!(c, Some(0), "nothing was written without its vector");
    // A serves it
    let src = write_and_read(&a.url, &name, "1", json!({"title": "t", "text": "x"})).await;
    assert_eq!(vector(&src, "text_vector").len(), 384);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_chunking_re_embeds_unchanged_text() {
    let (url, _stop) = in_process(&[&default_model_dir()]).await;
    let name = unique_index("rechunk");
    let mut def = definition(&name, "all-MiniLM-L6-v2");
    def["chunking"] = json!({"max_tokens": 64, "overlap": 8});
    let (s, v) = put(&url, &name, &def).await;
    assert_eq!(s, 201, "{v}");
    let doc = scifact(1).remove(0);
    let doc = json!({"title": doc["title"], "text": doc["text"]});
    let before = write_and_read(&url, &name, "1", doc.clone()).await;
    def["chunking"] = json!({"max_tokens": 32, "overlap": 8});
    let (s, v) = put(&url, &name, &def).await;
    assert_eq!(s, 200, "{v}");
    let after = write_and_read(&url, &name, "1", doc).await;
    let n = |v: &Value| v["passages"].as_array().map_or(0, Vec::len);
    assert!(n(&after) > n(&before), "smaller passages, more of them: {} then {}", n(&before), n(&after));
    assert_ne!(before["content_hash"], after["content_hash"], "the hash covers the chunking");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_name_finds_its_owner() {
    let (url, _stop) = in_process(&[&default_model_dir(), &int8_model_dir()]).await;
    let e = engine();
    let u = unique_index("own");
    let send = |m: reqwest::Method, path: String, body: Value| {
        let e = e.clone();
        async move { e.send(EngineRequest::new(m, path).json(&body).passthrough()).await.unwrap() }
    };
    // index
    let i1 = format!("{u}-i1");
    assert_eq!(put(&url, &format!("{u}-p1"), &definition(&i1, "all-MiniLM-L6-v2")).await.0, 201);
    assert_eq!(
        vector(&write_and_read(&url, &i1, "a", json!({"text": "index"})).await, "text_vector").len(),
        384,
        "index"
    );
    // alias
    let alias = format!("{u}-alias");
    send(reqwest::Method::POST, "/_aliases".into(), json!({"actions": [{"add": {"index": i1, "alias": alias}}]})).await;
    assert_eq!(
        vector(&write_and_read(&url, &alias, "b", json!({"text": "alias"})).await, "text_vector").len(),
        384,
        "alias"
    );
    // write alias over the pipeline index and a plain one: writes embed, a semantic read is refused
    let plain = format!("{u}-plain");
    send(reqwest::Method::PUT, format!("/{plain}"), json!({"settings": {"number_of_replicas": 0}})).await;
    let wa = format!("{u}-wa");
    send(
        reqwest::Method::POST,
        "/_aliases".into(),
        json!({"actions": [
        {"add": {"index": i1, "alias": wa, "is_write_index": true}}, {"add": {"index": plain, "alias": wa}}]}),
    )
    .await;
    let src = write_and_read(&url, &wa, "c", json!({"text": "write alias"})).await;
    assert_eq!(vector(&src, "text_vector").len(), 384, "write alias");
    let (s, v) =
        call(reqwest::Method::POST, format!("{url}/{wa}/_search"), Some(json!({"query": {"hybrid": {"query": "x"}}})))
            .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["reason"].as_str().unwrap().contains("no pipeline owns"), "{v}");
    let (s, v) =
        call(reqwest::Method::POST, format!("{url}/{wa}/_search"), Some(json!({"query": {"match_all": {}}}))).await;
    assert_eq!(s, 200, "a plain read over both is the engine's: {v}");
    // date math naming today's index
    let today = format!("{u}-dm-{}", chrono_today());
    assert_eq!(put(&url, &format!("{u}-pdm"), &definition(&today, "all-MiniLM-L6-v2")).await.0, 201);
    let dm = format!("%3C{u}-dm-%7Bnow%2Fd%7BYYYY.MM.dd%7D%7D%3E");
    let src = write_and_read(&url, &dm, "d", json!({"text": "date math"})).await;
    assert_eq!(vector(&src, "text_vector").len(), 384, "date math");
    data_stream(&url, &u).await;
    // wildcard and comma list: two pipeline indices of one model are searched together
    let i2 = format!("{u}-i2");
    assert_eq!(put(&url, &format!("{u}-p2"), &definition(&i2, "all-MiniLM-L6-v2")).await.0, 201);
    write_and_read(&url, &i2, "e", json!({"text": "second index"})).await;
    for names in [format!("{u}-i*"), format!("{i1},{i2}")] {
        let (s, v) = call(
            reqwest::Method::POST,
            format!("{url}/search"),
            Some(json!({"index": names, "query": "index", "k": 10, "size": 10})),
        )
        .await;
        assert_eq!(s, 200, "{names}: {v}");
        let from: std::collections::BTreeSet<&str> =
            v["hits"]["hits"].as_array().unwrap().iter().filter_map(|h| h["_index"].as_str()).collect();
        assert!(from.contains(i1.as_str()) && from.contains(i2.as_str()), "{names}: {v}");
    }
    // a comma list over two models, or over pipeline and plain indices, is refused with the reason
    let i3 = format!("{u}-i3");
    assert_eq!(put(&url, &format!("{u}-p3"), &definition(&i3, "all-MiniLM-L6-v2-int8")).await.0, 201);
    let (s, v) = call(
        reqwest::Method::POST,
        format!("{url}/search"),
        Some(json!({"index": format!("{i1},{i3}"), "query": "x"})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let reason = v["error"]["reason"].as_str().unwrap();
    assert!(reason.contains("all-MiniLM-L6-v2-int8") && reason.contains("one query vector"), "{reason}");
    let (s, v) = call(
        reqwest::Method::POST,
        format!("{url}/search"),
        Some(json!({"index": format!("{i1},{plain}"), "query": "x"})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
}

/// A data stream a template makes; the pipeline adds its vector field to the mapping, and a
/// `create` through the stream's name gets its vector.
async fn data_stream(url: &str, u: &str) {
    let e = engine();
    let send = |m: reqwest::Method, path: String, body: Value| {
        let e = e.clone();
        async move { e.send(EngineRequest::new(m, path).json(&body).passthrough()).await.unwrap() }
    };
    let ds = format!("{u}-ds");
    let mut settings = json!({"number_of_replicas": 0});
    if !on_elasticsearch() {
        settings["index.knn"] = json!(true);
    }
    let r = send(reqwest::Method::PUT, format!("/_index_template/{u}-t"), json!({"index_patterns": [format!("{ds}*")], "data_stream": {}, "priority": 500,
        "template": {"settings": settings, "mappings": {"properties": {"@timestamp": {"type": "date"}, "text": {"type": "text"}}}}})).await;
    assert!(r.status.is_success(), "{}", String::from_utf8_lossy(&r.body));
    let r = send(reqwest::Method::PUT, format!("/_data_stream/{ds}"), json!({})).await;
    if matches!(r.status.as_u16(), 400 | 405) && String::from_utf8_lossy(&r.body).contains("uri [/_data_stream/") {
        common::not_on_this_engine("every_kind_of_name_finds_its_owner (data stream)", "this engine build has no data streams module (the local Elasticsearch from Maven Central jars lacks x-pack's)");
        return;
    }
    assert!(r.status.is_success(), "{}", String::from_utf8_lossy(&r.body));
    let mut dsdef = definition(&ds, "all-MiniLM-L6-v2");
    dsdef["fields"] = json!([{"source": ["text"], "vector": "text_vector"}]);
    let (s, v) = put(url, &format!("{u}-pds"), &dsdef).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["fields_added"], json!(["text_vector"]), "{v}");
    let bulk = format!(
        "{}\n{}\n",
        json!({"create": {"_index": ds}}),
        json!({"@timestamp": "2026-12-07T00:00:00Z", "text": "data stream"})
    );
    let r = common::post_ndjson(&format!("{url}/_bulk?refresh=true"), bulk).await;
    assert_eq!(r["errors"], false, "{r}");
    let got: Value = e.get_json(&format!("/{ds}/_search?q=text:stream")).await.unwrap();
    assert_eq!(vector(&got["hits"]["hits"][0]["_source"], "text_vector").len(), 384, "data stream: {got}");
}

/// Today's date (UTC) as the engines' date math writes it by default for `{now/d}`: YYYY.MM.dd.
fn chrono_today() -> String {
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 86_400;
    // civil date from days since 1970-01-01 (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}.{m:02}.{d:02}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_puts_gets_lists_and_deletes_directly_and_through_a_sidecar() {
    let model = default_model_dir();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_index("cli");
    let file = dir.path().join("p.toml");
    std::fs::write(&file, format!("name = '{name}'\nindex = '{name}'\nmodel = 'all-MiniLM-L6-v2'\n[[fields]]\nsource = ['text']\nvector = 'v'\n")).unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_semantic-sidecar"))
            .arg("pipeline")
            .args(args)
            .env("SIDECAR__ENGINE__URLS", engine_url())
            .env("ORT_DYLIB_PATH", ort_library())
            .env("SIDECAR__ENCODER__MODELS", &model)
            .output()
            .unwrap();
        let stdout: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.success(), stdout, String::from_utf8_lossy(&out.stderr).to_string())
    };
    let path = file.to_str().unwrap();
    let (ok, v, err) = tokio::task::block_in_place(|| cli(&["put", path]));
    assert!(ok, "{err}");
    assert_eq!((v["result"].as_str(), v["index_created"].as_bool()), (Some("created"), Some(true)), "{v}");
    let (ok, v, err) = tokio::task::block_in_place(|| cli(&["get", &name]));
    assert!(ok, "{err}");
    assert_eq!(v[&name]["definition"]["index"], name.as_str(), "{v}");
    let (ok, v, _) = tokio::task::block_in_place(|| cli(&["list"]));
    assert!(ok && v["pipelines"].get(&name).is_some(), "{v}");
    // a stale version is refused with the store's reason
    let (ok, _, err) =
        tokio::task::block_in_place(|| cli(&["put", path, "--if-seq-no", "0", "--if-primary-term", "99"]));
    assert!(!ok && err.contains("changed since that version"), "{err}");
    // through a sidecar with a key: the admin API
    let keys = r#"[{"name": "ops", "key": "ops-secret-0123456789", "scope": "admin", "indices": ["*"]}]"#;
    let (url, _stop) = in_process_with(&[&model], &[("SIDECAR__SERVER__API_KEYS", keys)]).await;
    let (ok, _, err) = tokio::task::block_in_place(|| cli(&["--sidecar", &url, "get", &name]));
    assert!(!ok && err.contains("401"), "no key, no pipelines: {err}");
    let (ok, v, err) =
        tokio::task::block_in_place(|| cli(&["--sidecar", &url, "--api-key", "ops-secret-0123456789", "get", &name]));
    assert!(ok, "{err}");
    assert_eq!(v[&name]["served"], true, "{v}");
    let (ok, v, err) = tokio::task::block_in_place(|| {
        cli(&["--sidecar", &url, "--api-key", "ops-secret-0123456789", "delete", &name])
    });
    assert!(ok && v["acknowledged"] == true, "{err}");
    let (ok, _, err) = tokio::task::block_in_place(|| cli(&["get", &name]));
    assert!(!ok && err.contains("no pipeline"), "{err}");
}
