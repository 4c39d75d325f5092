//! Shaping what the engine answered: reading legs, fusing them, paging, passages and explain.
//! Pure.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::fusion::{fuse, page, FusedHit, Fusion, LegHit};
use super::request::{Mode, Plan, Resolved};

/// One leg's answer (a `_search` response or one `_msearch` item).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Leg {
    pub hits: Vec<Hit>,
    /// `hits.total` as the engine gave it.
    pub total: Option<Value>,
}

/// One hit of a leg: its identity and score read, the rest kept as the engine wrote it until
/// the hit makes the page (most of a leg's hits never do, and their `_source` is most of the
/// answer's bytes).
#[derive(Clone, Debug)]
pub struct Hit {
    /// `_index/_id` ([`key`]).
    pub key: String,
    pub score: f64,
    raw: Box<RawValue>,
}

impl PartialEq for Hit {
    fn eq(&self, other: &Hit) -> bool {
        self.key == other.key && self.score == other.score && self.raw.get() == other.raw.get()
    }
}

/// What identifies a hit, read from its JSON (everything else skipped, not built).
#[derive(Deserialize)]
struct HitHead<'a> {
    #[serde(borrow, default, rename = "_index")]
    index: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "_id")]
    id: Option<Cow<'a, str>>,
    #[serde(default, rename = "_score")]
    score: Option<f64>,
}

impl Hit {
    fn of_raw(raw: &RawValue) -> Result<Hit, serde_json::Error> {
        let head: HitHead = serde_json::from_str(raw.get())?;
        let key = format!("{}/{}", head.index.as_deref().unwrap_or(""), head.id.as_deref().unwrap_or(""));
        Ok(Hit { key, score: head.score.unwrap_or(0.0), raw: raw.to_owned() })
    }

    /// A hit from its JSON value.
    pub fn of_value(v: &Value) -> Hit {
        let raw =
            serde_json::value::to_raw_value(v).unwrap_or_else(|_| RawValue::from_string("{}".into()).expect("{}"));
        Hit { key: key(v), score: v.get("_score").and_then(Value::as_f64).unwrap_or(0.0), raw }
    }

    /// The whole hit, built.
    pub fn value(&self) -> Value {
        serde_json::from_str(self.raw.get()).unwrap_or_else(|_| json!({}))
    }

    /// Only the hit's `inner_hits` and `highlight` (what another leg's copy of a hit adds),
    /// built; its `_source` is skipped.
    fn extras(&self) -> Value {
        #[derive(Deserialize)]
        struct Extras {
            inner_hits: Option<Value>,
            highlight: Option<Value>,
        }
        let mut out = Map::new();
        if let Ok(e) = serde_json::from_str::<Extras>(self.raw.get()) {
            for (k, v) in [("inner_hits", e.inner_hits), ("highlight", e.highlight)] {
                if let Some(v) = v {
                    out.insert(k.into(), v);
                }
            }
        }
        Value::Object(out)
    }
}

/// The `(type, reason)` of an `_msearch` item that failed (its root cause's, where it has one).
pub fn item_error(resp: &Value) -> Option<(String, String)> {
    let e = resp.get("error")?;
    let root = e.get("root_cause").and_then(|r| r.get(0)).unwrap_or(e);
    let field = |k: &str| root.get(k).or_else(|| e.get(k)).and_then(Value::as_str).unwrap_or("").to_string();
    let reason = if field("reason").is_empty() { e.to_string() } else { field("reason") };
    Some((field("type"), reason))
}

/// The hits of one leg, `hits.total` and every other key of its answer (`took`, `_shards`,
/// `aggregations`, `error`, …, and `hits` without its `hits`), built.
#[derive(Deserialize)]
struct RawItem<'a> {
    #[serde(borrow, default)]
    hits: Option<RawHits<'a>>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

#[derive(Deserialize)]
struct RawHits<'a> {
    #[serde(borrow, default)]
    hits: Vec<&'a RawValue>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

#[derive(Deserialize)]
struct RawMsearch<'a> {
    #[serde(borrow, default)]
    responses: Vec<RawItem<'a>>,
}

/// One `_msearch` item read for fusion: the item without its hits, and its leg (or the
/// `(type, reason)` of its error).
pub struct LegAnswer {
    pub head: Value,
    pub leg: Result<Leg, (String, String)>,
}

