//! `semantic-sidecar bench search`: the latency `/search` (hybrid) adds over the bare engine
//! queries it issues, at 1 and N concurrent clients, and again while a bulk embedding load runs.
//!
//! For every query the exact `_msearch` the sidecar sends is built with the same code
//! (`query::build`) from the same query vector, and sent straight to the engine: that is the
//! baseline. Then the same queries go through `POST /search` on an in-process server (encode on
//! the interactive lane + the `_msearch` + fusion). Added latency = sidecar − engine, per
//! percentile, from the same run. The bulk load is clients posting 32 SciFact abstracts at a time
//! to `/embed` (the bulk lane), which must not delay the query encodes.
//!
//! The `/search` clients and the bulk load run in child processes (`bench search-load`, the same
//! executable), so their CPU is not taken from the sidecar unmeasured: each row prints the share of
//! the machine's cores the load generator, the sidecar process and the whole machine used.
//!
//! A benchmark, not a test: it prints one JSON object per measurement and a markdown table.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{child_json, cpu_share, machine_busy, process_cpu_seconds};

use crate::encoder::{EncodeOptions, Input, Lane, Pooled, TextKind};
use crate::engine::path::EnginePath;
use crate::engine::{EngineClient, EngineRequest};
use crate::http::{self, AppState};
use crate::query::build;
use crate::query::request::{plan, SearchRequest, Target};
use crate::settings::Settings;
use crate::telemetry::Metrics;
use crate::types::pipeline::Pipeline;

/// What to measure.
pub struct SearchBenchOptions {
    pub pipeline: PathBuf,
    pub queries: PathBuf,
    pub docs: PathBuf,
    pub max_queries: usize,
    pub clients: usize,
    pub rounds: usize,
    /// Query-vector cache entries (0, the default, for the headline: every query is encoded).
    pub query_cache: usize,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Latencies of one measurement, in ms, each sorted: what the client saw, and what of that was
/// not spent in the engine round trips the sidecar made (from its `Server-Timing` header).
struct Latencies {
    seen: Vec<f64>,
    added: Vec<f64>,
}

/// Runs `work(i)` for i in 0..n with `clients` concurrent workers. `work` returns the engine's
/// share of its request in ms (0 when the request went to the engine itself: only `seen` counts).
async fn timed<F, Fut>(n: usize, clients: usize, work: F) -> anyhow::Result<Latencies>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<f64>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let work = Arc::new(work);
    let mut handles = Vec::new();
    for _ in 0..clients {
        let (next, work) = (next.clone(), work.clone());
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = Instant::now();
                let engine = work(i).await?;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                lat.push((ms, ms - engine));
            }
            anyhow::Ok(lat)
        }));
    }
    let (mut seen, mut added) = (Vec::new(), Vec::new());
    for h in handles {
        for (s, a) in h.await?? {
            seen.push(s);
            added.push(a);
        }
    }
    seen.sort_by(f64::total_cmp);
    added.sort_by(f64::total_cmp);
    Ok(Latencies { seen, added })
}

/// The `engine` entry of a `Server-Timing` header, in ms.
fn engine_ms(headers: &reqwest::header::HeaderMap) -> Option<f64> {
    let v = headers.get("server-timing")?.to_str().ok()?;
    v.split(',').find_map(|part| part.trim().strip_prefix("engine;dur=")?.parse().ok())
}

fn texts(path: &PathBuf, max: usize, docs: bool) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            let t = v["text"].as_str().unwrap_or("").to_string();
            if docs {
                format!("{}\n{t}", v["title"].as_str().unwrap_or(""))
            } else {
                t
            }
        })
        .take(max)
        .collect())
}

