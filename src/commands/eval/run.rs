//! The evaluation run: an in-process sidecar on a free port, the corpus written through its
//! `_bulk`, every query sent to its `POST /search`, the optional fusion tuning, the report.
//!
//! Owns the run's I/O (the in-process server, the index it fills); must not rank, fuse or score
//! itself: `/search` ranks, [`super::tune`] and `query::fusion` fuse, [`super::score`] scores.

use std::collections::BTreeMap;

use anyhow::bail;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde_json::{json, Value};

use super::{mean, score, tune, write_fusion, write_report, Dataset, EvalMode, EvalOptions, Report, Row, Scores};
use crate::encoder::manifest::ModelDir;
use crate::engine::path::EnginePath;
use crate::engine::{EngineClient, EngineRequest};
use crate::http::{self, AppState};
use crate::query::fusion::LegHit;
use crate::settings::Settings;
use crate::telemetry::Metrics;
use crate::types::name::IndexName;
use crate::types::pipeline::Pipeline;
use crate::types::search::{FusionSpec, LinearSpec, Normalization, Weight};

/// How deep each leg and each ranked list goes (Recall@100 needs 100).
const DEPTH: usize = 100;

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
    let pipeline = pipeline_of(opts)?;
    let model = crate::setup::add_pipeline_model(&mut settings, &pipeline)?;
    // the in-process server is eval's own: a batch of long abstracts on a busy machine may take
    // longer than a service's request timeout
    settings.server.request_timeout = settings.server.request_timeout.max(std::time::Duration::from_secs(600));
    let (server, engine) = start(settings.clone(), pipeline.clone()).await?;
    fill_index(&server, &engine, &settings, &model, &pipeline, &data, opts).await?;

    let base = json!({"index": pipeline.index, "size": DEPTH, "k": DEPTH, "_source": false});
    let mut fusions = Fusions::of(&pipeline);
    let tuned = if opts.tune { Some(tune_fusion(&server, &data, &base, opts, &mut fusions).await?) } else { None };
    let rows = score_modes(&server, &data, &base, &fusions, opts).await?;
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

/// The pipeline file with the options' `--model`, `--query-model` and `--index` in place.
fn pipeline_of(opts: &EvalOptions) -> anyhow::Result<Pipeline> {
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
    Ok(pipeline)
}

/// Makes the pipeline's index hold the whole corpus: created and written when missing (or with
/// `--recreate`), completed when an earlier ingest stopped part way, reused when it is whole.
async fn fill_index(
    server: &Server,
    engine: &EngineClient,
    settings: &Settings,
    model: &ModelDir,
    pipeline: &Pipeline,
    data: &Dataset,
    opts: &EvalOptions,
) -> anyhow::Result<()> {
    let index = &pipeline.index;
    let at = EnginePath::at_index(index)?;
    let exists = engine.send(EngineRequest::new(reqwest::Method::HEAD, at.build()).passthrough()).await?;
    let exists = exists.status.is_success();
    if exists && opts.recreate {
        engine.send(EngineRequest::new(reqwest::Method::DELETE, at.build())).await?;
    }
    if !exists || opts.recreate {
        let info = engine.info().await?;
        let shape = crate::ingest::mapping::ModelShape::of(&model.manifest);
        let shape_of = |m: &str| crate::setup::vector_shape(settings, m);
        let body = crate::ingest::mapping::index_body_with(&info, pipeline, shape, &shape_of)?;
        engine.send(EngineRequest::new(reqwest::Method::PUT, at.build()).json(&body)).await?;
        return ingest(server, engine, index, data, opts.progress).await;
    }
    let v: Value = engine.get_json(&at.clone().api("_count").build()).await?;
    let n = v["count"].as_u64().unwrap_or(0) as usize;
    if n != data.docs.len() && pipeline.hash_field.is_some() {
        // an interrupted ingest: the content hash keeps every stored vector, so writing the
        // corpus again embeds only the documents that are missing
        eprintln!("completing index `{index}` ({n} of {} documents; stored vectors kept)", data.docs.len());
        ingest(server, engine, index, data, opts.progress).await?;
        // the rewritten copies leave deleted documents behind, whose term statistics would
        // still count in BM25 (SciFact held-out: 0.7241 instead of a fresh index's 0.7182)
        let merge = at.clone().api("_forcemerge").param("only_expunge_deletes", "true").build();
        engine.send(EngineRequest::new(reqwest::Method::POST, merge)).await?;
    } else if n != data.docs.len() {
        bail!("index `{index}` exists with {n} documents, the dataset has {}: pass --recreate", data.docs.len());
    } else {
        eprintln!("reusing index `{index}` ({n} documents)");
    }
    Ok(())
}

