//! Search endpoints: the sidecar's own `POST /search`, and the ES-compatible
//! `GET|POST /{index}/_search` and `/_search` (ordinary bodies pass through unchanged; the
//! `hybrid` clause and a pipeline's `auto_hybrid` are rewritten by [`Searcher::es_search`]).
//!
//! [`Searcher::es_search`]: crate::search::Searcher::es_search

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::error::{invalid, ApiError};
use super::passthrough;
use super::{engine_answer, AppState};
use crate::engine::path::{EnginePath, QueryString};
use crate::engine::EngineRequest;
use crate::error::ErrorCode;
use crate::query::request::SearchRequest;
use crate::search::{EsAnswer, SearchError};
use crate::telemetry::{SearchStage, StageTimes};
use crate::types::name::IndexPattern;
use std::time::Instant;

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::Engine(e) => ApiError::from(e),
            SearchError::Encoder(e) => ApiError::from(e),
            other => ApiError::new(other.code(), other.to_string()),
        }
    }
}

/// `POST /search` (the key's cover of the index searched, a pipeline name standing for its
/// index, was checked by [`super::middleware::authorize_body`]).
pub async fn search(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let started = Instant::now();
    let mut times = StageTimes::default();
    let req: SearchRequest = times.time(SearchStage::Parse, || {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(ErrorCode::InvalidInput, format!("the search request: {e}")))
    })?;
    let answer = state.searcher.search_timed(req, &mut times).await?;
    Ok(timed_json(&state, &answer, started, &mut times))
}

/// `answer` as a JSON response, timing the serialisation and recording every stage of the
/// search in `search_stage_seconds`.
fn timed_json(state: &AppState, answer: &Value, started: Instant, times: &mut StageTimes) -> Response {
    let bytes = times.time(SearchStage::Serialize, || serde_json::to_vec(answer));
    let mut response = match bytes {
        Ok(b) => ([(header::CONTENT_TYPE, "application/json")], b).into_response(),
        Err(e) => ApiError::new(ErrorCode::Internal, format!("serialising the answer: {e}")).into_response(),
    };
    finish_timing(state, started, times, &mut response);
    response
}

/// Records the search's stages in `search_stage_seconds` and sends them as `Server-Timing`
/// (milliseconds per stage, the engine's round trips included), so a client can tell the
/// sidecar's share of a request from the engine's.
fn finish_timing(state: &AppState, started: Instant, times: &mut StageTimes, response: &mut Response) {
    times.add(SearchStage::Total, started.elapsed());
    times.observe(&state.metrics.search_stages);
    if let Ok(v) = HeaderValue::from_str(&times.server_timing()) {
        response.headers_mut().insert(HeaderName::from_static("server-timing"), v);
    }
}

/// `GET|POST /{index}/_search`.
pub async fn search_index(
    State(state): State<AppState>,
    Path(index): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let mut times = StageTimes::default();
    let pattern = IndexPattern::try_from(index.as_str())?;
    let query = QueryString::parse(query.as_deref())?;
    match state.searcher.es_search_timed(&pattern, &query, body, &mut times).await? {
        EsAnswer::Raw(resp) => {
            let mut response = engine_answer(resp);
            finish_timing(&state, started, &mut times, &mut response);
            Ok(response)
        }
        EsAnswer::Json(v) => Ok(timed_json(&state, &v, started, &mut times)),
    }
}

/// `GET|POST /_search`: no index, so no pipeline; passed through. A search of every index needs
/// a key with `*`, unless it searches a point in time the key was handed (checked by
/// [`super::middleware::authorize_body`]).
pub async fn search_all(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let query = QueryString::parse(query.as_deref())?;
    let req = EngineRequest::new(Method::POST, EnginePath::root().api("_search").query(&query).build())
        .passthrough()
        .idempotent(true);
    let req = match passthrough::json_body(&body)? {
        Some(b) => req.json_bytes(b),
        None => req,
    };
    Ok(engine_answer(state.engine.send(req).await?))
}

/// Most searches in one `_msearch`.
const MAX_MSEARCH_ITEMS: usize = 1000;

