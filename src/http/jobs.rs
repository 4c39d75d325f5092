//! Reindex jobs over HTTP: `POST /_jobs/reindex` (start, or resume with `"resume": ID`),
//! `GET /_jobs/{id}` (state, checkpoints and progress numbers), `DELETE /_jobs/{id}` (cancel at
//! the next checkpoint). The same implementation as `semantic-sidecar reindex`.
//!
//! Also Elasticsearch's `_reindex` into a pipeline index, and `_tasks/{id}` for the job it
//! starts ([`es_reindex`]), so that apps (and Elastic's tutorials) that load a semantic index
//! with `_reindex` get their documents embedded.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
use crate::engine::path::{EnginePath, QueryString};
use crate::engine::EngineRequest;
use crate::error::ErrorCode;
use crate::reindex::{JobRequest, ReindexError};
use crate::types::name::IndexName;

impl From<ReindexError> for ApiError {
    fn from(e: ReindexError) -> Self {
        match e {
            ReindexError::Engine(e) => ApiError::from(e),
            ReindexError::Encoder(e) => ApiError::from(e),
            other => ApiError::new(other.code(), other.to_string()),
        }
    }
}

pub async fn start(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: JobRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidInput, format!("the reindex request: {e}")))?;
    let s = state.jobs.start(req).await?;
    let body = json!({"id": s.id, "status": s.status, "spec": s.spec, "source_count": s.source_count});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(state.jobs.get(&id).await?).into_response())
}

pub async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(state.jobs.cancel(&id).await?).into_response())
}

/// Elasticsearch's `POST /_reindex` into an index a pipeline owns (Elastic's semantic_text
/// tutorials load their data this way): run as a reindex job, which embeds every document, and
/// answered in `_reindex`'s shape. `wait_for_completion=false` answers `{"task": ID}`, followed
/// with `GET /_tasks/{ID}` ([`es_task`]) and `POST /_tasks/{ID}/_cancel`. A wait longer than
/// `server.request_timeout` allows answers the numbers so far with `timed_out: true` and the
/// task id. `requests_per_second`, `timeout` and `scroll` are accepted and not applied (the job
/// paces its bulk size by itself).
pub async fn es_reindex(
    state: &AppState,
    pipeline: &str,
    dest: &str,
    q: &QueryString,
    body: &Value,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let (req, wait, refresh) = es_reindex_request(pipeline, dest, q, body)?;
    let job = state.jobs.start(req).await?;
    if !wait {
        return Ok(Json(json!({"task": job.id})).into_response());
    }
    let limit = state.settings.server.request_timeout.saturating_sub(std::time::Duration::from_secs(2));
    let mut v = state.jobs.get(&job.id).await?;
    while v["status"] == "running" && started.elapsed() < limit {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        v = state.jobs.get(&job.id).await?;
    }
    let done = v["status"] != "running";
    if done && refresh {
        let name = IndexName::try_from(dest)?;
        let path = EnginePath::root().index(&name).api("_refresh").build();
        state.engine.send(EngineRequest::new(Method::POST, path).idempotent(true).passthrough()).await?;
    }
    if v["status"] == "failed" {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("reindex job {} failed: {}", job.id, v["error"].as_str().unwrap_or("(no reason)")),
        ));
    }
    let mut answer = es_reindex_answer(&v, started.elapsed().as_millis() as u64);
    if !done {
        answer["timed_out"] = json!(true);
        answer["task"] = json!(job.id);
    }
    Ok(Json(answer).into_response())
}