/// An `_msearch` answer's items, each hit read only as far as fusion needs ([`Hit`]).
pub fn read_msearch(body: &[u8]) -> Result<Vec<LegAnswer>, serde_json::Error> {
    let m: RawMsearch = serde_json::from_slice(body)?;
    let mut out = Vec::with_capacity(m.responses.len());
    for item in m.responses {
        let mut head = item.rest;
        let (hits, rest) = match item.hits {
            Some(h) => (h.hits, Some(h.rest)),
            None => (Vec::new(), None),
        };
        let total = rest.as_ref().and_then(|r| r.get("total").cloned());
        if let Some(r) = rest {
            head.insert("hits".into(), Value::Object(r));
        }
        let head = Value::Object(head);
        let leg = match item_error(&head) {
            Some(e) => Err(e),
            None => Ok(Leg { hits: hits.into_iter().map(Hit::of_raw).collect::<Result<_, _>>()?, total }),
        };
        out.push(LegAnswer { head, leg });
    }
    Ok(out)
}

/// A hit's identity across the legs: `_index/_id` (index names cannot hold `/`).
pub fn key(hit: &Value) -> String {
    let s = |k: &str| hit.get(k).and_then(Value::as_str).unwrap_or("");
    format!("{}/{}", s("_index"), s("_id"))
}

fn leg_hits(leg: &Leg) -> Vec<LegHit> {
    leg.hits.iter().map(|h| LegHit { id: h.key.clone(), score: h.score }).collect()
}

/// The best passage of a kNN hit over nested passages: its text, score and position.
fn passage(hit: &Value, path: &str) -> Option<Value> {
    let inner = hit.get("inner_hits")?.get(path)?.pointer("/hits/hits/0")?;
    Some(json!({
        "text": inner
            .pointer("/_source/text")
            .or_else(|| inner.get("fields")?.get(format!("{path}.text"))?.get(0))
            .cloned()
            .unwrap_or(Value::Null),
        "score": inner.get("_score").cloned().unwrap_or(Value::Null),
        "offset": inner.pointer("/_nested/offset").cloned().unwrap_or(Value::Null),
    }))
}

fn method_name(plan: &Plan) -> &'static str {
    match (plan.mode, plan.fusion) {
        (Mode::Bm25, _) => "bm25",
        (Mode::Knn, _) => "knn",
        (Mode::Hybrid, Resolved::Sidecar(Fusion::Rrf { .. })) => "rrf",
        (Mode::Hybrid, Resolved::Sidecar(Fusion::Linear { .. })) => "linear",
        (Mode::Hybrid, Resolved::Engine { .. }) => "engine",
    }
}

fn leg_explain(rank_score: Option<(usize, f64)>, contribution: Option<f64>) -> Value {
    match rank_score {
        None => Value::Null,
        Some((rank, score)) => {
            let mut m = Map::new();
            m.insert("rank".into(), json!(rank));
            m.insert("score".into(), json!(score));
            if let Some(c) = contribution {
                m.insert("contribution".into(), json!(c));
            }
            Value::Object(m)
        }
    }
}

/// One output hit: the engine's hit (BM25's copy preferred, it carries the highlight) with the
/// fused `_score`, the best passage and, with `explain`, what each leg said.
fn output_hit(plan: &Plan, f: &FusedHit, by_key: &BTreeMap<&str, (Option<&Hit>, Option<&Hit>)>) -> Value {
    let (b, k) = by_key.get(f.id.as_str()).copied().unwrap_or((None, None));
    let mut hit = b.or(k).map(Hit::value).unwrap_or_else(|| json!({}));
    let passages = plan.target.passages.as_deref();
    // what the kNN leg's copy adds (its best passage, its highlight), built only when needed
    let (best, knn_highlight) = match (b, k) {
        (None, Some(_)) => (passages.and_then(|p| passage(&hit, p)), None),
        (Some(_), Some(k)) if passages.is_some() || hit.get("highlight").is_none() => {
            let k = k.extras();
            (passages.and_then(|p| passage(&k, p)), k.get("highlight").cloned())
        }
        _ => (None, None),
    };
    let Some(m) = hit.as_object_mut() else { return hit };
    m.remove("inner_hits");
    m.insert("_score".into(), json!(f.score));
    if let (false, Some(h)) = (m.contains_key("highlight"), knn_highlight) {
        m.insert("highlight".into(), h);
    }
    if let Some(p) = best {
        m.insert("passage".into(), p);
    }
    if plan.explain {
        let fused = matches!(plan.mode, Mode::Hybrid);
        m.insert(
            "_explain".into(),
            json!({
                "method": method_name(plan),
                "bm25": leg_explain(f.bm25, fused.then_some(f.parts.0)),
                "knn": leg_explain(f.knn, fused.then_some(f.parts.1)),
                "fused": f.score,
            }),
        );
    }
    hit
}

