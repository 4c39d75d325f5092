//! Elasticsearch's retrievers, run by the sidecar where the cluster cannot (the `rrf` and
//! `linear` retrievers need an Enterprise licence): a retriever tree is parsed into the leaf
//! searches it needs (`standard` and `knn`, each one `_msearch` item of `rank_window_size`
//! hits) and the fusion tree over them, which [`fuse_tree`] computes with
//! [`super::fusion::fuse_lists`]. The answer is shaped as Elasticsearch shapes a retriever's:
//! fused `_score`, `_rank`, `hits.total` of the union. Pure.
//!
//! Shapes: `standard` {`query`, `filter`, `min_score`}; `knn` {`field`, `query_vector` (or a
//! builder, resolved before), `k`, `num_candidates`, `similarity`, `filter`, `rescore_vector`};
//! `rrf` {`retrievers` (direct or `{retriever, weight}`), `rank_constant` (60),
//! `rank_window_size` (10), `filter`}; `linear` {`retrievers` [{`retriever`, `weight` (1),
//! `normalizer`}], `normalizer` (the default of its children, `none`), `rank_window_size` (10),
//! `filter`, `min_score`}. A compound retriever's `filter` applies to every retriever under it.

use serde_json::{json, Map, Value};

use super::fusion::{fuse_lists, Combine, LegHit, Ranked, WeightedList};
use super::request::QueryError;
use crate::types::search::Normalization;

/// Most leaf searches in one retriever tree.
pub const MAX_LEAVES: usize = 16;
/// Deepest `rank_window_size` a retriever may ask for.
pub const MAX_WINDOW: usize = 10_000;

/// What kind of search a leaf is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafKind {
    Standard,
    Knn,
}

/// One leaf search: its `_search` body (without the request-wide keys) and kind.
#[derive(Clone, Debug, PartialEq)]
pub struct Leaf {
    pub kind: LeafKind,
    pub body: Value,
}

/// The fusion tree over the leaves.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// The leaf search of this number.
    Leaf(usize),
    /// A compound retriever: its children with their weight and normaliser, how it combines
    /// them, how many of each child's hits it takes, and the lowest score it keeps.
    Fuse { combine: Combine, children: Vec<(Node, f64, Option<Normalization>)>, window: usize, min_score: Option<f64> },
}

/// A parsed child of a compound retriever: its node, weight, and normaliser (`None` when it
/// named none, so the parent's default applies).
type Child = (Node, f64, Option<Option<Normalization>>);

/// A retriever tree ready to run.
#[derive(Clone, Debug, PartialEq)]
pub struct RetrieverPlan {
    pub leaves: Vec<Leaf>,
    pub root: Node,
    /// The top-level compound's window: `from + size` may not go past it.
    pub window: usize,
}

fn invalid(m: impl Into<String>) -> QueryError {
    QueryError::Invalid(m.into())
}

/// The single key of a retriever object and its body.
fn one_key<'a>(v: &'a Value, at: &str) -> Result<(&'a str, &'a Map<String, Value>), QueryError> {
    let m = v
        .as_object()
        .filter(|m| m.len() == 1)
        .ok_or_else(|| invalid(format!("{at}: a retriever is an object with one key (standard, knn, rrf, linear)")))?;
    let (k, b) = m.iter().next().expect("one key");
    let b = b.as_object().ok_or_else(|| invalid(format!("{at}.{k} must be an object")))?;
    Ok((k.as_str(), b))
}

/// Whether a retriever tree needs the sidecar: it holds a compound retriever (`rrf`, `linear`)
/// or a reranker somewhere. `standard` and `knn` alone run on every licence.
pub fn needs_fusion(retriever: &Value) -> bool {
    match retriever {
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| matches!(k.as_str(), "rrf" | "linear" | "text_similarity_reranker") || needs_fusion(v)),
        Value::Array(a) => a.iter().any(needs_fusion),
        _ => false,
    }
}

fn filters_of(v: Option<&Value>, at: &str) -> Result<Vec<Value>, QueryError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => {
            a.iter().try_for_each(|f| {
                if f.is_object() {
                    Ok(())
                } else {
                    Err(invalid(format!("{at}.filter: each filter is a query object")))
                }
            })?;
            Ok(a.clone())
        }
        Some(f @ Value::Object(_)) => Ok(vec![f.clone()]),
        Some(_) => Err(invalid(format!("{at}.filter must be a query object or a list of them"))),
    }
}

