//! Engine request bodies for a [`Plan`]: the BM25 and kNN legs (for sidecar fusion over one
//! `_msearch`, or a single-leg search), and the engine-fused shapes of each dialect. Pure; golden
//! JSON of every dialect and licence is in `tests/snapshots/search__goldens_*.snap`
//! (`tests/search.rs`).
//!
//! | method | Elasticsearch 8/9 | OpenSearch 2/3 |
//! |---|---|---|
//! | sidecar `rrf` / `linear` | `_msearch`: `query` leg + top-level `knn` leg | `_msearch`: `query` leg + `query.knn` leg |
//! | engine `boost` | top-level `knn` + `query` with boosts (8.4+) | `bool.should[bool(multi_match), knn]` with boosts |
//! | engine `rrf` | `retriever.rrf` (8.16+, licence-gated) | `hybrid` + `score-ranker-processor` pipeline (neural-search 2.19+) |
//! | engine `linear` | refused (use sidecar `linear`) | `hybrid` + `normalization-processor` pipeline (neural-search) |

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::request::{Plan, QueryError, Resolved};
use crate::engine::dialect::{Dialect, EngineInfo, Version};
use crate::types::search::EngineMethod;
use crate::types::search::{Normalization, Weight};

/// What the sidecar knows about the cluster beyond `GET /`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    pub info: EngineInfo,
    /// Elasticsearch: the licence allows `retriever.rrf` (enterprise or trial).
    pub rrf_licensed: bool,
    /// The licence type Elasticsearch reported, for explanations.
    pub license: Option<String>,
    /// OpenSearch: the neural-search plugin is installed (`hybrid` query, search pipelines).
    pub neural_search: bool,
    /// The modules and plugins every node has (`GET /_nodes/plugins`); `None` when the cluster
    /// would not say (then nothing is assumed missing).
    pub modules: Option<BTreeSet<String>>,
    /// Analyzers the pipelines may name that the cluster refused in `_analyze` (`english`, `cjk`).
    pub missing_analyzers: Vec<String>,
}

impl Capabilities {
    /// Capabilities from `GET /` alone: no licence, no plugins known, nothing known missing.
    pub fn of(info: EngineInfo) -> Self {
        Capabilities {
            info,
            rrf_licensed: false,
            license: None,
            neural_search: false,
            modules: None,
            missing_analyzers: Vec::new(),
        }
    }

    fn dialect(&self) -> Dialect {
        self.info.dialect
    }

    /// Whether one of `names` is a module or plugin of every node (true when unknown).
    pub fn has_module(&self, names: &[&str]) -> bool {
        self.modules.as_ref().is_none_or(|m| names.iter().any(|n| m.contains(*n)))
    }

    /// Elasticsearch's `retriever.rrf` is there: 8.16+ and the rank-rrf module.
    pub fn rrf_module(&self) -> bool {
        self.has_module(RRF_MODULES)
    }

    /// Whether one of `names` is known to be a module of every node (false when unknown).
    fn surely_has(&self, names: &[&str]) -> bool {
        self.modules.as_ref().is_some_and(|m| names.iter().any(|n| m.contains(*n)))
    }

    fn licensed(&self, types: &[&str]) -> bool {
        self.license.as_deref().is_some_and(|l| types.contains(&l))
    }

    /// The engine runs the `rrf` and `linear` retrievers itself (Elasticsearch 8.16+, the
    /// rank-rrf module, an Enterprise or trial licence); else the sidecar runs them.
    pub fn engine_runs_retrievers(&self) -> bool {
        self.info.supports_rrf_retriever() && self.rrf_licensed && self.surely_has(RRF_MODULES)
    }

    /// The engine's `_inference` API serves (the inference module and an Enterprise or trial
    /// licence); else the sidecar serves `text_embedding` endpoints itself.
    pub fn engine_serves_inference(&self) -> bool {
        self.dialect() == Dialect::Elasticsearch
            && self.licensed(&["enterprise", "trial"])
            && self.surely_has(&["x-pack-inference", "inference"])
    }

