//! `semantic-sidecar eval`: retrieval quality on any BEIR-format folder (`corpus.jsonl`,
//! `queries.jsonl`, `qrels/SPLIT.tsv`), measured through the sidecar itself: the corpus is
//! written through its `_bulk` (the pipeline embeds it) and every query goes through `POST
//! /search`, on an in-process server bound to a free port.
//!
//! Metrics, as BEIR computes them: nDCG@10 (gain = the judged grade, log2 discount, ideal from
//! the judgments), Recall@100 (judged-relevant found in the top 100 / judged-relevant), MRR@10.
//! Queries without judgments in the split are skipped.
//!
//! `--tune` grid-searches the fusion parameters with k-fold cross-validation over the split's
//! queries ([`tune`]): the two legs are fetched once per query through `/search` (mode `bm25` and
//! `knn`, 100 deep) and fused with the same pure code `/search` uses; the hybrid rows then report
//! each query ranked with the parameters tuned on the *other* folds (`scored_on` says so), and the
//! parameters tuned on all queries, of the family with the better held-out score, are written into
//! the pipeline file's `[search] fusion`.
//!
//! Owns the BEIR reader, the metrics and the run; must not rank or fuse itself (`/search` and
//! `query::fusion` do). Over 600 lines because the dataset, the in-process server and the run
//! share private types; the pure parts already live apart ([`tune`], [`chart`]).

pub mod chart;
pub mod tune;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::engine::path::EnginePath;

use crate::engine::{EngineClient, EngineRequest};
use crate::http::{self, AppState};
use crate::query::fusion::LegHit;
use crate::settings::Settings;
use crate::telemetry::Metrics;
use crate::types::name::IndexName;
use crate::types::pipeline::Pipeline;
use crate::types::search::{FusionSpec, LinearSpec, Normalization, Weight};

/// A BEIR dataset (or the subset of it the options ask for).
pub struct Dataset {
    /// `{"_id", "title", "text"}` per document.
    pub docs: Vec<Value>,
    /// (id, text) of the judged queries, in file order.
    pub queries: Vec<(String, String)>,
    /// query id → doc id → grade.
    pub qrels: BTreeMap<String, BTreeMap<String, u32>>,
}

fn jsonl(path: &Path) -> anyhow::Result<Vec<Value>> {
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).with_context(|| format!("{}:{}", path.display(), i + 1))?);
    }
    Ok(out)
}

fn id_of(v: &Value) -> Option<String> {
    match v.get("_id")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Dataset {
    /// Reads `dir`; with `max_docs`, a deterministic subset: the judged documents of the split's
    /// queries in qrels order (a query only when all of its documents fit), then other documents
    /// in corpus order up to `max_docs`; only the queries whose documents all made it are kept.
    pub fn load(dir: &Path, split: &str, max_docs: Option<usize>) -> anyhow::Result<Dataset> {
        let qrels_path = dir.join("qrels").join(format!("{split}.tsv"));
        let text = std::fs::read_to_string(&qrels_path).with_context(|| format!("reading {}", qrels_path.display()))?;
        let mut qrels: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let cols: Vec<&str> = line.split('\t').collect();
            if cols.len() < 3 || (i == 0 && cols[2].parse::<f64>().is_err()) {
                continue;
            }
            let grade: f64 = cols[2].trim().parse().with_context(|| format!("{}:{}", qrels_path.display(), i + 1))?;
            if !qrels.contains_key(cols[0]) {
                order.push(cols[0].to_string());
            }
            qrels.entry(cols[0].to_string()).or_default().insert(cols[1].to_string(), grade.max(0.0) as u32);
        }
        if qrels.is_empty() {
            bail!("{} holds no judgments", qrels_path.display());
        }
        let corpus = jsonl(&dir.join("corpus.jsonl"))?;
        let texts: BTreeMap<String, String> = jsonl(&dir.join("queries.jsonl"))?
            .iter()
            .filter_map(|q| Some((id_of(q)?, q.get("text")?.as_str()?.to_string())))
            .collect();
        let by_id: BTreeMap<String, &Value> = corpus.iter().filter_map(|d| Some((id_of(d)?, d))).collect();
        let mut keep: BTreeSet<String> = BTreeSet::new();
        let mut kept_queries: BTreeSet<String> = BTreeSet::new();
        match max_docs {
            None => {
                keep.extend(by_id.keys().cloned());
                kept_queries.extend(order.iter().cloned());
            }
            Some(max) => {
                for q in &order {
                    let want: Vec<&String> = qrels[q].iter().filter(|(_, g)| **g > 0).map(|(d, _)| d).collect();
                    let new = want.iter().filter(|d| !keep.contains(**d)).count();
                    if want.iter().all(|d| by_id.contains_key(*d)) && keep.len() + new <= max {
                        keep.extend(want.into_iter().cloned());
                        kept_queries.insert(q.clone());
                    }
                }
                for id in corpus.iter().filter_map(id_of) {
                    if keep.len() >= max {
                        break;
                    }
                    keep.insert(id);
                }
            }
        }
        let docs = corpus
            .iter()
            .filter(|d| id_of(d).is_some_and(|id| keep.contains(&id)))
            .map(|d| {
                json!({"_id": id_of(d), "title": d.get("title").cloned().unwrap_or(json!("")), "text": d.get("text").cloned().unwrap_or(json!(""))})
            })
            .collect();
        let queries = order
            .iter()
            .filter(|q| kept_queries.contains(*q))
            .filter_map(|q| texts.get(q).map(|t| (q.clone(), t.clone())))
            .collect();
        qrels.retain(|q, _| kept_queries.contains(q));
        Ok(Dataset { docs, queries, qrels })
    }
}

