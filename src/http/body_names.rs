//! Every index a request body names, for the body kinds of [`super::apis::BodyNames`].
//!
//! Query bodies can read other indices than the ones searched: a terms lookup
//! (`terms.{field}.index`), a pre-indexed shape (`indexed_shape.index`, `shapes` when absent),
//! `more_like_this` documents (`like`/`unlike` items' `_index`), `percolate` by document
//! (`index`), a lookup runtime field (`target_index`), and `indices_boost`; each is returned as a
//! [`Target::Index`] wherever it sits (queries nest in `bool`, `knn.filter`, retrievers,
//! aggregations). A `pit` is a [`Target::Pit`]. Names must be JSON strings: any other type is
//! an error, since the engines take `123` or `true` as a name.
//!
//! Pure: bodies in, targets out. Not read here: which indices an alias or a date-math name
//! resolves to (keys are checked against names, see the README's "Security").

use serde_json::{Map, Value};

use super::apis::BodyNames;
use crate::ingest::writer::json_kind as kind_of;

/// Something a body names that must be checked against the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An index name, alias or pattern (comma lists are split by the checker).
    Index(String),
    /// An index or a pipeline name (the sidecar's `/search`).
    IndexOrPipeline(String),
    /// Every index: an item that names none on a path that names none.
    Every,
    /// A point-in-time id the caller sends back.
    Pit(String),
    /// A scroll id the caller sends back.
    Scroll(String),
}

/// What `body` (of kind `kind`, on a path naming `path_indices`) names.
pub fn targets(kind: BodyNames, body: &[u8], path_indices: &[&str]) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    match kind {
        BodyNames::None | BodyNames::Unparsed => {}
        BodyNames::Query => {
            if let Some(v) = object(body)? {
                query(&v, &mut out)?;
            }
        }
        BodyNames::Sidecar => {
            if let Some(v) = object(body)? {
                match v.get("index") {
                    Some(Value::String(s)) => out.push(Target::IndexOrPipeline(s.clone())),
                    Some(other) => return Err(format!("`index` must be a string, not {}", kind_of(other))),
                    None => return Err("the search request names no `index`".into()),
                }
                query(&v, &mut out)?;
            }
        }
        BodyNames::Bulk => bulk(body, path_indices, &mut out)?,
        BodyNames::Msearch => msearch(body, path_indices, &mut out)?,
        BodyNames::Docs => {
            if let Some(v) = object(body)? {
                docs(&v, path_indices, &mut out)?;
            }
        }
        BodyNames::Scroll => {
            if let Some(v) = object(body)? {
                ids(v.get("scroll_id"), "scroll_id", Target::Scroll, &mut out)?;
            }
        }
        BodyNames::Pit => {
            if let Some(v) = object(body)? {
                ids(v.get("id"), "id", Target::Pit, &mut out)?;
                ids(v.get("pit_id"), "pit_id", Target::Pit, &mut out)?;
            }
        }
    }
    Ok(out)
}

/// The body as a JSON object; `None` when it is empty.
fn object(body: &[u8]) -> Result<Option<Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(Some(v)),
        Ok(other) => Err(format!("the request body must be a JSON object, not {}", kind_of(&other))),
        Err(e) => Err(format!("the request body is not JSON: {e}")),
    }
}

/// A name field: a string, or the error naming the field.
fn name(v: &Value, field: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("`{field}` must be a string, not {}", kind_of(other))),
    }
}

/// `id` fields that are one string or an array of strings.
fn ids(v: Option<&Value>, field: &str, make: fn(String) -> Target, out: &mut Vec<Target>) -> Result<(), String> {
    match v {
        None => Ok(()),
        Some(Value::Array(a)) => a.iter().try_for_each(|i| name(i, field).map(|s| out.push(make(s)))),
        Some(one) => name(one, field).map(|s| out.push(make(s))),
    }
}

