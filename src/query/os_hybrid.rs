//! OpenSearch's `hybrid` query scored by a search pipeline's `normalization-processor` or
//! `score-ranker-processor`, computed by the sidecar where the cluster has no neural-search
//! plugin. Pure: a search pipeline definition is parsed into its [`Scoring`] and the part the
//! engine can still run; a `hybrid` query into one `_msearch` body per sub-query plus one for
//! the total and aggregations; the answers are combined into OpenSearch's `_search` shape.
//!
//! The arithmetic is neural-search's (2.19; `z_score`, bounds and RRF weights as in 3.x), in
//! `f32` as there:
//! - **min_max**: `(s − min) / (max − min)` per sub-query; a score equal to both min and max is
//!   1.0, a result of exactly 0 becomes 0.001; `lower_bounds` / `upper_bounds` (`apply`, `clip`,
//!   `ignore`) replace min or max as documented.
//! - **l2**: `s / √Σs²` per sub-query (0 when the norm is 0).
//! - **z_score**: `(s − mean) / sd` (sample standard deviation); `s == mean` gives the
//!   sub-query's max score, `sd == 0` its min, a result ≤ 0 becomes 0.001.
//! - **combination** over the sub-queries, a sub-query that did not return the document
//!   scoring 0: `arithmetic_mean` `Σ w·s / Σ w` over the scores ≥ 0 (so a missing document
//!   counts as 0 with its weight), `geometric_mean` `exp(Σ w·ln s / Σ w)` and `harmonic_mean`
//!   `Σ w / Σ (w / s)` over the scores > 0; weights default to 1.
//! - **rrf**: `Σ w / (rank_constant + rank)`, 1-based ranks in each sub-query's list, `w`
//!   default 1.
//!
//! Where the sidecar's result can differ from the plugin's: OpenSearch normalises over the top
//! `pagination_depth` hits of each sub-query *on every shard* (and ranks RRF per shard); the
//! sidecar's lists are the engine's merged top `pagination_depth` of each sub-query. On a
//! one-shard index the lists are the same and so are the scores (to f32 rounding); with `n`
//! shards OpenSearch's lists hold up to `n ×` as many hits, so its min (and l2 norm, z mean) can
//! be lower, and ties are broken by shard order there, by best rank then id here.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::fusion::{LegHit, Ranked};
use super::request::QueryError;

/// Most sub-queries of one `hybrid` query (OpenSearch's limit).
pub const MAX_QUERIES: usize = 5;
/// The processors of a search pipeline that the sidecar runs (the engine refuses them without
/// the neural-search plugin).
pub const SIDECAR_PROCESSORS: &[&str] =
    &["normalization-processor", "score-ranker-processor", "hybrid_score_explanation", "neural_query_enricher"];

fn invalid(m: impl Into<String>) -> QueryError {
    QueryError::Invalid(m.into())
}

/// How a min_max bound is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoundMode {
    Apply,
    Clip,
    Ignore,
}

/// One sub-query's lower or upper min_max bound.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bound {
    pub mode: BoundMode,
    pub score: f32,
}

/// A normalisation technique.
#[derive(Clone, Debug, PartialEq)]
pub enum Technique {
    MinMax { lower: Vec<Bound>, upper: Vec<Bound> },
    L2,
    ZScore,
}

/// A combination technique of the normalization processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mean {
    Arithmetic,
    Geometric,
    Harmonic,
}

/// How a hybrid query's sub-query scores become one.
#[derive(Clone, Debug, PartialEq)]
pub enum Scoring {
    Normalize { technique: Technique, mean: Mean, weights: Vec<f32> },
    Rrf { rank_constant: u32, weights: Vec<f32> },
}

impl Default for Scoring {
    /// A hybrid query sent with no pipeline: `min_max` and `arithmetic_mean`, equal weights
    /// (the processor's defaults).
    fn default() -> Self {
        Scoring::Normalize {
            technique: Technique::MinMax { lower: vec![], upper: vec![] },
            mean: Mean::Arithmetic,
            weights: vec![],
        }
    }
}

/// `neural_query_enricher`: the model a `neural` query without `model_id` uses.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Enricher {
    pub default_model_id: Option<String>,
    /// Per field (`neural_field_default_id`).
    pub field_models: BTreeMap<String, String>,
}

impl Enricher {
    /// The model for a `neural` query on `field` that names none.
    pub fn model_for(&self, field: &str) -> Option<&str> {
        self.field_models.get(field).or(self.default_model_id.as_ref()).map(String::as_str)
    }
}

/// A search pipeline holding processors the sidecar runs.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchPipeline {
    /// `None`: the pipeline has no scoring processor (only an enricher): a hybrid query through
    /// it is scored with [`Scoring::default`].
    pub scoring: Option<Scoring>,
    pub enricher: Option<Enricher>,
    /// The definition without the sidecar's processors: what the engine keeps under the same
    /// name, so that its other processors still run and the name resolves there.
    pub engine_part: Value,
}

fn obj<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>, QueryError> {
    v.as_object().ok_or_else(|| invalid(format!("{at} must be an object")))
}

fn only(m: &Map<String, Value>, keys: &[&str], at: &str) -> Result<(), QueryError> {
    match m.keys().find(|k| !keys.contains(&k.as_str())) {
        Some(k) => Err(invalid(format!("{at}: unknown field `{k}` (known: {})", keys.join(", ")))),
        None => Ok(()),
    }
}