/// The three metrics of one query or their means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub ndcg_at_10: f64,
    pub recall_at_100: f64,
    pub mrr_at_10: f64,
}

/// Scores one ranked list against its judgments.
pub fn score(ranked: &[String], rels: &BTreeMap<String, u32>) -> Scores {
    let gain = |id: &String| f64::from(rels.get(id).copied().unwrap_or(0));
    let dcg: f64 = ranked.iter().take(10).enumerate().map(|(i, id)| gain(id) / ((i + 2) as f64).log2()).sum();
    let mut ideal: Vec<f64> = rels.values().map(|g| f64::from(*g)).filter(|g| *g > 0.0).collect();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let idcg: f64 = ideal.iter().take(10).enumerate().map(|(i, g)| g / ((i + 2) as f64).log2()).sum();
    let relevant = rels.values().filter(|g| **g > 0).count();
    let found = ranked.iter().take(100).filter(|id| gain(id) > 0.0).count();
    let mrr = ranked.iter().take(10).position(|id| gain(id) > 0.0).map_or(0.0, |p| 1.0 / (p + 1) as f64);
    Scores {
        ndcg_at_10: if idcg > 0.0 { dcg / idcg } else { 0.0 },
        recall_at_100: if relevant > 0 { found as f64 / relevant as f64 } else { 0.0 },
        mrr_at_10: mrr,
    }
}

fn mean(all: &[Scores]) -> Scores {
    let n = all.len().max(1) as f64;
    Scores {
        ndcg_at_10: all.iter().map(|s| s.ndcg_at_10).sum::<f64>() / n,
        recall_at_100: all.iter().map(|s| s.recall_at_100).sum::<f64>() / n,
        mrr_at_10: all.iter().map(|s| s.mrr_at_10).sum::<f64>() / n,
    }
}

/// A mode of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalMode {
    Bm25,
    Knn,
    HybridRrf,
    HybridLinear,
    HybridEngine,
}

