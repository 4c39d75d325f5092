//! The URL parameters of an `_search` whose hits the sidecar fuses itself (its `hybrid` clause,
//! a pipeline's `auto_hybrid`, a retriever it runs): each is honoured where Elasticsearch and
//! OpenSearch put it (a leg's body, each `_msearch` header, the `_msearch` URL, or the answer
//! the sidecar shapes) or refused with a 400 naming it. Deny by default: a parameter not listed
//! here is refused, never forwarded unread. Pure.

use serde_json::{json, Map, Value};

use super::request::QueryError;

/// Where each parameter of a fused `_search` goes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FusedParams {
    /// Keys the legs' bodies get (`size`, `from`, `_source`, `track_total_hits`, `timeout`, …),
    /// replacing the body's own: the engines let the URL win.
    pub body: Map<String, Value>,
    /// Each `_msearch` header's keys (`routing`, `preference`, …).
    pub header: Map<String, Value>,
    /// The `_msearch` URL's (`typed_keys`, `rest_total_hits_as_int`).
    pub url: Vec<(String, String)>,
    /// `filter_path`, applied by the sidecar to the answer it shapes.
    pub filter_path: Option<String>,
    /// `rest_total_hits_as_int`: `hits.total` is a number.
    pub total_as_int: bool,
}

/// Parameters that go into each `_msearch` header as they are.
const HEADER: &[&str] = &[
    "routing",
    "preference",
    "request_cache",
    "search_type",
    "allow_no_indices",
    "expand_wildcards",
    "ignore_unavailable",
    "ignore_throttled",
    "allow_partial_search_results",
    "ccs_minimize_roundtrips",
];

/// Parameters a fused search cannot honour, and why.
fn refused(key: &str) -> Option<&'static str> {
    Some(match key {
        "scroll" => "the hits are fused by the sidecar, once, so there is no scroll context to continue; page with `from` and `size` (or `search_after` on a plain query)",
        "sort" => "the hits are ordered by the fused score",
        "q" | "df" | "analyzer" | "analyze_wildcard" | "default_operator" | "lenient" => {
            "a URL query string would replace the hybrid query"
        }
        "search_pipeline" => "the sidecar fuses this search itself; a search pipeline would score only one leg",
        "suggest_field" | "suggest_text" | "suggest_mode" | "suggest_size" => "suggesters go in the body",
        _ => return None,
    })
}

fn boolean(key: &str, v: &str) -> Result<bool, QueryError> {
    match v {
        "" | "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(QueryError::Invalid(format!("URL parameter `{key}` must be true or false, not `{v}`"))),
    }
}

fn count(key: &str, v: &str) -> Result<Value, QueryError> {
    v.parse::<u64>()
        .map(|n| json!(n))
        .map_err(|_| QueryError::Invalid(format!("URL parameter `{key}` must be a non-negative integer, not `{v}`")))
}

fn list(v: &str) -> Value {
    Value::Array(v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| json!(s)).collect())
}