    /// OpenSearch without the neural-search plugin: the sidecar serves the `neural` query, the
    /// `hybrid` query and the search pipelines that score it.
    pub fn sidecar_runs_neural(&self) -> bool {
        self.dialect() == Dialect::Opensearch && !self.neural_search
    }

    /// OpenSearch's ml-commons plugin is on every node (its model API answers itself).
    pub fn engine_serves_ml_commons(&self) -> bool {
        self.dialect() == Dialect::Opensearch && self.surely_has(&["opensearch-ml", "opensearch-ml-plugin"])
    }

    /// The engine has machine learning (deployed models can build query vectors).
    pub fn engine_serves_ml(&self) -> bool {
        self.dialect() == Dialect::Elasticsearch
            && self.licensed(&["platinum", "enterprise", "trial"])
            && self.surely_has(&["x-pack-ml", "ml"])
    }

    /// What this cluster lacks that a user of the sidecar may miss, each with what it costs
    /// and what the sidecar does instead (for `/readyz`). Empty when nothing is known missing.
    pub fn missing(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self.dialect() {
            Dialect::Elasticsearch => {
                if self.info.supports_rrf_retriever() && !self.rrf_module() {
                    out.push("rank-rrf module: no retriever.rrf; engine fusion uses knn + query boosts, sidecar fusion (rrf, linear) works".into());
                } else if self.info.supports_rrf_retriever() && !self.rrf_licensed {
                    out.push(format!(
                        "retriever.rrf licence (enterprise or trial; this cluster: {}): engine fusion uses knn + query boosts, sidecar fusion works",
                        self.license.as_deref().unwrap_or("unknown")
                    ));
                }
                if !self.has_module(&["lang-painless"]) {
                    out.push("lang-painless module: no scripts (the sidecar needs none; scripted updates and script_score fail on the engine)".into());
                }
                if !self.has_module(&["reindex"]) {
                    out.push("reindex module: no _reindex, _update_by_query, _delete_by_query (sidecar reindex jobs copy with PIT + _bulk and need none)".into());
                }
            }
            Dialect::Opensearch => {
                if !self.neural_search {
                    out.push("neural-search plugin: no hybrid query or search pipelines; engine fusion uses bool.should boosts, sidecar fusion works, the neural query is served by the sidecar".into());
                }
            }
        }
        for a in &self.missing_analyzers {
            out.push(format!("analyzer `{a}`: pipelines that name it cannot create their index"));
        }
        out
    }
}

/// The names Elasticsearch's RRF module goes by (8.16+ `rank-rrf`, earlier `x-pack-rank-rrf`).
pub const RRF_MODULES: &[&str] = &["rank-rrf", "x-pack-rank-rrf"];

/// An engine-fused search, ready to send.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineQuery {
    /// The method actually used (never `Auto`).
    pub method: EngineMethod,
    pub body: Value,
    /// OpenSearch search pipeline (name, definition) the request needs (`?search_pipeline=`).
    pub pipeline: Option<(String, Value)>,
    /// Why `auto` chose what it chose, when it matters.
    pub note: Option<String>,
}

fn filter_bool(filters: &[Value]) -> Option<Value> {
    (!filters.is_empty()).then(|| json!({"bool": {"filter": filters}}))
}

/// The `multi_match` carrying the user's text (the only place it lands, besides the vector).
pub fn text_clause(plan: &Plan) -> Value {
    json!({"multi_match": {"query": plan.text, "fields": plan.fields}})
}

/// The BM25 leg's query: the text clause, filtered.
pub fn bm25_query(plan: &Plan, boost: Option<f64>) -> Value {
    let mut b = Map::new();
    b.insert("must".into(), json!([text_clause(plan)]));
    if !plan.filters.is_empty() {
        b.insert("filter".into(), json!(plan.filters));
    }
    if let Some(x) = boost {
        b.insert("boost".into(), json!(x));
    }
    json!({ "bool": b })
}

/// The best passage of a hit: its text from `_source`, or from the stored field where the
/// passages are kept out of `_source` (`semantic_text`).
fn inner_hits(path: &str, stored: bool) -> Value {
    if stored {
        json!({"size": 1, "_source": false, "stored_fields": [format!("{path}.text")]})
    } else {
        json!({"size": 1, "_source": {"includes": [format!("{path}.text")]}})
    }
}