/// The fusion each hybrid row uses, and the held-out rankings `--tune` left for some of them.
struct Fusions {
    rrf: FusionSpec,
    linear: FusionSpec,
    held_out: BTreeMap<&'static str, Vec<Vec<String>>>,
}

impl Fusions {
    /// The defaults (RRF's, linear 0.5 min-max), the pipeline's own fusion in place of its family's.
    fn of(pipeline: &Pipeline) -> Self {
        let mut rrf = FusionSpec::default();
        let mut linear = FusionSpec::Linear(LinearSpec {
            weight: Weight::try_from(0.5).expect("weight"),
            normalization: Normalization::Minmax,
        });
        match &pipeline.search.fusion {
            Some(f @ FusionSpec::Rrf(_)) => rrf = f.clone(),
            Some(f @ FusionSpec::Linear(_)) => linear = f.clone(),
            Some(FusionSpec::Engine(_)) | None => {}
        }
        Fusions { rrf, linear, held_out: BTreeMap::new() }
    }
}

/// `--tune`: fetches both legs once, cross-validates both families, writes the better family's
/// parameters into the pipeline file and keeps each family's tuned fusion and held-out rankings
/// in `fusions`; returns the report's `tuned` summary.
async fn tune_fusion(
    server: &Server,
    data: &Dataset,
    base: &Value,
    opts: &EvalOptions,
    fusions: &mut Fusions,
) -> anyhow::Result<Value> {
    if opts.folds < 2 || opts.folds > data.queries.len() {
        bail!("--folds {} must be between 2 and the number of judged queries ({})", opts.folds, data.queries.len());
    }
    let mut b = base.clone();
    b["mode"] = json!("bm25");
    let bm25 = run_queries(server, data, &b, "tune: bm25", opts.progress).await?;
    b["mode"] = json!("knn");
    let knn = run_queries(server, data, &b, "tune: knn", opts.progress).await?;
    let legs = |v: Vec<Vec<(String, f64)>>| -> Vec<Vec<LegHit>> {
        v.into_iter().map(|q| q.into_iter().map(|(id, score)| LegHit { id, score }).collect()).collect()
    };
    let legs = tune::Legs {
        bm25: legs(bm25),
        knn: legs(knn),
        rels: data.queries.iter().map(|(q, _)| &data.qrels[q]).collect(),
        depth: DEPTH,
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
        let mode = match f.family {
            tune::Family::Rrf => {
                fusions.rrf = f.in_sample.1.clone();
                EvalMode::HybridRrf
            }
            tune::Family::Linear => {
                fusions.linear = f.in_sample.1.clone();
                EvalMode::HybridLinear
            }
        };
        fusions.held_out.insert(mode.name(), f.held_out.clone());
    }
    Ok(tune::summary(&families, opts.folds, opts.seed, &written))
}

/// One report row per asked mode: its queries run through `/search`, or for a tuned family its
/// held-out rankings scored.
async fn score_modes(
    server: &Server,
    data: &Dataset,
    base: &Value,
    fusions: &Fusions,
    opts: &EvalOptions,
) -> anyhow::Result<Vec<Row>> {
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
            EvalMode::HybridRrf => Some(serde_json::to_value(&fusions.rrf)?),
            EvalMode::HybridLinear => Some(serde_json::to_value(&fusions.linear)?),
            EvalMode::HybridEngine => Some(json!({"engine": {}})),
        };
        if let Some(ranked) = fusions.held_out.get(mode.name()) {
            let scored_on = format!("held-out ({}-fold)", opts.folds);
            rows.push(Row { mode: mode.name().to_string(), fusion, scores: mean_scores(data, ranked), scored_on });
            continue;
        }
        if let Some(f) = &fusion {
            body["fusion"] = f.clone();
        }
        let hits = run_queries(server, data, &body, mode.name(), opts.progress).await?;
        let ranked: Vec<Vec<String>> = hits.into_iter().map(|h| h.into_iter().map(|(id, _)| id).collect()).collect();
        let scored_on = "all queries".to_string();
        rows.push(Row { mode: mode.name().to_string(), fusion, scores: mean_scores(data, &ranked), scored_on });
    }
    Ok(rows)
}