/// The fused (or single-leg) list of a sidecar-fused plan, one page of it, and its size.
pub struct Page {
    pub hits: Vec<Value>,
    /// Distinct documents in the fused list.
    pub total: usize,
    /// Whether a leg was cut at its depth (more documents may match).
    pub truncated: bool,
    pub max_score: Option<f64>,
}

fn index_hits(leg: Option<&Leg>) -> BTreeMap<&str, &Hit> {
    leg.map(|l| l.hits.iter().map(|h| (h.key.as_str(), h)).collect()).unwrap_or_default()
}

fn single(leg: &Leg, on_bm25: bool) -> Vec<FusedHit> {
    leg_hits(leg)
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            let rs = Some((i + 1, h.score));
            FusedHit {
                id: h.id,
                score: h.score,
                bm25: if on_bm25 { rs } else { None },
                knn: if on_bm25 { None } else { rs },
                parts: if on_bm25 { (h.score, 0.0) } else { (0.0, h.score) },
            }
        })
        .collect()
}

/// Fuses the legs the plan ran (by the plan's sidecar fusion) and cuts the page.
pub fn sidecar_page(plan: &Plan, bm25: Option<&Leg>, knn: Option<&Leg>, depth: usize) -> Page {
    let fused = match (bm25, knn, plan.fusion) {
        (Some(b), Some(k), Resolved::Sidecar(f)) => fuse(&leg_hits(b), &leg_hits(k), f),
        (Some(b), _, _) => single(b, true),
        (None, Some(k), _) => single(k, false),
        (None, None, _) => Vec::new(),
    };
    let (bi, ki) = (index_hits(bm25), index_hits(knn));
    let mut by_key: BTreeMap<&str, (Option<&Hit>, Option<&Hit>)> = BTreeMap::new();
    for (id, h) in bi {
        by_key.entry(id).or_default().0 = Some(h);
    }
    for (id, h) in ki {
        by_key.entry(id).or_default().1 = Some(h);
    }
    let truncated = [bm25, knn].iter().flatten().any(|l| l.hits.len() >= depth);
    let hits = page(&fused, plan.from, plan.size).iter().map(|f| output_hit(plan, f, &by_key)).collect();
    Page { hits, total: fused.len(), truncated, max_score: fused.first().map(|f| f.score) }
}

/// `hits.total` of a fused page: the union of what the legs matched. Exact when no leg was cut
/// at its depth; otherwise a lower bound (`gte`): the larger of the fused list and each leg's
/// own total. One leg alone keeps its own total; `None` when the engine counted nothing
/// (`track_total_hits: false` on the BM25 leg).
pub fn union_total(page: &Page, bm25: Option<&Leg>, knn: Option<&Leg>) -> Option<Value> {
    let value = |l: &Leg| l.total.as_ref().and_then(|t| t.get("value").and_then(Value::as_u64).or(t.as_u64()));
    match (bm25, knn) {
        (Some(b), None) => b.total.clone(),
        (None, Some(_)) => Some(json!({"value": page.total, "relation": if page.truncated { "gte" } else { "eq" }})),
        (Some(b), Some(k)) => {
            b.total.as_ref()?;
            if !page.truncated {
                return Some(json!({"value": page.total, "relation": "eq"}));
            }
            let most = [value(b), value(k), Some(page.total as u64)].into_iter().flatten().max().unwrap_or(0);
            Some(json!({"value": most, "relation": "gte"}))
        }
        (None, None) => Some(json!({"value": 0, "relation": "eq"})),
    }
}

