//! Elastic's queries on `semantic_text` fields, for a field the sidecar serves
//! ([`crate::ingest::semantic`]): found and rewritten into kNN over the field's passages.
//!
//! - `{"semantic": {"field": F, "query": "..."}}` and `{"match": {F: "..."}}` (also
//!   `{"match": {F: {"query": "...", "boost": b}}}`) become a nested kNN query over
//!   `F_sidecar_chunks.vector`, scored by the best passage (as Elasticsearch scores them);
//! - a `knn` query, a top-level `knn` section or a `knn` retriever on `F` searches the passages'
//!   vectors, its `query_vector_builder` taking the field's model where it names none;
//! - the multi-field format of `rrf` and `linear` (`query` + `fields`) is written out into a
//!   lexical `multi_match` retriever and a `semantic` retriever per `semantic_text` field;
//! - the `semantic` highlighter on `F` returns the best passages of the clause on `F`
//!   (`number_of_fragments`, default 5; `order` `score` or `none`).
//!
//! Pure: the searcher finds the fields, encodes the texts and sends the body.

use serde_json::{json, Map, Value};

use super::request::QueryError;

/// A `semantic_text` field of the searched index.
#[derive(Clone, Debug, PartialEq)]
pub struct SemanticTarget {
    pub field: String,
    /// The nested passages path (`{path}.vector`, `{path}.text` stored).
    pub passages: String,
    /// The model queries on it are embedded with.
    pub model: String,
}

/// A `semantic` or `match` clause on a served field, to be replaced by a nested kNN query.
#[derive(Clone, Debug, PartialEq)]
pub struct SemanticClause {
    /// JSON pointer of the clause.
    pub at: String,
    pub field: String,
    pub text: String,
    pub boost: Option<Value>,
    pub name: Option<Value>,
}

/// The semantic highlighter asked for on a field.
#[derive(Clone, Debug, PartialEq)]
pub struct SemanticHighlight {
    pub field: String,
    pub fragments: usize,
    /// `order: none`: the passages in document order, else best first.
    pub in_order: bool,
}

/// What [`rewrite`] found in a body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Found {
    pub clauses: Vec<SemanticClause>,
    pub highlights: Vec<SemanticHighlight>,
    /// The body changed (a kNN on a served field now names the passages' vectors).
    pub changed: bool,
}

/// Most semantic clauses in one body (each is a text to encode).
pub const MAX_CLAUSES: usize = 16;

fn invalid(m: String) -> QueryError {
    QueryError::Invalid(m)
}

fn escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

