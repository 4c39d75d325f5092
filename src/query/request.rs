//! The sidecar's search request (`POST /search`, and the hybrid clause of `_search`): parsed
//! strictly, checked against the `[search]` bounds, and resolved against the index's pipeline
//! into a [`Plan`] that the request builders turn into engine JSON. Pure.
//!
//! Safety: the user's text only ever lands in `multi_match` query strings and in the query
//! vector. Filters are the application's own query DSL, but clauses that run code or parse a
//! query language (`script`, `script_score`, `query_string`, `simple_query_string`, templates)
//! are refused in them, so a filter built from user input cannot become an injection point.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::fusion::Fusion;
use crate::error::ErrorCode;
use crate::settings::SearchSettings;
use crate::types::pipeline::Pipeline;
use crate::types::search::{check_field, EngineMethod, FusionSpec, Normalization, SearchSpec, Weight};

/// Which legs run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Bm25,
    Knn,
    #[default]
    Hybrid,
}

/// `POST /search`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// An index with a pipeline, or a pipeline's name.
    pub index: String,
    pub query: String,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub fusion: Option<FusionSpec>,
    /// One filter clause or a list; applied to both legs.
    #[serde(default)]
    pub filter: Option<Value>,
    #[serde(default)]
    pub size: Option<usize>,
    #[serde(default)]
    pub from: Option<usize>,
    #[serde(default)]
    pub k: Option<usize>,
    #[serde(default)]
    pub num_candidates: Option<usize>,
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    #[serde(default)]
    pub explain: bool,
    #[serde(default, rename = "_source")]
    pub source: Option<Value>,
    #[serde(default)]
    pub highlight: Option<Value>,
}

/// Why a search request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Limit(String),
}

impl QueryError {
    pub fn code(&self) -> ErrorCode {
        match self {
            QueryError::Invalid(_) => ErrorCode::InvalidInput,
            QueryError::Limit(_) => ErrorCode::LimitExceeded,
        }
    }
}

/// Where an index keeps its text and vectors (from its pipeline).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Target {
    pub index: String,
    /// The model of the vector field the kNN leg searches.
    pub model: String,
    /// The model queries are embedded with: `model`, or its static int8 copy (`[search] query_model`).
    pub query_model: String,
    /// BM25 fields (with boosts).
    pub text_fields: Vec<String>,
    /// The document-level vector field.
    pub vector_field: String,
    /// The nested passages path, when documents are chunked: the kNN leg searches passages.
    pub passages: Option<String>,
    /// Fields left out of `_source` unless a request asks for them (vectors).
    pub hidden: Vec<String>,
    /// The passages' text is a stored field (a `semantic_text` index keeps passages out of
    /// `_source`): the best passage is read from it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stored_passages: bool,
}

impl Target {
    pub fn of(p: &Pipeline) -> Target {
        let text_fields = if p.search.fields.is_empty() { p.fields[0].source.clone() } else { p.search.fields.clone() };
        let mut hidden: Vec<String> = p.fields.iter().map(|f| f.vector.clone()).collect();
        let passages = p.chunking.as_ref().map(|c| c.passages_field.clone());
        if let Some(path) = &passages {
            hidden.push(format!("{path}.vector"));
        }
        let live = p.live_field();
        Target {
            index: p.index.clone(),
            model: p.field_model(live).to_string(),
            query_model: p.query_model().to_string(),
            text_fields,
            vector_field: p.fields[live].vector.clone(),
            passages,
            hidden,
            stored_passages: p.semantic_text.is_some(),
        }
    }

    /// The field the kNN leg searches.
    pub fn knn_field(&self) -> String {
        match &self.passages {
            Some(p) => format!("{p}.vector"),
            None => self.vector_field.clone(),
        }
    }
}

/// Fusion as resolved for one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Resolved {
    /// Fused by the sidecar over one `_msearch`.
    Sidecar(Fusion),
    /// Fused by the engine; the method is settled against the cluster's capabilities later.
    Engine { method: EngineMethod, weight: Weight, rank_constant: u32, normalization: Normalization },
}

