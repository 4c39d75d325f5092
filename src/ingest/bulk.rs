//! The `_bulk` wire format: parsing NDJSON into items, writing items back, and merging the
//! engine's per-item results with the sidecar's own per-item failures. Pure.
//!
//! As Elasticsearch does, a malformed line or an unknown action rejects the whole request
//! (naming the line); per-document problems fail only their item.

use serde_json::{json, Map, Value};

/// A bulk action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Index,
    Create,
    Update,
    Delete,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Index => "index",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// One action with its metadata and (except for delete) its source line.
#[derive(Clone, Debug, PartialEq)]
pub struct BulkItem {
    pub action: Action,
    pub meta: Map<String, Value>,
    pub source: Option<Value>,
    /// 1-based line of the action in the request.
    pub line: usize,
}

impl BulkItem {
    /// The target index: the item's `_index`, else the one in the URL.
    pub fn index<'a>(&'a self, default: Option<&'a str>) -> Option<&'a str> {
        self.meta.get("_index").and_then(Value::as_str).or(default)
    }

    /// The document whose fields the sidecar embeds: the source of `index`/`create`, the partial
    /// `doc` of an `update` (scripted updates have none), nothing for `delete`.
    pub fn doc(&self) -> Option<&Map<String, Value>> {
        match (self.action, self.source.as_ref()) {
            (Action::Update, Some(s)) => s.get("doc").and_then(Value::as_object),
            (Action::Index | Action::Create, Some(s)) => s.as_object(),
            _ => None,
        }
    }

    /// [`BulkItem::doc`], mutable.
    pub fn doc_mut(&mut self) -> Option<&mut Map<String, Value>> {
        match (self.action, self.source.as_mut()) {
            (Action::Update, Some(s)) => s.get_mut("doc").and_then(Value::as_object_mut),
            (Action::Index | Action::Create, Some(s)) => s.as_object_mut(),
            _ => None,
        }
    }
}

/// Why a whole bulk request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{reason}")]
pub struct BulkParseError {
    pub line: usize,
    pub reason: String,
}

/// Parses an NDJSON bulk body.
pub fn parse(body: &[u8]) -> Result<Vec<BulkItem>, BulkParseError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| BulkParseError { line: 0, reason: format!("the bulk body is not UTF-8: {e}") })?;
    // as the engines: a body whose last line has no newline is refused whole, pipeline index or not
    if !text.trim().is_empty() && !text.ends_with('\n') {
        let line = text.lines().count();
        return Err(BulkParseError { line, reason: "The bulk request must be terminated by a newline [\\n]".into() });
    }
    let mut lines = text.split('\n').enumerate().map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
    let mut items = Vec::new();
    while let Some((n, line)) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| BulkParseError { line: n, reason };
        let v: Value =
            serde_json::from_str(line).map_err(|e| bad(format!("Malformed action/metadata line [{n}]: {e}")))?;
        let Value::Object(obj) = v else {
            return Err(bad(format!("Malformed action/metadata line [{n}], expected an object")));
        };
        if obj.len() != 1 {
            return Err(bad(format!("Malformed action/metadata line [{n}], expected exactly one action")));
        }
        let (name, meta) = obj.into_iter().next().expect("one entry");
        let action = match name.as_str() {
            "index" => Action::Index,
            "create" => Action::Create,
            "update" => Action::Update,
            "delete" => Action::Delete,
            other => {
                return Err(bad(format!(
                    "Malformed action/metadata line [{n}], expected one of [create, delete, index, update] but found [{other}]"
                )))
            }
        };
        let Value::Object(meta) = meta else {
            return Err(bad(format!("Malformed action/metadata line [{n}], the action's metadata must be an object")));
        };
        let source = if action == Action::Delete {
            None
        } else {
            let Some((sn, sline)) = lines.next().filter(|(_, l)| !l.trim().is_empty()) else {
                return Err(bad(format!("Malformed action/metadata line [{n}]: the {name} action has no source line")));
            };
            let s: Value = serde_json::from_str(sline)
                .map_err(|e| BulkParseError { line: sn, reason: format!("Malformed source line [{sn}]: {e}") })?;
            if !s.is_object() {
                return Err(BulkParseError {
                    line: sn,
                    reason: format!("Malformed source line [{sn}], expected an object"),
                });
            }
            Some(s)
        };
        items.push(BulkItem { action, meta, source, line: n });
    }
    Ok(items)
}