/// `(sum, count)` of every `search_stage_seconds` stage and of the encoder's per-lane queue wait
/// and batch run histograms, from a `/metrics` text.
fn stage_sums(metrics: &str) -> std::collections::BTreeMap<String, (f64, f64)> {
    let mut out = std::collections::BTreeMap::<String, (f64, f64)>::new();
    for line in metrics.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let label =
            |key: &str| name.split(&format!("{key}=\"")).nth(1).and_then(|r| r.split('"').next()).map(str::to_string);
        let key = if name.starts_with("sidecar_search_stage_seconds_") {
            label("stage")
        } else if name.starts_with("sidecar_encoder_queue_wait_seconds_") {
            label("lane").map(|l| format!("encoder_queue_wait_{l}"))
        } else if name.starts_with("sidecar_encoder_batch_seconds_") {
            label("lane").map(|l| format!("encoder_batch_{l}"))
        } else {
            None
        };
        let Some(key) = key else { continue };
        let slot = out.entry(key).or_default();
        if name.contains("_sum{") {
            slot.0 += value;
        } else if name.contains("_count{") {
            slot.1 += value;
        }
    }
    out
}

/// Mean milliseconds per stage between two [`stage_sums`].
fn stage_means(
    before: &std::collections::BTreeMap<String, (f64, f64)>,
    after: &std::collections::BTreeMap<String, (f64, f64)>,
) -> Value {
    let mut m = serde_json::Map::new();
    for (k, (sum, count)) in after {
        let (s0, c0) = before.get(k).copied().unwrap_or_default();
        if count - c0 > 0.0 {
            m.insert(k.clone(), json!(((sum - s0) / (count - c0) * 1e5).round() / 100.0));
        }
    }
    Value::Object(m)
}

/// What a `bench search-load` child runs, sent as one JSON line on its stdin (so nothing of it
/// ever needs to be on a command line). `url` is the sidecar's base URL.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum LoadPlan {
    /// `searches` `/search` requests over these query texts from `clients` concurrent clients.
    Search { url: String, index: String, queries: Vec<String>, searches: usize, clients: usize },
    /// `clients` clients post these texts to `/embed`, 32 at a time, until the child's stdin closes.
    Bulk { url: String, texts: Vec<String>, clients: usize },
}

/// `semantic-sidecar bench search-load`: reads a [`LoadPlan`] line from stdin, runs it, and prints
/// one JSON line: the latencies (search mode) or texts embedded (bulk mode), the seconds, and this
/// process's CPU seconds.
pub fn search_load() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("reading the load plan from stdin")?;
    let plan: LoadPlan = serde_json::from_str(&line).context("parsing the load plan")?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();
    let mut out = rt.block_on(async move {
        match plan {
            LoadPlan::Search { url, index, queries, searches, clients } => {
                search_clients(&url, index, queries, searches, clients).await
            }
            LoadPlan::Bulk { url, texts, clients } => bulk_clients(&url, &texts, clients).await,
        }
    })?;
    out["seconds"] = json!(started.elapsed().as_secs_f64());
    out["cpu_seconds"] = json!(process_cpu_seconds() - cpu_before);
    println!("{out}");
    Ok(())
}

async fn search_clients(
    url: &str,
    index: String,
    queries: Vec<String>,
    searches: usize,
    clients: usize,
) -> anyhow::Result<Value> {
    anyhow::ensure!(!queries.is_empty() && clients > 0, "the load plan has no queries or no clients");
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let (queries, url) = (Arc::new(queries), Arc::new(format!("{url}/search")));
    let lat = timed(searches, clients, move |i| {
        let (c, u) = (client.clone(), url.clone());
        let body = json!({"index": index, "query": queries[i % queries.len()], "size": 10});
        async move {
            let r = c.post(u.as_str()).json(&body).send().await?;
            if !r.status().is_success() {
                bail!("/search answered {}", r.status());
            }
            let engine = engine_ms(r.headers()).context("/search sent no Server-Timing engine entry")?;
            r.bytes().await?;
            Ok(engine)
        }
    })
    .await?;
    Ok(json!({"seen": lat.seen, "added": lat.added}))
}