/// A validated search, ready to be turned into engine requests.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub target: Target,
    pub text: String,
    pub mode: Mode,
    pub fusion: Resolved,
    pub filters: Vec<Value>,
    pub size: usize,
    pub from: usize,
    /// Depth of each leg.
    pub k: usize,
    pub num_candidates: usize,
    pub fields: Vec<String>,
    pub explain: bool,
    pub source: Value,
    pub highlight: Option<Value>,
}

/// Leaf clauses accepted where the client supplies query DSL (filters, `highlight_query`):
/// term-level, full-text, and geo matches. Their parameters may not name a script (e.g.
/// `terms_set.minimum_should_match_script`). Everything not listed here or in
/// [`check_clause`]'s compound clauses is refused: an allow-list, so a new engine clause that
/// runs code is refused by default.
const LEAF_CLAUSES: &[&str] = &[
    "term",
    "terms",
    "terms_set",
    "range",
    "exists",
    "prefix",
    "wildcard",
    "regexp",
    "fuzzy",
    "ids",
    "match",
    "match_phrase",
    "match_phrase_prefix",
    "match_bool_prefix",
    "multi_match",
    "combined_fields",
    "match_all",
    "match_none",
    "geo_distance",
    "geo_bounding_box",
    "geo_polygon",
    "geo_shape",
];

fn refused(k: &str, at: &str) -> QueryError {
    QueryError::Invalid(format!(
        "`{k}` is not accepted in {at}: only term-level, full-text and geo clauses, combined with bool, constant_score, dis_max, nested or boosting, are (no scripts, query-string parsers, templates or inner hits)"
    ))
}

/// Refuses any key that names a script, at any depth of a leaf clause's parameters.
fn check_no_script(v: &Value, at: &str) -> Result<(), QueryError> {
    match v {
        Value::Object(m) => m.iter().try_for_each(|(k, inner)| {
            if k.contains("script") {
                return Err(refused(k, at));
            }
            check_no_script(inner, at)
        }),
        Value::Array(a) => a.iter().try_for_each(|x| check_no_script(x, at)),
        _ => Ok(()),
    }
}

/// One query clause (`{"name": {…}}`) against the allow-list; compound clauses are checked
/// down to their leaves.
pub fn check_clause(v: &Value, at: &str) -> Result<(), QueryError> {
    let Some((name, body)) = v.as_object().filter(|m| m.len() == 1).and_then(|m| m.iter().next()) else {
        let shown: String = v.to_string().chars().take(80).collect();
        return Err(QueryError::Invalid(format!("{at}: `{shown}` is not one query clause")));
    };
    let clauses = |x: &Value| match x {
        Value::Array(a) => a.iter().try_for_each(|c| check_clause(c, at)),
        c => check_clause(c, at),
    };
    let params = |allowed: &[&str], inner: &[&str]| -> Result<(), QueryError> {
        let Some(m) = body.as_object() else {
            return Err(QueryError::Invalid(format!("{at}: `{name}` takes an object")));
        };
        for (k, x) in m {
            if inner.contains(&k.as_str()) {
                clauses(x)?;
            } else if !allowed.contains(&k.as_str()) {
                return Err(refused(&format!("{name}.{k}"), at));
            }
        }
        Ok(())
    };
    match name.as_str() {
        "bool" => params(&["minimum_should_match", "boost", "_name"], &["must", "should", "filter", "must_not"]),
        "constant_score" => params(&["boost", "_name"], &["filter"]),
        "dis_max" => params(&["tie_breaker", "boost", "_name"], &["queries"]),
        "nested" => params(&["path", "score_mode", "ignore_unmapped", "boost", "_name"], &["query"]),
        "boosting" => params(&["negative_boost", "boost", "_name"], &["positive", "negative"]),
        leaf if LEAF_CLAUSES.contains(&leaf) => check_no_script(body, at),
        other => Err(refused(other, at)),
    }
}

/// A `highlight` object: its `highlight_query` entries are clauses (checked as such), and no
/// other key may name a script.
fn check_highlight(v: &Value) -> Result<(), QueryError> {
    let at = "highlight";
    match v {
        Value::Object(m) => m.iter().try_for_each(|(k, inner)| {
            if k == "highlight_query" {
                check_clause(inner, at)
            } else if k.contains("script") {
                Err(refused(k, at))
            } else {
                check_highlight(inner)
            }
        }),
        Value::Array(a) => a.iter().try_for_each(check_highlight),
        _ => Ok(()),
    }
}