fn number(b: &Map<String, Value>, k: &str, at: &str) -> Result<Option<f64>, QueryError> {
    match b.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| invalid(format!("{at}.{k} must be a number, not `{v}`"))),
    }
}

fn count(b: &Map<String, Value>, k: &str, at: &str) -> Result<Option<usize>, QueryError> {
    match b.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n >= 1)
            .map(|n| Some(n as usize))
            .ok_or_else(|| invalid(format!("{at}.{k} must be an integer of at least 1, not `{v}`"))),
    }
}

fn only(b: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), QueryError> {
    match b.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(format!("{at}: unknown parameter `{k}` (known: {})", allowed.join(", ")))),
        None => Ok(()),
    }
}

fn normalizer(v: Option<&Value>, at: &str) -> Result<Option<Option<Normalization>>, QueryError> {
    match v.map(|v| v.as_str()) {
        None => Ok(None),
        Some(Some("none")) => Ok(Some(None)),
        Some(Some("minmax")) => Ok(Some(Some(Normalization::Minmax))),
        Some(Some("l2_norm")) => Ok(Some(Some(Normalization::L2))),
        Some(_) => Err(invalid(format!("{at}.normalizer must be none, minmax or l2_norm"))),
    }
}

struct Parser {
    leaves: Vec<Leaf>,
}

impl Parser {
    fn leaf(&mut self, kind: LeafKind, body: Value, at: &str) -> Result<Node, QueryError> {
        if self.leaves.len() >= MAX_LEAVES {
            return Err(QueryError::Limit(format!(
                "{at}: a retriever tree may hold at most {MAX_LEAVES} standard and knn retrievers"
            )));
        }
        self.leaves.push(Leaf { kind, body });
        Ok(Node::Leaf(self.leaves.len() - 1))
    }

    fn standard(
        &mut self,
        b: &Map<String, Value>,
        filters: Vec<Value>,
        window: usize,
        at: &str,
    ) -> Result<Node, QueryError> {
        only(b, &["query", "filter", "min_score", "_name"], at)?;
        let mut all = filters;
        all.extend(filters_of(b.get("filter"), at)?);
        let query = b.get("query").cloned().unwrap_or_else(|| json!({"match_all": {}}));
        let query = if all.is_empty() { query } else { json!({"bool": {"must": [query], "filter": all}}) };
        let mut body = json!({"query": query, "size": window});
        if let Some(m) = number(b, "min_score", at)? {
            body["min_score"] = json!(m);
        }
        self.leaf(LeafKind::Standard, body, at)
    }

    fn knn(
        &mut self,
        b: &Map<String, Value>,
        filters: Vec<Value>,
        window: usize,
        at: &str,
    ) -> Result<Node, QueryError> {
        only(
            b,
            &[
                "field",
                "query_vector",
                "query_vector_builder",
                "k",
                "num_candidates",
                "similarity",
                "filter",
                "rescore_vector",
                "_name",
                "boost",
            ],
            at,
        )?;
        if !b.get("field").is_some_and(Value::is_string) {
            return Err(invalid(format!("{at}.field is required (the dense_vector field)")));
        }
        if b.contains_key("query_vector_builder") {
            return Err(invalid(format!("{at}.query_vector_builder was not resolved to a vector")));
        }
        if !b.get("query_vector").is_some_and(Value::is_array) {
            return Err(invalid(format!(
                "{at}: give query_vector, or query_vector_builder.text_embedding {{model_id, model_text}}"
            )));
        }
        let mut knn = b.clone();
        knn.remove("_name");
        let mut all = filters;
        all.extend(filters_of(b.get("filter"), at)?);
        if !all.is_empty() {
            knn.insert("filter".into(), Value::Array(all));
        }
        let k = count(b, "k", at)?.unwrap_or(window);
        knn.insert("k".into(), json!(k));
        if !knn.contains_key("num_candidates") {
            knn.insert("num_candidates".into(), json!(k.max(window).saturating_mul(2).min(MAX_WINDOW)));
        }
        let body = json!({"knn": knn, "size": window.min(k)});
        self.leaf(LeafKind::Knn, body, at)
    }

