//! Engine APIs the sidecar forwards without rewriting, so that an unchanged official client
//! (elasticsearch-py, opensearch-py) pointed at the sidecar works: `GET|HEAD /`,
//! `GET|HEAD|DELETE /{index}/_doc/{id}`, and [`any`], every other route (`/{index}`, `_count`,
//! `_refresh`, `_mapping`, `_mget`, `_cat/*`, `_aliases`, scroll, PIT, cluster APIs, …).
//!
//! Translation only, and contained: every index name and id is parsed ([`IndexName`] for
//! writes and deletes, [`IndexPattern`] for reads) and the engine path is built from encoded
//! segments ([`EnginePath`]); the query string is re-encoded from parsed pairs; a JSON body must
//! parse as a JSON object before it is forwarded. The engine's answer (status, body, `Warning`,
//! `X-Elastic-Product`) comes back as it came. Which key may call what was decided before a
//! handler here runs ([`super::auth`]). Refused on pipeline indices, and on names that expand
//! to one (aliases, patterns, date math): `_update_by_query` and `_reindex` into one (their
//! documents would lose their vectors), except `_reindex` whose `dest` names the pipeline's
//! index: run as a reindex job that embeds, with `_tasks/{id}` for it ([`super::jobs::es_reindex`]).

use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::Value;