async fn bulk_clients(url: &str, texts: &[String], clients: usize) -> anyhow::Result<Value> {
    anyhow::ensure!(!texts.is_empty() && clients > 0, "the load plan has no texts or no clients");
    let stop = Arc::new(AtomicBool::new(false));
    let embedded = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let url = format!("{url}/embed");
    let mut loaders = Vec::new();
    for w in 0..clients {
        let (stop, embedded, client, url) = (stop.clone(), embedded.clone(), client.clone(), url.clone());
        let batch: Vec<String> = texts.iter().skip(w * 32).cycle().take(32).cloned().collect();
        loaders.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = client.post(&url).json(&json!({"inputs": batch, "truncate": true})).send().await;
                if r.is_ok_and(|r| r.status().is_success()) {
                    embedded.fetch_add(batch.len(), Ordering::Relaxed);
                }
            }
        }));
    }
    // runs until the parent closes our stdin
    tokio::task::spawn_blocking(|| std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new())).await??;
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        let _ = l.await;
    }
    Ok(json!({"texts": embedded.load(Ordering::Relaxed)}))
}

/// A `bench search-load` child with its plan written; drop `stdin` to end a bulk child.
struct Child {
    process: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
}

impl Child {
    fn spawn(plan: &LoadPlan) -> anyhow::Result<Child> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let exe = std::env::current_exe().context("finding the sidecar's own executable")?;
        let mut process = Command::new(exe)
            .args(["bench", "search-load"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the load generator")?;
        let mut stdin = process.stdin.take().context("the load generator's stdin")?;
        writeln!(stdin, "{}", serde_json::to_string(plan)?).context("sending the load plan")?;
        Ok(Child { process, stdin: Some(stdin) })
    }

    /// Closes stdin, waits for the child and returns the JSON line it printed.
    async fn finish(mut self) -> anyhow::Result<Value> {
        self.stdin.take();
        let out = tokio::task::spawn_blocking(move || self.process.wait_with_output())
            .await?
            .context("waiting for the load generator")?;
        child_json(out)
    }
}

/// Sorted milliseconds from a child's JSON array.
fn sorted_ms(v: &Value) -> Vec<f64> {
    let mut out: Vec<f64> = v.as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default();
    out.sort_by(f64::total_cmp);
    out
}

/// [`cpu_share`] in percent with one decimal.
fn share(cpu_seconds: f64, secs: f64) -> f64 {
    (cpu_share(cpu_seconds, secs) * 1000.0).round() / 10.0
}

pub fn bench_search(settings: &Settings, o: &SearchBenchOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(settings.clone(), o))
}

async fn run(mut settings: Settings, o: &SearchBenchOptions) -> anyhow::Result<()> {
    let p = Pipeline::load(&o.pipeline)?;
    crate::setup::add_pipeline_model(&mut settings, &p)?;
    settings.encoder.query_cache_entries = o.query_cache;
    let engine = EngineClient::new(&settings.engine)?;
    let info = engine.info().await?;
    let count: Value = engine.get_json(&EnginePath::at_index(&p.index)?.api("_count").build()).await?;
    let docs_in_index = count["count"].as_u64().unwrap_or(0);
    if docs_in_index == 0 {
        bail!("index `{}` is empty: fill it first (e.g. `semantic-sidecar eval --pipeline ...`)", p.index);
    }
    let metrics = Metrics::new();
    let probe = metrics.clone();
    let encoders = crate::setup::load_encoders(&settings, &metrics).await?;
    let encoder = encoders.get(Some(&p.model))?;
    let state =
        AppState::with_encoders(settings.clone(), engine.clone(), metrics, encoders).with_pipelines(vec![p.clone()])?;
    let (url, tx) = http::serve_local(state).await?;

    let queries = texts(&o.queries, o.max_queries, false)?;
    let abstracts = texts(&o.docs, 512, true)?;
    let bodies = msearch_bodies(&queries, &p, &encoder, &settings, info.dialect).await?;
    let searches = queries.len() * o.rounds;
    let index = p.index.clone();
    let (bodies, queries) = (Arc::new(bodies), Arc::new(queries));
    let bench = Bench { url, engine, index, bodies, queries, abstracts, probe, searches };
    bench.warm_up().await?;
    let mut rows = Vec::new();
    for (label, clients, load) in
        [("1 client", 1, false), ("N clients", o.clients, false), ("N clients + bulk load", o.clients, true)]
    {
        let row = bench.measure(label, clients, load).await?;
        println!("{row}");
        rows.push(row);
    }
    let _ = tx.send(());
    print_table(&rows, &p.index, docs_in_index, bench.queries.len(), o);
    Ok(())
}