    fn children(
        &mut self,
        b: &Map<String, Value>,
        linear: bool,
        filters: &[Value],
        window: usize,
        at: &str,
    ) -> Result<Vec<Child>, QueryError> {
        let list = b.get("retrievers").and_then(Value::as_array).ok_or_else(|| {
            invalid(format!("{at}.retrievers is required: a list of retrievers (the `query` + `fields` short form is not served by this sidecar; write the retrievers out)"))
        })?;
        if list.len() < 2 && !linear {
            return Err(invalid(format!("{at}.retrievers needs two or more retrievers")));
        }
        let mut out = Vec::with_capacity(list.len());
        for (i, c) in list.iter().enumerate() {
            let cat = format!("{at}.retrievers[{i}]");
            let wrapped = c.as_object().filter(|m| m.contains_key("retriever"));
            let (inner, weight, norm) = match wrapped {
                Some(m) => {
                    only(
                        m,
                        if linear { &["retriever", "weight", "normalizer"] } else { &["retriever", "weight"] },
                        &cat,
                    )?;
                    let w = number(m, "weight", &cat)?.unwrap_or(1.0);
                    if w < 0.0 {
                        return Err(invalid(format!("{cat}.weight must be 0 or more")));
                    }
                    (&m["retriever"], w, normalizer(m.get("normalizer"), &cat)?)
                }
                None if linear => {
                    return Err(invalid(format!(
                        "{cat}: each linear entry is {{\"retriever\": {{...}}, \"weight\": w, \"normalizer\": n}}"
                    )))
                }
                None => (c, 1.0, None),
            };
            out.push((self.node(inner, filters.to_vec(), window, &format!("{cat}.retriever"))?, weight, norm));
        }
        Ok(out)
    }

    fn node(&mut self, v: &Value, filters: Vec<Value>, window: usize, at: &str) -> Result<Node, QueryError> {
        let (kind, b) = one_key(v, at)?;
        let at = format!("{at}.{kind}");
        match kind {
            "standard" => self.standard(b, filters, window, &at),
            "knn" => self.knn(b, filters, window, &at),
            "rrf" | "linear" => {
                let linear = kind == "linear";
                let mut allowed = vec!["retrievers", "rank_window_size", "filter", "_name"];
                allowed.extend(if linear {
                    ["normalizer", "min_score"].as_slice()
                } else {
                    ["rank_constant"].as_slice()
                });
                if b.contains_key("query") || b.contains_key("fields") {
                    return Err(invalid(format!("{at}: the `query` + `fields` short form is not served by this sidecar; write the retrievers out")));
                }
                only(b, &allowed, &at)?;
                let w = count(b, "rank_window_size", &at)?.unwrap_or(10);
                if w > MAX_WINDOW {
                    return Err(QueryError::Limit(format!("{at}.rank_window_size {w} is more than {MAX_WINDOW}")));
                }
                let mut all = filters;
                all.extend(filters_of(b.get("filter"), &at)?);
                let default_norm = normalizer(b.get("normalizer"), &at)?.unwrap_or(None);
                let children = self.children(b, linear, &all, w, &at)?;
                let combine = if linear {
                    Combine::Linear
                } else {
                    let c = count(b, "rank_constant", &at)?.unwrap_or(60);
                    Combine::Rrf {
                        rank_constant: u32::try_from(c)
                            .map_err(|_| invalid(format!("{at}.rank_constant is too large")))?,
                    }
                };
                let children = children.into_iter().map(|(n, w, norm)| (n, w, norm.unwrap_or(default_norm))).collect();
                let min_score = if linear { number(b, "min_score", &at)? } else { None };
                Ok(Node::Fuse { combine, children, window: w, min_score })
            }
            "text_similarity_reranker" => Err(invalid(format!(
                "{at}: no reranking model is served by this sidecar (it serves text embeddings only); use rrf or linear"
            ))),
            other => Err(invalid(format!(
                "{at}: the `{other}` retriever is not served by this sidecar (standard, knn, rrf and linear are)"
            ))),
        }
    }
}

/// Body keys a retriever search cannot take: they order or replace what the retriever ranks.
pub const CONFLICTING: &[&str] =
    &["query", "knn", "sort", "search_after", "rescore", "collapse", "rank", "min_score", "post_filter"];