/// Sorts a fused search's URL parameters by where they go; the first refused or unknown one is
/// a 400 naming it.
pub fn fused_params<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<FusedParams, QueryError> {
    let mut out = FusedParams::default();
    let (mut includes, mut excludes, mut source) = (None, None, None);
    for (k, v) in pairs {
        if let Some(why) = refused(k) {
            return Err(QueryError::Invalid(format!("URL parameter `{k}` cannot be used with this search: {why}")));
        }
        match k {
            "size" | "from" | "terminate_after" => {
                out.body.insert(k.into(), count(k, v)?);
            }
            "track_total_hits" => {
                let t = match v {
                    "" | "true" | "false" => json!(boolean(k, v)?),
                    n => count(k, n)?,
                };
                out.body.insert(k.into(), t);
            }
            "timeout" => {
                out.body.insert(k.into(), json!(v));
            }
            "version" | "seq_no_primary_term" | "explain" | "track_scores" => {
                out.body.insert(k.into(), json!(boolean(k, v)?));
            }
            "stored_fields" | "docvalue_fields" => {
                out.body.insert(k.into(), list(v));
            }
            "_source" => source = Some(v),
            "_source_includes" | "_source_include" => includes = Some(list(v)),
            "_source_excludes" | "_source_exclude" => excludes = Some(list(v)),
            "typed_keys" => out.url.push((k.into(), boolean(k, v)?.to_string())),
            "rest_total_hits_as_int" => {
                out.total_as_int = boolean(k, v)?;
                out.url.push((k.into(), out.total_as_int.to_string()));
            }
            "max_concurrent_shard_requests" | "pre_filter_shard_size" | "batched_reduce_size" => {
                count(k, v)?;
                out.url.push((k.into(), v.into()));
            }
            "filter_path" => out.filter_path = Some(v.to_string()),
            "pretty" | "human" | "format" => {}
            h if HEADER.contains(&h) => {
                out.header.insert(h.into(), json!(v));
            }
            other => {
                return Err(QueryError::Invalid(format!(
                    "URL parameter `{other}` is not one the sidecar knows for a search it fuses; it is refused rather than ignored"
                )))
            }
        }
    }
    match (source, includes, excludes) {
        (Some(s @ ("true" | "false" | "")), None, None) => {
            out.body.insert("_source".into(), json!(s != "false"));
        }
        (s, i, e) if s.is_some() || i.is_some() || e.is_some() => {
            let mut m = Map::new();
            let inc = match (s.filter(|s| !matches!(*s, "true" | "false" | "")), i) {
                (Some(s), None) => Some(list(s)),
                (_, i) => i,
            };
            if let Some(i) = inc {
                m.insert("includes".into(), i);
            }
            if let Some(e) = e {
                m.insert("excludes".into(), e);
            }
            out.body.insert("_source".into(), Value::Object(m));
        }
        _ => {}
    }
    Ok(out)
}

/// One `filter_path` expression, split on `.` (`*` and `**` wildcards, a leading `-` excludes).
struct PathExpr {
    segs: Vec<String>,
}

fn glob(pattern: &str, key: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == key,
        Some((head, tail)) => {
            key.len() >= head.len()
                && key.starts_with(head)
                && (0..=key.len() - head.len()).any(|i| {
                    let rest = &key[head.len() + i..];
                    key.is_char_boundary(head.len() + i) && glob(tail, rest)
                })
        }
    }
}

/// The patterns that still apply below `key`, and whether one of them ends at it.
fn step<'a>(pats: &[&'a [String]], key: &str) -> (Vec<&'a [String]>, bool) {
    let (mut next, mut done) = (Vec::new(), false);
    let mut stack: Vec<&'a [String]> = pats.to_vec();
    while let Some(p) = stack.pop() {
        let Some(first) = p.first() else { continue };
        if first == "**" {
            // `**` matches no level (try the rest here) or this level (stay on `**`)
            if p.len() == 1 {
                done = true;
            } else {
                stack.push(&p[1..]);
            }
            next.push(p);
        } else if glob(first, key) {
            if p.len() == 1 {
                done = true;
            } else {
                next.push(&p[1..]);
            }
        }
    }
    (next, done)
}

