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
//! Owns the BEIR reader, the metrics, the report and its files; the run itself (in-process
//! server, ingest, queries) is `run.rs`. Must not rank or fuse itself (`/search` and
//! `query::fusion` do; [`tune`] grid-searches with the same code).

pub mod chart;
mod run;
pub mod tune;

pub use run::run;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::types::pipeline::Pipeline;
use crate::types::search::FusionSpec;

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
    use crate::types::search::{LinearSpec, Normalization, Weight};

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
