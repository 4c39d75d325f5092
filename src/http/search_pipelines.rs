//! OpenSearch's search pipeline API, `GET /_search/pipeline[/{id}]`, `PUT|DELETE
//! /_search/pipeline/{id}`, on a cluster without the neural-search plugin: a pipeline holding a
//! `normalization-processor`, `score-ranker-processor`, `hybrid_score_explanation` or
//! `neural_query_enricher` is kept by the sidecar (cluster state,
//! [`crate::search::SEARCH_PIPELINES_INDEX`]) and the rest of it by the engine under the same
//! name, so the engine's own processors still run, `index.search.default_pipeline` resolves
//! there, and a search that is no hybrid query goes through unchanged. `GET` answers the
//! definition as it was written. A cluster with the plugin gets every call unchanged.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::error::{invalid, ApiError};
use super::{engine_answer, passthrough, AppState};
use crate::engine::path::EnginePath;
use crate::engine::EngineRequest;
use crate::query::os_hybrid;
use crate::types::name::DocId;

fn path_of(id: Option<&str>) -> Result<EnginePath, ApiError> {
    let p = EnginePath::root().api("_search").api("pipeline");
    Ok(match id {
        Some(id) => p.name(&DocId::try_from(id).map_err(|e| invalid(format!("search pipeline id: {e}")))?),
        None => p,
    })
}

/// Whether the sidecar keeps pipelines here (OpenSearch without neural-search).
async fn sidecar_keeps(state: &AppState) -> Result<bool, ApiError> {
    let caps = state.searcher.capabilities().await?;
    Ok(caps.sidecar_runs_neural())
}

/// `PUT /_search/pipeline/{id}`.
pub async fn put(State(state): State<AppState>, Path(id): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let path = path_of(Some(&id))?;
    let raw = passthrough::json_body(&body)?;
    if !sidecar_keeps(&state).await? {
        return passthrough::forward(&state, Method::PUT, path, raw, false).await;
    }
    let def: Value = match &raw {
        Some(b) => serde_json::from_slice(b).map_err(|e| invalid(format!("the request body is not JSON: {e}")))?,
        None => return Err(invalid("a search pipeline needs a body")),
    };
    let store = state.searcher.search_pipelines();
    let Some(parsed) = os_hybrid::parse_pipeline(&def).map_err(|e| invalid(e.to_string()))? else {
        // the engine's alone: forwarded, and any earlier sidecar definition under the name dropped
        let resp = state.engine.send(EngineRequest::new(Method::PUT, path.build()).json(&def).passthrough()).await?;
        if resp.status.is_success() {
            store.delete(&id).await?;
        }
        return Ok(engine_answer(resp));
    };
    // the engine's part first: it checks the processors it runs, and the name resolves there
    let resp = state
        .engine
        .send(EngineRequest::new(Method::PUT, path.build()).json(&parsed.engine_part).passthrough())
        .await?;
    if !resp.status.is_success() {
        return Ok(engine_answer(resp));
    }
    store.put(&id, &def).await?;
    Ok(Json(json!({"acknowledged": true})).into_response())
}

/// `GET /_search/pipeline[/{id}]`: the engine's answer, with the sidecar's pipelines as they
/// were written.
async fn get(state: &AppState, id: Option<&str>) -> Result<Response, ApiError> {
    let path = path_of(id)?;
    if !sidecar_keeps(state).await? {
        return passthrough::forward(state, Method::GET, path, None, false).await;
    }
    let resp = state.engine.send(EngineRequest::new(Method::GET, path.build()).idempotent(true).passthrough()).await?;
    let kept = state.searcher.search_pipelines().all().await?;
    let mut answer: Map<String, Value> = match resp.status.as_u16() {
        s if (200..300).contains(&s) => resp.json::<Value>()?.as_object().cloned().unwrap_or_default(),
        404 => Map::new(),
        _ => return Ok(engine_answer(resp)),
    };
    for (name, v) in answer.iter_mut() {
        if let Some(def) = kept.get(name) {
            *v = def.clone();
        }
    }
    // one the engine lost (deleted behind the sidecar's back) is still the sidecar's
    if let Some(def) = id.and_then(|i| kept.get(i)) {
        answer.entry(id.unwrap_or_default().to_string()).or_insert_with(|| def.clone());
    }
    if answer.is_empty() && id.is_some() {
        return Ok((StatusCode::NOT_FOUND, Json(json!({}))).into_response());
    }
    Ok(Json(Value::Object(answer)).into_response())
}

/// `GET /_search/pipeline`.
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    get(&state, None).await
}

/// `GET|DELETE /_search/pipeline/{id}`.
pub async fn one(State(state): State<AppState>, method: Method, Path(id): Path<String>) -> Result<Response, ApiError> {
    if method == Method::GET {
        return get(&state, Some(&id)).await;
    }
    let path = path_of(Some(&id))?;
    if !sidecar_keeps(&state).await? {
        return passthrough::forward(&state, method, path, None, false).await;
    }
    let resp = state.engine.send(EngineRequest::new(Method::DELETE, path.build()).passthrough()).await?;
    let had = state.searcher.search_pipelines().delete(&id).await?;
    match resp.status.as_u16() {
        404 if had => Ok(Json(json!({"acknowledged": true})).into_response()),
        _ => Ok(engine_answer(resp)),
    }
}