/// Walks a query DSL body (any depth) for the clauses that read other indices.
fn query(v: &Value, out: &mut Vec<Target>) -> Result<(), String> {
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                clause(k, val, out)?;
                query(val, out)?;
            }
            Ok(())
        }
        Value::Array(a) => a.iter().try_for_each(|x| query(x, out)),
        _ => Ok(()),
    }
}

/// The index a clause named `key` with value `val` reads, if it is one of those that do.
fn clause(key: &str, val: &Value, out: &mut Vec<Target>) -> Result<(), String> {
    let obj = |v: &Value| v.as_object().cloned().unwrap_or_default();
    match key {
        "terms" => {
            for (_, spec) in obj(val) {
                if let Some(i) = spec.get("index") {
                    out.push(Target::Index(name(i, "terms lookup index")?));
                }
            }
        }
        "indexed_shape" => {
            let i = val.get("index").map(|i| name(i, "indexed_shape.index")).transpose()?;
            out.push(Target::Index(i.unwrap_or_else(|| "shapes".into())));
        }
        "more_like_this" => {
            for side in ["like", "unlike"] {
                let items = match val.get(side) {
                    Some(Value::Array(a)) => a.clone(),
                    Some(one) => vec![one.clone()],
                    None => Vec::new(),
                };
                for item in items.iter().filter_map(Value::as_object) {
                    if let Some(i) = item.get("_index") {
                        out.push(Target::Index(name(i, "more_like_this._index")?));
                    }
                }
            }
        }
        "percolate" => {
            if let Some(i) = val.get("index") {
                out.push(Target::Index(name(i, "percolate.index")?));
            }
        }
        "target_index" => out.push(Target::Index(name(val, "target_index")?)),
        "indices_boost" => indices_boost(val, out)?,
        "pit" => {
            if let Some(id) = val.get("id") {
                out.push(Target::Pit(name(id, "pit.id")?));
            }
        }
        _ => {}
    }
    Ok(())
}

/// `indices_boost`: `{name: boost}` or `[{name: boost}, …]`.
fn indices_boost(val: &Value, out: &mut Vec<Target>) -> Result<(), String> {
    let maps: Vec<&Map<String, Value>> = match val {
        Value::Object(m) => vec![m],
        Value::Array(a) => a.iter().filter_map(Value::as_object).collect(),
        other => return Err(format!("`indices_boost` must be an object or an array, not {}", kind_of(other))),
    };
    out.extend(maps.into_iter().flat_map(|m| m.keys().cloned()).map(Target::Index));
    Ok(())
}

/// The index an item names (`field`), else the path's, else every index.
fn item_index(item: &Value, field: &str, path_indices: &[&str], out: &mut Vec<Target>) -> Result<(), String> {
    match item.get(field) {
        Some(i) => out.push(Target::Index(name(i, field)?)),
        None => path_or_every(path_indices, out),
    }
    Ok(())
}

fn path_or_every(path_indices: &[&str], out: &mut Vec<Target>) {
    if path_indices.is_empty() {
        out.push(Target::Every);
    } else {
        out.extend(path_indices.iter().map(|p| Target::Index(p.to_string())));
    }
}

/// `_mget` / `_mtermvectors`: `docs[]._index`, or the path's index for `ids` and items without one.
fn docs(v: &Value, path_indices: &[&str], out: &mut Vec<Target>) -> Result<(), String> {
    match v.get("docs") {
        Some(Value::Array(items)) => {
            for item in items {
                if !item.is_object() {
                    return Err(format!("`docs` items must be objects, not {}", kind_of(item)));
                }
                item_index(item, "_index", path_indices, out)?;
            }
        }
        Some(other) => return Err(format!("`docs` must be an array, not {}", kind_of(other))),
        None => path_or_every(path_indices, out),
    }
    Ok(())
}

