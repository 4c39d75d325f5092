//! Elasticsearch-compatible write endpoints: `POST /_bulk`, `POST /{index}/_bulk`,
//! `PUT|POST /{index}/_doc/{id}`, `POST /{index}/_doc`, `PUT|POST /{index}/_create/{id}`.
//!
//! Translation only: documents for indices with a pipeline go through the [`Ingestor`] (vectors
//! added); everything else is forwarded unchanged. Index names and ids are parsed and encoded
//! into the engine path ([`crate::engine::path`]); the query string (`refresh`, `routing`,
//! `pipeline`, …) is passed through re-encoded from its parsed pairs, and the engine's answer is returned as it came, with the
//! sidecar's own per-item failures merged in at their positions.
//!
//! [`Ingestor`]: crate::ingest::writer::Ingestor

use std::ops::ControlFlow::{self, Break, Continue};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::error::{invalid, ApiError};
use super::{engine_answer, AppState};
use crate::engine::path::{EnginePath, QueryString};
use crate::engine::EngineRequest;
use crate::error::ErrorCode;
use crate::ingest::bulk::{self, Action, BulkItem};
use crate::ingest::owner::{Owner, WriteRoute};
use crate::ingest::writer::{send_bulk, BulkOutcome, Routed};
use crate::types::name::{DocId, IndexName};
use crate::types::pipeline::Pipeline;

pub async fn bulk_all(state: State<AppState>, query: RawQuery, body: Bytes) -> Result<Response, ApiError> {
    run_bulk(state, None, query, body).await
}

pub async fn bulk_index(
    state: State<AppState>,
    Path(index): Path<String>,
    query: RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    run_bulk(state, Some(index), query, body).await
}

async fn run_bulk(
    State(state): State<AppState>,
    index: Option<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let q = QueryString::parse(query.as_deref())?;
    let index_name = index.as_deref().map(IndexName::try_from).transpose()?;
    let mut path = EnginePath::root();
    if let Some(i) = &index_name {
        path = path.index(i);
    }
    let path = path.api("_bulk").query(&q).build();
    // a large body is parsed off the async workers (it would stall every other request)
    let mut items = if body.len() > 1 << 20 {
        let b = body.clone();
        tokio::task::spawn_blocking(move || bulk::parse(&b))
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("parsing the bulk body: {e}")))?
    } else {
        bulk::parse(&body)
    }
    .map_err(|e| invalid(e.reason))?;
    let default_index = index.as_deref();
    // an index a semantic_text template would make is made first, with its pipeline
    super::semantic::adopt(&state, items.iter().filter_map(|i| i.index(default_index))).await?;
    // OpenSearch ingest pipelines the sidecar keeps (text_chunking, text_embedding) run first
    let processed = super::os_ingest::run_bulk(&state, &mut items, default_index, &q).await?;
    // items through an alias, data stream or date math are embedded by the pipeline owning
    // where they land
    let routed = state.ingestor.route(&state.engine, &mut items, default_index).await?;
    if !routed.touches_pipeline() && !processed {
        // Nothing to embed: the body goes to the engine byte for byte.
        let req = EngineRequest::new(Method::POST, path).ndjson(body).passthrough().from_client();
        let resp = state.engine.send(req).await?;
        return Ok(engine_answer(resp));
    }
    let prepared = state.ingestor.prepare_client(&mut items, default_index, &routed, &state.engine).await?;
    let failures = prepared.failures;
    if prepared.skipped > 0 {
        tracing::debug!(skipped = prepared.skipped, "content hash unchanged: stored vectors kept");
    }
    let failed: std::collections::HashSet<usize> = failures.iter().map(|f| f.position).collect();
    let forward: Vec<&BulkItem> =
        items.iter().enumerate().filter(|(p, _)| !failed.contains(p)).map(|(_, i)| i).collect();
    let took_ms = started.elapsed().as_millis() as u64;
    if forward.is_empty() {
        let merged = bulk::merge(&items, default_index, &failures, None, took_ms);
        return Ok(axum::Json(merged).into_response());
    }
    let engine = match send_bulk(&state.engine, &path, &forward).await? {
        BulkOutcome::Items(v) => v,
        BulkOutcome::Answer(resp) => return Ok(engine_answer(resp)),
    };
    let merged = bulk::merge(&items, default_index, &failures, Some(&engine), started.elapsed().as_millis() as u64);
    Ok(axum::Json(merged).into_response())
}