/// Parses the body's `retriever` into leaves and a fusion tree; `size` and `from` (the body's,
/// the URL's winning) must fit in the top compound's window.
pub fn plan(retriever: &Value, from: usize, size: usize) -> Result<RetrieverPlan, QueryError> {
    let mut p = Parser { leaves: Vec::new() };
    // a top-level window: the compound's own (the leaves are parsed with it)
    let window = match one_key(retriever, "retriever")? {
        (k @ ("rrf" | "linear"), b) => {
            let w = count(b, "rank_window_size", &format!("retriever.{k}"))?.unwrap_or(10);
            if size > w {
                return Err(invalid(format!(
                    "retriever.{k}.rank_window_size ({w}) must be at least the search's size ({size})"
                )));
            }
            w
        }
        _ => from + size,
    };
    let root = p.node(retriever, Vec::new(), window, "retriever")?;
    Ok(RetrieverPlan { leaves: p.leaves, root, window })
}

/// One leaf's hits as a ranked list (its identity `_index/_id`).
pub fn leg_hits(hits: &[Value]) -> Vec<LegHit> {
    hits.iter()
        .map(|h| LegHit { id: super::answer::key(h), score: h.get("_score").and_then(Value::as_f64).unwrap_or(0.0) })
        .collect()
}

/// Fuses the tree over the leaves' ranked lists: each compound takes the top `window` of each
/// child, combines them and hands its top `window` on.
pub fn fuse_tree(node: &Node, leaves: &[Vec<LegHit>]) -> Vec<Ranked> {
    match node {
        Node::Leaf(i) => leaves
            .get(*i)
            .map(|l| {
                l.iter()
                    .enumerate()
                    .map(|(r, h)| Ranked { id: h.id.clone(), score: h.score, ranks: vec![Some((r + 1, h.score))] })
                    .collect()
            })
            .unwrap_or_default(),
        Node::Fuse { combine, children, window, min_score } => {
            let lists: Vec<WeightedList> = children
                .iter()
                .map(|(c, weight, normalization)| WeightedList {
                    hits: fuse_tree(c, leaves)
                        .into_iter()
                        .take(*window)
                        .map(|r| LegHit { id: r.id, score: r.score })
                        .collect(),
                    weight: *weight,
                    normalization: *normalization,
                })
                .collect();
            let mut out = fuse_lists(&lists, *combine);
            if let Some(m) = min_score {
                out.retain(|r| r.score >= *m);
            }
            out.truncate(*window);
            out
        }
    }
}

/// The answer of a retriever search in Elasticsearch's shape: the page `[from, from + size)` of
/// the fused list, each hit the first leaf's copy (a `standard` leaf's, which carries the
/// highlight, before a `knn` one's, with the highlights of the others added) with the fused
/// `_score` and its `_rank`; `hits.total` the
/// union of the leaves (a lower bound, `gte`, when a leaf was cut at its window); the
/// aggregations and `_shards` of `aggs` (the standard leaves' union) or of the first leaf.
pub fn answer(plan: &RetrieverPlan, leaves: Vec<Value>, aggs: Option<Value>, from: usize, size: usize) -> Value {
    let lists: Vec<Vec<Value>> =
        leaves.iter().map(|r| r.pointer("/hits/hits").and_then(Value::as_array).cloned().unwrap_or_default()).collect();
    let ranked: Vec<Vec<LegHit>> = lists.iter().map(|h| leg_hits(h)).collect();
    let fused = fuse_tree(&plan.root, &ranked);
    let mut order: Vec<usize> = (0..lists.len()).collect();
    order.sort_by_key(|i| plan.leaves.get(*i).map_or(1, |l| usize::from(l.kind != LeafKind::Standard)));
    let hit_of = |id: &str| {
        let mut copies = order.iter().filter_map(|i| lists[*i].iter().find(|h| super::answer::key(h) == id));
        let mut hit = copies.next()?.clone();
        // the highlights (and semantic highlights' inner hits) of every leaf that found it
        for other in copies {
            for k in ["highlight", "inner_hits"] {
                let (Some(theirs), Some(m)) = (other.get(k).and_then(Value::as_object), hit.as_object_mut()) else {
                    continue;
                };
                if let Some(ours) = m.entry(k).or_insert_with(|| json!({})).as_object_mut() {
                    for (f, v) in theirs {
                        ours.entry(f.clone()).or_insert_with(|| v.clone());
                    }
                }
            }
        }
        Some(hit)
    };
    let hits: Vec<Value> = fused
        .iter()
        .enumerate()
        .skip(from)
        .take(size)
        .filter_map(|(n, r)| {
            let mut h = hit_of(&r.id)?;
            if let Some(m) = h.as_object_mut() {
                m.insert("_score".into(), json!(r.score));
                m.insert("_rank".into(), json!(n + 1));
            }
            Some(h)
        })
        .collect();
    let mut union: Vec<&str> = Vec::new();
    for l in &ranked {
        union.extend(l.iter().map(|h| h.id.as_str()));
    }
    union.sort_unstable();
    union.dedup();
    let cut = plan
        .leaves
        .iter()
        .zip(&lists)
        .any(|(l, h)| l.body.get("size").and_then(Value::as_u64).is_some_and(|s| h.len() as u64 >= s));
    let counted = |r: &Value| {
        r.pointer("/hits/total/value")
            .and_then(Value::as_u64)
            .or_else(|| r.pointer("/hits/total").and_then(Value::as_u64))
    };
    let total = if cut {
        let most = leaves.iter().chain(aggs.iter()).filter_map(counted).chain([union.len() as u64]).max().unwrap_or(0);
        json!({"value": most, "relation": "gte"})
    } else {
        json!({"value": union.len(), "relation": "eq"})
    };
    let base = aggs.as_ref().or(leaves.first());
    let mut out = Map::new();
    out.insert("took".into(), json!(0));
    out.insert("timed_out".into(), json!(leaves.iter().any(|r| r.get("timed_out") == Some(&json!(true)))));
    if let Some(s) = base.and_then(|b| b.get("_shards")) {
        out.insert("_shards".into(), s.clone());
    }
    out.insert("hits".into(), json!({"total": total, "max_score": fused.first().map(|r| r.score), "hits": hits}));
    if let Some(a) = aggs.as_ref().and_then(|a| a.get("aggregations")) {
        out.insert("aggregations".into(), a.clone());
    }
    Value::Object(out)
}

