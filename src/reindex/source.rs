//! Reading the source index in pages: point-in-time + `search_after` on both engines (their PIT
//! APIs differ), scroll as the fallback, sliced for parallel readers.
//!
//! Sort keys and resuming:
//! - OpenSearch sorts by `_id` (it has no `_shard_doc`): the keys are stable across PITs, so a
//!   slice resumes exactly after its last checkpoint even when the PIT is gone (engine restart).
//! - Elasticsearch sorts by `_shard_doc` (sorting on `_id` is off by default): the keys are only
//!   valid in their PIT, so when the PIT is gone the slice is read again from its start; the
//!   content hash keeps that from re-embedding anything and `_id` writes from duplicating.
//! - Scroll (when PITs are not available): a lost scroll also restarts the slice.
//! - A page with failed shards (`_shards.failed > 0`: a node died) is an error, retried from the
//!   checkpoint like an outage, never taken as a short page (that would end the slice early).

use axum::http::Method;
use serde_json::{json, Value};

use crate::engine::dialect::Dialect;
use crate::engine::path::EnginePath;
use crate::engine::{EngineClient, EngineError, EngineRequest};
use crate::types::name::IndexName;

/// What to read.
#[derive(Clone, Debug)]
pub struct ReadSpec {
    pub index: IndexName,
    pub query: Option<Value>,
    pub source_includes: Option<Vec<String>>,
    pub source_excludes: Vec<String>,
    pub page_size: usize,
    pub slice: u32,
    pub slices: u32,
}

/// One page: the hits and the sort key of the last one.
pub struct Page {
    pub hits: Vec<Value>,
    pub last_sort: Option<Value>,
}

enum Cursor {
    Pit { id: String },
    Scroll { id: Option<String> },
}

/// A reader of one slice.
pub struct Reader {
    engine: EngineClient,
    dialect: Dialect,
    spec: ReadSpec,
    cursor: Cursor,
    after: Option<Value>,
    finished: bool,
}

const KEEP_ALIVE: &str = "10m";

fn body_base(spec: &ReadSpec) -> serde_json::Map<String, Value> {
    let mut b = serde_json::Map::new();
    b.insert("size".into(), json!(spec.page_size));
    if let Some(q) = &spec.query {
        b.insert("query".into(), q.clone());
    }
    let mut source = serde_json::Map::new();
    if let Some(inc) = &spec.source_includes {
        source.insert("includes".into(), json!(inc));
    }
    if !spec.source_excludes.is_empty() {
        source.insert("excludes".into(), json!(spec.source_excludes));
    }
    if !source.is_empty() {
        b.insert("_source".into(), Value::Object(source));
    }
    if spec.slices > 1 {
        b.insert("slice".into(), json!({"id": spec.slice, "max": spec.slices}));
    }
    b.insert("track_total_hits".into(), json!(false));
    b
}

impl Reader {
    /// Opens a PIT (or a scroll when the cluster refuses PITs), positioned after `after` when the
    /// keys allow it. Returns the reader and whether it resumed at `after` (else: from the start).
    pub async fn open(
        engine: &EngineClient,
        dialect: Dialect,
        spec: ReadSpec,
        after: Option<Value>,
        prefer_scroll: bool,
    ) -> Result<(Reader, bool), EngineError> {
        let at = EnginePath::root().index(&spec.index);
        let pit_path = match dialect {
            Dialect::Elasticsearch => at.api("_pit"),
            Dialect::Opensearch => at.api("_search").api("point_in_time"),
        }
        .param("keep_alive", KEEP_ALIVE)
        .build();
        let pit = if prefer_scroll {
            None
        } else {
            match engine.send(EngineRequest::new(Method::POST, pit_path)).await {
                Ok(r) => {
                    let v: Value = r.json()?;
                    v.get("id").or_else(|| v.get("pit_id")).and_then(Value::as_str).map(String::from)
                }
                Err(EngineError::Rejected { status: 400 | 404 | 405, reason, .. }) => {
                    tracing::warn!(%reason, "point in time refused, reading with scroll");
                    None
                }
                Err(e) => return Err(e),
            }
        };
        let (cursor, stable) = match pit {
            Some(id) => (Cursor::Pit { id }, dialect == Dialect::Opensearch),
            None => (Cursor::Scroll { id: None }, false),
        };
        let resumed = stable && after.is_some();
        let reader = Reader {
            engine: engine.clone(),
            dialect,
            spec,
            cursor,
            after: if stable { after } else { None },
            finished: false,
        };
        Ok((reader, resumed))
    }