use super::auth::Route;
use super::canonical::canonical;
use super::error::ApiError;
use super::{engine_answer, AppState};
use crate::engine::path::{EnginePath, QueryString};
use crate::engine::EngineRequest;
use crate::error::ErrorCode;
use crate::types::name::{DocId, IndexName, IndexPattern, PathError};

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
pub(super) async fn forward(
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

/// Whether a forwarded request only reads, so it is safe to repeat: its row of the API table
/// needs the read scope (a search, count, mget, scroll continuation; not a PIT close), or it is
/// a refresh.
fn safe_to_repeat(route: Route, method: &Method) -> bool {
    route.0.is_some_and(|api| {
        *method != Method::DELETE && (api.scope == crate::settings::Scope::Read || api.name == "refresh")
    })
}

/// An engine API name from a client's path: `_` and lower-case letters only.
fn api_segment(s: &str) -> Option<String> {
    (s.len() <= 64 && s.starts_with('_') && s[1..].bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .then(|| s.to_string())
}

/// A client's decoded path, rebuilt from checked segments: the first is an index pattern (a
/// concrete name for `PUT`/`DELETE /{index}`) unless it is an API, later ones are APIs or plain
/// names (ids, alias or template names), each encoded on its own.
fn engine_path(method: &Method, segments: &[String]) -> Result<EnginePath, ApiError> {
    let mut path = EnginePath::root();
    for (i, seg) in segments.iter().enumerate() {
        path = if let Some(api) = api_segment(seg) {
            path.api_owned(api)
        } else if seg.starts_with('_') {
            return Err(ApiError::new(ErrorCode::InvalidInput, format!("`{}` is not an API name", seg.escape_debug())));
        } else if i == 0 && segments.len() == 1 && matches!(*method, Method::PUT | Method::DELETE | Method::POST) {
            path.index(&IndexName::try_from(seg.as_str())?)
        } else if i == 0 {
            path.pattern(&IndexPattern::try_from(seg.as_str())?)
        } else {
            path.name(&DocId::try_from(seg.as_str())?)
        };
    }
    Ok(path)
}

/// Refuses what would write to a pipeline index without its vectors: `_update_by_query`
/// (scripts) on a name that expands to one, and `_reindex` into one (use `POST /_jobs/reindex`).
/// Names are expanded on the engine: an alias, a pattern or date math that covers a pipeline
/// index is refused like the index itself.
async fn check_pipeline_writes(state: &AppState, segments: &[String], body: Option<&Bytes>) -> Result<(), ApiError> {
    let refuse = |r: String| Err(ApiError::new(ErrorCode::InvalidInput, r));
    match segments {
        [index, api, ..] if api == "_update_by_query" => {
            if let Some(i) = state.ingestor.owners().any_owned(&state.engine, index).await? {
                return refuse(format!(
                    "_update_by_query is refused on `{index}` (it covers pipeline index `{i}`): its documents carry vectors the sidecar computes, and a script's changes cannot be embedded; write the changed documents through _bulk or _update, or reindex with POST /_jobs/reindex"
                ));
            }
        }
        [api] if api == "_reindex" => {
            let dest = body
                .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                .and_then(|v| v.pointer("/dest/index").and_then(Value::as_str).map(String::from));
            if let Some(d) = dest {
                if let Some(i) = state.ingestor.owners().any_owned(&state.engine, &d).await? {
                    // served as a job (reindex_into_pipeline) when one pipeline owns it plainly
                    return refuse(format!(
                        "_reindex into `{d}` (pipeline index `{i}`) is refused: name the pipeline's index itself (the documents are embedded by a reindex job), or use POST /_jobs/reindex"
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Every engine API the sidecar does not rewrite (`_cat/*`, `_aliases`, `_settings`,
/// `_search/scroll`, PIT, `_field_caps`, `_stats`, cluster APIs, …): the path rebuilt from
/// checked segments, the query string re-encoded, a JSON-object body; what the key may reach
/// was decided in [`super::auth`] and, for the indices bodies name (`_mget`, `_msearch`, …),
/// in [`super::middleware::authorize_body`] before this runs.
pub async fn any(
    State(state): State<AppState>,
    Extension(route): Extension<Route>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !matches!(method, Method::GET | Method::HEAD | Method::POST | Method::PUT | Method::DELETE) {
        let e = ApiError::new(
            ErrorCode::InvalidInput,
            format!("method {method} is not forwarded: use GET, HEAD, POST, PUT or DELETE"),
        );
        return Err(ApiError { status: Some(StatusCode::METHOD_NOT_ALLOWED), ..e });
    }
    let segments = canonical(uri.path()).map_err(|r| ApiError::new(ErrorCode::InvalidInput, r))?.segments;
    let q = QueryString::parse(uri.query())?;
    match segments.as_slice() {
        [api] if api == "_msearch" => return super::search::msearch(&state, None, &q, body).await,
        [index, api] if api == "_msearch" => return super::search::msearch(&state, Some(index), &q, body).await,
        _ => {}
    }
    let path = engine_path(&method, &segments)?;
    let body = json_body(&body)?;
    if let Some(r) = sidecar_jobs(&state, &method, &segments, &q, body.as_ref()).await? {
        return Ok(r);
    }
    check_pipeline_writes(&state, &segments, body.as_ref()).await?;
    if let Some(r) = super::semantic::intercept(&state, &method, &segments, &path, &q, body.as_ref()).await? {
        return Ok(r);
    }
    let body = neural_resolved(&state, &segments, body).await?;
    let read = safe_to_repeat(route, &method);
    let moves_names = moves_names(&method, &segments);
    let answer = forward(&state, method, path.query(&q), body, read).await;
    if moves_names {
        // an alias, index or data stream changed: which pipeline owns a name is asked again
        state.ingestor.owners().invalidate();
    }
    answer
}

/// The body of `_count`, `_explain` or `_validate/query` with each OpenSearch `neural` clause
/// turned into a `knn` query where the cluster has no neural-search (as `_search` does); any
/// other body as it came.
async fn neural_resolved(
    state: &AppState,
    segments: &[String],
    body: Option<Bytes>,
) -> Result<Option<Bytes>, ApiError> {
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let search_like = matches!(seg.as_slice(), [.., "_count"] | [_, "_explain", _] | [.., "_validate", "query"]);
    let Some(b) = body else { return Ok(None) };
    if !search_like || !b.windows(8).any(|w| w == b"\"neural\"") {
        return Ok(Some(b));
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(&b) else { return Ok(Some(b)) };
    Ok(Some(match state.searcher.resolve_neural_in(&mut v).await? {
        true => Bytes::from(v.to_string()),
        false => b,
    }))
}

/// `_reindex` into an index a served pipeline owns (by its name or the pipeline's `index`),
/// run as a reindex job that embeds; `_tasks/{id}` and `_tasks/{id}/_cancel` for such a job.
async fn sidecar_jobs(
    state: &AppState,
    method: &Method,
    segments: &[String],
    q: &QueryString,
    body: Option<&Bytes>,
) -> Result<Option<Response>, ApiError> {
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (method.clone(), seg.as_slice()) {
        (Method::POST, ["_reindex"]) => {
            let Some(v) = body.and_then(|b| serde_json::from_slice::<Value>(b).ok()) else { return Ok(None) };
            let Some(dest) = v.pointer("/dest/index").and_then(Value::as_str) else { return Ok(None) };
            super::semantic::adopt(state, [dest]).await?;
            let route = match state.ingestor.owners().for_write(&state.engine, dest).await? {
                Ok(r) => r,
                Err(why) => return Err(ApiError::new(ErrorCode::InvalidInput, why)),
            };
            match route.owner {
                crate::ingest::owner::Owner::Served(p) if p.index == dest || route.target == dest => {
                    super::jobs::es_reindex(state, &p.name, dest, q, &v).await.map(Some)
                }
                _ => Ok(None),
            }
        }
        (Method::GET, ["_tasks", id]) if crate::reindex::is_job_id(id) => {
            super::jobs::es_task(state, id).await.map(Some)
        }
        (Method::POST, ["_tasks", id, "_cancel"]) if crate::reindex::is_job_id(id) => {
            super::jobs::es_task_cancel(state, id).await.map(Some)
        }
        _ => Ok(None),
    }
}

/// Whether a request may change what a name resolves to: alias changes, index or data stream
/// creation and deletion, rollovers, closing and opening.
fn moves_names(method: &Method, segments: &[String]) -> bool {
    const APIS: &[&str] =
        &["_alias", "_aliases", "_data_stream", "_rollover", "_close", "_open", "_clone", "_split", "_shrink"];
    !matches!(*method, Method::GET | Method::HEAD)
        && (segments.len() == 1 || segments.iter().any(|s| APIS.contains(&s.as_str())))
}
