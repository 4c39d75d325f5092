//! Reindex jobs over HTTP: `POST /_jobs/reindex` (start, or resume with `"resume": ID`),
//! `GET /_jobs/{id}` (state, checkpoints and progress numbers), `DELETE /_jobs/{id}` (cancel at
//! the next checkpoint). The same implementation as `semantic-sidecar reindex`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error::ApiError;
use super::AppState;
use crate::error::ErrorCode;
use crate::reindex::{JobRequest, ReindexError};

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