fn vector_json(v: &[f32]) -> Value {
    Value::Array(v.iter().map(|x| json!(x)).collect())
}

/// Elasticsearch's top-level `knn` section (also the `knn` retriever's body, without inner hits).
pub fn es_knn_section(plan: &Plan, vector: &[f32], boost: Option<f64>, with_inner_hits: bool) -> Value {
    let mut k = Map::new();
    k.insert("field".into(), json!(plan.target.knn_field()));
    k.insert("query_vector".into(), vector_json(vector));
    k.insert("k".into(), json!(plan.k));
    k.insert("num_candidates".into(), json!(plan.num_candidates));
    if !plan.filters.is_empty() {
        k.insert("filter".into(), json!(plan.filters));
    }
    if let Some(x) = boost {
        k.insert("boost".into(), json!(x));
    }
    if let (Some(path), true) = (&plan.target.passages, with_inner_hits) {
        k.insert("inner_hits".into(), inner_hits(path, plan.target.stored_passages));
    }
    Value::Object(k)
}

/// Which `knn` query a cluster takes where a query may stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KnnShape {
    /// OpenSearch's `{"knn": {field: {vector, k}}}`.
    Opensearch,
    /// Elasticsearch's `knn` query (8.12+); `k` is accepted from 8.15 only (earlier nodes refuse
    /// the request), before that `num_candidates` alone bounds it.
    Elasticsearch { k: bool },
}

impl KnnShape {
    pub fn of(info: &EngineInfo) -> KnnShape {
        match info.dialect {
            Dialect::Opensearch => KnnShape::Opensearch,
            Dialect::Elasticsearch => KnnShape::Elasticsearch { k: info.version >= Version::new(8, 15, 0) },
        }
    }

    fn dialect(self) -> Dialect {
        match self {
            KnnShape::Opensearch => Dialect::Opensearch,
            KnnShape::Elasticsearch { .. } => Dialect::Elasticsearch,
        }
    }
}

/// A kNN clause that stands where a query may (OpenSearch `knn` query; Elasticsearch `knn` query,
/// 8.12+). Filters are pre-filters inside the clause, except around nested passages, where they
/// name parent fields and wrap the clause in a `bool`.
pub fn knn_clause(plan: &Plan, vector: &[f32], shape: KnnShape, boost: Option<f64>) -> Value {
    let dialect = shape.dialect();
    let field = plan.target.knn_field();
    let filter = filter_bool(&plan.filters);
    let flat_filter = if plan.target.passages.is_none() { filter.clone() } else { None };
    let mut clause = match shape {
        KnnShape::Opensearch => {
            let mut p = Map::new();
            p.insert("vector".into(), vector_json(vector));
            p.insert("k".into(), json!(plan.k));
            if let Some(f) = flat_filter {
                p.insert("filter".into(), f);
            }
            json!({"knn": {field: p}})
        }
        KnnShape::Elasticsearch { k } => {
            let mut p = Map::new();
            p.insert("field".into(), json!(field));
            p.insert("query_vector".into(), vector_json(vector));
            if k {
                p.insert("k".into(), json!(plan.k));
            }
            p.insert("num_candidates".into(), json!(plan.num_candidates));
            if flat_filter.is_some() {
                p.insert("filter".into(), json!(plan.filters));
            }
            json!({"knn": p})
        }
    };
    if let Some(path) = &plan.target.passages {
        clause = json!({"nested": {"path": path, "score_mode": "max", "query": clause, "inner_hits": inner_hits(path, plan.target.stored_passages)}});
        if let Some(f) = filter {
            clause = json!({"bool": {"must": [clause], "filter": f["bool"]["filter"]}});
        }
    }
    if let Some(x) = boost {
        let (name, body) = clause.as_object_mut().and_then(|m| m.iter_mut().next()).expect("one clause");
        match (name.as_str(), dialect) {
            ("knn", Dialect::Opensearch) => {
                if let Some(p) = body.as_object_mut().and_then(|m| m.values_mut().next()).and_then(Value::as_object_mut)
                {
                    p.insert("boost".into(), json!(x));
                }
            }
            _ => {
                if let Some(m) = body.as_object_mut() {
                    m.insert("boost".into(), json!(x));
                }
            }
        }
    }
    clause
}