/// The search whose aggregations (and count) a retriever search answers with: the union of
/// its `standard` leaves' queries, no hits. `None` without a standard leaf.
pub fn aggs_body(plan: &RetrieverPlan, aggs: &Value) -> Option<Value> {
    let queries: Vec<Value> = plan
        .leaves
        .iter()
        .filter(|l| l.kind == LeafKind::Standard)
        .filter_map(|l| l.body.get("query").cloned())
        .collect();
    (!queries.is_empty())
        .then(|| json!({"size": 0, "query": {"bool": {"should": queries, "minimum_should_match": 1}}, "aggs": aggs}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(ids: &[(&str, f64)]) -> Vec<LegHit> {
        ids.iter().map(|(i, s)| LegHit { id: format!("d/{i}"), score: *s }).collect()
    }

    #[test]
    fn the_documented_hybrid_rrf_parses_into_two_leaves() {
        let r = json!({"rrf": {"retrievers": [
            {"standard": {"query": {"multi_match": {"query": "Austria", "fields": ["city", "region"]}}}},
            {"knn": {"field": "vector", "query_vector": [10, 22, 77], "k": 10, "num_candidates": 10}}
        ], "rank_constant": 1, "rank_window_size": 50, "filter": {"term": {"year": "2019"}}}});
        let p = plan(&r, 0, 10).unwrap();
        assert_eq!(p.leaves.len(), 2);
        assert_eq!(p.window, 50);
        assert_eq!(p.leaves[0].body["size"], 50);
        assert_eq!(p.leaves[0].body["query"]["bool"]["filter"][0]["term"]["year"], "2019");
        assert_eq!(p.leaves[1].body["knn"]["filter"][0]["term"]["year"], "2019");
        assert_eq!(p.leaves[1].body["size"], 10, "a knn leaf returns at most k");
        let Node::Fuse { combine, .. } = &p.root else { panic!() };
        assert_eq!(*combine, Combine::Rrf { rank_constant: 1 });
    }

    #[test]
    fn weights_normalizers_and_nesting_are_read() {
        let r = json!({"linear": {"retrievers": [
            {"retriever": {"standard": {"query": {"match": {"t": "x"}}}}, "weight": 2, "normalizer": "minmax"},
            {"retriever": {"rrf": {"retrievers": [{"standard": {}}, {"retriever": {"standard": {}}, "weight": 3}]}}, "weight": 1.5}
        ], "normalizer": "l2_norm", "rank_window_size": 20}});
        let p = plan(&r, 5, 10).unwrap();
        assert_eq!(p.leaves.len(), 3);
        let Node::Fuse { children, .. } = &p.root else { panic!() };
        assert_eq!((children[0].1, children[0].2), (2.0, Some(Normalization::Minmax)));
        assert_eq!(
            (children[1].1, children[1].2),
            (1.5, Some(Normalization::L2)),
            "the top-level normalizer is the default"
        );
        let Node::Fuse { children: inner, window, .. } = &children[1].0 else { panic!() };
        assert_eq!((inner[1].1, *window), (3.0, 10));
    }

    #[test]
    fn what_cannot_be_served_is_named() {
        let cases = [
            (json!({"rrf": {"retrievers": [{"standard": {}}]}}), "two or more"),
            (
                json!({"text_similarity_reranker": {"retriever": {"standard": {}}, "field": "t", "inference_id": "x", "inference_text": "y"}}),
                "no reranking model",
            ),
            (json!({"rrf": {"query": "x", "fields": ["a"]}}), "short form"),
            (json!({"rrf": {"retrievers": [{"standard": {}}, {"knn": {"field": "v", "k": 3}}]}}), "query_vector"),
            (json!({"linear": {"retrievers": [{"standard": {}}]}}), "each linear entry"),
            (json!({"linear": {"retrievers": [{"retriever": {"standard": {}}, "normalizer": "zz"}]}}), "normalizer"),
            (
                json!({"rrf": {"retrievers": [{"standard": {}}, {"standard": {}}], "rank_window_size": 5}}),
                "at least the search's size",
            ),
            (json!({"rrf": {"retrievers": [{"standard": {"bogus": 1}}, {"standard": {}}]}}), "`bogus`"),
            (json!({"pinned": {}}), "`pinned`"),
        ];
        for (r, want) in cases {
            let e = plan(&r, 0, 10).unwrap_err().to_string();
            assert!(e.contains(want), "{r}: {e}");
        }
        assert!(needs_fusion(&json!({"rrf": {}})) && !needs_fusion(&json!({"standard": {"query": {"match_all": {}}}})));
    }

    #[test]
    fn the_answer_is_elasticsearch_shaped() {
        let r = json!({"rrf": {"retrievers": [{"standard": {}}, {"knn": {"field": "v", "query_vector": [1.0], "k": 2}}], "rank_window_size": 3}});
        let p = plan(&r, 1, 2).unwrap();
        let hit = |id: &str, s: f64, tag: &str| json!({"_index": "d", "_id": id, "_score": s, "tag": tag});
        let std = json!({"_shards": {"total": 1}, "hits": {"total": {"value": 40, "relation": "eq"}, "hits": [hit("a", 3.0, "std"), hit("b", 2.0, "std"), hit("c", 1.0, "std")]}});
        let knn = json!({"hits": {"total": {"value": 2, "relation": "eq"}, "hits": [hit("c", 0.9, "knn"), hit("e", 0.8, "knn")]}});
        let v = answer(&p, vec![std, knn], None, 1, 2);
        let hits = v["hits"]["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0]["_rank"], 2);
        assert_eq!(hits[0]["tag"], "std", "the standard leaf's copy");
        assert_eq!(v["hits"]["total"], json!({"value": 40, "relation": "gte"}));
        assert_eq!(v["_shards"]["total"], 1);
        let agg = aggs_body(&p, &json!({"y": {"terms": {"field": "y"}}})).unwrap();
        assert_eq!(agg["size"], 0);
        assert_eq!(agg["query"]["bool"]["should"][0], json!({"match_all": {}}));
    }

    #[test]
    fn the_tree_fuses_each_level_over_its_window() {
        let r = json!({"rrf": {"retrievers": [{"standard": {}}, {"standard": {}}], "rank_window_size": 2, "rank_constant": 1}});
        let p = plan(&r, 0, 2).unwrap();
        let leaves = vec![docs(&[("a", 9.0), ("b", 8.0), ("c", 7.0)]), docs(&[("c", 1.0), ("a", 0.5)])];
        let out = fuse_tree(&p.root, &leaves);
        // b at rank 2 of the first list counts; c at rank 3 of it does not
        let ids: Vec<&str> = out.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["d/a", "d/c"]);
        assert!((out[0].score - (1.0 / 2.0 + 1.0 / 3.0)).abs() < 1e-12);
        let lin = json!({"linear": {"retrievers": [
            {"retriever": {"standard": {}}, "weight": 1, "normalizer": "minmax"},
            {"retriever": {"standard": {}}, "weight": 1, "normalizer": "minmax"}
        ], "min_score": 0.9}});
        let p = plan(&lin, 0, 10).unwrap();
        let out = fuse_tree(&p.root, &leaves);
        assert_eq!(out.len(), 2, "min_score drops b (0.5): {out:?}");
    }
}
