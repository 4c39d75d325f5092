//! The ES-compatible `_search`: finding the sidecar's `hybrid` clause in an ordinary query body,
//! or a plain `match` / `multi_match` a pipeline asks to be made hybrid. Pure.
//!
//! The clause: `{"hybrid": {"query": "user text", "fields": [...], "fusion": {...}, "filter": [...],
//! "k": 50, "num_candidates": 200, "mode": "hybrid", "explain": false}}` (only `query` is required).
//! OpenSearch's own `hybrid` query (`{"hybrid": {"queries": [...]}}`) has no `query` string and
//! is left alone.
//!
//! - As the whole `query`, it runs like `POST /search` (sidecar or engine fusion); the rest of the
//!   body (aggregations, `track_total_hits`, `post_filter`, ...) goes with the BM25 leg and the
//!   answer is that leg's, with the fused hits.
//! - Nested anywhere else (inside a `bool`, ...), it becomes `bool.should[multi_match, knn]` in
//!   place: the engine adds the scores (OpenSearch; Elasticsearch 8.12+ for the `knn` query).

use serde::Deserialize;
use serde_json::{Map, Value};

use super::request::{Mode, QueryError, SearchRequest};

use crate::types::search::FusionSpec;

/// The sidecar clause.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HybridClause {
    pub query: String,
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    #[serde(default)]
    pub fusion: Option<FusionSpec>,
    #[serde(default)]
    pub filter: Option<Value>,
    #[serde(default)]
    pub k: Option<usize>,
    #[serde(default)]
    pub num_candidates: Option<usize>,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub explain: bool,
}

impl HybridClause {
    /// The `/search` request this clause amounts to, with paging and `_source`/`highlight` from
    /// the surrounding body.
    pub fn to_request(&self, index: &str, body: &Map<String, Value>) -> Result<SearchRequest, QueryError> {
        let count = |k: &str| -> Result<Option<usize>, QueryError> {
            match body.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(|n| Some(n as usize))
                    .ok_or_else(|| QueryError::Invalid(format!("`{k}` must be a non-negative integer, not `{v}`"))),
            }
        };
        Ok(SearchRequest {
            index: index.to_string(),
            query: self.query.clone(),
            mode: self.mode.unwrap_or_default(),
            fusion: self.fusion.clone(),
            filter: self.filter.clone(),
            size: count("size")?,
            from: count("from")?,
            k: self.k,
            num_candidates: self.num_candidates,
            fields: self.fields.clone(),
            explain: self.explain,
            source: body.get("_source").cloned(),
            highlight: body.get("highlight").cloned(),
        })
    }
}

/// What to do with a `_search` body.
#[derive(Debug)]
pub enum Rewrite {
    /// No sidecar clause: the body goes to the engine byte for byte.
    Passthrough,
    /// The whole query is hybrid; `rest` is the body without `query`.
    TopLevel { clause: HybridClause, rest: Map<String, Value> },
    /// Clauses nested in the query, by JSON pointer.
    Nested { clauses: Vec<(String, HybridClause)> },
}

fn parse_clause(v: &Value, at: &str) -> Result<HybridClause, QueryError> {
    serde_json::from_value(v.clone()).map_err(|e| QueryError::Invalid(format!("the hybrid clause at {at}: {e}")))
}

/// Is this `{"hybrid": {...}}` ours (a `query` string) rather than OpenSearch's (`queries`)?
fn ours(v: &Value) -> Option<&Value> {
    let inner = v.as_object().filter(|m| m.len() == 1)?.get("hybrid")?;
    inner.get("query").filter(|q| q.is_string()).map(|_| inner)
}