/// The non-blank lines of an NDJSON body, each parsed as a JSON object.
fn ndjson(body: &[u8]) -> impl Iterator<Item = Result<Value, String>> + '_ {
    body.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)).enumerate().map(|(n, l)| {
        match serde_json::from_slice::<Value>(l) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(other) => Err(format!("line {}: must be a JSON object, not {}", n + 1, kind_of(&other))),
            Err(e) => Err(format!("line {}: not JSON: {e}", n + 1)),
        }
    })
}

/// `_bulk`: every action line's `_index`. Source lines follow every action but `delete`.
fn bulk(body: &[u8], path_indices: &[&str], out: &mut Vec<Target>) -> Result<(), String> {
    let mut lines = body.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace));
    let mut n = 0;
    while let Some(line) = lines.next() {
        n += 1;
        let action: Value = serde_json::from_slice(line).map_err(|e| format!("bulk action line {n}: not JSON: {e}"))?;
        let Some((op, meta)) = action.as_object().filter(|m| m.len() == 1).and_then(|m| m.iter().next()) else {
            return Err(format!("bulk action line {n}: must be an object with one action"));
        };
        if !meta.is_object() {
            return Err(format!("bulk action line {n}: `{op}` must be an object"));
        }
        item_index(meta, "_index", path_indices, out).map_err(|e| format!("bulk action line {n}: {e}"))?;
        if op != "delete" {
            lines.next();
            n += 1;
        }
    }
    Ok(())
}