/// Where a one-document write to `name` goes (an alias's write index, date math's index, a data
/// stream) and the pipeline that embeds it; refused when that pipeline cannot be served here.
async fn write_owner(state: &AppState, name: &str) -> Result<(String, Option<Arc<Pipeline>>), ApiError> {
    super::semantic::adopt(state, [name]).await?;
    match state.ingestor.owners().for_write(&state.engine, name).await? {
        Err(why) => Err(invalid(why)),
        Ok(WriteRoute { owner: Owner::Unavailable(_, why), .. }) => Err(ApiError::new(ErrorCode::Unavailable, why)),
        Ok(WriteRoute { target, owner: Owner::Served(p) }) => Ok((target, Some(p))),
        Ok(WriteRoute { target, owner: Owner::Plain }) => Ok((target, None)),
    }
}

/// Where a single-document request goes.
struct DocTarget {
    method: Method,
    index: String,
    id: Option<String>,
    endpoint: &'static str,
    action: Action,
}

/// One document: the same embedding as a one-item bulk, then the original request shape.
async fn one_doc(state: &AppState, t: DocTarget, query: Option<String>, body: Bytes) -> Result<Response, ApiError> {
    let DocTarget { method, index, id, endpoint, action } = t;
    // through an alias or date math of a pipeline index: written to that index, embedded
    let (index, pipeline) = write_owner(state, &index).await?;
    let mut q = QueryString::parse(query.as_deref())?;
    let name = IndexName::try_from(index.as_str())?;
    let mut base = EnginePath::root().index(&name).api(endpoint);
    if let Some(id) = &id {
        base = base.id(&DocId::try_from(id.as_str())?);
    }
    // the document is parsed before anything is forwarded, pipeline index or not
    let source: Value = serde_json::from_slice(&body).map_err(|e| invalid(format!("the document is not JSON: {e}")))?;
    if !source.is_object() {
        return Err(invalid("the document must be a JSON object"));
    }
    let mut source = source;
    let processed = super::os_ingest::run_one(state, &index, action, &q, &mut source).await?;
    let Some(pipeline) = pipeline else {
        let req = EngineRequest::new(method, base.query(&q).build()).passthrough();
        let req = if processed { req.json(&source) } else { req.json_bytes(body) };
        return Ok(engine_answer(state.engine.send(req).await?));
    };
    let mut meta = serde_json::Map::new();
    if let Some(id) = &id {
        meta.insert("_id".into(), Value::from(id.clone()));
    }
    let mut items = vec![BulkItem { action, meta, source: Some(source), line: 1 }];
    let routed = Routed::single(&index, pipeline.clone());
    let prepared = state.ingestor.prepare_client(&mut items, Some(&index), &routed, &state.engine).await?;
    if let Some(f) = prepared.failures.first() {
        let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::BAD_REQUEST);
        let body = serde_json::json!({"error": {"type": f.error_type, "reason": f.reason}, "status": f.status});
        return Ok((status, axum::Json(body)).into_response());
    }
    if let (Some(name), None) = (pipeline.engine_pipeline.as_ref(), q.get("pipeline")) {
        q.push("pipeline", name);
    }
    let doc = items.pop().and_then(|i| i.source).unwrap_or_default();
    let req = EngineRequest::new(method, base.query(&q).build()).json(&doc).passthrough();
    Ok(engine_answer(state.engine.send(req).await?))
}