fn known(targets: &[SemanticTarget]) -> String {
    if targets.is_empty() {
        "the index has none the sidecar serves".into()
    } else {
        targets.iter().map(|t| t.field.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// Finds the semantic clauses and highlights of `body` on `targets`' fields and points every
/// kNN on one of them at its passages. A `semantic` clause naming another field is refused.
pub fn rewrite(body: &mut Value, targets: &[SemanticTarget]) -> Result<Found, QueryError> {
    let mut found = Found::default();
    if let Some(r) = body.get_mut("retriever") {
        found.changed = expand_multi_field(r, "retriever", targets)?;
    }
    walk(body, String::new(), targets, &mut found)?;
    if found.clauses.len() > MAX_CLAUSES {
        return Err(QueryError::Limit(format!("the body has more than {MAX_CLAUSES} semantic queries")));
    }
    found.highlights = highlights(body, targets)?;
    Ok(found)
}

/// Elastic's multi-field format of the `rrf` and `linear` retrievers, `{"query": text,
/// "fields": [...]}`, written out: the lexical fields (boosts kept) in one `multi_match`
/// retriever, each `semantic_text` field a `semantic` retriever (in `linear`, a field's boost is
/// its weight). Returns whether it wrote anything.
fn expand_multi_field(r: &mut Value, at: &str, targets: &[SemanticTarget]) -> Result<bool, QueryError> {
    let Some(m) = r.as_object_mut() else { return Ok(false) };
    let mut changed = false;
    for (kind, b) in m.iter_mut() {
        let here = format!("{at}.{kind}");
        let Some(b) = b.as_object_mut() else { continue };
        if let Some(Value::Array(children)) = b.get_mut("retrievers") {
            for (i, c) in children.iter_mut().enumerate() {
                let inner = if c.get("retriever").is_some() { &mut c["retriever"] } else { c };
                changed |= expand_multi_field(inner, &format!("{here}.retrievers[{i}]"), targets)?;
            }
        }
        if !(kind == "rrf" || kind == "linear") || !(b.contains_key("query") || b.contains_key("fields")) {
            continue;
        }
        let (Some(Value::String(text)), Some(Value::Array(fields))) = (b.remove("query"), b.remove("fields")) else {
            return Err(invalid(format!(
                "{here}: the multi-field format needs `query` (a string) and `fields` (a list)"
            )));
        };
        let (mut lexical, mut children) = (Vec::new(), Vec::new());
        for f in &fields {
            let f = f.as_str().ok_or_else(|| invalid(format!("{here}.fields: field names are strings")))?;
            let (name, boost) = match f.split_once('^') {
                Some((n, b)) => (n, b.parse::<f64>().ok()),
                None => (f, None),
            };
            if targets.iter().any(|t| t.field == name) {
                let q = json!({"standard": {"query": {"semantic": {"field": name, "query": text}}}});
                children.push(match boost.filter(|_| kind == "linear") {
                    Some(w) => json!({"retriever": q, "weight": w}),
                    None => q,
                });
            } else {
                lexical.push(json!(f));
            }
        }
        if !lexical.is_empty() {
            children.insert(0, json!({"standard": {"query": {"multi_match": {"query": text, "fields": lexical}}}}));
        }
        if children.len() < 2 && kind == "rrf" {
            return Err(invalid(format!(
                "{here}: `query` + `fields` needs lexical fields and a semantic_text field to fuse (semantic_text fields here: {})",
                known(targets)
            )));
        }
        b.insert("retrievers".into(), Value::Array(children));
        changed = true;
    }
    Ok(changed)
}

/// Whether the object at `at` holds its `knn` as a *section* (the top-level `knn`, a `knn`
/// retriever) rather than as a query.
fn holds_section(at: &str) -> bool {
    let parent = at.rsplit_once('/').map_or("", |(p, _)| p);
    at.is_empty() || at.ends_with("/retriever") || parent.ends_with("/retrievers")
}

fn walk(v: &mut Value, at: String, targets: &[SemanticTarget], found: &mut Found) -> Result<(), QueryError> {
    match v {
        Value::Object(m) => {
            if let Some(c) = clause(m, &at, targets)? {
                found.clauses.push(c);
                return Ok(());
            }
            let passages = match m.get_mut("knn") {
                Some(Value::Object(knn)) => knn_on_field(knn, targets),
                _ => None,
            };
            if let Some(path) = passages {
                found.changed = true;
                if !holds_section(&at) {
                    // a query: the best passage scores the document
                    let inner = m.remove("knn").unwrap_or_default();
                    m.insert("nested".into(), json!({"path": path, "score_mode": "max", "query": {"knn": inner}}));
                }
            }
            for (k, x) in m.iter_mut() {
                if k == "highlight" && at.is_empty() {
                    continue;
                }
                walk(x, format!("{at}/{}", escape(k)), targets, found)?;
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                if at == "/knn" && x.as_object_mut().and_then(|knn| knn_on_field(knn, targets)).is_some() {
                    found.changed = true;
                }
                walk(x, format!("{at}/{i}"), targets, found)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A kNN on a served field: the passages' vectors, and the field's model for a builder that
/// names none. Returns the passages path when it was one.
fn knn_on_field(knn: &mut Map<String, Value>, targets: &[SemanticTarget]) -> Option<String> {
    let t = knn.get("field").and_then(Value::as_str).and_then(|f| targets.iter().find(|t| t.field == f))?;
    knn.insert("field".into(), json!(format!("{}.vector", t.passages)));
    if let Some(Value::Object(te)) = knn.get_mut("query_vector_builder").and_then(|b| b.get_mut("text_embedding")) {
        te.entry("model_id").or_insert_with(|| json!(t.model));
    }
    Some(t.passages.clone())
}

/// A `semantic` clause, or a `match` on a served field.
fn clause(m: &Map<String, Value>, at: &str, targets: &[SemanticTarget]) -> Result<Option<SemanticClause>, QueryError> {
    if m.len() != 1 {
        return Ok(None);
    }
    let shown = if at.is_empty() { "the body" } else { at };
    if let Some(Value::Object(s)) = m.get("semantic") {
        if let Some(k) = s.keys().find(|k| !["field", "query", "boost", "_name"].contains(&k.as_str())) {
            return Err(invalid(format!(
                "the semantic query at {shown}: unknown key `{k}` (known: field, query, boost, _name)"
            )));
        }
        let (Some(field), Some(text)) =
            (s.get("field").and_then(Value::as_str), s.get("query").and_then(Value::as_str))
        else {
            return Err(invalid(format!("the semantic query at {shown} needs `field` and `query`, both strings")));
        };
        if !targets.iter().any(|t| t.field == field) {
            return Err(invalid(format!(
                "the semantic query at {shown}: field [{field}] is not a semantic_text field (semantic_text fields: {})",
                known(targets)
            )));
        }
        return Ok(Some(SemanticClause {
            at: at.to_string(),
            field: field.into(),
            text: text.into(),
            boost: s.get("boost").cloned(),
            name: s.get("_name").cloned(),
        }));
    }
    let Some(Value::Object(mm)) = m.get("match") else { return Ok(None) };
    let Some((field, arg)) = mm.iter().next().filter(|_| mm.len() == 1) else { return Ok(None) };
    if !targets.iter().any(|t| &t.field == field) {
        return Ok(None);
    }
    let (text, boost, name) = match arg {
        Value::String(s) => (s.clone(), None, None),
        Value::Object(o) => {
            if let Some(k) = o.keys().find(|k| !["query", "boost", "_name"].contains(&k.as_str())) {
                return Err(invalid(format!(
                    "the match query at {shown} on semantic_text field [{field}]: `{k}` does not apply to a semantic search (known: query, boost, _name)"
                )));
            }
            let Some(q) = o.get("query").and_then(Value::as_str) else {
                return Err(invalid(format!("the match query at {shown} on [{field}]: `query` must be a string")));
            };
            (q.to_string(), o.get("boost").cloned(), o.get("_name").cloned())
        }
        _ => return Err(invalid(format!("the match query at {shown} on [{field}]: the text must be a string"))),
    };
    Ok(Some(SemanticClause { at: at.to_string(), field: field.clone(), text, boost, name }))
}

/// The semantic highlighter's fields in `highlight.fields` (an object or a list of one-key
/// objects), taken out of the body's highlight.
fn highlights(body: &mut Value, targets: &[SemanticTarget]) -> Result<Vec<SemanticHighlight>, QueryError> {
    let Some(fields) = body.pointer_mut("/highlight/fields") else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    let mut take = |name: &str, spec: &Value| -> Result<bool, QueryError> {
        let typed = spec.get("type").and_then(Value::as_str);
        let served = targets.iter().any(|t| t.field == name);
        if typed == Some("semantic") && !served {
            return Err(invalid(format!(
                "the semantic highlighter on [{name}]: not a semantic_text field (semantic_text fields: {})",
                known(targets)
            )));
        }
        if !served || typed.is_some_and(|t| t != "semantic") {
            return Ok(false);
        }
        let fragments = match spec.get("number_of_fragments") {
            None => 5,
            Some(n) => n
                .as_u64()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| invalid(format!("highlight.fields.{name}.number_of_fragments must be 1 to 100")))?
                as usize,
        };
        let in_order = spec.get("order").and_then(Value::as_str) == Some("none");
        out.push(SemanticHighlight { field: name.to_string(), fragments, in_order });
        Ok(true)
    };
    match fields {
        Value::Object(m) => {
            let mut keep = Map::new();
            for (k, spec) in std::mem::take(m) {
                if !take(&k, &spec)? {
                    keep.insert(k, spec);
                }
            }
            *m = keep;
        }
        Value::Array(a) => {
            let mut keep = Vec::new();
            for item in std::mem::take(a) {
                let one = item.as_object().filter(|o| o.len() == 1).and_then(|o| o.iter().next());
                match one {
                    Some((k, spec)) if take(k, spec)? => {}
                    _ => keep.push(item),
                }
            }
            *a = keep;
        }
        _ => {}
    }
    if body
        .pointer("/highlight/fields")
        .is_some_and(|f| f.as_object().is_some_and(Map::is_empty) || f.as_array().is_some_and(Vec::is_empty))
    {
        if let Some(m) = body.as_object_mut() {
            m.remove("highlight");
        }
    }
    Ok(out)
}

/// The name of the inner hits that carry the semantic highlight of `field`.
fn inner_name(field: &str) -> String {
    format!("semantic_highlight.{field}")
}

/// The nested kNN query replacing a clause: `vector` over `t`'s passages, `num_candidates`
/// candidates, `k` (Elasticsearch 8.15+) the request's `from + size`; with the passages'
/// text as inner hits when the clause's field is highlighted.
pub fn nested_knn(
    c: &SemanticClause,
    t: &SemanticTarget,
    vector: &[f32],
    k: Option<usize>,
    num_candidates: usize,
    highlight: Option<&SemanticHighlight>,
) -> Value {
    let mut knn = Map::new();
    knn.insert("field".into(), json!(format!("{}.vector", t.passages)));
    knn.insert("query_vector".into(), Value::Array(vector.iter().map(|x| json!(x)).collect()));
    if let Some(k) = k {
        knn.insert("k".into(), json!(k));
    }
    knn.insert("num_candidates".into(), json!(num_candidates));
    let mut nested = Map::new();
    nested.insert("path".into(), json!(t.passages));
    nested.insert("score_mode".into(), json!("max"));
    nested.insert("query".into(), json!({"knn": knn}));
    if let Some(b) = &c.boost {
        nested.insert("boost".into(), b.clone());
    }
    if let Some(n) = &c.name {
        nested.insert("_name".into(), n.clone());
    }
    if let Some(h) = highlight {
        nested.insert(
            "inner_hits".into(),
            json!({"name": inner_name(&h.field), "size": h.fragments, "_source": false,
                   "stored_fields": [format!("{}.text", t.passages)]}),
        );
    }
    json!({"nested": nested})
}

/// Moves the best passages of each hit's semantic inner hits into its `highlight`, as
/// Elasticsearch's semantic highlighter answers.
pub fn highlight_answer(answer: &mut Value, highlights: &[SemanticHighlight], targets: &[SemanticTarget]) {
    let Some(hits) = answer.pointer_mut("/hits/hits").and_then(Value::as_array_mut) else { return };
    for hit in hits {
        let Some(h) = hit.as_object_mut() else { continue };
        for hl in highlights {
            let Some(t) = targets.iter().find(|t| t.field == hl.field) else { continue };
            let inner =
                h.get_mut("inner_hits").and_then(Value::as_object_mut).and_then(|i| i.remove(&inner_name(&hl.field)));
            let Some(inner) = inner else { continue };
            let mut passages: Vec<(i64, String)> = inner
                .pointer("/hits/hits")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let text = p.get("fields")?.get(format!("{}.text", t.passages))?.get(0)?.as_str()?.to_string();
                    Some((p.pointer("/_nested/offset").and_then(Value::as_i64).unwrap_or(0), text))
                })
                .collect();
            if hl.in_order {
                passages.sort_by_key(|(o, _)| *o);
            }
            let list: Vec<Value> = passages.into_iter().map(|(_, t)| json!(t)).collect();
            let highlight = h.entry("highlight").or_insert_with(|| json!({}));
            highlight[hl.field.as_str()] = Value::Array(list);
        }
        if h.get("inner_hits").and_then(Value::as_object).is_some_and(Map::is_empty) {
            h.remove("inner_hits");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> Vec<SemanticTarget> {
        vec![SemanticTarget { field: "st".into(), passages: "st_sidecar_chunks".into(), model: "m".into() }]
    }

    #[test]
    fn semantic_and_match_clauses_are_found_wherever_a_query_stands() {
        let mut body = json!({"query": {"bool": {
            "should": [{"semantic": {"field": "st", "query": "a"}}, {"match": {"st": {"query": "b", "boost": 2}}}],
            "must": [{"match": {"title": "c"}}]
        }}});
        let f = rewrite(&mut body, &targets()).unwrap();
        assert_eq!(f.clauses.len(), 2);
        assert_eq!(f.clauses[0].at, "/query/bool/should/0");
        assert_eq!(f.clauses[1].text, "b");
        assert_eq!(f.clauses[1].boost, Some(json!(2)));
        let v = nested_knn(&f.clauses[1], &targets()[0], &[0.5], Some(10), 100, None);
        assert_eq!(v["nested"]["path"], "st_sidecar_chunks");
        assert_eq!(v["nested"]["query"]["knn"]["field"], "st_sidecar_chunks.vector");
        assert_eq!(v["nested"]["boost"], 2);
    }

    #[test]
    fn knn_on_a_served_field_searches_its_passages_with_its_model() {
        let mut body = json!({
            "knn": {"field": "st", "k": 5, "num_candidates": 50, "query_vector_builder": {"text_embedding": {"model_text": "x"}}},
            "retriever": {"rrf": {"retrievers": [{"knn": {"field": "st", "query_vector": [1.0], "k": 3, "num_candidates": 9}}]}},
            "query": {"bool": {"must": {"knn": {"field": "st", "query_vector": [1.0]}}}}
        });
        let f = rewrite(&mut body, &targets()).unwrap();
        assert!(f.changed && f.clauses.is_empty());
        assert_eq!(body["knn"]["field"], "st_sidecar_chunks.vector");
        assert_eq!(body["knn"]["query_vector_builder"]["text_embedding"]["model_id"], "m");
        assert_eq!(body["retriever"]["rrf"]["retrievers"][0]["knn"]["field"], "st_sidecar_chunks.vector");
        let q = &body["query"]["bool"]["must"];
        assert_eq!(q["nested"]["path"], "st_sidecar_chunks");
        assert_eq!(q["nested"]["query"]["knn"]["field"], "st_sidecar_chunks.vector");
    }

    #[test]
    fn bad_clauses_are_named_and_others_left_alone() {
        let mut other = json!({"query": {"semantic": {"field": "nope", "query": "a"}}});
        assert!(rewrite(&mut other, &targets()).unwrap_err().to_string().contains("st"));
        let mut none = json!({"query": {"semantic": {"field": "st", "query": "a"}}});
        assert!(rewrite(&mut none, &[]).unwrap_err().to_string().contains("none"));
        let mut op = json!({"query": {"match": {"st": {"query": "a", "operator": "and"}}}});
        assert!(rewrite(&mut op, &targets()).unwrap_err().to_string().contains("operator"));
        let mut plain = json!({"query": {"match": {"title": "a"}}, "aggs": {"t": {"terms": {"field": "semantic"}}}});
        let before = plain.clone();
        assert_eq!(rewrite(&mut plain, &targets()).unwrap(), Found::default());
        assert_eq!(plain, before);
    }

    #[test]
    fn the_multi_field_format_is_written_out_by_field_kind() {
        let mut body =
            json!({"retriever": {"rrf": {"query": "q", "fields": ["title^2", "st"], "rank_window_size": 20}}});
        let f = rewrite(&mut body, &targets()).unwrap();
        assert!(f.changed);
        assert_eq!(f.clauses.len(), 1, "the semantic retriever's query is then found as a clause");
        let r = &body["retriever"]["rrf"];
        assert_eq!(
            r["retrievers"][0],
            json!({"standard": {"query": {"multi_match": {"query": "q", "fields": ["title^2"]}}}})
        );
        assert_eq!(r["rank_window_size"], 20);
        assert!(r.get("query").is_none() && r.get("fields").is_none());
        let mut linear =
            json!({"retriever": {"linear": {"query": "q", "fields": ["st^3", "body"], "normalizer": "minmax"}}});
        rewrite(&mut linear, &targets()).unwrap();
        assert_eq!(linear["retriever"]["linear"]["retrievers"][1]["weight"], 3.0);
        let mut lexical = json!({"retriever": {"rrf": {"query": "q", "fields": ["title"]}}});
        assert!(rewrite(&mut lexical, &targets()).unwrap_err().to_string().contains("semantic_text field"));
    }

    #[test]
    fn the_semantic_highlighter_takes_the_best_passages() {
        let mut body = json!({"query": {"semantic": {"field": "st", "query": "a"}},
            "highlight": {"fields": {"st": {"type": "semantic", "number_of_fragments": 2, "order": "none"}, "title": {}}}});
        let f = rewrite(&mut body, &targets()).unwrap();
        assert_eq!(f.highlights, [SemanticHighlight { field: "st".into(), fragments: 2, in_order: true }]);
        assert_eq!(body["highlight"]["fields"], json!({"title": {}}));
        let mut alone = json!({"highlight": {"fields": [{"st": {"type": "semantic"}}]}});
        assert_eq!(rewrite(&mut alone, &targets()).unwrap().highlights[0].fragments, 5);
        assert!(alone.get("highlight").is_none());
        let mut answer = json!({"hits": {"hits": [{"_id": "1", "inner_hits": {"semantic_highlight.st": {"hits": {"hits": [
            {"_nested": {"offset": 3}, "fields": {"st_sidecar_chunks.text": ["later"]}},
            {"_nested": {"offset": 1}, "fields": {"st_sidecar_chunks.text": ["earlier"]}}
        ]}}}}]}});
        highlight_answer(&mut answer, &f.highlights, &targets());
        assert_eq!(answer["hits"]["hits"][0]["highlight"]["st"], json!(["earlier", "later"]));
        assert!(answer["hits"]["hits"][0].get("inner_hits").is_none());
    }
}