fn weights(params: Option<&Value>, at: &str, allowed: &[&str]) -> Result<Vec<f32>, QueryError> {
    let Some(p) = params else { return Ok(vec![]) };
    let p = obj(p, at)?;
    only(p, allowed, at)?;
    let Some(w) = p.get("weights") else { return Ok(vec![]) };
    let w: Vec<f32> = w
        .as_array()
        .and_then(|a| a.iter().map(|x| x.as_f64().map(|f| f as f32)).collect::<Option<Vec<_>>>())
        .ok_or_else(|| invalid(format!("{at}.weights must be an array of numbers")))?;
    if w.iter().any(|x| !(0.0..=1.0).contains(x)) {
        return Err(invalid(format!("all weights must be in range [0.0 ... 1.0], submitted weights: {w:?}")));
    }
    if (w.iter().sum::<f32>() - 1.0).abs() > 0.01 {
        return Err(invalid(format!("sum of weights for combination must be equal to 1.0, submitted weights: {w:?}")));
    }
    Ok(w)
}

fn bounds(v: Option<&Value>, at: &str, key: &str, default: f32) -> Result<Vec<Bound>, QueryError> {
    let Some(v) = v else { return Ok(vec![]) };
    let a = v.as_array().ok_or_else(|| invalid(format!("{at} must be an array")))?;
    a.iter()
        .enumerate()
        .map(|(i, b)| {
            let at = format!("{at}[{i}]");
            let m = obj(b, &at)?;
            only(m, &["mode", key], &at)?;
            let mode = match m.get("mode").map(|x| x.as_str()) {
                None | Some(Some("apply")) => BoundMode::Apply,
                Some(Some("clip")) => BoundMode::Clip,
                Some(Some("ignore")) => BoundMode::Ignore,
                _ => return Err(invalid(format!("{at}.mode must be apply, clip or ignore"))),
            };
            let score = match m.get(key) {
                None => default,
                Some(x) => x.as_f64().ok_or_else(|| invalid(format!("{at}.{key} must be a number")))? as f32,
            };
            if !(-10_000.0..=10_000.0).contains(&score) {
                return Err(invalid(format!("{at}.{key} must be in [-10000.0, 10000.0]")));
            }
            Ok(Bound { mode, score })
        })
        .collect()
}

fn normalization_processor(p: &Map<String, Value>, at: &str) -> Result<Scoring, QueryError> {
    only(p, &["normalization", "combination", "tag", "description", "ignore_failure"], at)?;
    let empty = Map::new();
    let n = p.get("normalization").map(|v| obj(v, &format!("{at}.normalization"))).transpose()?.unwrap_or(&empty);
    only(n, &["technique", "parameters"], &format!("{at}.normalization"))?;
    let technique = match n.get("technique").map(Value::as_str) {
        None | Some(Some("min_max")) => {
            let params = n.get("parameters").map(|v| obj(v, &format!("{at}.normalization.parameters"))).transpose()?;
            let params = params.unwrap_or(&empty);
            only(params, &["lower_bounds", "upper_bounds"], &format!("{at}.normalization.parameters"))?;
            Technique::MinMax {
                lower: bounds(params.get("lower_bounds"), "lower_bounds", "min_score", 0.0)?,
                upper: bounds(params.get("upper_bounds"), "upper_bounds", "max_score", 1.0)?,
            }
        }
        Some(Some("l2")) => Technique::L2,
        Some(Some("z_score")) => Technique::ZScore,
        Some(Some("rrf")) => {
            return Err(invalid(format!("{at}: rrf is the score-ranker-processor's technique, not a normalization")))
        }
        _ => return Err(invalid(format!("{at}.normalization.technique must be min_max, l2 or z_score"))),
    };
    if !matches!(technique, Technique::MinMax { .. }) && n.get("parameters").is_some() {
        return Err(invalid(format!("{at}.normalization.parameters apply to min_max only")));
    }
    let c = p.get("combination").map(|v| obj(v, &format!("{at}.combination"))).transpose()?.unwrap_or(&empty);
    only(c, &["technique", "parameters"], &format!("{at}.combination"))?;
    let mean = match c.get("technique").map(Value::as_str) {
        None | Some(Some("arithmetic_mean")) => Mean::Arithmetic,
        Some(Some("geometric_mean")) => Mean::Geometric,
        Some(Some("harmonic_mean")) => Mean::Harmonic,
        _ => {
            return Err(invalid(format!(
                "{at}.combination.technique must be arithmetic_mean, geometric_mean or harmonic_mean"
            )))
        }
    };
    if technique == Technique::ZScore && mean != Mean::Arithmetic {
        return Err(invalid("z_score normalization can only be used with arithmetic_mean combination"));
    }
    let weights = weights(c.get("parameters"), &format!("{at}.combination.parameters"), &["weights"])?;
    Ok(Scoring::Normalize { technique, mean, weights })
}

fn score_ranker(p: &Map<String, Value>, at: &str) -> Result<Scoring, QueryError> {
    only(p, &["combination", "tag", "description", "ignore_failure"], at)?;
    let empty = json!({});
    let c = obj(p.get("combination").unwrap_or(&empty), &format!("{at}.combination"))?;
    only(c, &["technique", "rank_constant", "parameters"], &format!("{at}.combination"))?;
    if !matches!(c.get("technique").map(Value::as_str), None | Some(Some("rrf"))) {
        return Err(invalid(format!("{at}.combination.technique must be rrf")));
    }
    let rank_constant = match c.get("rank_constant") {
        None => 60,
        Some(v) => v
            .as_u64()
            .filter(|k| (1..=10_000).contains(k))
            .ok_or_else(|| invalid(format!("{at}.combination.rank_constant must be an integer in [1, 10000]")))?
            as u32,
    };
    let weights = weights(c.get("parameters"), &format!("{at}.combination.parameters"), &["weights"])?;
    Ok(Scoring::Rrf { rank_constant, weights })
}