/// The exact `_msearch` bodies `/search` sends for `queries`, built by the same code from the
/// same query vectors: the engine-direct baseline.
async fn msearch_bodies(
    queries: &[String],
    p: &Pipeline,
    encoder: &crate::encoder::Encoder,
    settings: &Settings,
    dialect: crate::engine::Dialect,
) -> anyhow::Result<Vec<Bytes>> {
    let mut bodies = Vec::new();
    for q in queries {
        let req: SearchRequest = serde_json::from_value(json!({"index": p.index, "query": q, "size": 10}))?;
        let pl = plan(req, Target::of(p), &p.search, &settings.search)?;
        let opts = EncodeOptions { kind: TextKind::Query, lane: Lane::Interactive, ..EncodeOptions::default() };
        let out = encoder.encode(vec![Input::Text(q.clone())], opts).await?;
        let Some(Pooled::Vector(v)) = out.outputs.into_iter().next() else { bail!("no vector") };
        let legs = [build::bm25_leg(&pl, pl.k), build::knn_leg(&pl, &v, dialect, pl.k)];
        bodies.push(Bytes::from(build::msearch(&pl, &legs)));
    }
    Ok(bodies)
}

/// One benchmark run's fixed parts: the in-process sidecar, the engine, the queries and their
/// engine-direct bodies.
struct Bench {
    url: String,
    engine: EngineClient,
    index: String,
    bodies: Arc<Vec<Bytes>>,
    queries: Arc<Vec<String>>,
    /// What the bulk load embeds.
    abstracts: Vec<String>,
    /// The sidecar's metrics, read for the per-stage means.
    probe: Metrics,
    /// Searches per measurement (queries × rounds).
    searches: usize,
}

impl Bench {
    /// Untimed: the engine's caches and JIT, the sessions' first runs.
    async fn warm_up(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
        for i in 0..self.queries.len() {
            let body = json!({"index": self.index, "query": self.queries[i], "size": 10});
            client.post(format!("{}/search", self.url)).json(&body).send().await?.bytes().await?;
            let req =
                EngineRequest::new(reqwest::Method::POST, "/_msearch").ndjson(self.bodies[i].clone()).idempotent(true);
            self.engine.send(req).await?;
        }
        Ok(())
    }