/// The reindex job `_reindex`'s body and parameters ask for, whether to wait, whether to refresh.
fn es_reindex_request(
    pipeline: &str,
    dest: &str,
    q: &QueryString,
    body: &Value,
) -> Result<(JobRequest, bool, bool), ApiError> {
    let bad = |m: String| ApiError::new(ErrorCode::InvalidInput, m);
    let only = |v: &Value, at: &str, keys: &[&str]| -> Result<(), ApiError> {
        match v.as_object().and_then(|m| m.keys().find(|k| !keys.contains(&k.as_str()))) {
            Some(k) => Err(bad(format!(
                "_reindex into pipeline index `{dest}`: `{at}{k}` is not served by the sidecar's reindex (known: {})",
                keys.join(", ")
            ))),
            None => Ok(()),
        }
    };
    only(body, "", &["source", "dest", "conflicts"])?;
    only(&body["source"], "source.", &["index", "query", "size", "_source"])?;
    only(&body["dest"], "dest.", &["index", "op_type"])?;
    if body["dest"].get("op_type").is_some_and(|o| o != "index") {
        return Err(bad("_reindex into a pipeline index: dest.op_type `create` is not served; leave it out".into()));
    }
    let source = match &body["source"]["index"] {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","),
        _ => return Err(bad("_reindex: source.index must name the index to read".into())),
    };
    let includes = match &body["source"]["_source"] {
        Value::Null => None,
        Value::Array(a) => Some(a.iter().filter_map(Value::as_str).map(String::from).collect()),
        _ => return Err(bad("_reindex: source._source must be a list of fields".into())),
    };
    let mut wait = true;
    let mut refresh = false;
    let mut slices = 1;
    for (k, v) in q.pairs() {
        match k {
            "wait_for_completion" => wait = v != "false",
            "refresh" => refresh = v.is_empty() || v == "true",
            "slices" if v == "auto" => slices = 1,
            "slices" => {
                slices = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| bad(format!("`slices` {v}: 1 to 64, or auto")))?
            }
            "requests_per_second" | "timeout" | "scroll" | "pretty" | "human" | "error_trace" => {}
            other => {
                return Err(bad(format!(
                    "_reindex into pipeline index `{dest}`: parameter `{other}` is not served by the sidecar's reindex"
                )))
            }
        }
    }
    let req = JobRequest {
        pipeline: pipeline.to_string(),
        source: Some(source),
        target: Some(dest.to_string()),
        query: body["source"].get("query").cloned(),
        slices,
        source_includes: includes,
        page_size: body["source"]["size"].as_u64().map(|n| n as usize),
        ..serde_json::from_value(json!({})).map_err(|e| bad(e.to_string()))?
    };
    Ok((req, wait, refresh))
}

/// A job's numbers in `_reindex`'s response shape.
fn es_reindex_answer(job: &Value, took_ms: u64) -> Value {
    let n = |k: &str| job["progress"][k].as_u64().unwrap_or(0);
    json!({
        "took": took_ms, "timed_out": false, "total": n("source"), "created": n("written"), "updated": 0,
        "deleted": 0, "batches": job["bulk"]["batches"].as_u64().unwrap_or(0), "version_conflicts": 0,
        "noops": n("unchanged"), "retries": {"bulk": 0, "search": 0}, "throttled_millis": 0,
        "requests_per_second": -1.0, "throttled_until_millis": 0,
        "failures": if n("failed") > 0 { json!([{"cause": {"type": "embedding_failed", "reason": format!("{} documents could not be written; GET /_jobs/{} says why", n("failed"), job["id"].as_str().unwrap_or(""))}}]) } else { json!([]) },
    })
}

/// `GET /_tasks/{id}` for a sidecar job: Elasticsearch's task shape (`completed`, `task.status`,
/// and the `_reindex` response or the error once it ended).
pub async fn es_task(state: &AppState, id: &str) -> Result<Response, ApiError> {
    let v = state.jobs.get(id).await?;
    let completed = v["status"] != "running";
    let n = |k: &str| v["progress"][k].as_u64().unwrap_or(0);
    let spec = &v["spec"];
    let mut out = json!({
        "completed": completed,
        "task": {
            "node": "semantic-sidecar", "id": 0, "type": "transport", "action": "indices:data/write/reindex",
            "status": {"total": n("source"), "created": n("written"), "updated": 0, "deleted": 0,
                       "noops": n("unchanged"), "version_conflicts": 0, "batches": 0},
            "description": format!("reindex from [{}] to [{}], embedded by the semantic sidecar (job {id})",
                                   spec["source"].as_str().unwrap_or(""), spec["target"].as_str().unwrap_or("")),
            "start_time_in_millis": v["created_ms"], "running_time_in_nanos": v["running_ms"].as_u64().unwrap_or(0) * 1_000_000,
            "cancellable": !completed, "cancelled": v["status"] == "cancelled", "headers": {},
        },
    });
    match v["status"].as_str() {
        Some("failed") => out["error"] = json!({"type": "reindex_job_failed", "reason": v["error"]}),
        Some("done") | Some("cancelled") => {
            out["response"] = es_reindex_answer(&v, v["running_ms"].as_u64().unwrap_or(0))
        }
        _ => {}
    }
    Ok(Json(out).into_response())
}

/// `POST /_tasks/{id}/_cancel` for a sidecar job.
pub async fn es_task_cancel(state: &AppState, id: &str) -> Result<Response, ApiError> {
    state.jobs.cancel(id).await?;
    Ok(Json(json!({"nodes": {"semantic-sidecar": {"tasks": {id: {"action": "indices:data/write/reindex", "cancelled": true}}}}}))
        .into_response())
}