fn enricher(p: &Map<String, Value>, at: &str) -> Result<Enricher, QueryError> {
    only(p, &["default_model_id", "neural_field_default_id", "tag", "description", "ignore_failure"], at)?;
    let default_model_id = match p.get("default_model_id") {
        None => None,
        Some(v) => {
            Some(v.as_str().ok_or_else(|| invalid(format!("{at}.default_model_id must be a string")))?.to_string())
        }
    };
    let mut field_models = BTreeMap::new();
    if let Some(f) = p.get("neural_field_default_id") {
        for (k, v) in obj(f, &format!("{at}.neural_field_default_id"))? {
            let id = v.as_str().ok_or_else(|| invalid(format!("{at}.neural_field_default_id.{k} must be a string")))?;
            field_models.insert(k.clone(), id.to_string());
        }
    }
    Ok(Enricher { default_model_id, field_models })
}

/// Parses a search pipeline definition: `None` when it holds none of the processors the
/// sidecar runs ([`SIDECAR_PROCESSORS`]), so the engine takes it as it is.
pub fn parse_pipeline(def: &Value) -> Result<Option<SearchPipeline>, QueryError> {
    let m = obj(def, "the search pipeline")?;
    let mut engine_part = m.clone();
    let (mut scoring, mut enrich, mut found) = (None, None, false);
    for section in ["request_processors", "response_processors", "phase_results_processors"] {
        let Some(list) = m.get(section) else { continue };
        let list = list.as_array().ok_or_else(|| invalid(format!("{section} must be an array")))?;
        let mut kept = Vec::new();
        for (i, p) in list.iter().enumerate() {
            let at = format!("{section}[{i}]");
            let (name, body) = obj(p, &at)?
                .iter()
                .next()
                .filter(|_| p.as_object().is_some_and(|o| o.len() == 1))
                .ok_or_else(|| invalid(format!("{at} must be an object with one processor")))?;
            if !SIDECAR_PROCESSORS.contains(&name.as_str()) {
                kept.push(p.clone());
                continue;
            }
            found = true;
            let at = format!("{at}.{name}");
            let body = obj(body, &at)?;
            let expected = match name.as_str() {
                "normalization-processor" | "score-ranker-processor" => "phase_results_processors",
                "hybrid_score_explanation" => "response_processors",
                _ => "request_processors",
            };
            if section != expected {
                return Err(invalid(format!("{at} belongs in {expected}")));
            }
            match name.as_str() {
                "normalization-processor" | "score-ranker-processor" if scoring.is_some() => {
                    return Err(invalid(
                        "a search pipeline can hold one normalization-processor or score-ranker-processor",
                    ))
                }
                "normalization-processor" => scoring = Some(normalization_processor(body, &at)?),
                "score-ranker-processor" => scoring = Some(score_ranker(body, &at)?),
                "neural_query_enricher" => enrich = Some(enricher(body, &at)?),
                _ => only(body, &["tag", "description", "ignore_failure"], &at)?,
            }
        }
        engine_part.insert(section.into(), Value::Array(kept));
    }
    Ok(found.then_some(SearchPipeline { scoring, enricher: enrich, engine_part: Value::Object(engine_part) }))
}

impl Scoring {
    /// Checks the per-sub-query parameters against a query's number of sub-queries.
    pub fn check(&self, queries: usize) -> Result<(), QueryError> {
        let (weights, bounds): (&[f32], [usize; 2]) = match self {
            Scoring::Normalize { technique: Technique::MinMax { lower, upper }, weights, .. } => {
                (weights, [lower.len(), upper.len()])
            }
            Scoring::Normalize { weights, .. } | Scoring::Rrf { weights, .. } => (weights, [0, 0]),
        };
        if !weights.is_empty() && weights.len() != queries {
            return Err(invalid(format!(
                "number of weights [{}] must match number of sub-queries [{queries}] in hybrid query",
                weights.len()
            )));
        }
        for (n, what) in bounds.iter().zip(["lower_bounds", "upper_bounds"]) {
            if *n != 0 && *n != queries {
                return Err(invalid(format!("{what} has {n} entries; the hybrid query has {queries} sub-queries")));
            }
        }
        Ok(())
    }
}

const MIN_SCORE: f32 = 0.001;

fn min_max_one(s: f32, min: f32, max: f32, lower: Option<&Bound>, upper: Option<&Bound>) -> f32 {
    if max == min && max == s {
        return 1.0;
    }
    let lower = lower.filter(|b| b.mode != BoundMode::Ignore);
    let upper = upper.filter(|b| b.mode != BoundMode::Ignore);
    let lo = match lower {
        Some(Bound { mode: BoundMode::Apply, score }) if max > *score && s > *score => *score,
        Some(Bound { mode: BoundMode::Clip, score }) if max >= *score => *score,
        _ => min,
    };
    let hi = match upper {
        Some(Bound { mode: BoundMode::Apply, score }) if min < *score && s < *score => *score,
        Some(Bound { mode: BoundMode::Clip, score }) if min <= *score => *score,
        _ => max,
    };
    if lower.is_some_and(|b| b.mode == BoundMode::Clip) && s < lo {
        return MIN_SCORE;
    }
    if upper.is_some_and(|b| b.mode == BoundMode::Clip) && s > hi {
        return 1.0;
    }
    if hi == lo {
        return 1.0;
    }
    let n = (s - lo) / (hi - lo);
    if n == 0.0 {
        MIN_SCORE
    } else {
        n
    }
}

