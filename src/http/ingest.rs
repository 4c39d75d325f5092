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

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::ApiError;
use super::{engine_answer, AppState};
use crate::engine::path::{DocId, EnginePath, IndexName, QueryString};
use crate::engine::EngineRequest;
use crate::error::ErrorCode;
use crate::ingest::bulk::{self, Action, BulkItem};
use crate::ingest::writer::{send_bulk, BulkOutcome};

fn invalid(reason: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidInput, reason)
}

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
    let mut items = bulk::parse(&body).map_err(|e| invalid(e.reason))?;
    let default_index = index.as_deref();
    let touches_pipeline =
        items.iter().any(|i| i.index(default_index).is_some_and(|x| state.ingestor.pipeline_for(x).is_some()));
    if !touches_pipeline {
        // Nothing to embed: the body goes to the engine byte for byte.
        let resp = state.engine.send(EngineRequest::new(Method::POST, path).ndjson(body).passthrough()).await?;
        return Ok(engine_answer(resp));
    }
    let prepared = state.ingestor.prepare(&mut items, default_index, &state.engine).await?;
    let failures = prepared.failures;
    if prepared.skipped > 0 {
        tracing::debug!(skipped = prepared.skipped, "content hash unchanged: stored vectors kept");
    }
    let forward: Vec<&BulkItem> =
        items.iter().enumerate().filter(|(p, _)| !failures.iter().any(|f| f.position == *p)).map(|(_, i)| i).collect();
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
    if state.ingestor.pipeline_for(&index).is_none() {
        let req = EngineRequest::new(method, base.query(&q).build()).passthrough().json_bytes(body);
        return Ok(engine_answer(state.engine.send(req).await?));
    }
    let mut meta = serde_json::Map::new();
    if let Some(id) = &id {
        meta.insert("_id".into(), Value::from(id.clone()));
    }
    let mut items = vec![BulkItem { action, meta, source: Some(source), line: 1 }];
    let prepared = state.ingestor.prepare(&mut items, Some(&index), &state.engine).await?;
    if let Some(f) = prepared.failures.first() {
        let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::BAD_REQUEST);
        let body = serde_json::json!({"error": {"type": f.error_type, "reason": f.reason}, "status": f.status});
        return Ok((status, axum::Json(body)).into_response());
    }
    if let (Some(name), None) =
        (state.ingestor.pipeline_for(&index).and_then(|p| p.engine_pipeline.as_ref()), q.get("pipeline"))
    {
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
