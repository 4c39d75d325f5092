//! Search endpoints: the sidecar's own `POST /search`, and the ES-compatible
//! `GET|POST /{index}/_search` and `/_search` (ordinary bodies pass through unchanged; the
//! `hybrid` clause and a pipeline's `auto_hybrid` are rewritten by [`Searcher::es_search`]).
//!
//! [`Searcher::es_search`]: crate::search::Searcher::es_search

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::passthrough;
use super::{engine_answer, AppState};
use crate::engine::path::{EnginePath, IndexPattern, QueryString};
use crate::engine::EngineRequest;
use crate::error::ErrorCode;
use crate::query::request::SearchRequest;
use crate::search::{EsAnswer, SearchError};

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::Engine(e) => ApiError::from(e),
            SearchError::Encoder(e) => ApiError::from(e),
            other => ApiError::new(other.code(), other.to_string()),
        }
    }
}

/// `POST /search`.
pub async fn search(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: SearchRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidInput, format!("the search request: {e}")))?;
    Ok(Json(state.searcher.search(req).await?).into_response())
}

/// `GET|POST /{index}/_search`.
pub async fn search_index(
    State(state): State<AppState>,
    Path(index): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let pattern = IndexPattern::try_from(index.as_str())?;
    let query = QueryString::parse(query.as_deref())?;
    match state.searcher.es_search(&pattern, &query, body).await? {
        EsAnswer::Raw(resp) => Ok(engine_answer(resp)),
        EsAnswer::Json(v) => Ok(Json(v).into_response()),
    }
}

/// `GET|POST /_search`: no index, so no pipeline; passed through.
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