/// `GET|POST [/{index}]/_msearch` (every header's indices were checked against the key by
/// [`super::middleware::authorize_body`]). Without a
/// hybrid clause or an `auto_hybrid` index in any item, the parsed lines go to the engine's
/// `_msearch` in one request; otherwise each item runs as its own `_search` (rewritten where it
/// needs to be, at most 8 at a time) and the answers come back in order, in `_msearch`'s shape.
pub async fn msearch(
    state: &AppState,
    index: Option<&String>,
    query: &QueryString,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let items = msearch_items(&body, index)?;
    let mut rewrites = false;
    for i in &items {
        if let Some(t) = i.target.as_deref() {
            rewrites |= state.searcher.rewrites(t, &i.body).await?;
        }
    }
    if !rewrites {
        return forward_msearch(state, index, query, &items, body.len()).await;
    }
    let responses: Vec<Value> =
        futures_util::stream::iter(items).map(|item| msearch_one(state, item)).buffered(8).collect().await;
    Ok(Json(json!({"took": started.elapsed().as_millis() as u64, "responses": responses})).into_response())
}

/// One search of an `_msearch`: the index it names (the path's without one), its header and body.
struct MsearchItem {
    target: Option<String>,
    header: serde_json::Map<String, Value>,
    body: Value,
}

/// The `_msearch` body's pairs of lines, parsed and bounded.
fn msearch_items(body: &[u8], index: Option<&String>) -> Result<Vec<MsearchItem>, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| invalid("the _msearch body is not UTF-8"))?;
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.len() % 2 != 0 {
        return Err(invalid("the _msearch body must be pairs of header and body lines; the last header has no body"));
    }
    if lines.len() / 2 > MAX_MSEARCH_ITEMS {
        return Err(invalid(format!(
            "the _msearch body has {} searches, more than {MAX_MSEARCH_ITEMS}",
            lines.len() / 2
        )));
    }
    let mut items = Vec::with_capacity(lines.len() / 2);
    for (n, pair) in lines.chunks(2).enumerate() {
        let object = |l: &str, what: &str| match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(invalid(format!(
                "_msearch line {}: the {what} must be a JSON object",
                2 * n + if what == "header" { 1 } else { 2 }
            ))),
        };
        let header = object(pair[0], "header")?;
        let search = object(pair[1], "body")?;
        let target = match header.get("index") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(a)) => Some(a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")),
            Some(_) => return Err(invalid(format!("_msearch header {}: `index` must be a string or a list", n + 1))),
            None => index.cloned(),
        };
        items.push(MsearchItem { target, header, body: Value::Object(search) });
    }
    Ok(items)
}

/// The parsed lines, written out again, as one `_msearch` of the engine.
async fn forward_msearch(
    state: &AppState,
    index: Option<&String>,
    query: &QueryString,
    items: &[MsearchItem],
    size_hint: usize,
) -> Result<Response, ApiError> {
    let mut nd = String::with_capacity(size_hint);
    for i in items {
        nd.push_str(&Value::Object(i.header.clone()).to_string());
        nd.push('\n');
        nd.push_str(&i.body.to_string());
        nd.push('\n');
    }
    let mut path = EnginePath::root();
    if let Some(i) = index {
        path = path.pattern(&IndexPattern::try_from(i.as_str())?);
    }
    let req = EngineRequest::new(Method::POST, path.api("_msearch").query(query).build())
        .ndjson(nd)
        .passthrough()
        .idempotent(true)
        .from_client();
    Ok(engine_answer(state.engine.send(req).await?))
}

/// One item run as its own `_search` (rewritten where it needs to be), answered in the shape of
/// an `_msearch` response: the search's answer or its error, with its `status`.
async fn msearch_one(state: &AppState, item: MsearchItem) -> Value {
    let MsearchItem { target, header, body: search } = item;
    let answer = async {
        let target = target.ok_or_else(|| invalid("this search names no index"))?;
        let pattern = IndexPattern::try_from(target.as_str())?;
        let q = {
            let mut params = form_urlencoded::Serializer::new(String::new());
            for (k, v) in header.iter().filter(|(k, _)| k.as_str() != "index") {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(_) | Value::Bool(_) => v.to_string(),
                    _ => return Err(invalid(format!("_msearch header `{k}` must be a string, number or boolean"))),
                };
                params.append_pair(k, &v);
            }
            QueryString::parse(Some(&params.finish()))?
        };
        let body = Bytes::from(search.to_string());
        Ok::<_, ApiError>(state.searcher.es_search(&pattern, &q, body).await?)
    };
    match answer.await {
        Ok(EsAnswer::Json(mut v)) => {
            v["status"] = json!(200);
            v
        }
        Ok(EsAnswer::Raw(resp)) => {
            let mut v: Value = serde_json::from_slice(&resp.body).unwrap_or_else(
                |_| json!({"error": {"type": "engine_failed", "reason": "the engine's answer is not JSON"}}),
            );
            v["status"] = json!(resp.status.as_u16());
            v
        }
        Err(e) => json!({"error": {"type": e.code, "reason": e.reason}, "status": e.status().as_u16()}),
    }
}