/// The hits of an engine-fused answer; with `explain`, annotated from the separately run legs
/// (their ranks and scores; the fused score is the engine's).
pub fn engine_hits(plan: &Plan, resp: &Value, legs: Option<(&Leg, &Leg)>) -> Vec<Value> {
    let hits = resp.pointer("/hits/hits").and_then(Value::as_array).cloned().unwrap_or_default();
    let ranks = |leg: &Leg| -> BTreeMap<String, (usize, f64)> {
        leg_hits(leg).into_iter().enumerate().map(|(i, h)| (h.id, (i + 1, h.score))).collect()
    };
    let (rb, rk) = legs.map(|(b, k)| (ranks(b), ranks(k))).unwrap_or_default();
    hits.into_iter()
        .map(|mut hit| {
            let id = key(&hit);
            let p = plan.target.passages.as_deref().and_then(|path| passage(&hit, path));
            if let Some(m) = hit.as_object_mut() {
                m.remove("inner_hits");
                if let Some(p) = p {
                    m.insert("passage".into(), p);
                }
                if plan.explain {
                    let fused = m.get("_score").cloned().unwrap_or(Value::Null);
                    m.insert(
                        "_explain".into(),
                        json!({
                            "method": "engine",
                            "bm25": leg_explain(rb.get(&id).copied(), None),
                            "knn": leg_explain(rk.get(&id).copied(), None),
                            "fused": fused,
                        }),
                    );
                }
            }
            hit
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::request::{SearchRequest, Target};
    use crate::types::search::SearchSpec;

    fn plan(body: Value, passages: bool) -> Plan {
        let r: SearchRequest = serde_json::from_value(body).unwrap();
        let limits = crate::settings::Settings::load(None, &Default::default()).unwrap().search;
        let target = Target {
            index: "d".into(),
            model: "m".into(),
            query_model: "m".into(),
            text_fields: vec!["text".into()],
            vector_field: "v".into(),
            passages: passages.then(|| "passages".into()),
            hidden: vec![],
            stored_passages: false,
        };
        crate::query::request::plan(r, target, &SearchSpec::default(), &limits).unwrap()
    }

    fn hit(id: &str, score: f64) -> Value {
        json!({"_index": "d", "_id": id, "_score": score, "_source": {"text": id}})
    }

    #[test]
    fn rrf_page_adds_up_and_carries_passages_and_highlights() {
        let p = plan(json!({"index": "d", "query": "q", "explain": true, "size": 2, "k": 3}), true);
        let mut b1 = hit("a", 3.0);
        b1["highlight"] = json!({"text": ["<em>a</em>"]});
        let bm25 = Leg { hits: [b1, hit("b", 2.0), hit("c", 1.0)].iter().map(Hit::of_value).collect(), total: None };
        let mut k1 = hit("b", 0.9);
        k1["inner_hits"] = json!({"passages": {"hits": {"hits": [
            {"_score": 0.9, "_nested": {"field": "passages", "offset": 2}, "_source": {"text": "best part of b"}}
        ]}}});
        let knn = Leg { hits: [k1, hit("d", 0.8)].iter().map(Hit::of_value).collect(), total: None };
        let page = sidecar_page(&p, Some(&bm25), Some(&knn), 3);
        assert_eq!(page.total, 4);
        assert!(page.truncated);
        let ids: Vec<&str> = page.hits.iter().map(|h| h["_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["b", "a"]);
        let b = &page.hits[0];
        assert_eq!(b["passage"], json!({"text": "best part of b", "score": 0.9, "offset": 2}));
        assert!(b.get("inner_hits").is_none());
        let e = &b["_explain"];
        assert_eq!(e["bm25"]["rank"], 2);
        assert_eq!(e["knn"]["rank"], 1);
        let sum = e["bm25"]["contribution"].as_f64().unwrap() + e["knn"]["contribution"].as_f64().unwrap();
        assert!((sum - e["fused"].as_f64().unwrap()).abs() < 1e-12);
        assert!((sum - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-12);
        assert_eq!(page.hits[1]["highlight"], json!({"text": ["<em>a</em>"]}));
        assert_eq!(page.hits[1]["_explain"]["knn"], Value::Null);
    }

    #[test]
    fn a_single_leg_keeps_its_order_and_scores() {
        let p = plan(json!({"index": "d", "query": "q", "mode": "knn", "from": 1, "size": 1}), false);
        let knn = Leg { hits: [hit("x", 0.9), hit("y", 0.7)].iter().map(Hit::of_value).collect(), total: None };
        let page = sidecar_page(&p, None, Some(&knn), 50);
        assert_eq!(page.total, 2);
        assert!(!page.truncated);
        assert_eq!(page.hits[0]["_id"], "y");
        assert_eq!(page.hits[0]["_score"], 0.7);
    }

    #[test]
    fn the_total_counts_the_union_of_the_legs() {
        let p = plan(json!({"index": "d", "query": "q", "k": 3, "size": 3}), false);
        let total = |v: u64, rel: &str| Some(json!({"value": v, "relation": rel}));
        let bm25 =
            Leg { hits: [hit("a", 3.0), hit("b", 2.0)].iter().map(Hit::of_value).collect(), total: total(2, "eq") };
        let knn =
            Leg { hits: [hit("b", 0.9), hit("c", 0.8)].iter().map(Hit::of_value).collect(), total: total(2, "eq") };
        let page = sidecar_page(&p, Some(&bm25), Some(&knn), 3);
        assert_eq!(union_total(&page, Some(&bm25), Some(&knn)), total(3, "eq"));
        // a leg cut at its depth: a lower bound, never below what a leg counted
        let long = Leg {
            hits: [hit("a", 3.0), hit("b", 2.0), hit("d", 1.0)].iter().map(Hit::of_value).collect(),
            total: total(40, "eq"),
        };
        let page = sidecar_page(&p, Some(&long), Some(&knn), 3);
        assert_eq!(union_total(&page, Some(&long), Some(&knn)), total(40, "gte"));
        let untracked = Leg { total: None, ..bm25.clone() };
        assert_eq!(union_total(&page, Some(&untracked), Some(&knn)), None);
        assert_eq!(union_total(&page, Some(&long), None), total(40, "eq"));
    }

    #[test]
    fn an_error_item_names_its_type_and_reason() {
        let item = json!({"error": {"root_cause": [{"type": "query_shard_exception", "reason": "no such field"}], "type": "search_phase_execution_exception", "reason": "all shards failed"}, "status": 400});
        assert_eq!(item_error(&item).unwrap(), ("query_shard_exception".into(), "no such field".into()));
    }

    #[test]
    fn an_msearch_answer_is_read_for_fusion_with_every_other_key_kept() {
        let body = json!({"took": 3, "responses": [
            {"took": 2, "timed_out": false, "_shards": {"total": 1}, "status": 200,
             "aggregations": {"g": {"buckets": [{"key": "x", "doc_count": 1}]}},
             "hits": {"total": {"value": 2, "relation": "eq"}, "max_score": 3.0, "hits": [
                hit("a\"b", 3.0),
                {"_index": "d", "_id": "c", "_score": null, "_source": {"text": "é \u{e9} \n"}, "sort": [1]}
             ]}},
            {"error": {"root_cause": [{"type": "query_shard_exception", "reason": "no such field"}], "type": "search_phase_execution_exception", "reason": "all shards failed"}, "status": 400}
        ]});
        let items = read_msearch(body.to_string().as_bytes()).unwrap();
        assert_eq!(items.len(), 2);
        let leg = items[0].leg.as_ref().unwrap();
        assert_eq!(leg.total, Some(json!({"value": 2, "relation": "eq"})));
        assert_eq!((leg.hits[0].key.as_str(), leg.hits[0].score), ("d/a\"b", 3.0));
        assert_eq!((leg.hits[1].key.as_str(), leg.hits[1].score), ("d/c", 0.0));
        assert_eq!(leg.hits[0].value(), hit("a\"b", 3.0), "a hit is built back exactly");
        assert_eq!(leg.hits[1].value()["_source"]["text"], "é é \n");
        let head = &items[0].head;
        assert_eq!(head["aggregations"]["g"]["buckets"][0]["key"], "x");
        assert_eq!(head["hits"], json!({"total": {"value": 2, "relation": "eq"}, "max_score": 3.0}));
        assert_eq!(head["_shards"]["total"], 1);
        assert_eq!(items[1].leg.as_ref().unwrap_err(), &("query_shard_exception".into(), "no such field".into()));
        assert_eq!(items[1].head["status"], 400);
        assert!(read_msearch(b"{\"responses\": [").is_err(), "a cut answer is an error, not a panic");
        assert!(read_msearch(b"{}").unwrap().is_empty());
    }
}