/// Writes items back as NDJSON (each line newline-terminated).
pub fn write(items: &[&BulkItem]) -> Vec<u8> {
    let mut out = Vec::new();
    for it in items {
        let action = json!({ it.action.name(): it.meta });
        out.extend_from_slice(action.to_string().as_bytes());
        out.push(b'\n');
        if let Some(s) = &it.source {
            out.extend_from_slice(s.to_string().as_bytes());
            out.push(b'\n');
        }
    }
    out
}

/// A per-item failure decided by the sidecar (the item never reached the engine).
#[derive(Clone, Debug, PartialEq)]
pub struct ItemFailure {
    pub position: usize,
    pub status: u16,
    pub error_type: &'static str,
    pub reason: String,
}

/// The per-item result the sidecar reports for its own failure, in the engine's shape.
pub fn failure_item(item: &BulkItem, default_index: Option<&str>, f: &ItemFailure) -> Value {
    let mut body = Map::new();
    if let Some(i) = item.index(default_index) {
        body.insert("_index".into(), json!(i));
    }
    if let Some(id) = item.meta.get("_id") {
        body.insert("_id".into(), id.clone());
    }
    body.insert("status".into(), json!(f.status));
    body.insert("error".into(), json!({"type": f.error_type, "reason": f.reason}));
    json!({ item.action.name(): body })
}

