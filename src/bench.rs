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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde_json::{json, Value};

use crate::cli::{read_corpus, resolve_model};
use crate::encoder::{EncodeOptions, Encoder, EncoderSet, Input, Lane, TextKind};
use crate::engine::EngineClient;
use crate::http::{self, AppState};
use crate::settings::Settings;
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
    EncodeOptions { kind: TextKind::Raw, normalize: None, truncate: true, lane, wait_for_room: true }
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
        let queries = Arc::new(queries);
        let next = Arc::new(AtomicUsize::new(0));
        let client = reqwest::Client::new();
        // warm-up request
        client.post(&url).json(&json!({"inputs": ["warm up"]})).send().await?;
        let before = batch_stats(&metrics_text);
        let started = Instant::now();
        let tasks: Vec<_> = (0..o.clients)
            .map(|c| {
                let (queries, next, client, url) = (queries.clone(), next.clone(), client.clone(), url.clone());
                tokio::spawn(async move {
                    let mut sent = 0usize;
                    let mut n = 1 + c % 4;
                    loop {
                        let start = next.fetch_add(n, Ordering::Relaxed);
                        if start >= queries.len() {
                            return anyhow::Ok(sent);
                        }
                        let batch: Vec<&String> = queries[start..(start + n).min(queries.len())].iter().collect();
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
        let secs = started.elapsed().as_secs_f64();
        let after = batch_stats(&metrics_text);
        let (batches, inputs) = (after.0 - before.0, after.1 - before.1);
        let padding_efficiency = (after.2 - before.2) / (after.3 - before.3).max(1.0);
        emit(json!({"measure": "queries_http_concurrent", "model": name, "clients": o.clients, "texts": total,
                    "seconds": secs, "texts_per_s": total as f64 / secs, "peak_rss_mb": peak_rss_mb(),
                    "batches": batches, "mean_batch_size": inputs / batches.max(1.0),
                    "padding_efficiency": padding_efficiency}));
        let _ = stop_tx.send(());
        let _ = server.await;
        anyhow::Ok(())
    })?;
    Ok(())
}