/// The filter clauses of a request: one object or a list of objects, each a single clause.
pub fn filters_of(filter: Option<Value>) -> Result<Vec<Value>, QueryError> {
    let list = match filter {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(o @ Value::Object(_)) => vec![o],
        Some(other) => {
            return Err(QueryError::Invalid(format!(
                "`filter` must be a query clause or a list of them, not `{other}`"
            )))
        }
    };
    for (i, f) in list.iter().enumerate() {
        match f.as_object() {
            Some(m) if m.len() == 1 => {}
            _ => {
                return Err(QueryError::Invalid(format!(
                    "`filter[{i}]` must be one query clause like {{\"term\": {{\"field\": \"value\"}}}}, got `{f}`"
                )))
            }
        }
        check_clause(f, &format!("filter[{i}]"))?;
    }
    Ok(list)
}

/// Checks the user's text against the bounds.
pub fn check_text(text: &str, limits: &SearchSettings) -> Result<(), QueryError> {
    if text.trim().is_empty() {
        return Err(QueryError::Invalid("`query` is empty: send the user's text".into()));
    }
    let n = text.chars().count();
    if n > limits.max_query_chars {
        return Err(QueryError::Limit(format!(
            "`query` has {n} characters, more than search.max_query_chars ({})",
            limits.max_query_chars
        )));
    }
    Ok(())
}

/// Checks a fusion spec's parameters (serde checked the shape and the weight).
pub fn check_fusion(f: &FusionSpec, limits: &SearchSettings) -> Result<(), QueryError> {
    let rc = match f {
        FusionSpec::Rrf(r) => {
            if let Some(w) = r.window {
                if w == 0 || w > limits.max_k {
                    return Err(QueryError::Limit(format!(
                        "`fusion.rrf.window` {w} must be between 1 and search.max_k ({})",
                        limits.max_k
                    )));
                }
            }
            r.rank_constant
        }
        FusionSpec::Engine(e) => e.rank_constant,
        FusionSpec::Linear(_) => 1,
    };
    if rc == 0 {
        return Err(QueryError::Invalid("`rank_constant` must be at least 1".into()));
    }
    Ok(())
}

/// How deep a search reads: the page (`size` from `from`), each leg's `k`, kNN's candidates.
struct Depths {
    size: usize,
    from: usize,
    k: usize,
    num_candidates: usize,
}

impl Depths {
    /// The request's depths, defaulted and checked against the limits and each other.
    fn of(req: &SearchRequest, limits: &SearchSettings) -> Result<Self, QueryError> {
        let size = req.size.unwrap_or(10);
        if size > limits.max_size {
            return Err(QueryError::Limit(format!("`size` {size} is more than search.max_size ({})", limits.max_size)));
        }
        let from = req.from.unwrap_or(0);
        let page_end = from.saturating_add(size);
        let k = match req.k {
            Some(0) => return Err(QueryError::Invalid("`k` must be at least 1".into())),
            Some(k) => k,
            None => limits.default_k.max(page_end),
        };
        if k > limits.max_k && req.k.is_none() {
            // the page itself is too deep: name what the client sent
            return Err(QueryError::Limit(format!(
                "`from` + `size` ({page_end}) is more than search.max_k ({}): page less deep",
                limits.max_k
            )));
        }
        if k > limits.max_k {
            return Err(QueryError::Limit(format!("`k` {k} is more than search.max_k ({})", limits.max_k)));
        }
        if page_end > k {
            return Err(QueryError::Limit(format!(
                "`from` + `size` ({page_end}) is beyond `k` ({k}): each leg returns k hits; raise k or page less deep"
            )));
        }
        let num_candidates = match req.num_candidates {
            Some(n) if n < k => {
                return Err(QueryError::Invalid(format!("`num_candidates` {n} must be at least `k` ({k})")));
            }
            Some(n) if n > limits.max_num_candidates => {
                return Err(QueryError::Limit(format!(
                    "`num_candidates` {n} is more than search.max_num_candidates ({})",
                    limits.max_num_candidates
                )));
            }
            Some(n) => n,
            None => k.saturating_mul(limits.num_candidates_factor).clamp(k, limits.max_num_candidates),
        };
        Ok(Depths { size, from, k, num_candidates })
    }
}

