//! OpenSearch's search and ingest pipeline APIs on a cluster without the neural-search plugin:
//! `GET /_search/pipeline[/{id}]`, `PUT|DELETE /_search/pipeline/{id}`, the same under
//! `/_ingest/pipeline`, and `POST /_ingest/pipeline[/{id}]/_simulate`.
//!
//! A pipeline holding processors the plugin would run (a search pipeline's
//! `normalization-processor`, `score-ranker-processor`, `hybrid_score_explanation`,
//! `neural_query_enricher`; an ingest pipeline's `text_chunking`, `text_embedding`) is kept by
//! the sidecar, as written, in the cluster ([`crate::search::SEARCH_PIPELINES_INDEX`],
//! [`crate::search::INGEST_PIPELINES_INDEX`]); the rest of it goes to the engine under the same
//! name, so the engine's own processors still run and `index.search.default_pipeline`,
//! `index.default_pipeline`, `?pipeline=` and `?search_pipeline=` resolve there. `GET` answers
//! the definitions as written. A cluster with the plugin gets every call unchanged.

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
use crate::ingest::os_pipeline;
use crate::ingest::store::DocStore;
use crate::query::os_hybrid;
use crate::types::name::DocId;

/// Which pipeline API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Search,
    Ingest,
}

impl Kind {
    fn path(self, id: Option<&str>) -> Result<EnginePath, ApiError> {
        let p = match self {
            Kind::Search => EnginePath::root().api("_search"),
            Kind::Ingest => EnginePath::root().api("_ingest"),
        }
        .api("pipeline");
        Ok(match id {
            Some(id) => p.name(&DocId::try_from(id).map_err(|e| invalid(format!("pipeline id: {e}")))?),
            None => p,
        })
    }

    fn store(self, state: &AppState) -> &DocStore {
        match self {
            Kind::Search => state.searcher.search_pipelines(),
            Kind::Ingest => state.searcher.ingest_pipelines(),
        }
    }

    /// The part of `def` the engine keeps, when the sidecar keeps the pipeline (`None`: the
    /// engine's alone); a definition the sidecar cannot serve is a 400 naming why.
    async fn engine_part(self, state: &AppState, def: &Value) -> Result<Option<Value>, ApiError> {
        match self {
            Kind::Search => {
                Ok(os_hybrid::parse_pipeline(def).map_err(|e| invalid(e.to_string()))?.map(|p| p.engine_part))
            }
            Kind::Ingest => {
                let Some(p) = os_pipeline::parse_pipeline(def).map_err(invalid)? else { return Ok(None) };
                for id in p.model_ids() {
                    state
                        .searcher
                        .endpoints()
                        .model_for(id)
                        .await
                        .map_err(|e| invalid(format!("text_embedding: {e}")))?;
                }
                Ok(Some(p.engine_part))
            }
        }
    }
}

/// Whether the sidecar keeps pipelines here (OpenSearch without neural-search).
async fn sidecar_keeps(state: &AppState) -> Result<bool, ApiError> {
    Ok(state.searcher.capabilities().await?.sidecar_runs_neural())
}

async fn put(state: &AppState, kind: Kind, id: &str, body: &Bytes) -> Result<Response, ApiError> {
    let path = kind.path(Some(id))?;
    let raw = passthrough::json_body(body)?;
    if !sidecar_keeps(state).await? {
        return passthrough::forward(state, Method::PUT, path, raw, false).await;
    }
    let Some(raw) = raw else { return Err(invalid("a pipeline needs a body")) };
    let def: Value = serde_json::from_slice(&raw).map_err(|e| invalid(format!("the request body is not JSON: {e}")))?;
    let store = kind.store(state);
    let Some(engine_part) = kind.engine_part(state, &def).await? else {
        // the engine's alone: forwarded, and any earlier sidecar definition under the name dropped
        let resp = state.engine.send(EngineRequest::new(Method::PUT, path.build()).json(&def).passthrough()).await?;
        if resp.status.is_success() {
            store.delete(id).await?;
        }
        return Ok(engine_answer(resp));
    };
    // the engine's part first: it checks the processors it runs, and the name resolves there
    let resp =
        state.engine.send(EngineRequest::new(Method::PUT, path.build()).json(&engine_part).passthrough()).await?;
    if !resp.status.is_success() {
        return Ok(engine_answer(resp));
    }
    store.put(id, &def).await?;
    Ok(Json(json!({"acknowledged": true})).into_response())
}

