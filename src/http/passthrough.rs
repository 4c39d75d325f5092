//! Engine APIs the sidecar forwards without rewriting, so that an unchanged official client
//! (elasticsearch-py, opensearch-py) pointed at the sidecar works for its everyday calls:
//! `GET|HEAD /` (`info()`, the clients' product check), `PUT|GET|HEAD|DELETE /{index}`,
//! `GET|HEAD|DELETE /{index}/_doc/{id}`, `GET|POST [/{index}]/_count`,
//! `POST|GET [/{index}]/_refresh`, `GET [/{index}]/_mapping`, `GET /_cluster/health[/{index}]`.
//!
//! Translation only, and contained: every index name and id is parsed ([`IndexName`] for
//! writes and deletes, [`IndexPattern`] for reads) and the engine path is built from encoded
//! segments ([`EnginePath`]); the query string is re-encoded from parsed pairs; a JSON body must
//! parse as a JSON object before it is forwarded. The engine's answer (status, body, `Warning`,
//! `X-Elastic-Product`) comes back as it came. Not here (see the README): the rest of the engine
//! API, per-key scopes.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::Method;
use axum::response::Response;
use serde_json::Value;

use super::error::ApiError;
use super::{engine_answer, AppState};
use crate::engine::path::{DocId, EnginePath, IndexName, IndexPattern, PathError, QueryString};
use crate::engine::EngineRequest;
use crate::error::ErrorCode;

impl From<PathError> for ApiError {
    fn from(e: PathError) -> Self {
        ApiError::new(ErrorCode::InvalidInput, e.to_string())
    }
}

/// A forwarded JSON body: empty, or a JSON object (parsed, so nothing unparsed reaches the engine).
pub(crate) fn json_body(body: &Bytes) -> Result<Option<Bytes>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(_)) => Ok(Some(body.clone())),
        Ok(_) => Err(ApiError::new(ErrorCode::InvalidInput, "the request body must be a JSON object")),
        Err(e) => Err(ApiError::new(ErrorCode::InvalidInput, format!("the request body is not JSON: {e}"))),
    }
}

/// Sends the request and returns the engine's answer; `read` marks a POST that is safe to repeat
/// (`_count`, `_refresh`), GET and HEAD always are.
async fn forward(
    state: &AppState,
    method: Method,
    path: EnginePath,
    body: Option<Bytes>,
    read: bool,
) -> Result<Response, ApiError> {
    let idempotent = read || matches!(method, Method::GET | Method::HEAD);
    let mut req = EngineRequest::new(method, path.build()).passthrough();
    if idempotent {
        req = req.idempotent(true);
    }
    if let Some(b) = body {
        req = req.json_bytes(b);
    }
    Ok(engine_answer(state.engine.send(req).await?))
}

/// `GET /` and `HEAD /`: the engine's own answer (name, cluster, version, tagline).
pub async fn root(State(state): State<AppState>, method: Method) -> Result<Response, ApiError> {
    forward(&state, method, EnginePath::root(), None, false).await
}

/// `PUT /{index}` (create, with settings and mappings), `DELETE /{index}` (one concrete name),
/// `GET|HEAD /{index}` (names or patterns).
pub async fn index(
    State(state): State<AppState>,
    method: Method,
    Path(index): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let q = QueryString::parse(query.as_deref())?;
    let (path, body) = if method == Method::PUT || method == Method::DELETE {
        let name = IndexName::try_from(index.as_str())?;
        let body = if method == Method::PUT { json_body(&body)? } else { None };
        (EnginePath::root().index(&name), body)
    } else {
        (EnginePath::root().pattern(&IndexPattern::try_from(index.as_str())?), None)
    };
    forward(&state, method, path.query(&q), body, false).await
}

/// `GET|HEAD|DELETE /{index}/_doc/{id}` (writes with a body go through the ingest endpoints).
pub async fn doc(
    State(state): State<AppState>,
    method: Method,
    Path((index, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryString::parse(query.as_deref())?;
    let path =
        EnginePath::root().index(&IndexName::try_from(index.as_str())?).api("_doc").id(&DocId::try_from(id.as_str())?);
    forward(&state, method, path.query(&q), None, false).await
}

/// A read API over an optional index pattern: `[/{index}]/{api}` with an optional JSON body.
async fn read_api(
    state: &AppState,
    method: Method,
    index: Option<String>,
    api: &'static str,
    query: Option<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let q = QueryString::parse(query.as_deref())?;
    let mut path = EnginePath::root();
    if let Some(i) = index {
        path = path.pattern(&IndexPattern::try_from(i.as_str())?);
    }
    forward(state, method, path.api(api).query(&q), json_body(&body)?, true).await
}

pub async fn count_all(
    State(state): State<AppState>,
    method: Method,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    read_api(&state, method, None, "_count", q, body).await
}

pub async fn count(
    State(state): State<AppState>,
    method: Method,
    Path(index): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    read_api(&state, method, Some(index), "_count", q, body).await
}

pub async fn refresh_all(
    State(state): State<AppState>,
    method: Method,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    read_api(&state, method, None, "_refresh", q, Bytes::new()).await
}

pub async fn refresh(
    State(state): State<AppState>,
    method: Method,
    Path(index): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    read_api(&state, method, Some(index), "_refresh", q, Bytes::new()).await
}

pub async fn mapping_all(State(state): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    read_api(&state, Method::GET, None, "_mapping", q, Bytes::new()).await
}

pub async fn mapping(
    State(state): State<AppState>,
    Path(index): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    read_api(&state, Method::GET, Some(index), "_mapping", q, Bytes::new()).await
}

pub async fn cluster_health(State(state): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = QueryString::parse(q.as_deref())?;
    forward(&state, Method::GET, EnginePath::root().api("_cluster").api("health").query(&q), None, false).await
}

pub async fn cluster_health_of(
    State(state): State<AppState>,
    Path(index): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryString::parse(q.as_deref())?;
    let path = EnginePath::root().api("_cluster").api("health").pattern(&IndexPattern::try_from(index.as_str())?);
    forward(&state, Method::GET, path.query(&q), None, false).await
}