/// `_msearch`: header and body lines in pairs; a header's `index` / `indices` (a string, a comma
/// list, or an array of strings), else the path's; each body walked as a query.
fn msearch(body: &[u8], path_indices: &[&str], out: &mut Vec<Target>) -> Result<(), String> {
    let mut lines = ndjson(body);
    while let Some(header) = lines.next() {
        let header = header?;
        let mut named = false;
        for field in ["index", "indices"] {
            match header.get(field) {
                None => {}
                Some(Value::Array(a)) => {
                    for i in a {
                        out.push(Target::Index(name(i, field)?));
                    }
                    named = true;
                }
                Some(one) => {
                    out.push(Target::Index(name(one, field)?));
                    named = true;
                }
            }
        }
        if !named {
            path_or_every(path_indices, out);
        }
        if let Some(b) = lines.next() {
            query(&b?, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn of(kind: BodyNames, body: Value) -> Vec<Target> {
        targets(kind, body.to_string().as_bytes(), &[]).unwrap()
    }

    fn idx(names: &[&str]) -> Vec<Target> {
        names.iter().map(|n| Target::Index(n.to_string())).collect()
    }

    #[test]
    fn query_bodies_name_the_indices_their_lookups_read() {
        let body = json!({
            "query": {"bool": {
                "filter": [{"terms": {"user": {"index": "users", "id": "1", "path": "ids"}}}],
                "should": [
                    {"geo_shape": {"loc": {"indexed_shape": {"id": "x", "path": "shape"}}}},
                    {"more_like_this": {"fields": ["t"], "like": [{"_index": "imdb", "_id": "1"}, "free text"]}},
                    {"percolate": {"field": "q", "index": "docs-p", "id": "2"}},
                    {"terms": {"tags": ["a", "b"]}}
                ]
            }},
            "runtime_mappings": {"r": {"type": "lookup", "target_index": "ips", "input_field": "ip"}},
            "knn": {"field": "v", "query_vector": [1.0], "filter": {"terms": {"g": {"index": "knn-lookup", "id": "1", "path": "g"}}}},
            "indices_boost": [{"boosted": 1.4}],
            "aggs": {"t": {"terms": {"field": "tag"}}}
        });
        let mut got = of(BodyNames::Query, body);
        got.sort_by_key(|t| format!("{t:?}"));
        let mut want = idx(&["users", "shapes", "imdb", "docs-p", "ips", "knn-lookup", "boosted"]);
        want.sort_by_key(|t| format!("{t:?}"));
        assert_eq!(got, want);
    }

    #[test]
    fn names_must_be_strings() {
        for body in [
            json!({"query": {"terms": {"f": {"index": 123, "id": "1", "path": "p"}}}}),
            json!({"query": {"percolate": {"field": "q", "index": true, "id": "2"}}}),
            json!({"pit": {"id": 7}}),
        ] {
            assert!(targets(BodyNames::Query, body.to_string().as_bytes(), &[]).is_err(), "{body}");
        }
        assert!(targets(BodyNames::Docs, br#"{"docs":[{"_index":123,"_id":"1"}]}"#, &[]).is_err());
        assert!(targets(BodyNames::Bulk, b"{\"delete\":{\"_index\":true,\"_id\":\"1\"}}\n", &[]).is_err());
        assert!(targets(BodyNames::Msearch, b"{\"index\":[\"a\",1]}\n{}\n", &[]).is_err());
        assert!(targets(BodyNames::Query, b"[1,2]", &[]).is_err(), "an array is not a request object");
    }

    #[test]
    fn bulk_items_name_their_index_or_the_paths() {
        let body = b"{\"index\":{\"_index\":\"a\",\"_id\":\"1\"}}\n{\"delete\":{\"_index\":\"source-line\"}}\n{\"delete\":{\"_index\":\"b\"}}\n\
                     {\"delete\":{\"_id\":\"2\"}}\n{\"update\":{\"_id\":\"3\"}}\n{\"doc\":{\"_index\":\"not-an-action\"}}\n";
        assert_eq!(targets(BodyNames::Bulk, body, &["p"]).unwrap(), idx(&["a", "b", "p", "p"]));
        let t = targets(BodyNames::Bulk, b"{\"create\":{}}\n{}\n", &[]).unwrap();
        assert_eq!(t, vec![Target::Every]);
    }

    #[test]
    fn msearch_headers_name_index_and_indices_and_bodies_are_walked() {
        let body = b"{\"index\":\"docs-a\",\"indices\":\"secret\"}\n{}\n{}\n{\"query\":{\"terms\":{\"f\":{\"index\":\"l\",\"id\":\"1\",\"path\":\"p\"}}}}\n\
                     {\"indices\":[\"x\",\"y\"]}\n{}\n";
        let t = targets(BodyNames::Msearch, body, &[]).unwrap();
        assert_eq!(
            t,
            vec![
                Target::Index("docs-a".into()),
                Target::Index("secret".into()),
                Target::Every,
                Target::Index("l".into()),
                Target::Index("x".into()),
                Target::Index("y".into())
            ]
        );
    }

    #[test]
    fn docs_scrolls_and_pits() {
        let t = of(BodyNames::Docs, json!({"docs": [{"_index": "a", "_id": "1"}, {"_id": "2"}]}));
        assert_eq!(t, vec![Target::Index("a".into()), Target::Every]);
        assert_eq!(targets(BodyNames::Docs, br#"{"ids":["1"]}"#, &["p"]).unwrap(), idx(&["p"]));
        let t = of(BodyNames::Scroll, json!({"scroll_id": ["s1", "s2"]}));
        assert_eq!(t, vec![Target::Scroll("s1".into()), Target::Scroll("s2".into())]);
        assert_eq!(of(BodyNames::Pit, json!({"id": "p1"})), vec![Target::Pit("p1".into())]);
        assert_eq!(of(BodyNames::Pit, json!({"pit_id": ["p2"]})), vec![Target::Pit("p2".into())]);
        assert_eq!(of(BodyNames::Query, json!({"pit": {"id": "p3"}})), vec![Target::Pit("p3".into())]);
        let t = of(
            BodyNames::Sidecar,
            json!({"index": "demo", "query": "x", "filter": {"terms": {"f": {"index": "s", "id": "1", "path": "p"}}}}),
        );
        assert_eq!(t, vec![Target::IndexOrPipeline("demo".into()), Target::Index("s".into())]);
    }
}