impl EvalMode {
    pub fn parse(s: &str) -> anyhow::Result<EvalMode> {
        Ok(match s.trim() {
            "bm25" => EvalMode::Bm25,
            "knn" => EvalMode::Knn,
            "hybrid-rrf" => EvalMode::HybridRrf,
            "hybrid-linear" => EvalMode::HybridLinear,
            "hybrid-engine" => EvalMode::HybridEngine,
            other => bail!("unknown mode `{other}` (bm25, knn, hybrid-rrf, hybrid-linear, hybrid-engine)"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            EvalMode::Bm25 => "bm25",
            EvalMode::Knn => "knn",
            EvalMode::HybridRrf => "hybrid-rrf",
            EvalMode::HybridLinear => "hybrid-linear",
            EvalMode::HybridEngine => "hybrid-engine",
        }
    }
}

/// What `eval` was asked to do.
pub struct EvalOptions {
    pub dataset: PathBuf,
    pub split: String,
    pub modes: Vec<EvalMode>,
    pub pipeline: PathBuf,
    /// Model to use instead of the pipeline's (a stock model against its fine-tuned version, an
    /// int8 variant against fp32); give each its own `index`.
    pub model: Option<String>,
    /// The model queries are embedded with instead of the pipeline's (`[search] query_model`).
    pub query_model: Option<String>,
    /// Index to use instead of the pipeline's.
    pub index: Option<String>,
    /// Delete and rebuild the index even when it exists.
    pub recreate: bool,
    pub max_docs: Option<usize>,
    pub tune: bool,
    /// Cross-validation folds of `--tune` (at least 2).
    pub folds: usize,
    /// Seed of the fold assignment.
    pub seed: u64,
    /// Where eval.md, eval.json and eval.png go.
    pub out: PathBuf,
    pub progress: bool,
}

/// One row of the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub mode: String,
    pub fusion: Option<Value>,
    pub scores: Scores,
    /// `all queries`, or for tuned fusion `held-out (k-fold)`: each query scored with the
    /// parameters tuned on the other folds.
    pub scored_on: String,
}

/// The whole report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub dataset: String,
    pub split: String,
    /// The model whose vectors the kNN legs used.
    #[serde(default)]
    pub model: String,
    pub documents: usize,
    pub queries: usize,
    pub rows: Vec<Row>,
    /// Best settings found by `--tune`, with their nDCG@10.
    pub tuned: Option<Value>,
}

impl Report {
    /// The markdown table.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "{} / {}, model {}: {} documents, {} judged queries\n\n| mode | fusion | scored on | nDCG@10 | Recall@100 | MRR@10 |\n|---|---|---|---|---|---|\n",
            self.dataset, self.split, self.model, self.documents, self.queries
        );
        for r in &self.rows {
            let f = r.fusion.as_ref().map(|f| f.to_string()).unwrap_or_else(|| "—".into());
            s.push_str(&format!(
                "| {} | `{}` | {} | {:.4} | {:.4} | {:.4} |\n",
                r.mode, f, r.scored_on, r.scores.ndcg_at_10, r.scores.recall_at_100, r.scores.mrr_at_10
            ));
        }
        s
    }
}