fn common(body: &mut Map<String, Value>, plan: &Plan, highlight: Option<Value>) {
    body.insert("_source".into(), plan.source.clone());
    if let Some(h) = highlight {
        body.insert("highlight".into(), h);
    }
}

/// The highlight of a leg whose own query has no text: highlighted with the text clause.
fn highlight_with_text(plan: &Plan) -> Option<Value> {
    plan.highlight.clone().map(|mut h| {
        if let Some(m) = h.as_object_mut() {
            m.entry("highlight_query").or_insert_with(|| text_clause(plan));
        }
        h
    })
}

/// The BM25 leg: `depth` hits from the top.
pub fn bm25_leg(plan: &Plan, depth: usize) -> Value {
    let mut b = Map::new();
    b.insert("query".into(), bm25_query(plan, None));
    b.insert("size".into(), json!(depth));
    common(&mut b, plan, plan.highlight.clone());
    Value::Object(b)
}

/// The kNN leg: `depth` hits from the top.
pub fn knn_leg(plan: &Plan, vector: &[f32], dialect: Dialect, depth: usize) -> Value {
    let mut b = Map::new();
    match dialect {
        Dialect::Elasticsearch => {
            b.insert("knn".into(), es_knn_section(plan, vector, None, true));
        }
        Dialect::Opensearch => {
            b.insert("query".into(), knn_clause(plan, vector, KnnShape::Opensearch, None));
        }
    }
    b.insert("size".into(), json!(depth));
    common(&mut b, plan, highlight_with_text(plan));
    Value::Object(b)
}

/// One `_msearch` NDJSON body with the given legs, all on the plan's index.
pub fn msearch(plan: &Plan, legs: &[Value]) -> String {
    msearch_with(&json!({"index": plan.target.index}), legs)
}

/// One `_msearch` NDJSON body with the given legs, each under `header`.
pub fn msearch_with(header: &Value, legs: &[Value]) -> String {
    let header = header.to_string();
    let mut out = String::new();
    for leg in legs {
        out.push_str(&header);
        out.push('\n');
        out.push_str(&leg.to_string());
        out.push('\n');
    }
    out
}

fn neural_search_missing(what: &str) -> QueryError {
    QueryError::Invalid(format!(
        "engine-side {what} fusion on OpenSearch needs the neural-search plugin (the `hybrid` query and search pipelines), which this cluster does not have; use fusion {{\"{what}\": {{...}}}} (computed by the sidecar) or {{\"engine\": {{\"method\": \"boost\"}}}}"
    ))
}

fn weight(w: Weight) -> f64 {
    f64::from(w)
}

/// Picks the method `auto` stands for on this cluster, with the reason when it is a fallback.
pub fn resolve_method(method: EngineMethod, caps: &Capabilities) -> (EngineMethod, Option<String>) {
    if method != EngineMethod::Auto {
        return (method, None);
    }
    match caps.dialect() {
        Dialect::Elasticsearch if caps.info.supports_rrf_retriever() && caps.rrf_licensed && caps.rrf_module() => {
            (EngineMethod::Rrf, None)
        }
        Dialect::Elasticsearch if caps.info.supports_rrf_retriever() && !caps.rrf_module() => (
            EngineMethod::Boost,
            Some("retriever.rrf needs the rank-rrf module, which this cluster lacks; used knn + query boosts".into()),
        ),
        Dialect::Elasticsearch if caps.info.supports_rrf_retriever() => (
            EngineMethod::Boost,
            Some(format!(
                "retriever.rrf needs an enterprise or trial licence (this cluster: {}); used knn + query boosts",
                caps.license.as_deref().unwrap_or("unknown")
            )),
        ),
        Dialect::Elasticsearch => (
            EngineMethod::Boost,
            Some(format!("retriever.rrf needs Elasticsearch 8.16+ (this cluster: {})", caps.info.version)),
        ),
        Dialect::Opensearch if caps.neural_search => (EngineMethod::Linear, None),
        Dialect::Opensearch => (
            EngineMethod::Boost,
            Some("the neural-search plugin (hybrid query) is not installed; used bool.should boosts".into()),
        ),
    }
}