/// The engine's answer, with the sidecar's pipelines as they were written.
async fn get(state: &AppState, kind: Kind, id: Option<&str>) -> Result<Response, ApiError> {
    let path = kind.path(id)?;
    if !sidecar_keeps(state).await? {
        return passthrough::forward(state, Method::GET, path, None, false).await;
    }
    let resp = state.engine.send(EngineRequest::new(Method::GET, path.build()).idempotent(true).passthrough()).await?;
    let kept = kind.store(state).all().await?;
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
    if let Some((id, def)) = id.and_then(|i| kept.get(i).map(|d| (i, d))) {
        answer.entry(id.to_string()).or_insert_with(|| def.clone());
    }
    if answer.is_empty() && id.is_some() {
        return Ok((StatusCode::NOT_FOUND, Json(json!({}))).into_response());
    }
    Ok(Json(Value::Object(answer)).into_response())
}

async fn delete(state: &AppState, kind: Kind, id: &str) -> Result<Response, ApiError> {
    let path = kind.path(Some(id))?;
    if !sidecar_keeps(state).await? {
        return passthrough::forward(state, Method::DELETE, path, None, false).await;
    }
    let resp = state.engine.send(EngineRequest::new(Method::DELETE, path.build()).passthrough()).await?;
    let had = kind.store(state).delete(id).await?;
    match resp.status.as_u16() {
        404 if had => Ok(Json(json!({"acknowledged": true})).into_response()),
        _ => Ok(engine_answer(resp)),
    }
}

async fn one(state: &AppState, kind: Kind, method: Method, id: &str, body: &Bytes) -> Result<Response, ApiError> {
    match method {
        Method::GET => get(state, kind, Some(id)).await,
        Method::DELETE => delete(state, kind, id).await,
        _ => put(state, kind, id, body).await,
    }
}

/// `GET /_search/pipeline`.
pub async fn search_list(State(state): State<AppState>) -> Result<Response, ApiError> {
    get(&state, Kind::Search, None).await
}

/// `GET|PUT|DELETE /_search/pipeline/{id}`.
pub async fn search_one(
    State(state): State<AppState>,
    method: Method,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    one(&state, Kind::Search, method, &id, &body).await
}

/// `GET /_ingest/pipeline`.
pub async fn ingest_list(State(state): State<AppState>) -> Result<Response, ApiError> {
    get(&state, Kind::Ingest, None).await
}

/// `GET|PUT|DELETE /_ingest/pipeline/{id}`.
pub async fn ingest_one(
    State(state): State<AppState>,
    method: Method,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    one(&state, Kind::Ingest, method, &id, &body).await
}

/// `POST /_ingest/pipeline/{id}/_simulate` and `POST /_ingest/pipeline/_simulate` (with the
/// pipeline in the body): the sidecar's steps run on each document's `_source`, then the
/// engine simulates the rest and answers in its own shape.
pub async fn simulate(
    State(state): State<AppState>,
    method: Method,
    id: Option<Path<String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = id.map(|Path(i)| i);
    let path = match &id {
        Some(i) => Kind::Ingest.path(Some(i))?.api("_simulate"),
        None => Kind::Ingest.path(None)?.api("_simulate"),
    };
    let raw = passthrough::json_body(&body)?;
    if !sidecar_keeps(&state).await? {
        return passthrough::forward(&state, method, path, raw, false).await;
    }
    let Some(raw) = raw else { return Err(invalid("_simulate needs `docs`")) };
    let mut req: Value =
        serde_json::from_slice(&raw).map_err(|e| invalid(format!("the request body is not JSON: {e}")))?;
    let def = match (&id, req.get("pipeline")) {
        (Some(i), _) => Kind::Ingest.store(&state).get(i).await?,
        (None, Some(p)) => Some(p.clone()),
        (None, None) => None,
    };
    let Some(pipeline) = def.as_ref().map(os_pipeline::parse_pipeline).transpose().map_err(invalid)?.flatten() else {
        return passthrough::forward(&state, method, path, Some(raw), false).await;
    };
    if id.is_none() {
        req["pipeline"] = pipeline.engine_part.clone();
    }
    let docs = req.get_mut("docs").and_then(Value::as_array_mut).ok_or_else(|| invalid("`docs` must be an array"))?;
    let mut sources: Vec<&mut Map<String, Value>> =
        docs.iter_mut().filter_map(|d| d.get_mut("_source").and_then(Value::as_object_mut)).collect();
    super::os_ingest::run_steps(&state, &pipeline.steps, &mut sources).await?;
    let resp = state.engine.send(EngineRequest::new(Method::POST, path.build()).json(&req).passthrough()).await?;
    Ok(engine_answer(resp))
}