    /// One row: the engine-direct baseline, then `/search` from a child process, at `clients`
    /// concurrent clients, with the bulk load running beside it when `load`.
    async fn measure(&self, label: &str, clients: usize, load: bool) -> anyhow::Result<Value> {
        let n = self.searches;
        let bulk = if load {
            let plan = LoadPlan::Bulk { url: self.url.clone(), texts: self.abstracts.clone(), clients: 2 };
            let child = Child::spawn(&plan)?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            Some((child, Instant::now()))
        } else {
            None
        };
        let (e, b) = (self.engine.clone(), self.bodies.clone());
        let direct = timed(n, clients, move |i| {
            let (e, body) = (e.clone(), b[i % b.len()].clone());
            async move {
                e.send(EngineRequest::new(reqwest::Method::POST, "/_msearch").ndjson(body).idempotent(true)).await?;
                Ok(0.0)
            }
        })
        .await?;
        let plan = LoadPlan::Search {
            url: self.url.clone(),
            index: self.index.clone(),
            queries: self.queries.to_vec(),
            searches: n,
            clients,
        };
        let before = stage_sums(&self.probe.render());
        let (own_before, busy_before) = (process_cpu_seconds(), machine_busy());
        let started = Instant::now();
        let out = Child::spawn(&plan)?.finish().await?;
        let secs = started.elapsed().as_secs_f64();
        let own = process_cpu_seconds() - own_before;
        let busy = machine_busy().zip(busy_before).map(|(a, b)| a - b);
        let stages = stage_means(&before, &stage_sums(&self.probe.render()));
        let sidecar = Latencies { seen: sorted_ms(&out["seen"]), added: sorted_ms(&out["added"]) };
        anyhow::ensure!(sidecar.seen.len() == n, "the load generator timed {} of {n} searches", sidecar.seen.len());
        let (bulk_rate, bulk_share) = match bulk {
            Some((child, since)) => {
                let b = child.finish().await?;
                let f = |k: &str| b[k].as_f64().unwrap_or(0.0);
                (f("texts") / since.elapsed().as_secs_f64(), share(f("cpu_seconds"), f("seconds")))
            }
            None => (0.0, 0.0),
        };
        Ok(json!({
            "measurement": label, "clients": clients, "searches": n, "bulk_texts_per_s": bulk_rate,
            "engine_p50_ms": pct(&direct.seen, 50.0), "engine_p99_ms": pct(&direct.seen, 99.0),
            "sidecar_p50_ms": pct(&sidecar.seen, 50.0), "sidecar_p99_ms": pct(&sidecar.seen, 99.0),
            "added_p50_ms": pct(&sidecar.added, 50.0),
            "added_p99_ms": pct(&sidecar.added, 99.0),
            // the sidecar's own time, as the fused path's target counts it: added latency
            // minus the query's ONNX Runtime time
            "own_p50_ms": pct(&sidecar.added, 50.0) - stages["ort_run"].as_f64().unwrap_or(0.0),
            "added_vs_direct_p50_ms": pct(&sidecar.seen, 50.0) - pct(&direct.seen, 50.0),
            "added_vs_direct_p99_ms": pct(&sidecar.seen, 99.0) - pct(&direct.seen, 99.0),
            "searches_per_s": n as f64 / secs,
            "cpu_share_pct": {
                "load_generator": share(out["cpu_seconds"].as_f64().unwrap_or(0.0), secs),
                "bulk_load_generator": bulk_share,
                "sidecar": share(own, secs),
                "machine": busy.map(|b| share(b, secs)),
            },
            "stage_mean_ms": stages,
        }))
    }
}

/// The markdown table of the rows, under a line saying what was measured.
fn print_table(rows: &[Value], index: &str, docs_in_index: u64, queries: usize, o: &SearchBenchOptions) {
    println!(
        "\nindex `{}`: {docs_in_index} documents; {} queries × {} rounds; query cache {}\n\nadded = a request's latency at the client minus the engine round trip the sidecar made for it (`Server-Timing`); own = added p50 minus the mean ONNX Runtime time of the query; vs direct = /search percentile minus the percentile of the same `_msearch` sent straight to the engine before it\n\n| measurement | clients | engine direct p50 / p99 ms | /search p50 / p99 ms | added p50 / p99 ms | own p50 ms | vs direct p50 / p99 ms | searches/s | bulk texts/s | CPU % load gen / sidecar / machine |\n|---|---|---|---|---|---|---|---|---|---|",
        index,
        queries,
        o.rounds,
        if o.query_cache == 0 { "off".to_string() } else { format!("{} entries", o.query_cache) }
    );
    for r in rows {
        let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
        println!(
            "| {} | {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.2} | {:.1} / {:.1} | {:.1} | {:.1} | {} / {} / {} |",
            r["measurement"].as_str().unwrap_or(""),
            r["clients"],
            f("engine_p50_ms"),
            f("engine_p99_ms"),
            f("sidecar_p50_ms"),
            f("sidecar_p99_ms"),
            f("added_p50_ms"),
            f("added_p99_ms"),
            f("own_p50_ms"),
            f("added_vs_direct_p50_ms"),
            f("added_vs_direct_p99_ms"),
            f("searches_per_s"),
            f("bulk_texts_per_s"),
            r["cpu_share_pct"]["load_generator"],
            r["cpu_share_pct"]["sidecar"],
            r["cpu_share_pct"]["machine"]
        );
    }
}
