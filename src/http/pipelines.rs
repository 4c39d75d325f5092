//! The pipeline API: `GET /_sidecar/pipeline`, `GET|PUT|DELETE /_sidecar/pipeline/{name}`
//! (admin scope, from the API table). The body is the JSON form of a pipeline file; the checks
//! are [`crate::ingest::admin`]'s, the store is the cluster's ([`crate::ingest::catalog`]).
//! `PUT` and `DELETE` take `if_seq_no` and `if_primary_term` (from a GET) for optimistic
//! concurrency; a stale version gets 409.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::error::{invalid, ApiError};
use super::AppState;
use crate::engine::path::QueryString;
use crate::error::ErrorCode;
use crate::ingest::admin::Admin;
use crate::ingest::catalog::CatalogError;

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}

/// The pipeline API's operations for this replica (also behind `semantic_text` mappings).
pub(super) fn admin(state: &AppState) -> Admin<'_> {
    Admin { owners: state.ingestor.owners(), encoders: &state.encoders, engine: &state.engine }
}

/// `if_seq_no` and `if_primary_term`: both or neither.
fn expected_version(query: Option<&str>) -> Result<Option<(u64, u64)>, ApiError> {
    let q = QueryString::parse(query)?;
    let num = |k: &str| -> Result<Option<u64>, ApiError> {
        q.get(k)
            .map(|v| v.parse::<u64>().map_err(|_| invalid(format!("`{k}` must be a non-negative integer"))))
            .transpose()
    };
    match (num("if_seq_no")?, num("if_primary_term")?) {
        (Some(s), Some(t)) => Ok(Some((s, t))),
        (None, None) => Ok(None),
        _ => Err(invalid("send both `if_seq_no` and `if_primary_term`, or neither")),
    }
}

/// `GET /_sidecar/pipeline`: every stored pipeline with its state on this replica.
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let snap = state.catalog.snapshot();
    let a = admin(&state);
    let mut out = Map::new();
    for (s, why) in snap.all() {
        out.insert(s.pipeline.name.clone(), a.view(s, why).await?);
    }
    let invalid: Map<String, Value> = snap.invalid.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect();
    Ok(Json(json!({"pipelines": out, "invalid": invalid, "stored_in_cluster": state.catalog.is_stored()}))
        .into_response())
}

/// `GET /_sidecar/pipeline/{name}`: read from the cluster (not this replica's last poll).
pub async fn get(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let stored = if state.catalog.is_stored() {
        state.catalog.fetch(&name).await?
    } else {
        state.catalog.snapshot().named(&name).cloned()
    };
    let Some(s) = stored else {
        return Err(ApiError::new(ErrorCode::NotFound, format!("no pipeline `{name}`")));
    };
    let snap = state.catalog.snapshot();
    let why = snap.unavailable.get(&name).map(|(_, w)| w.as_str());
    Ok(Json(json!({ name: admin(&state).view(&s, why).await? })).into_response())
}

/// `PUT /_sidecar/pipeline/{name}`: 201 when created, 200 when updated.
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let expect = expected_version(query.as_deref())?;
    let body: Value = serde_json::from_slice(&body).map_err(|e| invalid(format!("the pipeline is not JSON: {e}")))?;
    let out = admin(&state).put(&name, &body, expect).await?;
    let status = if out.created { StatusCode::CREATED } else { StatusCode::OK };
    let answer = json!({
        "acknowledged": true,
        "result": if out.created { "created" } else { "updated" },
        "name": name,
        "_seq_no": out.stored.seq_no,
        "_primary_term": out.stored.primary_term,
        "index": out.stored.pipeline.index,
        "index_created": out.index_created,
        "fields_added": out.fields_added,
    });
    Ok((status, Json(answer)).into_response())
}

/// `DELETE /_sidecar/pipeline/{name}`: the pipeline only; its index and vectors stay.
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let expect = expected_version(query.as_deref())?;
    state.catalog.delete(&name, expect).await?;
    state.ingestor.owners().invalidate();
    Ok(Json(json!({"acknowledged": true, "name": name})).into_response())
}