pub async fn doc_with_id(
    State(state): State<AppState>,
    method: Method,
    Path((index, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    one_doc(&state, DocTarget { method, index, id: Some(id), endpoint: "_doc", action: Action::Index }, query, body)
        .await
}

pub async fn doc_auto_id(
    State(state): State<AppState>,
    Path(index): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let t = DocTarget { method: Method::POST, index, id: None, endpoint: "_doc", action: Action::Index };
    one_doc(&state, t, query, body).await
}

pub async fn create_with_id(
    State(state): State<AppState>,
    method: Method,
    Path((index, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let t = DocTarget { method, index, id: Some(id), endpoint: "_create", action: Action::Create };
    one_doc(&state, t, query, body).await
}

/// What `_update` accepts on a pipeline index.
const UPDATE_KEYS: &[&str] = &["doc", "upsert", "doc_as_upsert", "detect_noop"];

/// Merges a partial document into `target` the way the engines do: objects key by key, every
/// other value replaced.
fn merge_into(target: &mut serde_json::Map<String, Value>, partial: &serde_json::Map<String, Value>) {
    for (k, v) in partial {
        match (target.get_mut(k), v) {
            (Some(Value::Object(t)), Value::Object(p)) => merge_into(t, p),
            _ => {
                target.insert(k.clone(), v.clone());
            }
        }
    }
}

/// `POST /{index}/_update/{id}`. Other indices: forwarded. A pipeline index: the stored document
/// is fetched, the partial `doc` merged in (or `upsert` / `doc_as_upsert` used when there is
/// none), the result embedded like any write, and written back only if nobody changed it
/// meanwhile (`if_seq_no`/`if_primary_term`; `retry_on_conflict` more tries). Scripted updates
/// are refused there: what a script changes cannot be embedded.
pub async fn update(
    State(state): State<AppState>,
    Path((index, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (index, pipeline) = write_owner(&state, &index).await?;
    let name = IndexName::try_from(index.as_str())?;
    let doc_id = DocId::try_from(id.as_str())?;
    let q = QueryString::parse(query.as_deref())?;
    let req: Value = serde_json::from_slice(&body).map_err(|e| invalid(format!("the update body is not JSON: {e}")))?;
    let Some(req) = req.as_object().cloned() else { return Err(invalid("the update body must be a JSON object")) };
    let Some(pipeline) = pipeline else {
        let path = EnginePath::root().index(&name).api("_update").id(&doc_id).query(&q).build();
        let mut partial = Value::Object(req);
        let processed = super::os_ingest::run_one(&state, &index, Action::Update, &q, &mut partial).await?;
        let req = EngineRequest::new(Method::POST, path).passthrough();
        let req = if processed { req.json(&partial) } else { req.json_bytes(body) };
        return Ok(engine_answer(state.engine.send(req).await?));
    };
    let update = Update::parse(&req, &q, &index, &pipeline)?;
    let doc_path = EnginePath::root().index(&name).api("_doc").id(&doc_id);
    let mut get_q = QueryString::default();
    if let Some(r) = q.get("routing") {
        get_q.push("routing", r);
    }
    let mut attempt = 0;
    loop {
        let got = state
            .engine
            .send(EngineRequest::new(Method::GET, doc_path.clone().query(&get_q).build()).passthrough())
            .await?;
        let found = got.status.is_success();
        if !found && got.status.as_u16() != 404 {
            return Ok(engine_answer(got));
        }
        let stored: Value = if found { got.json()? } else { Value::Null };
        let (source, created) = match update.apply(found.then_some(&stored), &id, &index) {
            Continue(merged) => merged,
            Break(answer) => return Ok(answer),
        };
        let doc = match embed_one(&state, &index, &pipeline, &id, source).await? {
            Ok(doc) => doc,
            Err(refused) => return Ok(refused),
        };
        let put_q = update.write_query(&stored, created);
        let put = EngineRequest::new(Method::PUT, doc_path.clone().query(&put_q).build()).json(&doc).passthrough();
        let resp = state.engine.send(put).await?;
        let conflict = resp.status.as_u16() == 409;
        if conflict && attempt < update.retries && update.client_version.0.is_none() {
            attempt += 1;
            continue;
        }
        if !resp.status.is_success() {
            return Ok(engine_answer(resp));
        }
        let mut v: Value = resp.json()?;
        v["result"] = json!(if created { "created" } else { "updated" });
        let status = if created { StatusCode::CREATED } else { StatusCode::OK };
        return Ok((status, axum::Json(v)).into_response());
    }
}

/// A checked `_update` of a pipeline index: what to merge, what to create, how to write it.
struct Update {
    partial: Option<serde_json::Map<String, Value>>,
    upsert: Option<serde_json::Map<String, Value>>,
    doc_as_upsert: bool,
    detect_noop: bool,
    /// `retry_on_conflict`: more tries when someone else wrote the document meanwhile.
    retries: u32,
    /// The client's own `if_seq_no` / `if_primary_term`, which a retry must not override.
    client_version: (Option<String>, Option<String>),
    /// Parameters of the write that follows (refresh, routing, timeout, …), minus the update's own.
    write_q: QueryString,
}

impl Update {
    fn parse(
        req: &serde_json::Map<String, Value>,
        q: &QueryString,
        index: &str,
        pipeline: &Pipeline,
    ) -> Result<Self, ApiError> {
        if req.contains_key("script") {
            return Err(invalid(format!(
                "scripted updates are refused on `{index}` (pipeline `{}`): the sidecar cannot embed what a script changes; send the changed fields as a partial `doc`",
                pipeline.name
            )));
        }
        if let Some(k) = req.keys().find(|k| !UPDATE_KEYS.contains(&k.as_str())) {
            return Err(invalid(format!(
                "`{k}` is not accepted in an update of `{index}` (accepted: {})",
                UPDATE_KEYS.join(", ")
            )));
        }
        let object = |key: &str| match req.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            Some(_) => Err(invalid(format!("`{key}` must be a JSON object"))),
        };
        let partial = object("doc")?;
        let upsert = object("upsert")?;
        let as_item = BulkItem {
            action: Action::Update,
            meta: Default::default(),
            source: Some(Value::Object(req.clone())),
            line: 1,
        };
        if let Some(reason) = crate::ingest::writer::client_set_field(pipeline, &as_item) {
            return Err(invalid(reason));
        }
        let doc_as_upsert = req.get("doc_as_upsert").and_then(Value::as_bool).unwrap_or(false);
        let detect_noop = req.get("detect_noop").and_then(Value::as_bool).unwrap_or(true);
        if partial.is_none() && upsert.is_none() {
            return Err(invalid("an update needs a partial `doc` (or an `upsert`)"));
        }
        let retries: u32 = match q.get("retry_on_conflict") {
            None => 0,
            Some(n) => {
                n.parse().ok().filter(|n| *n <= 100).ok_or_else(|| invalid("`retry_on_conflict` must be 0 to 100"))?
            }
        };
        let client_version = (q.get("if_seq_no").map(String::from), q.get("if_primary_term").map(String::from));
        if client_version.0.is_some() != client_version.1.is_some() {
            return Err(invalid(
                "a conditional update needs both `if_seq_no` and `if_primary_term` (one alone would be applied unconditionally)",
            ));
        }
        let mut write_q = q.clone();
        for k in
            ["retry_on_conflict", "if_seq_no", "if_primary_term", "_source", "_source_includes", "_source_excludes"]
        {
            write_q.remove(k);
        }
        if let (Some(p), None) = (pipeline.engine_pipeline.as_ref(), write_q.get("pipeline")) {
            write_q.push("pipeline", p);
        }
        Ok(Update { partial, upsert, doc_as_upsert, detect_noop, retries, client_version, write_q })
    }

    /// The document to write and whether it is new, from the stored one (`None`: missing); or the
    /// answer to give instead: a noop, or `document_missing_exception`.
    fn apply(
        &self,
        stored: Option<&Value>,
        id: &str,
        index: &str,
    ) -> ControlFlow<Response, (serde_json::Map<String, Value>, bool)> {
        match (stored, &self.partial, &self.upsert) {
            (Some(stored), Some(p), _) => {
                let mut s = stored["_source"].as_object().cloned().unwrap_or_default();
                let before = s.clone();
                merge_into(&mut s, p);
                if self.detect_noop && s == before {
                    Break(noop(stored))
                } else {
                    Continue((s, false))
                }
            }
            // only an upsert and the document exists: nothing to change
            (Some(stored), None, _) => Break(noop(stored)),
            (None, Some(p), _) if self.doc_as_upsert => Continue((p.clone(), true)),
            (None, _, Some(u)) => Continue((u.clone(), true)),
            (None, _, None) => {
                let body = json!({"error": {"type": "document_missing_exception", "reason": format!("[{id}]: document missing"),
                    "index": index}, "status": 404});
                Break((StatusCode::NOT_FOUND, axum::Json(body)).into_response())
            }
        }
    }

    /// The write's parameters: the client's version, or `op_type=create` for a new document, or
    /// the version that was read, so a concurrent change is a conflict and not lost.
    fn write_query(&self, stored: &Value, created: bool) -> QueryString {
        let mut put_q = self.write_q.clone();
        match (&self.client_version, created) {
            ((Some(s), Some(t)), _) => {
                put_q.push("if_seq_no", s);
                put_q.push("if_primary_term", t);
            }
            (_, true) => put_q.push("op_type", "create"),
            (_, false) => {
                put_q.push("if_seq_no", &stored["_seq_no"].to_string());
                put_q.push("if_primary_term", &stored["_primary_term"].to_string());
            }
        }
        put_q
    }
}

/// The update answer for a document left as it was.
fn noop(stored: &Value) -> Response {
    let v = json!({"_index": stored["_index"], "_id": stored["_id"], "_version": stored["_version"],
        "result": "noop", "_seq_no": stored["_seq_no"], "_primary_term": stored["_primary_term"],
        "_shards": {"total": 0, "successful": 0, "failed": 0}});
    axum::Json(v).into_response()
}

/// Embeds one document as a write of `index` would: the stored form, or the refusal to answer.
async fn embed_one(
    state: &AppState,
    index: &str,
    pipeline: &Arc<Pipeline>,
    id: &str,
    source: serde_json::Map<String, Value>,
) -> Result<Result<Value, Response>, ApiError> {
    let mut meta = serde_json::Map::new();
    meta.insert("_id".into(), Value::from(id));
    let mut items = vec![BulkItem { action: Action::Index, meta, source: Some(Value::Object(source)), line: 1 }];
    let routed = Routed::single(index, pipeline.clone());
    let prepared = state.ingestor.prepare(&mut items, Some(index), &routed, &state.engine).await?;
    if let Some(f) = prepared.failures.first() {
        let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::BAD_REQUEST);
        let body = json!({"error": {"type": f.error_type, "reason": f.reason}, "status": f.status});
        return Ok(Err((status, axum::Json(body)).into_response()));
    }
    Ok(Ok(items.pop().and_then(|i| i.source).unwrap_or_default()))
}