/// One sub-query's scores, normalised.
fn normalize(scores: &[f32], technique: &Technique, sub: usize) -> Vec<f32> {
    if scores.is_empty() {
        return vec![];
    }
    let min = scores.iter().copied().fold(f32::MAX, f32::min);
    let max = scores.iter().copied().fold(f32::MIN, f32::max);
    match technique {
        Technique::MinMax { lower, upper } => {
            scores.iter().map(|&s| min_max_one(s, min, max, lower.get(sub), upper.get(sub))).collect()
        }
        Technique::L2 => {
            let norm = scores.iter().map(|s| s * s).sum::<f32>().sqrt();
            scores.iter().map(|&s| if norm == 0.0 { 0.0 } else { s / norm }).collect()
        }
        Technique::ZScore => {
            let n = scores.len() as f64;
            let mean = scores.iter().map(|&s| f64::from(s)).sum::<f64>() / n;
            let var = if scores.len() > 1 {
                scores.iter().map(|&s| (f64::from(s) - mean).powi(2)).sum::<f64>() / (n - 1.0)
            } else {
                0.0
            };
            let (mean, sd) = (mean as f32, var.sqrt() as f32);
            scores
                .iter()
                .map(|&s| {
                    if s == mean {
                        max
                    } else if sd == 0.0 {
                        min
                    } else {
                        let z = (s - mean) / sd;
                        if z <= 0.0 {
                            MIN_SCORE
                        } else {
                            z
                        }
                    }
                })
                .collect()
        }
    }
}

fn weight(weights: &[f32], i: usize) -> f32 {
    weights.get(i).copied().unwrap_or(1.0)
}

fn combine_one(scores: &[f32], mean: Mean, weights: &[f32]) -> f32 {
    let (mut num, mut den) = (0.0f32, 0.0f32);
    for (i, &s) in scores.iter().enumerate() {
        let w = weight(weights, i);
        match mean {
            Mean::Arithmetic if s >= 0.0 => {
                num += s * w;
                den += w;
            }
            Mean::Geometric if s > 0.0 => {
                num += w * s.ln();
                den += w;
            }
            Mean::Harmonic if s > 0.0 => {
                num += w / s;
                den += w;
            }
            _ => {}
        }
    }
    match mean {
        Mean::Arithmetic if den == 0.0 => 0.0,
        Mean::Arithmetic => num / den,
        Mean::Geometric if den == 0.0 => 0.0,
        Mean::Geometric => (num / den).exp(),
        Mean::Harmonic if num > 0.0 => den / num,
        Mean::Harmonic => 0.0,
    }
}

/// A document's (1-based rank, raw score) on each list.
type Ranks = Vec<Option<(usize, f64)>>;

/// Combines the sub-queries' ranked lists (each the engine's top hits of one sub-query) into
/// one list, best first; ties by the best rank on any list, then id.
pub fn combine(lists: &[Vec<LegHit>], scoring: &Scoring) -> Vec<Ranked> {
    // per document, its (rank, raw score) in each list, and its score after normalisation
    let mut docs: BTreeMap<&str, (Ranks, Vec<f32>)> = BTreeMap::new();
    for (j, list) in lists.iter().enumerate() {
        let raw: Vec<f32> = list.iter().map(|h| h.score as f32).collect();
        let normed: Vec<f32> = match scoring {
            Scoring::Normalize { technique, .. } => normalize(&raw, technique, j),
            Scoring::Rrf { rank_constant, .. } => {
                (0..list.len()).map(|r| 1.0 / (*rank_constant as f32 + r as f32 + 1.0)).collect()
            }
        };
        for (r, (h, n)) in list.iter().zip(normed).enumerate() {
            let e = docs.entry(h.id.as_str()).or_insert_with(|| (vec![None; lists.len()], vec![0.0; lists.len()]));
            if e.0[j].is_none() {
                e.0[j] = Some((r + 1, h.score));
                e.1[j] = n;
            }
        }
    }
    let mut out: Vec<Ranked> = docs
        .into_iter()
        .map(|(id, (ranks, scores))| {
            let score = match scoring {
                Scoring::Normalize { mean, weights, .. } => combine_one(&scores, *mean, weights),
                Scoring::Rrf { weights, .. } => scores.iter().enumerate().map(|(i, s)| weight(weights, i) * s).sum(),
            };
            Ranked { id: id.to_string(), score: f64::from(score), ranks }
        })
        .collect();
    let best = |r: &Ranked| r.ranks.iter().flatten().map(|x| x.0).min().unwrap_or(usize::MAX);
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| best(a).cmp(&best(b))).then_with(|| a.id.cmp(&b.id)));
    out
}

/// A parsed `hybrid` query.
#[derive(Clone, Debug, PartialEq)]
pub struct HybridQuery {
    pub queries: Vec<Value>,
    pub filter: Option<Value>,
    pub pagination_depth: Option<usize>,
}

/// The body's top-level OpenSearch `hybrid` query (`{"hybrid": {"queries": [...]}}`), if it
/// has one; the sidecar's own clause (`{"hybrid": {"query": "text"}}`) is not one.
pub fn hybrid_query(body: &Value) -> Option<Result<HybridQuery, QueryError>> {
    let h = body.pointer("/query/hybrid")?;
    let m = h.as_object()?;
    if m.get("query").is_some_and(Value::is_string) || body.pointer("/query").and_then(Value::as_object)?.len() != 1 {
        return None;
    }
    Some(parse_hybrid(m))
}