/// Merges the engine's response for the forwarded items with the sidecar's failures, in request
/// order. `engine` is `None` when nothing was forwarded.
pub fn merge(
    all: &[BulkItem],
    default_index: Option<&str>,
    failures: &[ItemFailure],
    engine: Option<&Value>,
    took_ms: u64,
) -> Value {
    let mut engine_items = engine.and_then(|e| e["items"].as_array()).cloned().unwrap_or_default().into_iter();
    let mut items = Vec::with_capacity(all.len());
    // one lookup per item: linear in items + failures (a 160k-item body of failures was quadratic)
    let by_position: std::collections::HashMap<usize, &ItemFailure> =
        failures.iter().map(|f| (f.position, f)).collect();
    for (pos, it) in all.iter().enumerate() {
        match by_position.get(&pos).copied() {
            Some(f) => items.push(failure_item(it, default_index, f)),
            None => items.push(engine_items.next().unwrap_or_else(|| {
                failure_item(
                    it,
                    default_index,
                    &ItemFailure {
                        position: pos,
                        status: 500,
                        error_type: "sidecar_exception",
                        reason: "the engine returned fewer items than were sent".into(),
                    },
                )
            })),
        }
    }
    let errors = !failures.is_empty() || engine.and_then(|e| e["errors"].as_bool()).unwrap_or(false);
    let took = engine.and_then(|e| e["took"].as_u64()).unwrap_or(0).max(took_ms);
    json!({"took": took, "errors": errors, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = concat!(
        "{\"index\":{\"_index\":\"a\",\"_id\":\"1\"}}\n{\"text\":\"one\"}\n",
        "{\"delete\":{\"_id\":\"2\"}}\n",
        "{\"update\":{\"_id\":\"3\"}}\n{\"doc\":{\"text\":\"three\"}}\n",
        "{\"create\":{}}\n{\"text\":\"four\"}\n"
    );

    #[test]
    fn a_body_without_its_last_newline_is_refused_as_the_engines_do() {
        let e = parse(b"{\"delete\":{\"_index\":\"a\",\"_id\":\"1\"}}").unwrap_err();
        assert!(e.reason.contains("terminated by a newline"), "{}", e.reason);
        assert!(parse(b"{\"delete\":{\"_index\":\"a\",\"_id\":\"1\"}}\n").is_ok());
        assert!(parse(b"").unwrap().is_empty());
    }

    #[test]
    fn parses_every_action_and_round_trips() {
        let items = parse(BODY.as_bytes()).unwrap();
        assert_eq!(
            items.iter().map(|i| i.action).collect::<Vec<_>>(),
            [Action::Index, Action::Delete, Action::Update, Action::Create]
        );
        assert_eq!(items.iter().map(|i| i.line).collect::<Vec<_>>(), [1, 3, 4, 6]);
        assert_eq!(items[0].index(Some("dflt")), Some("a"));
        assert_eq!(items[1].index(Some("dflt")), Some("dflt"));
        let refs: Vec<&BulkItem> = items.iter().collect();
        assert_eq!(parse(&write(&refs)).unwrap(), items);
    }

    #[test]
    fn malformed_lines_and_unknown_actions_reject_the_request_naming_the_line() {
        let e = parse(b"{\"index\":{}}\n{\"a\":1}\n{\"upsert\":{}}\n{}\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("[upsert]"), "{}", e.reason);
        let e = parse(b"{\"index\":{}}\n{not json\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("Malformed source line [2]"));
        let e = parse(b"{\"index\":{}}\n").unwrap_err();
        assert!(e.reason.contains("no source line"), "{}", e.reason);
        assert!(parse(b"[1,2]\n").is_err());
        assert!(parse(b"\xff\xfe").is_err());
        assert_eq!(parse(b"\n\n").unwrap(), vec![]);
    }

    #[test]
    fn merge_puts_sidecar_failures_at_their_positions() {
        let items = parse(BODY.as_bytes()).unwrap();
        let engine = json!({"took": 5, "errors": false, "items": [
            {"index": {"_id": "1", "status": 201}}, {"update": {"_id": "3", "status": 200}}, {"create": {"_id": "x", "status": 201}}
        ]});
        let f = ItemFailure { position: 1, status: 400, error_type: "illegal_argument_exception", reason: "no".into() };
        let out = merge(&items, Some("dflt"), &[f], Some(&engine), 2);
        assert_eq!(out["errors"], true);
        assert_eq!(out["took"], 5);
        let got: Vec<&Value> = out["items"].as_array().unwrap().iter().collect();
        assert_eq!(got[0]["index"]["status"], 201);
        assert_eq!(got[1]["delete"]["status"], 400);
        assert_eq!(got[1]["delete"]["_index"], "dflt");
        assert_eq!(got[2]["update"]["status"], 200);
        assert_eq!(got[3]["create"]["_id"], "x");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Fuzzing by generation: arbitrary bytes, and NDJSON-shaped lines of actions, metadata
        /// and documents in any order, parse to items or to an error naming a line; never a panic,
        /// and merging any subset of failures keeps one answer item per parsed item.
        #[test]
        fn the_parser_never_panics_and_merge_keeps_positions(
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
            lines in proptest::collection::vec(proptest::prop_oneof![
                proptest::strategy::Just("{\"index\":{\"_index\":\"a\",\"_id\":\"1\"}}".to_string()),
                proptest::strategy::Just("{\"create\":{}}".to_string()),
                proptest::strategy::Just("{\"update\":{\"_id\":\"2\"}}".to_string()),
                proptest::strategy::Just("{\"delete\":{\"_id\":\"3\"}}".to_string()),
                proptest::strategy::Just("{\"doc\":{\"text\":\"x\"}}".to_string()),
                proptest::strategy::Just("{\"text\":\"t\"}".to_string()),
                proptest::strategy::Just("[1,2]".to_string()),
                proptest::strategy::Just("".to_string()),
                "\\PC{0,20}",
            ], 0..40),
            fail_every in 1usize..5,
        ) {
            let _ = parse(&raw);
            let body = lines.join("\n");
            if let Ok(items) = parse(body.as_bytes()) {
                let failures: Vec<ItemFailure> = (0..items.len())
                    .step_by(fail_every)
                    .map(|position| ItemFailure { position, status: 400, error_type: "x", reason: "y".into() })
                    .collect();
                let merged = merge(&items, Some("d"), &failures, None, 0);
                proptest::prop_assert_eq!(merged["items"].as_array().unwrap().len(), items.len());
            }
        }
    }
}