    pub fn kind(&self) -> &'static str {
        match self.cursor {
            Cursor::Pit { .. } => "point_in_time",
            Cursor::Scroll { .. } => "scroll",
        }
    }

    /// The next page, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Page>, EngineError> {
        if self.finished {
            return Ok(None);
        }
        let resp: Value = match &mut self.cursor {
            Cursor::Pit { id } => {
                let mut b = body_base(&self.spec);
                b.insert("pit".into(), json!({"id": id, "keep_alive": KEEP_ALIVE}));
                let sort = match self.dialect {
                    Dialect::Elasticsearch => json!([{"_shard_doc": "asc"}]),
                    Dialect::Opensearch => json!([{"_id": "asc"}]),
                };
                b.insert("sort".into(), sort);
                if let Some(a) = &self.after {
                    b.insert("search_after".into(), a.clone());
                }
                let req = EngineRequest::new(Method::POST, "/_search").json(&Value::Object(b)).idempotent(true);
                let v: Value = self.engine.send(req).await?.json()?;
                if let Some(new) = v.get("pit_id").and_then(Value::as_str) {
                    *id = new.to_string();
                }
                v
            }
            Cursor::Scroll { id } => {
                let req = match id {
                    None => {
                        let mut b = body_base(&self.spec);
                        // OpenSearch refuses `track_total_hits: false` in a scroll context
                        b.remove("track_total_hits");
                        b.insert("sort".into(), json!(["_doc"]));
                        let path = EnginePath::root()
                            .index(&self.spec.index)
                            .api("_search")
                            .param("scroll", KEEP_ALIVE)
                            .build();
                        EngineRequest::new(Method::POST, path).json(&Value::Object(b))
                    }
                    Some(s) => EngineRequest::new(Method::POST, "/_search/scroll")
                        .json(&json!({"scroll": KEEP_ALIVE, "scroll_id": s})),
                };
                let v: Value = self.engine.send(req.idempotent(true)).await?.json()?;
                *id = v.get("_scroll_id").and_then(Value::as_str).map(String::from);
                v
            }
        };
        // A page with failed shards (a node died holding PIT contexts or shard copies) is a partial
        // page: taken as it is, the end of the hits would look like the end of the index and
        // documents would be skipped. Read it again from the checkpoint instead.
        let failed = resp.pointer("/_shards/failed").and_then(Value::as_u64).unwrap_or(0);
        if failed > 0 {
            let reason = resp
                .pointer("/_shards/failures/0/reason/reason")
                .or_else(|| resp.pointer("/_shards/failures/0/reason/type"))
                .and_then(Value::as_str)
                .unwrap_or("no reason given")
                .to_string();
            return Err(EngineError::Failed {
                status: 503,
                error_type: "partial_search_results".into(),
                reason: format!("{failed} shard(s) did not answer a page of the source: {reason}"),
            });
        }
        let hits = resp.pointer("/hits/hits").and_then(Value::as_array).cloned().unwrap_or_default();
        if hits.is_empty() {
            self.finished = true;
            return Ok(None);
        }
        let last_sort = hits.last().and_then(|h| h.get("sort")).cloned();
        if matches!(self.cursor, Cursor::Pit { .. }) {
            self.after = last_sort.clone();
        }
        Ok(Some(Page { hits, last_sort }))
    }

    /// Releases the PIT or scroll (best effort).
    pub async fn close(self) {
        let req = match (&self.cursor, self.dialect) {
            (Cursor::Pit { id }, Dialect::Elasticsearch) => {
                EngineRequest::new(Method::DELETE, "/_pit").json(&json!({"id": id}))
            }
            (Cursor::Pit { id }, Dialect::Opensearch) => {
                EngineRequest::new(Method::DELETE, "/_search/point_in_time").json(&json!({"pit_id": [id]}))
            }
            (Cursor::Scroll { id: Some(id) }, _) => {
                EngineRequest::new(Method::DELETE, "/_search/scroll").json(&json!({"scroll_id": [id]}))
            }
            (Cursor::Scroll { id: None }, _) => return,
        };
        let _ = self.engine.send(req.passthrough()).await;
    }
}