fn os_technique(n: Normalization, version: Version) -> Result<&'static str, QueryError> {
    match n {
        Normalization::Minmax => Ok("min_max"),
        Normalization::L2 => Ok("l2"),
        Normalization::Zscore if version >= Version::new(3, 0, 0) => Ok("z_score"),
        Normalization::Zscore => Err(QueryError::Invalid(format!(
            "OpenSearch {version} has no z_score normalisation in search pipelines (3.0+); use minmax or l2, or sidecar-side linear fusion"
        ))),
    }
}

/// The engine-fused search for a hybrid plan on this cluster.
pub fn engine_query(plan: &Plan, vector: &[f32], caps: &Capabilities) -> Result<EngineQuery, QueryError> {
    let Resolved::Engine { method, weight: w, rank_constant, normalization } = plan.fusion else {
        return Err(QueryError::Invalid("not an engine-fused plan".into()));
    };
    let (method, note) = resolve_method(method, caps);
    let w = weight(w);
    let version = caps.info.version;
    let mut body = Map::new();
    let mut pipeline = None;
    match (caps.dialect(), method) {
        (_, EngineMethod::Auto) => unreachable!("resolved above"),
        (Dialect::Elasticsearch, _) if !caps.info.supports_top_level_knn() => {
            return Err(QueryError::Invalid(format!(
                "Elasticsearch {version} has no top-level knn search (8.4+); vector search is not available on it"
            )));
        }
        (Dialect::Elasticsearch, EngineMethod::Boost) => {
            body.insert("query".into(), bm25_query(plan, Some(w)));
            body.insert("knn".into(), es_knn_section(plan, vector, Some(1.0 - w), true));
        }
        (Dialect::Elasticsearch, EngineMethod::Rrf) => {
            body.insert("retriever".into(), es_rrf_retriever(plan, vector, caps, rank_constant)?);
        }
        (Dialect::Elasticsearch, EngineMethod::Linear) => {
            return Err(QueryError::Invalid(
                "engine-side linear fusion is not offered on Elasticsearch; use fusion {\"linear\": {...}} (computed by the sidecar) or {\"engine\": {\"method\": \"boost\"}}".into(),
            ));
        }
        (Dialect::Opensearch, EngineMethod::Boost) => {
            body.insert(
                "query".into(),
                json!({"bool": {
                    "should": [bm25_query(plan, Some(w)), knn_clause(plan, vector, KnnShape::Opensearch, Some(1.0 - w))],
                    "minimum_should_match": 1,
                }}),
            );
        }
        (Dialect::Opensearch, EngineMethod::Rrf) => {
            pipeline = Some(os_rrf_pipeline(caps, rank_constant)?);
            body.insert("query".into(), hybrid_query(plan, vector));
        }
        (Dialect::Opensearch, EngineMethod::Linear) => {
            pipeline = Some(os_linear_pipeline(caps, normalization, w)?);
            body.insert("query".into(), hybrid_query(plan, vector));
        }
    }
    body.insert("size".into(), json!(plan.size));
    body.insert("from".into(), json!(plan.from));
    common(&mut body, plan, plan.highlight.clone());
    Ok(EngineQuery { method, body: Value::Object(body), pipeline, note })
}

/// Elasticsearch `retriever.rrf` over the BM25 and kNN legs, where this cluster can run it.
fn es_rrf_retriever(plan: &Plan, vector: &[f32], caps: &Capabilities, rank_constant: u32) -> Result<Value, QueryError> {
    if !caps.info.supports_rrf_retriever() {
        return Err(QueryError::Invalid(format!(
            "retriever.rrf needs Elasticsearch 8.16+ (this cluster: {}); use fusion {{\"rrf\": {{...}}}}, computed by the sidecar on any version",
            caps.info.version
        )));
    }
    if !caps.rrf_module() {
        return Err(QueryError::Invalid(
            "retriever.rrf needs Elasticsearch's rank-rrf module, which this cluster lacks; use fusion {\"rrf\": {...}}, computed by the sidecar".into(),
        ));
    }
    if !caps.rrf_licensed {
        return Err(QueryError::Invalid(format!(
            "retriever.rrf needs an enterprise or trial licence and this cluster's is `{}`; use fusion {{\"rrf\": {{...}}}}, computed by the sidecar on any licence",
            caps.license.as_deref().unwrap_or("unknown")
        )));
    }
    Ok(json!({"rrf": {
        "retrievers": [
            {"standard": {"query": bm25_query(plan, None)}},
            {"knn": es_knn_section(plan, vector, None, false)},
        ],
        "rank_constant": rank_constant,
        "rank_window_size": plan.k,
    }}))
}