fn parse_hybrid(m: &Map<String, Value>) -> Result<HybridQuery, QueryError> {
    only(m, &["queries", "filter", "pagination_depth", "boost", "_name"], "query.hybrid")?;
    let queries = m
        .get("queries")
        .and_then(Value::as_array)
        .filter(|q| !q.is_empty())
        .ok_or_else(|| invalid("query.hybrid.queries must be a non-empty array of queries"))?;
    if queries.len() > MAX_QUERIES {
        return Err(invalid(format!(
            "Number of sub-queries exceeds maximum supported by [hybrid] query: {MAX_QUERIES}"
        )));
    }
    if let Some((i, _)) = queries.iter().enumerate().find(|(_, q)| !q.is_object()) {
        return Err(invalid(format!("query.hybrid.queries[{i}] must be a query object")));
    }
    if queries.iter().any(|q| q.get("hybrid").is_some()) {
        return Err(invalid("hybrid query must be a top level query and cannot be wrapped into other queries"));
    }
    let pagination_depth = match m.get("pagination_depth") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|d| (1..=10_000).contains(d))
                .ok_or_else(|| invalid("pagination_depth must be an integer in [1, 10000]"))? as usize,
        ),
    };
    Ok(HybridQuery { queries: queries.clone(), filter: m.get("filter").cloned(), pagination_depth })
}

/// A sub-query with the hybrid query's `filter`: inside a `knn` query's own `filter` (an
/// efficient filter, as the plugin applies it), else as a `bool` filter around it.
fn filtered(q: &Value, filter: Option<&Value>) -> Value {
    let Some(f) = filter else { return q.clone() };
    if let Some(knn) = q.get("knn").and_then(Value::as_object).filter(|k| k.len() == 1) {
        let (field, body) = knn.iter().next().expect("one field");
        if let Some(b) = body.as_object() {
            let mut b = b.clone();
            let combined = match b.remove("filter") {
                Some(old) => json!({"bool": {"filter": [old, f]}}),
                None => f.clone(),
            };
            b.insert("filter".into(), combined);
            return json!({"knn": {field.clone(): b}});
        }
    }
    json!({"bool": {"must": [q], "filter": [f]}})
}

/// Body keys of a hybrid search the sidecar scores besides [`LEG_KEYS`] (which every leg gets).
pub const OWN_KEYS: &[&str] = &["query", "size", "from", "track_total_hits", "aggs", "aggregations", "search_pipeline"];
/// Body keys every sub-query's search gets as they are.
pub const LEG_KEYS: &[&str] = &[
    "_source",
    "highlight",
    "stored_fields",
    "docvalue_fields",
    "fields",
    "script_fields",
    "version",
    "seq_no_primary_term",
    "timeout",
    "post_filter",
    "rescore",
];

/// The `_msearch` bodies of a hybrid search: one per sub-query (its top `depth` hits), then,
/// unless `track_total_hits` is false and nothing aggregates, one that counts (and
/// aggregates) the documents any sub-query matches, as the plugin counts them.
#[derive(Clone, Debug, PartialEq)]
pub struct HybridPlan {
    pub legs: Vec<Value>,
    pub union: Option<Value>,
    pub from: usize,
    pub size: usize,
}

/// Plans `body` (whose query is `hq`); `engine_pipeline`: the name each body sends as its
/// `search_pipeline` (the engine's part of the pipeline), `max_depth` the deepest leg allowed.
pub fn plan(
    body: &Map<String, Value>,
    hq: &HybridQuery,
    engine_pipeline: Option<&str>,
    max_depth: usize,
) -> Result<HybridPlan, QueryError> {
    if let Some(k) = body.keys().find(|k| !OWN_KEYS.contains(&k.as_str()) && !LEG_KEYS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "`{k}` cannot be combined with a hybrid query that the sidecar scores (known: {}, {})",
            OWN_KEYS.join(", "),
            LEG_KEYS.join(", ")
        )));
    }
    let count = |k: &str, d: usize| -> Result<usize, QueryError> {
        match body.get(k) {
            None | Some(Value::Null) => Ok(d),
            Some(v) => {
                v.as_u64().map(|n| n as usize).ok_or_else(|| invalid(format!("`{k}` must be a non-negative integer")))
            }
        }
    };
    let (size, from) = (count("size", 10)?, count("from", 0)?);
    let depth = hq.pagination_depth.unwrap_or(from + size);
    if from > 0 && hq.pagination_depth.is_none() {
        return Err(invalid("pagination_depth is missing in the search request: a hybrid query with `from` needs it"));
    }
    if depth > max_depth {
        return Err(QueryError::Limit(format!("the hybrid query's depth ({depth}) is more than {max_depth}")));
    }
    let with_pipeline = |mut b: Map<String, Value>| {
        if let Some(p) = engine_pipeline {
            b.insert("search_pipeline".into(), json!(p));
        }
        Value::Object(b)
    };
    let legs = hq
        .queries
        .iter()
        .map(|q| {
            let mut b = Map::new();
            b.insert("query".into(), filtered(q, hq.filter.as_ref()));
            b.insert("size".into(), json!(depth));
            b.insert("track_total_hits".into(), json!(false));
            for k in LEG_KEYS {
                if let Some(v) = body.get(*k) {
                    b.insert((*k).into(), v.clone());
                }
            }
            with_pipeline(b)
        })
        .collect();
    let aggs = body.get("aggs").or_else(|| body.get("aggregations"));
    let union = (body.get("track_total_hits") != Some(&json!(false)) || aggs.is_some()).then(|| {
        let mut should = json!({"should": hq.queries, "minimum_should_match": 1});
        if let Some(f) = &hq.filter {
            should["filter"] = json!([f]);
        }
        let mut b = Map::new();
        b.insert("size".into(), json!(0));
        b.insert("query".into(), json!({"bool": should}));
        for k in ["track_total_hits", "timeout", "post_filter"] {
            if let Some(v) = body.get(k) {
                b.insert(k.into(), v.clone());
            }
        }
        if let Some(a) = aggs {
            b.insert("aggs".into(), a.clone());
        }
        with_pipeline(b)
    });
    Ok(HybridPlan { legs, union, from, size })
}

