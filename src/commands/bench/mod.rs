//! `semantic-sidecar bench encode`: encoder throughput on real texts, in one run.
//!
//! Measures, on the same texts: naive fixed batches (32 inputs in file order, one batch at a time)
//! against the token-budget, length-grouped queue, for each model given (fp32 and int8); and 32
//! concurrent HTTP clients sending 1–4 short texts each to `/embed` against the offline rate on
//! the same short texts. Prints one JSON object per measurement; `scripts/bench-encode` adds the
//! Python baselines (sentence-transformers, the matmul ceiling) and the ratio table.
//!
//! A benchmark, not a test: numbers vary with the machine and its load, which is why every ratio
//! is taken against a baseline measured in the same run.

pub mod search;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde_json::{json, Value};

use super::files::read_corpus;
use crate::encoder::{EncodeOptions, Encoder, EncoderSet, Input, Lane, TextKind};
use crate::engine::EngineClient;
use crate::http::{self, AppState};
use crate::settings::Settings;
use crate::setup::resolve_model;
use crate::telemetry::Metrics;

/// What to measure.
pub struct BenchOptions {
    pub models: Vec<String>,
    pub docs: PathBuf,
    pub queries: PathBuf,
    pub max_docs: usize,
    pub max_queries: usize,
    pub clients: usize,
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

fn emit(v: Value) {
    println!("{v}");
}

fn load_texts(path: &Path, max: usize, docs: bool) -> anyhow::Result<Vec<String>> {
    let reader =
        std::io::BufReader::new(std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?);
    let mut out = Vec::new();
    for line in std::io::BufRead::lines(reader).take(max) {
        let v: Value = serde_json::from_str(&line?)?;
        let text = v["text"].as_str().unwrap_or_default();
        let title = v["title"].as_str().unwrap_or_default();
        out.push(if docs && !title.is_empty() { format!("{title} {text}") } else { text.to_string() });
    }
    if out.is_empty() {
        // plain text files work too
        out = read_corpus(path, "text")?.texts.into_iter().take(max).collect();
    }
    Ok(out)
}

fn opts(lane: Lane) -> EncodeOptions {
    EncodeOptions { kind: TextKind::Raw, normalize: None, truncate: true, lane, wait_for_room: true, cache: false }
}

/// Naive: fixed batches of 32 in file order, one at a time. Returns (seconds, real tokens).
async fn naive(enc: &Encoder, texts: &[String]) -> anyhow::Result<(f64, usize)> {
    let started = Instant::now();
    let mut tokens = 0;
    for chunk in texts.chunks(32) {
        let out = enc.encode(chunk.iter().cloned().map(Input::Text).collect(), opts(Lane::Bulk)).await?;
        tokens += out.tokens.iter().sum::<usize>();
    }
    Ok((started.elapsed().as_secs_f64(), tokens))
}

/// The queue as designed: the whole set as bulk jobs of 512, two in flight.
async fn grouped(enc: Arc<Encoder>, texts: &[String]) -> anyhow::Result<(f64, usize)> {
    use futures_util::stream::{self, StreamExt};
    let started = Instant::now();
    let chunks: Vec<Vec<Input>> = texts.chunks(512).map(|c| c.iter().cloned().map(Input::Text).collect()).collect();
    let results: Vec<_> = stream::iter(chunks)
        .map(|c| {
            let enc = enc.clone();
            async move { enc.encode(c, opts(Lane::Bulk)).await }
        })
        .buffered(2)
        .collect()
        .await;
    let mut tokens = 0;
    for r in results {
        tokens += r?.tokens.iter().sum::<usize>();
    }
    Ok((started.elapsed().as_secs_f64(), tokens))
}

fn rate(name: &str, model: &str, texts: usize, secs: f64, tokens: usize) -> Value {
    json!({
        "measure": name, "model": model, "texts": texts, "seconds": secs, "tokens": tokens,
        "texts_per_s": texts as f64 / secs, "tokens_per_s": tokens as f64 / secs, "peak_rss_mb": peak_rss_mb(),
    })
}

/// (batches, inputs, real tokens, padded token slots) summed over every model from the encoder metrics.
fn batch_stats(metrics: &Metrics) -> (f64, f64, f64, f64) {
    let text = metrics.render();
    let sum = |prefix: &str| {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum::<f64>()
    };
    (
        sum("sidecar_encoder_batch_size_count"),
        sum("sidecar_encoder_batch_size_sum"),
        sum("sidecar_encoder_tokens_total"),
        sum("sidecar_encoder_padded_tokens_total"),
    )
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat` (0 elsewhere).
pub fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // the fields after the command name, which is in parentheses and may hold spaces
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat(5): 12 and 13 after the state field
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds every core of the machine has been busy (not idle or iowait), from `/proc/stat`.
pub fn machine_busy() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<f64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).unwrap_or(&0.0);
    Some((total - idle) / 100.0)
}

/// Runs `semantic-sidecar bench load` against `url` in a child process and returns what it printed.
async fn load_in_child(url: &str, queries: &Path, max: usize, clients: usize) -> anyhow::Result<Value> {
    let exe = std::env::current_exe().context("finding the sidecar's own executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["bench", "load", "--url", url, "--clients", &clients.to_string(), "--max-queries", &max.to_string()])
        .arg("--queries")
        .arg(queries)
        .stderr(std::process::Stdio::inherit());
    let out = tokio::task::spawn_blocking(move || cmd.output()).await?.context("running the load generator")?;
    child_json(out)
}

/// The JSON line a load-generator child printed last, once it exited successfully.
pub fn child_json(out: std::process::Output) -> anyhow::Result<Value> {
    anyhow::ensure!(out.status.success(), "the load generator failed: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("the load generator printed `{last}`"))
}

/// CPU seconds as a share (0–1) of every core of the machine over `secs` of wall time.
pub fn cpu_share(cpu_seconds: f64, secs: f64) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    cpu_seconds / (secs * cores)
}

/// `semantic-sidecar bench load`: `clients` concurrent HTTP clients posting 1–4 of the texts at a
/// time to `url` (an `/embed` endpoint) until every text was sent once. Prints one JSON line:
/// texts sent, seconds, and this process's CPU seconds.
pub fn bench_load(url: &str, queries: &Path, max: usize, clients: usize) -> anyhow::Result<()> {
    let texts = Arc::new(load_texts(queries, max, false)?);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let cpu_before = process_cpu_seconds();
    let (total, secs) = rt.block_on(async {
        let next = Arc::new(AtomicUsize::new(0));
        let client = reqwest::Client::new();
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (texts, next, client, url) = (texts.clone(), next.clone(), client.clone(), url.to_string());
                tokio::spawn(async move {
                    let mut sent = 0usize;
                    let mut n = 1 + c % 4;
                    loop {
                        let start = next.fetch_add(n, Ordering::Relaxed);
                        if start >= texts.len() {
                            return anyhow::Ok(sent);
                        }
                        let batch: Vec<&String> = texts[start..(start + n).min(texts.len())].iter().collect();
                        let r = client.post(&url).json(&json!({"inputs": batch})).send().await?;
                        anyhow::ensure!(r.status().is_success(), "HTTP {}", r.status());
                        r.bytes().await?;
                        sent += batch.len();
                        n = 1 + (n + c) % 4;
                    }
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await??;
        }
        anyhow::Ok((total, started.elapsed().as_secs_f64()))
    })?;
    emit(
        json!({"measure": "load", "texts": total, "seconds": secs, "cpu_seconds": process_cpu_seconds() - cpu_before}),
    );
    Ok(())
}

/// Runs every measurement and prints one JSON line each.
pub fn bench_encode(settings: &Settings, o: &BenchOptions) -> anyhow::Result<()> {
    let docs = load_texts(&o.docs, o.max_docs, true)?;
    let queries = load_texts(&o.queries, o.max_queries, false)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let metrics = Metrics::new();
    emit(json!({"measure": "setup", "docs": docs.len(), "queries": queries.len(),
                "intra_threads": settings.encoder.effective_intra_threads(), "max_batch_tokens": settings.encoder.max_batch_tokens}));
    let mut first: Option<Arc<Encoder>> = None;
    for model in &o.models {
        let dir = resolve_model(settings, model)?;
        let name = dir.manifest.name.clone();
        let enc = Arc::new(Encoder::load_model(dir, &settings.encoder, &metrics.encoder)?);
        rt.block_on(async {
            // warm-up: first runs allocate arenas and pick kernels
            enc.encode(docs.iter().take(16).cloned().map(Input::Text).collect(), opts(Lane::Bulk)).await?;
            let (s, t) = naive(&enc, &docs).await?;
            emit(rate("docs_naive_batch32", &name, docs.len(), s, t));
            let (s, t) = grouped(enc.clone(), &docs).await?;
            emit(rate("docs_grouped_queue", &name, docs.len(), s, t));
            let (s, t) = grouped(enc.clone(), &queries).await?;
            emit(rate("queries_offline", &name, queries.len(), s, t));
            anyhow::Ok(())
        })?;
        first.get_or_insert(enc);
    }

    // 32 concurrent HTTP clients, 1-4 short texts each, against the first model
    let Some(enc) = first else { return Ok(()) };
    let name = enc.manifest().name.clone();
    drop(enc);
    let mut s = settings.clone();
    s.encoder.models = vec![resolve_model(settings, &o.models[0])?.dir];
    let encoders = EncoderSet::load(&s.encoder, &metrics.encoder)?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/embed", listener.local_addr()?);
        let engine = EngineClient::new(&s.engine)?;
        let metrics_text = metrics.clone();
        let state = AppState::with_encoders(s, engine, metrics, encoders);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(http::serve(listener, state, async move {
            let _ = stop_rx.await;
        }));
        // warm-up request
        reqwest::Client::new().post(&url).json(&json!({"inputs": ["warm up"]})).send().await?;
        let before = batch_stats(&metrics_text);
        let (cpu_before, machine_before) = (process_cpu_seconds(), machine_busy());
        let started = Instant::now();
        // the clients run in their own process, so their CPU is measured apart from the sidecar's
        let load = load_in_child(&url, &o.queries, o.max_queries, o.clients).await?;
        let total = load["texts"].as_u64().unwrap_or(0) as usize;
        let secs = started.elapsed().as_secs_f64();
        let after = batch_stats(&metrics_text);
        let (batches, inputs) = (after.0 - before.0, after.1 - before.1);
        let padding_efficiency = (after.2 - before.2) / (after.3 - before.3).max(1.0);
        let share = |cpu: f64| cpu_share(cpu, secs);
        let machine = machine_busy().zip(machine_before).map(|(a, b)| share(a - b));
        emit(json!({"measure": "queries_http_concurrent", "model": name, "clients": o.clients, "texts": total,
                    "seconds": secs, "texts_per_s": total as f64 / secs, "peak_rss_mb": peak_rss_mb(),
                    "batches": batches, "mean_batch_size": inputs / batches.max(1.0),
                    "padding_efficiency": padding_efficiency,
                    "sidecar_cpu_share": share(process_cpu_seconds() - cpu_before),
                    "load_generator_cpu_share": share(load["cpu_seconds"].as_f64().unwrap_or(0.0)),
                    "machine_cpu_share": machine}));
        let _ = stop_tx.send(());
        let _ = server.await;
        anyhow::Ok(())
    })?;
    Ok(())
}