/// The OpenSearch search pipeline (name, body) that fuses the hybrid legs by RRF.
fn os_rrf_pipeline(caps: &Capabilities, rank_constant: u32) -> Result<(String, Value), QueryError> {
    if !caps.neural_search {
        return Err(neural_search_missing("rrf"));
    }
    let version = caps.info.version;
    if version < Version::new(2, 19, 0) {
        return Err(QueryError::Invalid(format!(
            "RRF in an OpenSearch search pipeline needs 2.19+ (this cluster: {version}); use fusion {{\"rrf\": {{...}}}}, computed by the sidecar"
        )));
    }
    Ok((
        format!("semantic-sidecar-rrf-{rank_constant}"),
        json!({
            "description": "semantic-sidecar: reciprocal rank fusion of the BM25 and kNN sub-queries",
            "phase_results_processors": [{"score-ranker-processor": {"combination": {"technique": "rrf", "rank_constant": rank_constant}}}],
        }),
    ))
}

/// The OpenSearch search pipeline (name, body) that blends the normalised hybrid legs, `w` on BM25.
fn os_linear_pipeline(
    caps: &Capabilities,
    normalization: Normalization,
    w: f64,
) -> Result<(String, Value), QueryError> {
    if !caps.neural_search {
        return Err(neural_search_missing("linear"));
    }
    let technique = os_technique(normalization, caps.info.version)?;
    let permille = (w * 1000.0).round() as u32;
    Ok((
        format!("semantic-sidecar-linear-{technique}-{permille}"),
        json!({
            "description": "semantic-sidecar: normalised linear blend of the BM25 and kNN sub-queries",
            "phase_results_processors": [{"normalization-processor": {
                "normalization": {"technique": technique},
                "combination": {"technique": "arithmetic_mean", "parameters": {"weights": [w, 1.0 - w]}},
            }}],
        }),
    ))
}

/// OpenSearch `hybrid`: the two legs as sub-queries, each filtered.
fn hybrid_query(plan: &Plan, vector: &[f32]) -> Value {
    json!({"hybrid": {"queries": [bm25_query(plan, None), knn_clause(plan, vector, KnnShape::Opensearch, None)]}})
}

/// A hybrid clause nested inside another query: `bool.should[text, knn]`, scored by the engine
/// (sum of the boosted legs). Elasticsearch needs the `knn` query (8.12+).
pub fn nested_hybrid(plan: &Plan, vector: &[f32], caps: &Capabilities) -> Result<Value, QueryError> {
    if caps.dialect() == Dialect::Elasticsearch && caps.info.version < Version::new(8, 12, 0) {
        return Err(QueryError::Invalid(format!(
            "a hybrid clause inside another query needs the knn query of Elasticsearch 8.12+ (this cluster: {}); put it at the top of `query` instead",
            caps.info.version
        )));
    }
    let w = match plan.fusion {
        Resolved::Engine { weight: w, .. } => weight(w),
        Resolved::Sidecar(_) => 0.5,
    };
    let (b, k) = match plan.mode {
        super::request::Mode::Bm25 => return Ok(bm25_query(plan, None)),
        super::request::Mode::Knn => return Ok(knn_clause(plan, vector, KnnShape::of(&caps.info), None)),
        super::request::Mode::Hybrid => {
            (bm25_query(plan, Some(w)), knn_clause(plan, vector, KnnShape::of(&caps.info), Some(1.0 - w)))
        }
    };
    Ok(json!({"bool": {"should": [b, k], "minimum_should_match": 1}}))
}