/// The hits of one `_msearch` answer.
fn hits_of(r: &Value) -> &[Value] {
    r.pointer("/hits/hits").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// The answer in OpenSearch's `_search` shape: the page `[from, from + size)` of the combined
/// list, each hit the first sub-query's copy (with the highlights of the others) and the
/// combined `_score`; `hits.total`, aggregations and `_shards` from the union body's answer.
pub fn answer(plan: &HybridPlan, legs: &[Value], union: Option<&Value>, scoring: &Scoring) -> Value {
    let lists: Vec<Vec<LegHit>> = legs.iter().map(|r| super::retriever::leg_hits(hits_of(r))).collect();
    let combined = combine(&lists, scoring);
    let copy = |id: &str| {
        let mut copies = legs.iter().filter_map(|l| hits_of(l).iter().find(|h| super::answer::key(h) == id));
        let mut hit = copies.next()?.clone();
        for other in copies {
            let (Some(theirs), Some(m)) = (other.get("highlight").and_then(Value::as_object), hit.as_object_mut())
            else {
                continue;
            };
            if let Some(ours) = m.entry("highlight").or_insert_with(|| json!({})).as_object_mut() {
                for (f, v) in theirs {
                    ours.entry(f.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        Some(hit)
    };
    let hits: Vec<Value> = combined
        .iter()
        .skip(plan.from)
        .take(plan.size)
        .filter_map(|r| {
            let mut h = copy(&r.id)?;
            h["_score"] = json!(r.score as f32);
            Some(h)
        })
        .collect();
    let base = union.or(legs.first());
    let mut out = Map::new();
    out.insert("took".into(), json!(0));
    out.insert("timed_out".into(), json!(legs.iter().chain(union).any(|r| r.get("timed_out") == Some(&json!(true)))));
    if let Some(s) = base.and_then(|b| b.get("_shards")) {
        out.insert("_shards".into(), s.clone());
    }
    let mut h = Map::new();
    if let Some(t) = union.and_then(|u| u.pointer("/hits/total")) {
        h.insert("total".into(), t.clone());
    }
    h.insert("max_score".into(), combined.first().map_or(Value::Null, |r| json!(r.score as f32)));
    h.insert("hits".into(), Value::Array(hits));
    out.insert("hits".into(), Value::Object(h));
    if let Some(a) = union.and_then(|u| u.get("aggregations")) {
        out.insert("aggregations".into(), a.clone());
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(ids: &[(&str, f64)]) -> Vec<LegHit> {
        ids.iter().map(|(i, s)| LegHit { id: i.to_string(), score: *s }).collect()
    }

    fn pipeline(processor: Value) -> SearchPipeline {
        parse_pipeline(&json!({"phase_results_processors": [processor]})).unwrap().unwrap()
    }

    #[test]
    fn the_documented_pipelines_parse() {
        let p = pipeline(json!({"normalization-processor": {
            "normalization": {"technique": "min_max"},
            "combination": {"technique": "arithmetic_mean", "parameters": {"weights": [0.3, 0.7]}}}}));
        assert_eq!(
            p.scoring,
            Some(Scoring::Normalize {
                technique: Technique::MinMax { lower: vec![], upper: vec![] },
                mean: Mean::Arithmetic,
                weights: vec![0.3, 0.7]
            })
        );
        assert_eq!(p.engine_part, json!({"phase_results_processors": []}));
        let p = pipeline(json!({"normalization-processor": {"normalization": {"technique": "min_max", "parameters": {
            "lower_bounds": [{"mode": "apply", "min_score": 0.5}, {"mode": "ignore"}],
            "upper_bounds": [{"mode": "clip", "max_score": 0.8}, {"mode": "ignore"}]}},
            "combination": {"technique": "arithmetic_mean"}}}));
        let Some(Scoring::Normalize { technique: Technique::MinMax { lower, upper }, .. }) = p.scoring else {
            panic!()
        };
        assert_eq!(lower[0], Bound { mode: BoundMode::Apply, score: 0.5 });
        assert_eq!(upper[1].mode, BoundMode::Ignore);
        let p = pipeline(
            json!({"score-ranker-processor": {"combination": {"technique": "rrf", "rank_constant": 40, "parameters": {"weights": [0.7, 0.3]}}}}),
        );
        assert_eq!(p.scoring, Some(Scoring::Rrf { rank_constant: 40, weights: vec![0.7, 0.3] }));
        let mixed = json!({"request_processors": [{"filter_query": {"query": {"term": {"a": 1}}}},
            {"neural_query_enricher": {"default_model_id": "m", "neural_field_default_id": {"f": "n"}}}],
            "response_processors": [{"hybrid_score_explanation": {}}, {"rename_field": {"field": "a", "target_field": "b"}}],
            "phase_results_processors": [{"normalization-processor": {}}]});
        let p = parse_pipeline(&mixed).unwrap().unwrap();
        assert_eq!(p.engine_part["request_processors"].as_array().unwrap().len(), 1);
        assert_eq!(p.engine_part["response_processors"][0]["rename_field"]["field"], "a");
        let e = p.enricher.unwrap();
        assert_eq!((e.model_for("f"), e.model_for("g")), (Some("n"), Some("m")));
        assert_eq!(parse_pipeline(&json!({"request_processors": [{"filter_query": {}}]})).unwrap(), None);
    }

    #[test]
    fn what_the_plugin_refuses_is_refused() {
        let cases = [
            (
                json!({"normalization-processor": {"combination": {"parameters": {"weights": [0.3, 0.3]}}}}),
                "sum of weights",
            ),
            (json!({"normalization-processor": {"combination": {"parameters": {"weights": [1.5, -0.5]}}}}), "range"),
            (
                json!({"normalization-processor": {"normalization": {"technique": "z_score"}, "combination": {"technique": "harmonic_mean"}}}),
                "arithmetic_mean",
            ),
            (json!({"normalization-processor": {"normalization": {"technique": "softmax"}}}), "min_max, l2 or z_score"),
            (json!({"normalization-processor": {"bogus": 1}}), "`bogus`"),
            (json!({"score-ranker-processor": {"combination": {"rank_constant": 0}}}), "rank_constant"),
            (json!({"score-ranker-processor": {"combination": {"technique": "borda"}}}), "must be rrf"),
        ];
        for (p, want) in cases {
            let e = parse_pipeline(&json!({"phase_results_processors": [p]})).unwrap_err().to_string();
            assert!(e.contains(want), "{p}: {e}");
        }
        let two =
            json!({"phase_results_processors": [{"normalization-processor": {}}, {"score-ranker-processor": {}}]});
        assert!(parse_pipeline(&two).is_err());
        let misplaced = json!({"request_processors": [{"normalization-processor": {}}]});
        assert!(parse_pipeline(&misplaced).unwrap_err().to_string().contains("phase_results_processors"));
        let s = Scoring::Normalize { technique: Technique::L2, mean: Mean::Arithmetic, weights: vec![0.5, 0.5] };
        assert!(s.check(3).unwrap_err().to_string().contains("number of weights"));
        assert!(s.check(2).is_ok());
    }

    #[test]
    fn min_max_and_arithmetic_mean_match_the_plugins_arithmetic() {
        let bm25 = list(&[("a", 10.0), ("b", 6.0), ("c", 2.0)]);
        let knn = list(&[("c", 0.9), ("d", 0.5)]);
        let s = Scoring::Normalize {
            technique: Technique::MinMax { lower: vec![], upper: vec![] },
            mean: Mean::Arithmetic,
            weights: vec![0.3, 0.7],
        };
        let out = combine(&[bm25, knn], &s);
        let by: BTreeMap<&str, f64> = out.iter().map(|r| (r.id.as_str(), r.score)).collect();
        // c: bm25 min → 0.001, knn max → 1.0
        assert!((by["c"] - (0.3 * 0.001 + 0.7 * 1.0) as f32 as f64).abs() < 1e-6, "{by:?}");
        // a: bm25 1.0, missing on knn → 0 with its weight
        assert!((by["a"] - 0.3).abs() < 1e-6);
        assert!((by["b"] - 0.3 * 0.5).abs() < 1e-6);
        // d: the knn minimum → 0.001
        assert!((by["d"] - 0.7 * 0.001).abs() < 1e-6);
        assert_eq!(out[0].id, "c");
    }

    #[test]
    fn geometric_and_harmonic_skip_missing_scores_and_single_lists_score_one() {
        let s = |mean| Scoring::Normalize { technique: Technique::L2, mean, weights: vec![] };
        let a = list(&[("x", 3.0), ("y", 4.0)]);
        let b = list(&[("x", 1.0)]);
        let geo = combine(&[a.clone(), b.clone()], &s(Mean::Geometric));
        let x = geo.iter().find(|r| r.id == "x").unwrap().score;
        // x: l2 0.6 and 1.0 → sqrt(0.6)
        assert!((x - 0.6f64.sqrt()).abs() < 1e-6, "{x}");
        let y = geo.iter().find(|r| r.id == "y").unwrap().score;
        assert!((y - 0.8).abs() < 1e-6, "y is missing from b: only its own score counts");
        let har = combine(&[a, b], &s(Mean::Harmonic));
        let x = har.iter().find(|r| r.id == "x").unwrap().score;
        assert!((x - 2.0 / (1.0 / 0.6 + 1.0)).abs() < 1e-6);
        let mm = Scoring::default();
        assert_eq!(combine(&[list(&[("only", 3.0)])], &mm)[0].score, 1.0);
    }

    #[test]
    fn z_score_and_bounds_follow_the_documented_formulas() {
        let z = normalize(&[1.0, 2.0, 3.0], &Technique::ZScore, 0);
        // mean 2, sample sd 1: 1 → ≤ 0 → 0.001, 2 == mean → max 3, 3 → 1
        assert_eq!(z, vec![0.001, 3.0, 1.0]);
        let lower = vec![Bound { mode: BoundMode::Clip, score: 2.0 }];
        let t = Technique::MinMax { lower, upper: vec![] };
        let v = normalize(&[1.0, 2.5, 4.0], &t, 0);
        assert_eq!(v[0], 0.001, "clipped below the bound");
        assert!((v[1] - 0.25).abs() < 1e-6 && (v[2] - 1.0).abs() < 1e-6, "{v:?}");
        let upper = vec![Bound { mode: BoundMode::Clip, score: 0.8 }];
        let v = normalize(&[0.2, 0.5, 0.9], &Technique::MinMax { lower: vec![], upper }, 0);
        assert_eq!(v[2], 1.0);
        assert!((v[1] - 0.5).abs() < 1e-6, "{v:?}");
    }

    #[test]
    fn rrf_sums_weighted_reciprocal_ranks() {
        let s = Scoring::Rrf { rank_constant: 60, weights: vec![] };
        let out = combine(&[list(&[("a", 9.0), ("b", 1.0)]), list(&[("b", 0.9)])], &s);
        assert_eq!(out[0].id, "b");
        assert!((out[0].score - (1.0f32 / 62.0 + 1.0 / 61.0) as f64).abs() < 1e-7);
        let w = Scoring::Rrf { rank_constant: 60, weights: vec![0.9, 0.1] };
        assert_eq!(combine(&[list(&[("a", 9.0)]), list(&[("b", 0.9)])], &w)[0].id, "a");
    }

    #[test]
    fn a_hybrid_search_plans_one_leg_per_sub_query_and_a_union() {
        let body = json!({"size": 5, "_source": {"exclude": ["v"]}, "aggs": {"t": {"terms": {"field": "t"}}},
            "query": {"hybrid": {"pagination_depth": 10, "filter": {"term": {"c": "x"}}, "queries": [
                {"match": {"text": {"query": "horse"}}},
                {"knn": {"v": {"vector": [1.0], "k": 5}}}]}}});
        let hq = hybrid_query(&body).unwrap().unwrap();
        let p = plan(body.as_object().unwrap(), &hq, Some("nlp"), 1000).unwrap();
        assert_eq!(p.legs.len(), 2);
        assert_eq!(p.legs[0]["size"], 10);
        assert_eq!(p.legs[0]["query"]["bool"]["filter"][0]["term"]["c"], "x");
        assert_eq!(p.legs[1]["query"]["knn"]["v"]["filter"]["term"]["c"], "x", "an efficient knn filter");
        assert_eq!(p.legs[1]["_source"]["exclude"][0], "v");
        assert_eq!(p.legs[0]["search_pipeline"], "nlp");
        let u = p.union.unwrap();
        assert_eq!((u["size"].clone(), u["aggs"]["t"]["terms"]["field"].clone()), (json!(0), json!("t")));
        assert_eq!(u["query"]["bool"]["should"].as_array().unwrap().len(), 2);
        assert!(hybrid_query(&json!({"query": {"hybrid": {"query": "ours"}}})).is_none());
        assert!(hybrid_query(&json!({"query": {"match_all": {}}})).is_none());
        let deep = json!({"from": 5, "query": {"hybrid": {"queries": [{"match_all": {}}]}}});
        let hq = hybrid_query(&deep).unwrap().unwrap();
        assert!(plan(deep.as_object().unwrap(), &hq, None, 100).unwrap_err().to_string().contains("pagination_depth"));
        let sorted = json!({"sort": ["_doc"], "query": {"hybrid": {"queries": [{"match_all": {}}]}}});
        let hq = hybrid_query(&sorted).unwrap().unwrap();
        assert!(plan(sorted.as_object().unwrap(), &hq, None, 100).unwrap_err().to_string().contains("`sort`"));
        let six = json!({"query": {"hybrid": {"queries": [{}, {}, {}, {}, {}, {}]}}});
        assert!(hybrid_query(&six).unwrap().is_err());
    }

    #[test]
    fn the_answer_is_opensearch_shaped() {
        let body = json!({"size": 2, "query": {"hybrid": {"queries": [{"match_all": {}}, {"match_all": {}}]}}});
        let hq = hybrid_query(&body).unwrap().unwrap();
        let p = plan(body.as_object().unwrap(), &hq, None, 100).unwrap();
        let hit = |id: &str, s: f64, hl: &str| json!({"_index": "i", "_id": id, "_score": s, "highlight": {hl: ["x"]}});
        let a = json!({"_shards": {"total": 1}, "hits": {"hits": [hit("1", 5.0, "t"), hit("2", 1.0, "t")]}});
        let b = json!({"hits": {"hits": [hit("2", 0.9, "u"), hit("3", 0.1, "u")]}});
        let u = json!({"_shards": {"total": 1, "successful": 1}, "hits": {"total": {"value": 3, "relation": "eq"}}, "aggregations": {"x": {}}});
        let v = answer(&p, &[a, b], Some(&u), &Scoring::default());
        let hits = v["hits"]["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 2);
        // 2: 0.001 on the first list, 1.0 on the second; 1: 1.0 and missing (0)
        assert_eq!((hits[0]["_id"].as_str(), hits[1]["_id"].as_str()), (Some("2"), Some("1")));
        assert_eq!(hits[0]["highlight"], json!({"t": ["x"], "u": ["x"]}), "{v}");
        assert_eq!(v["hits"]["total"]["value"], 3);
        assert_eq!(v["hits"]["max_score"], json!((0.001f32 + 1.0) / 2.0));
        assert_eq!(v["_shards"]["successful"], 1);
        assert!(v.get("aggregations").is_some());
    }
}