fn bar(len: usize, label: &str, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len as u64);
    b.set_style(
        indicatif::ProgressStyle::with_template("{msg:>14} {bar:40} {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b.set_message(label.to_string());
    b
}

struct Server {
    url: String,
    client: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn search(server: &Server, body: &Value) -> anyhow::Result<Vec<(String, f64)>> {
    let r = server.client.post(format!("{}/search", server.url)).json(body).send().await?;
    let status = r.status();
    let v: Value = r.json().await?;
    if !status.is_success() {
        bail!("/search answered {status}: {v}");
    }
    Ok(v.pointer("/hits/hits")
        .and_then(Value::as_array)
        .map(|hits| {
            hits.iter()
                .map(|h| {
                    (
                        h.get("_id").and_then(Value::as_str).unwrap_or("").to_string(),
                        h.get("_score").and_then(Value::as_f64).unwrap_or(0.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Runs every query of `data` with `request` (the query text filled in); hits per query.
async fn run_queries(
    server: &Server,
    data: &Dataset,
    request: &Value,
    label: &str,
    progress: bool,
) -> anyhow::Result<Vec<Vec<(String, f64)>>> {
    let b = bar(data.queries.len(), label, progress);
    let results: Vec<anyhow::Result<Vec<(String, f64)>>> = stream::iter(data.queries.iter())
        .map(|(_, text)| {
            let mut body = request.clone();
            body["query"] = json!(text);
            let b = b.clone();
            async move {
                let r = search(server, &body).await;
                b.inc(1);
                r
            }
        })
        .buffered(4)
        .collect()
        .await;
    b.finish_and_clear();
    results.into_iter().collect()
}

fn mean_scores(data: &Dataset, ranked: &[Vec<String>]) -> Scores {
    let all: Vec<Scores> = data.queries.iter().zip(ranked).map(|((q, _), r)| score(r, &data.qrels[q])).collect();
    mean(&all)
}

/// One `_bulk` batch through the sidecar. A busy machine (429, a 5xx such as the server's own 504
/// timeout, a dropped connection) is retried with backoff, up to 4 tries; anything else, or an item
/// that failed, stops the ingest with the engine's answer.
async fn post_bulk(server: &Server, body: String) -> anyhow::Result<usize> {
    let mut delay = std::time::Duration::from_secs(2);
    for attempt in 1.. {
        let sent = server
            .client
            .post(format!("{}/_bulk", server.url))
            .header("content-type", "application/x-ndjson")
            .body(body.clone())
            .send()
            .await;
        let busy = match sent {
            Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => format!("answered {}", r.status()),
            Ok(r) => {
                let v: Value = r.json().await?;
                if v.get("errors").and_then(Value::as_bool) != Some(false) {
                    bail!("bulk write failed: {}", v.to_string().chars().take(500).collect::<String>());
                }
                return Ok(v["items"].as_array().map_or(0, Vec::len));
            }
            Err(e) => e.to_string(),
        };
        if attempt == 4 {
            bail!("bulk write failed after {attempt} tries: {busy}");
        }
        eprintln!("bulk batch {busy}; retrying in {}s", delay.as_secs());
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    unreachable!("the loop returns or bails")
}

async fn ingest(
    server: &Server,
    engine: &EngineClient,
    index: &str,
    data: &Dataset,
    progress: bool,
) -> anyhow::Result<()> {
    let b = bar(data.docs.len(), "indexing", progress);
    let batches: Vec<String> = data
        .docs
        .chunks(32)
        .map(|chunk| {
            let mut body = String::new();
            for d in chunk {
                body.push_str(&json!({"index": {"_index": index, "_id": d["_id"]}}).to_string());
                body.push('\n');
                body.push_str(&json!({"title": d["title"], "text": d["text"]}).to_string());
                body.push('\n');
            }
            body
        })
        .collect();
    stream::iter(batches)
        .map(|body| {
            let b = b.clone();
            async move {
                let n = post_bulk(server, body).await?;
                b.inc(n as u64);
                anyhow::Ok(n)
            }
        })
        .buffered(2)
        .try_collect::<Vec<usize>>()
        .await?;
    b.finish_and_clear();
    engine
        .send(EngineRequest::new(reqwest::Method::POST, EnginePath::at_index(index)?.api("_refresh").build()))
        .await?;
    Ok(())
}

/// Writes `fusion` as the pipeline file's `[search] fusion`: the other keys and comments of the
/// file stay as they were, the `[search]` table is rewritten at the end.
pub fn write_fusion(pipeline: &Path, fusion: &FusionSpec) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(pipeline)?;
    let mut spec = Pipeline::load(pipeline)?.search;
    spec.fusion = Some(fusion.clone());
    let mut doc: toml_edit::DocumentMut = text.parse().with_context(|| format!("parsing {}", pipeline.display()))?;
    doc.remove("search");
    let table = toml::to_string(&json!({ "search": spec }))?;
    std::fs::write(pipeline, format!("{}\n\n{table}", doc.to_string().trim_end()))?;
    Pipeline::load(pipeline).with_context(|| format!("{} after writing the tuned fusion", pipeline.display()))?;
    Ok(())
}

async fn start(settings: Settings, pipeline: Pipeline) -> anyhow::Result<(Server, EngineClient)> {
    let engine = EngineClient::new(&settings.engine)?;
    let metrics = Metrics::new();
    let encoders = crate::setup::load_encoders(&settings, &metrics).await?;
    let state = AppState::with_encoders(settings, engine.clone(), metrics, encoders).with_pipelines(vec![pipeline])?;
    let (url, tx) = http::serve_local(state).await?;
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(660)).build()?;
    Ok((Server { url, client, _stop: tx }, engine))
}

/// Runs the evaluation; writes eval.md, eval.json and eval.png into `opts.out`.
pub async fn run(mut settings: Settings, opts: &EvalOptions) -> anyhow::Result<Report> {
    let data = Dataset::load(&opts.dataset, &opts.split, opts.max_docs)?;
    if data.queries.is_empty() {
        bail!("no judged query of split `{}` has its documents in the corpus", opts.split);
    }
    let mut pipeline = Pipeline::load(&opts.pipeline)?;
    if let Some(m) = &opts.model {
        pipeline.model = m.clone();
    }
    if let Some(q) = &opts.query_model {
        pipeline.search.query_model = Some(q.clone());
    }
    if let Some(i) = &opts.index {
        IndexName::try_from(i.as_str()).map_err(|e| anyhow::anyhow!("--index: {e}"))?;
        pipeline.index = i.clone();
    }
    let model = crate::setup::add_pipeline_model(&mut settings, &pipeline)?;
    // the in-process server is eval's own: a batch of long abstracts on a busy machine may take
    // longer than a service's request timeout
    settings.server.request_timeout = settings.server.request_timeout.max(std::time::Duration::from_secs(600));
    let index = pipeline.index.clone();
    let (server, engine) = start(settings.clone(), pipeline.clone()).await?;

    let at = EnginePath::at_index(&index)?;
    let exists = engine.send(EngineRequest::new(reqwest::Method::HEAD, at.build()).passthrough()).await?;
    let exists = exists.status.is_success();
    if exists && opts.recreate {
        engine.send(EngineRequest::new(reqwest::Method::DELETE, at.build())).await?;
    }
    if !exists || opts.recreate {
        let info = engine.info().await?;
        let shape = crate::ingest::mapping::ModelShape::of(&model.manifest);
        let shape_of = |m: &str| crate::setup::vector_shape(&settings, m);
        let body = crate::ingest::mapping::index_body_with(&info, &pipeline, shape, &shape_of)?;
        engine.send(EngineRequest::new(reqwest::Method::PUT, at.build()).json(&body)).await?;
        ingest(&server, &engine, &index, &data, opts.progress).await?;
    } else {
        let v: Value = engine.get_json(&at.clone().api("_count").build()).await?;
        let n = v["count"].as_u64().unwrap_or(0) as usize;
        if n != data.docs.len() && pipeline.hash_field.is_some() {
            // an interrupted ingest: the content hash keeps every stored vector, so writing the
            // corpus again embeds only the documents that are missing
            eprintln!("completing index `{index}` ({n} of {} documents; stored vectors kept)", data.docs.len());
            ingest(&server, &engine, &index, &data, opts.progress).await?;
            // the rewritten copies leave deleted documents behind, whose term statistics would
            // still count in BM25 (SciFact held-out: 0.7241 instead of a fresh index's 0.7182)
            let merge = at.clone().api("_forcemerge").param("only_expunge_deletes", "true").build();
            engine.send(EngineRequest::new(reqwest::Method::POST, merge)).await?;
        } else if n != data.docs.len() {
            bail!("index `{index}` exists with {n} documents, the dataset has {}: pass --recreate", data.docs.len());
        } else {
            eprintln!("reusing index `{index}` ({n} documents)");
        }
    }

    let depth = 100;
    let base = json!({"index": index, "size": depth, "k": depth, "_source": false});
    let mut rrf = FusionSpec::default();
    let mut linear = FusionSpec::Linear(LinearSpec {
        weight: Weight::try_from(0.5).expect("weight"),
        normalization: Normalization::Minmax,
    });
    if let Some(f) = &pipeline.search.fusion {
        match f {
            FusionSpec::Rrf(_) => rrf = f.clone(),
            FusionSpec::Linear(_) => linear = f.clone(),
            FusionSpec::Engine(_) => {}
        }
    }
    let mut tuned = None;
    let mut held_out: BTreeMap<&str, Vec<Vec<String>>> = BTreeMap::new();
    if opts.tune {
        if opts.folds < 2 || opts.folds > data.queries.len() {
            bail!("--folds {} must be between 2 and the number of judged queries ({})", opts.folds, data.queries.len());
        }
        let mut b = base.clone();
        b["mode"] = json!("bm25");
        let bm25 = run_queries(&server, &data, &b, "tune: bm25", opts.progress).await?;
        b["mode"] = json!("knn");
        let knn = run_queries(&server, &data, &b, "tune: knn", opts.progress).await?;
        let legs = |v: Vec<Vec<(String, f64)>>| -> Vec<Vec<LegHit>> {
            v.into_iter().map(|q| q.into_iter().map(|(id, score)| LegHit { id, score }).collect()).collect()
        };
        let legs = tune::Legs {
            bm25: legs(bm25),
            knn: legs(knn),
            rels: data.queries.iter().map(|(q, _)| &data.qrels[q]).collect(),
            depth,
        };
        let ids: Vec<String> = data.queries.iter().map(|(q, _)| q.clone()).collect();
        let fold = tune::folds_of(&ids, opts.folds, opts.seed);
        let families: Vec<tune::FamilyTuning> = [tune::Family::Rrf, tune::Family::Linear]
            .into_iter()
            .map(|f| tune::cross_validate(&legs, f, &fold, opts.folds))
            .collect();
        let best = families.iter().max_by(|a, b| a.held_out_ndcg.total_cmp(&b.held_out_ndcg)).expect("two families");
        let written = best.in_sample.1.clone();
        write_fusion(&opts.pipeline, &written)?;
        eprintln!("tuned ({}-fold): {} written to {} [search]", opts.folds, json!(written), opts.pipeline.display());
        for f in &families {
            match f.family {
                tune::Family::Rrf => rrf = f.in_sample.1.clone(),
                tune::Family::Linear => linear = f.in_sample.1.clone(),
            }
            let mode = if f.family == tune::Family::Rrf { "hybrid-rrf" } else { "hybrid-linear" };
            held_out.insert(mode, f.held_out.clone());
        }
        tuned = Some(tune::summary(&families, opts.folds, opts.seed, &written));
    }

    let mut rows = Vec::new();
    for mode in &opts.modes {
        let mut body = base.clone();
        let fusion = match mode {
            EvalMode::Bm25 => {
                body["mode"] = json!("bm25");
                None
            }
            EvalMode::Knn => {
                body["mode"] = json!("knn");
                None
            }
            EvalMode::HybridRrf => Some(serde_json::to_value(&rrf)?),
            EvalMode::HybridLinear => Some(serde_json::to_value(&linear)?),
            EvalMode::HybridEngine => Some(json!({"engine": {}})),
        };
        if let Some(ranked) = held_out.get(mode.name()) {
            let scored_on = format!("held-out ({}-fold)", opts.folds);
            rows.push(Row { mode: mode.name().to_string(), fusion, scores: mean_scores(&data, ranked), scored_on });
            continue;
        }
        if let Some(f) = &fusion {
            body["fusion"] = f.clone();
        }
        let hits = run_queries(&server, &data, &body, mode.name(), opts.progress).await?;
        let ranked: Vec<Vec<String>> = hits.into_iter().map(|h| h.into_iter().map(|(id, _)| id).collect()).collect();
        let scored_on = "all queries".to_string();
        rows.push(Row { mode: mode.name().to_string(), fusion, scores: mean_scores(&data, &ranked), scored_on });
    }
    let name = opts.dataset.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let report = Report {
        dataset: name,
        split: opts.split.clone(),
        model: match &opts.query_model {
            Some(q) => format!("{} (queries: {q})", pipeline.model),
            None => pipeline.model.clone(),
        },
        documents: data.docs.len(),
        queries: data.queries.len(),
        rows,
        tuned,
    };
    write_report(&report, &opts.out)?;
    Ok(report)
}

/// Writes eval.md, eval.json and eval.png into `out`.
pub fn write_report(report: &Report, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("eval.md"), report.markdown())?;
    std::fs::write(out.join("eval.json"), serde_json::to_string_pretty(report)?)?;
    chart::bar_chart(report, &out.join("eval.png"))
}

/// `semantic-sidecar compare`: reads `eval.json` files (or folders holding one), writes the
/// side-by-side report into `out` and prints its table.
pub fn compare_files(reports: &[PathBuf], out: &Path) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for r in reports {
        let file = if r.is_dir() { r.join("eval.json") } else { r.clone() };
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        all.push(serde_json::from_str(&text).with_context(|| format!("{} is not an eval report", file.display()))?);
    }
    let report = compare(&all)?;
    write_report(&report, out)?;
    println!("{}", report.markdown());
    eprintln!("wrote {0}/eval.md, {0}/eval.json, {0}/eval.png", out.display());
    Ok(())
}

/// Reports of the same dataset, split and queries side by side (stock against fine-tuned, fp32
/// against int8): one report whose rows are `model: mode`, in the order given.
pub fn compare(reports: &[Report]) -> anyhow::Result<Report> {
    let Some(first) = reports.first() else { bail!("compare needs at least one eval.json") };
    let mut rows = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        if (&r.dataset, &r.split, r.queries, r.documents)
            != (&first.dataset, &first.split, first.queries, first.documents)
        {
            bail!(
                "report {} is {} / {} ({} documents, {} queries), the first is {} / {} ({}, {}): only the same queries compare",
                i + 1, r.dataset, r.split, r.documents, r.queries, first.dataset, first.split, first.documents, first.queries
            );
        }
        let label = if r.model.is_empty() { format!("#{}", i + 1) } else { r.model.clone() };
        rows.extend(r.rows.iter().map(|row| Row { mode: format!("{label}: {}", row.mode), ..row.clone() }));
    }
    Ok(Report {
        model: reports.iter().map(|r| r.model.as_str()).collect::<Vec<_>>().join(" vs "),
        rows,
        tuned: None,
        ..first.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rels(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(d, g)| (d.to_string(), *g)).collect()
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn metrics_match_hand_computed_values() {
        let r = rels(&[("a", 1), ("b", 1)]);
        let s = score(&ids(&["x", "a", "y", "b"]), &r);
        let dcg = 1.0 / 3f64.log2() + 1.0 / 5f64.log2();
        let idcg = 1.0 + 1.0 / 3f64.log2();
        assert!((s.ndcg_at_10 - dcg / idcg).abs() < 1e-12);
        assert_eq!(s.recall_at_100, 1.0);
        assert_eq!(s.mrr_at_10, 0.5);
        let s = score(&ids(&["a", "b"]), &r);
        assert!((s.ndcg_at_10 - 1.0).abs() < 1e-12);
        let s = score(&ids(&["x"]), &r);
        assert_eq!((s.ndcg_at_10, s.recall_at_100, s.mrr_at_10), (0.0, 0.0, 0.0));
        // graded: the better grade first is ideal
        let g = rels(&[("a", 2), ("b", 1)]);
        assert!(score(&ids(&["a", "b"]), &g).ndcg_at_10 > score(&ids(&["b", "a"]), &g).ndcg_at_10);
    }

    #[test]
    fn modes_parse_and_unknown_ones_are_named() {
        assert_eq!(EvalMode::parse("hybrid-rrf").unwrap(), EvalMode::HybridRrf);
        assert!(EvalMode::parse("splade").unwrap_err().to_string().contains("splade"));
    }

    #[test]
    fn tuned_fusion_is_written_into_the_pipeline_keeping_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.toml");
        std::fs::write(&p, "# mine\nname = 'd'\nindex = 'd'\nmodel = 'm'\n\n[[fields]]\nsource = ['text']\nvector = 'v'\n\n[search]\nauto_hybrid = true\n").unwrap();
        let spec = FusionSpec::Linear(LinearSpec {
            weight: Weight::try_from(0.3).unwrap(),
            normalization: Normalization::Zscore,
        });
        write_fusion(&p, &spec).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("# mine"), "{text}");
        let back = Pipeline::load(&p).unwrap();
        assert_eq!(back.search.fusion, Some(spec));
        assert!(back.search.auto_hybrid);
    }

    fn report(model: &str, queries: usize, ndcg: f64) -> Report {
        let scores = Scores { ndcg_at_10: ndcg, recall_at_100: 1.0, mrr_at_10: ndcg };
        let row = |mode: &str| Row { mode: mode.into(), fusion: None, scores, scored_on: "all queries".into() };
        Report {
            dataset: "scifact".into(),
            split: "heldout".into(),
            model: model.into(),
            documents: 10,
            queries,
            rows: vec![row("bm25"), row("knn")],
            tuned: None,
        }
    }

    #[test]
    fn compare_labels_rows_by_model_and_refuses_other_queries() {
        let c = compare(&[report("stock", 5, 0.5), report("tuned", 5, 0.6)]).unwrap();
        let modes: Vec<&str> = c.rows.iter().map(|r| r.mode.as_str()).collect();
        assert_eq!(modes, ["stock: bm25", "stock: knn", "tuned: bm25", "tuned: knn"]);
        assert_eq!(c.rows[3].scores.ndcg_at_10, 0.6);
        assert_eq!(c.model, "stock vs tuned");
        let back: Report = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back.rows.len(), 4);
        let e = compare(&[report("stock", 5, 0.5), report("tuned", 6, 0.6)]).unwrap_err().to_string();
        assert!(e.contains("only the same queries compare"), "{e}");
        assert!(compare(&[]).is_err());
        let dir = tempfile::tempdir().unwrap();
        write_report(&c, dir.path()).unwrap();
        assert_eq!(&std::fs::read(dir.path().join("eval.png")).unwrap()[1..4], b"PNG");
    }
}