fn include(v: &Value, pats: &[&[String]]) -> Option<Value> {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                let (next, done) = step(pats, k);
                if done {
                    out.insert(k.clone(), x.clone());
                } else if !next.is_empty() {
                    if let Some(kept) = include(x, &next) {
                        out.insert(k.clone(), kept);
                    }
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Value::Array(a) => {
            let kept: Vec<Value> = a.iter().filter_map(|x| include(x, pats)).collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        _ => None,
    }
}

fn exclude(v: &mut Value, pats: &[&[String]]) {
    match v {
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let (next, done) = step(pats, &k);
                if done {
                    m.remove(&k);
                } else if !next.is_empty() {
                    if let Some(x) = m.get_mut(&k) {
                        exclude(x, &next);
                    }
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| exclude(x, pats)),
        _ => {}
    }
}

/// An answer filtered as the engines filter theirs by `?filter_path=` (comma-separated
/// dot paths, `*` within a name, `**` across levels, `-` to exclude): what no inclusion keeps is
/// dropped (an empty answer is `{}`), then what an exclusion names is removed.
pub fn filter_path(answer: Value, spec: &str) -> Value {
    let exprs: Vec<(bool, PathExpr)> = spec
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
            (neg, PathExpr { segs: s.split('.').map(String::from).collect() })
        })
        .collect();
    let incl: Vec<&[String]> = exprs.iter().filter(|(n, _)| !n).map(|(_, e)| e.segs.as_slice()).collect();
    let excl: Vec<&[String]> = exprs.iter().filter(|(n, _)| *n).map(|(_, e)| e.segs.as_slice()).collect();
    let mut out = if incl.is_empty() { answer } else { include(&answer, &incl).unwrap_or_else(|| json!({})) };
    if !excl.is_empty() {
        exclude(&mut out, &excl);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<FusedParams, QueryError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
        fused_params(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    #[test]
    fn each_parameter_goes_where_the_engines_put_it() {
        let p = parse("size=3&from=2&typed_keys=true&routing=r1&preference=_local&track_total_hits=100&timeout=2s&filter_path=hits.hits._id&rest_total_hits_as_int=true").unwrap();
        assert_eq!(p.body["size"], 3);
        assert_eq!(p.body["from"], 2);
        assert_eq!(p.body["track_total_hits"], 100);
        assert_eq!(p.body["timeout"], "2s");
        assert_eq!(p.header["routing"], "r1");
        assert_eq!(p.header["preference"], "_local");
        assert!(p.url.contains(&("typed_keys".into(), "true".into())));
        assert!(p.total_as_int);
        assert_eq!(p.filter_path.as_deref(), Some("hits.hits._id"));
    }

    #[test]
    fn source_parameters_become_one_source_filter() {
        assert_eq!(parse("_source=false").unwrap().body["_source"], false);
        assert_eq!(parse("_source=title,year").unwrap().body["_source"], json!({"includes": ["title", "year"]}));
        assert_eq!(
            parse("_source_includes=a.*&_source_excludes=a.b").unwrap().body["_source"],
            json!({"includes": ["a.*"], "excludes": ["a.b"]})
        );
    }

    #[test]
    fn refused_and_unknown_parameters_are_named() {
        for (q, name) in [("scroll=1m", "scroll"), ("sort=year", "sort"), ("q=x", "q"), ("bogus=1", "bogus")] {
            let e = parse(q).unwrap_err().to_string();
            assert!(e.contains(&format!("`{name}`")), "{q}: {e}");
        }
        assert!(parse("size=-1").unwrap_err().to_string().contains("`size`"));
        assert!(parse("typed_keys=yes").unwrap_err().to_string().contains("true or false"));
    }

    #[test]
    fn filter_path_keeps_and_drops_like_the_engines() {
        let v = json!({"took": 3, "hits": {"total": {"value": 2}, "hits": [
            {"_id": "a", "_score": 1.0, "_source": {"t": "x"}}, {"_id": "b", "_score": 0.5, "_source": {"t": "y"}}
        ]}, "aggregations": {"sterms#y": {"buckets": []}}});
        assert_eq!(filter_path(v.clone(), "hits.hits._id"), json!({"hits": {"hits": [{"_id": "a"}, {"_id": "b"}]}}));
        assert_eq!(filter_path(v.clone(), "took,hits.total"), json!({"took": 3, "hits": {"total": {"value": 2}}}));
        assert_eq!(filter_path(v.clone(), "**._id"), json!({"hits": {"hits": [{"_id": "a"}, {"_id": "b"}]}}));
        assert_eq!(
            filter_path(v.clone(), "hits.hits._s*").pointer("/hits/hits/0").unwrap().as_object().unwrap().len(),
            2
        );
        assert_eq!(filter_path(v.clone(), "aggregations.*#y"), json!({"aggregations": {"sterms#y": {"buckets": []}}}));
        let ex = filter_path(v.clone(), "-hits.hits._source,-took");
        assert!(ex.get("took").is_none() && ex.pointer("/hits/hits/0/_source").is_none());
        assert_eq!(ex.pointer("/hits/hits/1/_id").unwrap(), "b");
        assert_eq!(filter_path(v, "nothing.here"), json!({}));
    }

    proptest::proptest! {
        #[test]
        fn filter_path_never_panics(spec in "[a-z*_.,#-]{0,24}") {
            let v = json!({"a": {"b": [1, {"c": 2}], "*": 3}, "hits": {"hits": [{"_id": "x"}]}});
            let _ = filter_path(v, &spec);
        }
    }
}