/// The fusion a plan runs: computed by the sidecar (RRF within `k`, linear) or by the engine.
fn resolve_fusion(spec: FusionSpec, k: usize) -> Result<Resolved, QueryError> {
    Ok(match spec {
        FusionSpec::Rrf(r) => {
            let window = r.window.unwrap_or(k);
            if window > k {
                return Err(QueryError::Invalid(format!("`fusion.rrf.window` {window} is beyond `k` ({k})")));
            }
            Resolved::Sidecar(Fusion::Rrf { rank_constant: r.rank_constant, window })
        }
        FusionSpec::Linear(l) => Resolved::Sidecar(Fusion::Linear { weight: l.weight, normalization: l.normalization }),
        FusionSpec::Engine(e) => Resolved::Engine {
            method: e.method,
            weight: e.weight,
            rank_constant: e.rank_constant,
            normalization: e.normalization,
        },
    })
}

/// Validates `req` and resolves it against `target` and the pipeline's search defaults.
pub fn plan(
    req: SearchRequest,
    target: Target,
    defaults: &SearchSpec,
    limits: &SearchSettings,
) -> Result<Plan, QueryError> {
    check_text(&req.query, limits)?;
    let Depths { size, from, k, num_candidates } = Depths::of(&req, limits)?;
    let fields = req.fields.unwrap_or_else(|| target.text_fields.clone());
    if fields.is_empty() {
        return Err(QueryError::Invalid("`fields` is empty: name at least one text field".into()));
    }
    fields.iter().try_for_each(|f| check_field(f).map_err(QueryError::Invalid))?;
    let filters = filters_of(req.filter)?;
    let spec = req.fusion.or_else(|| defaults.fusion.clone()).unwrap_or_default();
    check_fusion(&spec, limits)?;
    let fusion = resolve_fusion(spec, k)?;
    let source = match req.source {
        Some(s) => s,
        None if target.hidden.is_empty() => Value::Bool(true),
        None => json!({"excludes": target.hidden}),
    };
    if let Some(h) = &req.highlight {
        if !h.is_object() {
            return Err(QueryError::Invalid("`highlight` must be an object (Elasticsearch highlight syntax)".into()));
        }
        check_highlight(h)?;
    }
    Ok(Plan {
        target,
        text: req.query,
        mode: req.mode,
        fusion,
        filters,
        size,
        from,
        k,
        num_candidates,
        fields,
        explain: req.explain,
        source,
        highlight: req.highlight,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::search::LinearSpec;

    fn limits() -> SearchSettings {
        // the embedded defaults (config/default.toml)
        crate::settings::Settings::load(None, &Default::default()).unwrap().search
    }

    fn target() -> Target {
        Target {
            index: "docs".into(),
            model: "m".into(),
            query_model: "m".into(),
            text_fields: vec!["title^2".into(), "text".into()],
            vector_field: "text_vector".into(),
            passages: None,
            hidden: vec!["text_vector".into()],
            stored_passages: false,
        }
    }

    fn req(body: Value) -> Result<Plan, QueryError> {
        let r: SearchRequest = serde_json::from_value(body).map_err(|e| QueryError::Invalid(e.to_string()))?;
        plan(r, target(), &SearchSpec::default(), &limits())
    }

    #[test]
    fn defaults_fill_a_minimal_request() {
        let p = req(json!({"index": "docs", "query": "cells"})).unwrap();
        assert_eq!((p.size, p.from, p.k, p.num_candidates, p.mode), (10, 0, 50, 200, Mode::Hybrid));
        assert_eq!(p.fusion, Resolved::Sidecar(Fusion::Rrf { rank_constant: 60, window: 50 }));
        assert_eq!(p.fields, vec!["title^2", "text"]);
        assert_eq!(p.source, json!({"excludes": ["text_vector"]}));
        // k grows to cover a deep page when not given
        let p = req(json!({"index": "docs", "query": "cells", "from": 90, "size": 20})).unwrap();
        assert_eq!(p.k, 110);
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let cases = [
            (json!({"index": "d", "query": "  "}), "empty"),
            (json!({"index": "d", "query": "x", "size": 101}), "max_size"),
            (json!({"index": "d", "query": "x", "k": 1001}), "max_k"),
            (json!({"index": "d", "query": "x", "k": 10, "size": 20}), "beyond `k`"),
            (json!({"index": "d", "query": "x", "k": 100, "num_candidates": 50}), "num_candidates"),
            (json!({"index": "d", "query": "x", "fusion": {"borda": {}}}), "unknown variant `borda`"),
            (json!({"index": "d", "query": "x", "fusion": {"linear": {"weight": 1.5}}}), "between 0 and 1"),
            (json!({"index": "d", "query": "x", "fusion": {"rrf": {"rank_constant": 0}}}), "rank_constant"),
            (json!({"index": "d", "query": "x", "fusion": {"rrf": {"window": 60}}}), "window"),
            (json!({"index": "d", "query": "x", "mode": "sparse"}), "unknown variant `sparse`"),
            (json!({"index": "d", "query": "x", "filter": "year:2020"}), "`filter`"),
            (json!({"index": "d", "query": "x", "filter": [{"term": {"a": 1}, "range": {}}]}), "filter[0]"),
            (json!({"index": "d", "query": "x", "filter": {"script": {"script": "1"}}}), "`script`"),
            (
                json!({"index": "d", "query": "x", "filter": {"terms_set": {"tags": {"terms": ["a"], "minimum_should_match_script": {"source": "1"}}}}}),
                "minimum_should_match_script",
            ),
            (
                json!({"index": "d", "query": "x", "filter": {"nested": {"path": "p", "query": {"match_all": {}}, "inner_hits": {"script_fields": {}}}}}),
                "nested.inner_hits",
            ),
            (
                json!({"index": "d", "query": "x", "filter": {"bool": {"filter": [{"term": {"a": 1}}, {"function_score": {}}]}}}),
                "function_score",
            ),
            (json!({"index": "d", "query": "x", "filter": {"percolate": {"field": "q"}}}), "percolate"),
            (
                json!({"index": "d", "query": "x", "highlight": {"fields": {"t": {"highlight_query": {"script_score": {}}}}}}),
                "script_score",
            ),
            (
                json!({"index": "d", "query": "x", "filter": {"bool": {"must": {"query_string": {"query": "a"}}}}}),
                "query_string",
            ),
            (json!({"index": "d", "query": "x", "fields": ["title^x"]}), "title^x"),
            (json!({"index": "d", "query": "x", "sort": "date"}), "unknown field `sort`"),
            (json!({"index": "d", "query": "x".repeat(1001)}), "max_query_chars"),
        ];
        for (body, needle) in cases {
            let e = req(body.clone()).unwrap_err().to_string();
            assert!(e.contains(needle), "{body}: `{e}` should mention `{needle}`");
        }
    }

    #[test]
    fn limits_are_limit_errors_and_shapes_are_invalid_input() {
        let e = req(json!({"index": "d", "query": "x", "k": 5000})).unwrap_err();
        assert_eq!(e.code(), ErrorCode::LimitExceeded);
        let e = req(json!({"index": "d", "query": "x", "filter": 3})).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidInput);
    }

    #[test]
    fn the_pipeline_default_fusion_applies_unless_the_request_says() {
        let spec = SearchSpec {
            fusion: Some(FusionSpec::Linear(LinearSpec {
                weight: Weight::try_from(0.3).unwrap(),
                normalization: Normalization::Zscore,
            })),
            ..SearchSpec::default()
        };
        let r: SearchRequest = serde_json::from_value(json!({"index": "d", "query": "x"})).unwrap();
        let p = plan(r, target(), &spec, &limits()).unwrap();
        assert!(matches!(p.fusion, Resolved::Sidecar(Fusion::Linear { normalization: Normalization::Zscore, .. })));
        let r: SearchRequest =
            serde_json::from_value(json!({"index": "d", "query": "x", "fusion": {"engine": {}}})).unwrap();
        let p = plan(r, target(), &spec, &limits()).unwrap();
        assert!(matches!(p.fusion, Resolved::Engine { method: EngineMethod::Auto, .. }));
    }
}