fn collect(v: &Value, at: String, out: &mut Vec<(String, HybridClause)>) -> Result<(), QueryError> {
    if let Some(inner) = ours(v) {
        out.push((at.clone(), parse_clause(inner, &at)?));
        return Ok(());
    }
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                collect(x, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out)?;
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                collect(x, format!("{at}/{i}"), out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn bare(field: &str) -> &str {
    field.split_once('^').map_or(field, |(n, _)| n)
}

/// A plain top-level `match` / `multi_match` on the pipeline's BM25 fields, as a clause.
fn auto_clause(query: &Value, fields: &[String]) -> Option<HybridClause> {
    let configured: Vec<&str> = fields.iter().map(|f| bare(f)).collect();
    let m = query.as_object().filter(|m| m.len() == 1)?;
    let clause = |text: &str, fields: Vec<String>| HybridClause {
        query: text.to_string(),
        fields: Some(fields),
        fusion: None,
        filter: None,
        k: None,
        num_candidates: None,
        mode: None,
        explain: false,
    };
    if let Some(Value::Object(mm)) = m.get("match") {
        let (field, v) = mm.iter().next().filter(|_| mm.len() == 1)?;
        if !configured.contains(&field.as_str()) {
            return None;
        }
        let text = match v {
            Value::String(s) => s.as_str(),
            // only the plain form: options like operator or fuzziness would be lost
            Value::Object(o) if o.len() == 1 => o.get("query")?.as_str()?,
            _ => return None,
        };
        return Some(clause(text, vec![field.clone()]));
    }
    if let Some(Value::Object(mm)) = m.get("multi_match") {
        if mm.keys().any(|k| !["query", "fields"].contains(&k.as_str())) {
            return None;
        }
        let text = mm.get("query")?.as_str()?;
        let fields: Vec<String> = match mm.get("fields") {
            Some(Value::Array(a)) => a.iter().map(|f| f.as_str().map(String::from)).collect::<Option<_>>()?,
            None => configured.iter().map(|s| s.to_string()).collect(),
            _ => return None,
        };
        if fields.is_empty() || !fields.iter().all(|f| configured.contains(&bare(f))) {
            return None;
        }
        return Some(clause(text, fields));
    }
    None
}

/// Looks at a `_search` body. `auto_fields`: the BM25 fields of the index's pipeline when it has
/// `auto_hybrid` on.
pub fn analyse(body: &Value, auto_fields: Option<&[String]>) -> Result<Rewrite, QueryError> {
    let Some(obj) = body.as_object() else { return Ok(Rewrite::Passthrough) };
    let Some(query) = obj.get("query") else { return Ok(Rewrite::Passthrough) };
    let rest = || {
        let mut r = obj.clone();
        r.remove("query");
        r
    };
    if let Some(inner) = ours(query) {
        return Ok(Rewrite::TopLevel { clause: parse_clause(inner, "query")?, rest: rest() });
    }
    if let Some(fields) = auto_fields {
        if let Some(clause) = auto_clause(query, fields) {
            return Ok(Rewrite::TopLevel { clause, rest: rest() });
        }
    }
    let mut clauses = Vec::new();
    collect(query, "/query".into(), &mut clauses)?;
    Ok(if clauses.is_empty() { Rewrite::Passthrough } else { Rewrite::Nested { clauses } })
}

/// A `query_vector_builder` found in a search body: where it is (the JSON pointer of the object
/// holding it: a top-level `knn` section, a `knn` query or a `knn` retriever), and the model and
/// text to embed.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorBuilder {
    pub at: String,
    pub model_id: String,
    pub text: String,
}

/// Most `query_vector_builder`s in one body (each is a text to encode).
pub const MAX_BUILDERS: usize = 16;

/// Every `query_vector_builder` in `body`, checked: only `text_embedding` with a string
/// `model_id` and `model_text`, never beside a `query_vector`.
pub fn vector_builders(body: &Value) -> Result<Vec<VectorBuilder>, QueryError> {
    let mut out = Vec::new();
    walk_objects(body, String::new(), &mut |at, m| {
        let Some(b) = m.get("query_vector_builder") else { return Ok(Descend::Into) };
        let shown = if at.is_empty() { "the body" } else { at };
        if m.contains_key("query_vector") {
            return Err(QueryError::Invalid(format!("{shown}: give query_vector or query_vector_builder, not both")));
        }
        let te = b.get("text_embedding").filter(|_| b.as_object().is_some_and(|o| o.len() == 1));
        let field = |k: &str| te.and_then(|t| t.get(k)).and_then(Value::as_str).map(String::from);
        match (te, field("model_id"), field("model_text")) {
            (Some(_), Some(model_id), Some(text)) => out.push(VectorBuilder { at: at.to_string(), model_id, text }),
            _ => {
                return Err(QueryError::Invalid(format!(
                    "{shown}: query_vector_builder must be {{\"text_embedding\": {{\"model_id\": \"...\", \"model_text\": \"...\"}}}}"
                )))
            }
        }
        if out.len() > MAX_BUILDERS {
            return Err(QueryError::Limit(format!("the body has more than {MAX_BUILDERS} query_vector_builders")));
        }
        Ok(Descend::IntoExcept("query_vector_builder"))
    })?;
    Ok(out)
}

/// Where [`walk_objects`] goes after an object.
enum Descend {
    Into,
    /// Into every key but this one.
    IntoExcept(&'static str),
    Not,
}

/// What [`walk_objects`] calls on each object: its JSON pointer and its keys.
type ObjectVisitor<'a> = dyn FnMut(&str, &Map<String, Value>) -> Result<Descend, QueryError> + 'a;

/// Calls `visit` on every object of `v` (document order, depth first) with its JSON pointer
/// (`at`: the pointer of `v`); `visit` says whether to look inside the object.
fn walk_objects(v: &Value, at: String, visit: &mut ObjectVisitor) -> Result<(), QueryError> {
    match v {
        Value::Object(m) => {
            let skip = match visit(&at, m)? {
                Descend::Not => return Ok(()),
                Descend::Into => None,
                Descend::IntoExcept(k) => Some(k),
            };
            for (k, x) in m.iter().filter(|(k, _)| Some(k.as_str()) != skip) {
                walk_objects(x, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), visit)?;
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                walk_objects(x, format!("{at}/{i}"), visit)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A query vector as JSON.
fn vector_value(vector: &[f32]) -> Value {
    Value::Array(vector.iter().map(|x| serde_json::json!(x)).collect())
}

/// Puts `vector` where the builder at `at` was.
pub fn set_query_vector(body: &mut Value, at: &str, vector: &[f32]) {
    if let Some(Value::Object(m)) = body.pointer_mut(at) {
        m.remove("query_vector_builder");
        m.insert("query_vector".into(), vector_value(vector));
    }
}

/// An OpenSearch `neural` query clause: where it is (a JSON pointer to the object holding it),
/// the vector field, the model and text to embed, and the `knn` parameters it keeps.
#[derive(Clone, Debug, PartialEq)]
pub struct NeuralQuery {
    pub at: String,
    pub field: String,
    /// `None`: the search pipeline's `neural_query_enricher` names it.
    pub model_id: Option<String>,
    pub text: String,
    /// `k` / `min_score` / `max_distance`, `filter`, `method_parameters`, `rescore`,
    /// `expand_nested_docs`, `boost`: as the `knn` query takes them.
    pub knn: Map<String, Value>,
}

/// What a `neural` clause may hold besides `query_text` and `model_id` (passed to `knn`).
const NEURAL_KNN_KEYS: &[&str] =
    &["k", "min_score", "max_distance", "filter", "method_parameters", "rescore", "expand_nested_docs", "boost"];

/// One `neural` clause's parameters, checked.
fn neural_query(at: &str, field: &str, params: &Map<String, Value>) -> Result<NeuralQuery, QueryError> {
    let bad = |why: String| QueryError::Invalid(format!("the neural query at {at} on `{field}`: {why}"));
    if params.contains_key("query_image") {
        return Err(bad("`query_image` needs an image model, and this sidecar serves text models only".into()));
    }
    if let Some(k) = params
        .keys()
        .find(|k| !["query_text", "model_id"].contains(&k.as_str()) && !NEURAL_KNN_KEYS.contains(&k.as_str()))
    {
        return Err(bad(format!("`{k}` is not served (known: query_text, model_id, {})", NEURAL_KNN_KEYS.join(", "))));
    }
    let text = match params.get("query_text") {
        Some(Value::String(t)) if !t.trim().is_empty() => t.clone(),
        _ => return Err(bad("`query_text` must be a non-empty string".into())),
    };
    let model_id = match params.get("model_id") {
        Some(Value::String(m)) if !m.is_empty() => Some(m.clone()),
        Some(_) => return Err(bad("`model_id` must be a non-empty string".into())),
        None => None,
    };
    let mut knn: Map<String, Value> = params
        .iter()
        .filter(|(k, _)| NEURAL_KNN_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let limits = ["k", "min_score", "max_distance"].iter().filter(|k| knn.contains_key(**k)).count();
    if limits > 1 {
        return Err(bad("give one of `k`, `min_score` and `max_distance`".into()));
    }
    if limits == 0 {
        knn.insert("k".into(), Value::from(10));
    }
    Ok(NeuralQuery { at: at.to_string(), field: field.to_string(), model_id, text, knn })
}

/// Every OpenSearch `neural` query clause in `body` (in `bool`, `nested`, `hybrid`, filters,
/// anywhere a query stands), checked. An object counts as one when its `neural` key holds one
/// field whose parameters name `query_text`, `query_image` or `model_id`; a field that happens
/// to be called `neural` is left alone.
pub fn neural_queries(body: &Value) -> Result<Vec<NeuralQuery>, QueryError> {
    let mut out = Vec::new();
    walk_objects(body, String::new(), &mut |at, m| {
        let clause = m.get("neural").and_then(Value::as_object).filter(|n| n.len() == 1).and_then(|n| {
            let (field, params) = n.iter().next()?;
            let params = params.as_object()?;
            ["query_text", "query_image", "model_id"].iter().any(|k| params.contains_key(*k)).then_some((field, params))
        });
        let Some((field, params)) = clause else { return Ok(Descend::Into) };
        let shown = if at.is_empty() { "/" } else { at };
        out.push(neural_query(shown, field, params)?);
        if out.len() > MAX_BUILDERS {
            return Err(QueryError::Limit(format!("the body has more than {MAX_BUILDERS} neural queries")));
        }
        if !params.get("filter").map(neural_queries).transpose()?.unwrap_or_default().is_empty() {
            return Err(QueryError::Invalid(format!(
                "the neural query at {shown} on `{field}` has a neural query in its filter: filter with lexical queries"
            )));
        }
        Ok(Descend::Not)
    })?;
    Ok(out)
}

/// Puts the `knn` query of `n` (with `vector`) where its `neural` clause was.
pub fn set_neural_vector(body: &mut Value, n: &NeuralQuery, vector: &[f32]) {
    let at = if n.at == "/" { "" } else { n.at.as_str() };
    if let Some(Value::Object(m)) = body.pointer_mut(at) {
        m.remove("neural");
        let mut knn = n.knn.clone();
        knn.insert("vector".into(), vector_value(vector));
        let mut clause = Map::new();
        clause.insert(n.field.clone(), Value::Object(knn));
        m.insert("knn".into(), Value::Object(clause));
    }
}

/// Keys of a body that cannot go with a fused hybrid query.
pub const CONFLICTING_KEYS: &[&str] = &["sort", "knn", "retriever", "search_after", "rescore", "collapse"];

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields() -> Vec<String> {
        vec!["title^2".into(), "text".into()]
    }

    #[test]
    fn ordinary_bodies_pass_through() {
        for body in [
            json!({}),
            json!({"query": {"match_all": {}}}),
            json!({"query": {"term": {"hybrid": "x"}}}),
            json!({"query": {"hybrid": {"queries": [{"match": {"text": "x"}}]}}}),
            json!({"query": {"match": {"text": "cells"}}}),
        ] {
            assert!(matches!(analyse(&body, None).unwrap(), Rewrite::Passthrough), "{body}");
        }
        assert!(matches!(analyse(&json!({"query": {"match": {"x": "y"}}}), None).unwrap(), Rewrite::Passthrough));
    }

    #[test]
    fn the_clause_at_the_top_keeps_the_rest_of_the_body() {
        let body = json!({"query": {"hybrid": {"query": "cells", "fusion": {"linear": {"weight": 0.3}}}}, "aggs": {"y": {"terms": {"field": "year"}}}, "size": 5});
        let Rewrite::TopLevel { clause, rest } = analyse(&body, None).unwrap() else { panic!() };
        assert_eq!(clause.query, "cells");
        assert!(rest.contains_key("aggs") && !rest.contains_key("query"));
        let req = clause.to_request("docs", &rest).unwrap();
        assert_eq!((req.size, req.from), (Some(5), None));
    }

    #[test]
    fn nested_clauses_are_found_by_pointer() {
        let body = json!({"query": {"bool": {"must": [{"hybrid": {"query": "a"}}], "filter": [{"term": {"y": 1}}], "should": {"hybrid": {"query": "b"}}}}});
        let Rewrite::Nested { clauses } = analyse(&body, None).unwrap() else { panic!() };
        let ptrs: Vec<&str> = clauses.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(ptrs, ["/query/bool/must/0", "/query/bool/should"]);
        assert!(body.pointer(ptrs[0]).is_some());
    }

    #[test]
    fn a_malformed_clause_is_named() {
        let e = analyse(&json!({"query": {"hybrid": {"query": "a", "boost": 2}}}), None).unwrap_err();
        assert!(e.to_string().contains("hybrid clause at query") && e.to_string().contains("boost"), "{e}");
    }

    #[test]
    fn auto_hybrid_takes_plain_matches_on_configured_fields_only() {
        let f = fields();
        let yes = [
            json!({"query": {"match": {"text": "cells"}}}),
            json!({"query": {"match": {"title": {"query": "cells"}}}}),
            json!({"query": {"multi_match": {"query": "cells", "fields": ["title^3", "text"]}}}),
            json!({"query": {"multi_match": {"query": "cells"}}}),
        ];
        for body in yes {
            assert!(matches!(analyse(&body, Some(&f)).unwrap(), Rewrite::TopLevel { .. }), "{body}");
        }
        let no = [
            json!({"query": {"match": {"author": "cells"}}}),
            json!({"query": {"match": {"text": {"query": "cells", "operator": "and"}}}}),
            json!({"query": {"multi_match": {"query": "cells", "fields": ["text", "author"]}}}),
            json!({"query": {"multi_match": {"query": "cells", "type": "phrase"}}}),
            json!({"query": {"bool": {"must": {"match": {"text": "cells"}}}}}),
        ];
        for body in no {
            assert!(matches!(analyse(&body, Some(&f)).unwrap(), Rewrite::Passthrough), "{body}");
        }
    }

    #[test]
    fn vector_builders_are_found_wherever_knn_is_and_replaced() {
        let qvb = |t: &str| json!({"text_embedding": {"model_id": "m", "model_text": t}});
        let mut body = json!({
            "knn": {"field": "v", "k": 5, "num_candidates": 10, "query_vector_builder": qvb("a")},
            "query": {"bool": {"should": [{"knn": {"field": "v", "query_vector_builder": qvb("b")}}]}},
            "retriever": {"rrf": {"retrievers": [{"knn": {"field": "v", "k": 3, "query_vector_builder": qvb("c")}}]}}
        });
        let found = vector_builders(&body).unwrap();
        let at: Vec<&str> = found.iter().map(|b| b.at.as_str()).collect();
        assert_eq!(at, ["/knn", "/query/bool/should/0/knn", "/retriever/rrf/retrievers/0/knn"]);
        assert_eq!(found[2].text, "c");
        set_query_vector(&mut body, "/knn", &[0.5, 1.0]);
        assert_eq!(body["knn"]["query_vector"], json!([0.5, 1.0]));
        assert!(body["knn"].get("query_vector_builder").is_none());
        let list = json!({"knn": [{"field": "v", "query_vector_builder": qvb("x")}]});
        assert_eq!(vector_builders(&list).unwrap()[0].at, "/knn/0");
        for bad in [
            json!({"knn": {"query_vector_builder": {"text_embedding": {"model_id": "m"}}}}),
            json!({"knn": {"query_vector_builder": {"other": {}}}}),
            json!({"knn": {"query_vector": [1], "query_vector_builder": qvb("a")}}),
        ] {
            assert!(vector_builders(&bad).is_err(), "{bad}");
        }
    }

    /// Arbitrary JSON, with the keys the rewriter and the clause check look for over-represented.
    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "\\PC{0,12}".prop_map(Value::from),
        ];
        let key = prop_oneof![
            "[a-z_]{1,10}",
            Just("hybrid".to_string()),
            Just("query".to_string()),
            Just("bool".to_string()),
            Just("filter".to_string()),
            Just("must".to_string()),
            Just("script".to_string()),
            Just("knn".to_string()),
            Just("fusion".to_string()),
            Just("nested".to_string()),
        ];
        leaf.prop_recursive(8, 200, 10, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::btree_map(key.clone(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Fuzzing by generation: whatever body a client sends, the rewriter and the filter check
        /// answer (a rewrite or a clear error) and never panic.
        #[test]
        fn the_rewriter_and_the_clause_check_never_panic(v in json_value()) {
            let _ = analyse(&json!({"query": v.clone()}), Some(&fields()));
            let _ = analyse(&v, None);
            let _ = crate::query::request::check_clause(&v, "filter");
            let _ = crate::query::request::filters_of(Some(v.clone()));
            let _ = vector_builders(&v);
        }
    }

    #[test]
    fn neural_clauses_become_knn_queries_wherever_they_stand() {
        let body = json!({"size": 5, "_source": {"excludes": ["neural"]}, "query": {"bool": {
        "should": [
            {"match": {"neural": {"query": "a field called neural"}}},
            {"neural": {"text_vector": {"query_text": "stem cells", "model_id": "m", "k": 7,
                "filter": {"term": {"group": "even"}}, "method_parameters": {"ef_search": 100}, "boost": 2}}},
            {"nested": {"path": "passages", "query": {"neural": {"passages.vector": {"query_text": "t", "model_id": "m", "min_score": 0.5}}}}}
        ]}}});
        let found = super::neural_queries(&body).unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!((found[0].at.as_str(), found[0].field.as_str()), ("/query/bool/should/1", "text_vector"));
        assert_eq!(found[1].at, "/query/bool/should/2/nested/query");
        assert_eq!(found[1].knn, json!({"min_score": 0.5}).as_object().unwrap().clone(), "no k beside min_score");
        let mut out = body.clone();
        for n in &found {
            super::set_neural_vector(&mut out, n, &[0.5, -0.25]);
        }
        assert_eq!(
            out["query"]["bool"]["should"][1],
            json!({"knn": {"text_vector": {"vector": [0.5, -0.25], "k": 7, "filter": {"term": {"group": "even"}},
                "method_parameters": {"ef_search": 100}, "boost": 2}}})
        );
        assert_eq!(
            out["query"]["bool"]["should"][0], body["query"]["bool"]["should"][0],
            "a field called neural is kept"
        );
        let top = json!({"query": {"neural": {"v": {"query_text": "x", "model_id": "m"}}}});
        let n = super::neural_queries(&top).unwrap();
        assert_eq!(n[0].knn.get("k"), Some(&json!(10)), "k defaults to 10");
        let mut whole = json!({"neural": {"v": {"query_text": "x", "model_id": "m"}}});
        let n = super::neural_queries(&whole).unwrap();
        super::set_neural_vector(&mut whole, &n[0], &[1.0]);
        assert_eq!(whole, json!({"knn": {"v": {"vector": [1.0], "k": 10}}}));
        let unnamed = super::neural_queries(&json!({"query": {"neural": {"v": {"query_text": "x"}}}})).unwrap();
        assert_eq!(unnamed[0].model_id, None, "a search pipeline's neural_query_enricher may name it");
        for (params, want) in [
            (json!({"query_text": "", "model_id": "m"}), "query_text"),
            (json!({"query_image": "aGk=", "model_id": "m"}), "image"),
            (json!({"query_text": "x", "model_id": "m", "k": 3, "min_score": 0.2}), "one of"),
            (
                json!({"query_text": "x", "model_id": "m", "semantic_field_search_analyzer": "s"}),
                "semantic_field_search_analyzer",
            ),
            (
                json!({"query_text": "x", "model_id": "m", "filter": {"neural": {"w": {"query_text": "y", "model_id": "m"}}}}),
                "filter",
            ),
        ] {
            let e =
                super::neural_queries(&json!({"query": {"neural": {"v": params.clone()}}})).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("`v`"), "{params} -> {e}");
        }
    }
}
