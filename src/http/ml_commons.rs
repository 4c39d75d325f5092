//! The part of OpenSearch's ml-commons API that code written for neural search uses to find and
//! check its model, served where the cluster has no ml-commons plugin: each sidecar model is a
//! deployed text-embedding model whose id is its name.
//!
//! - `GET /_plugins/_ml/models/{id}`: the model (an inference endpoint's id names its model too);
//!   an unknown id is a 404 naming the known ones;
//! - `GET|POST /_plugins/_ml/models/_search`: the models, as search hits (`match_all`, or a
//!   `term` / `match` / `ids` query on `name`, `_id`, `model_state`, `algorithm`; `from`, `size`);
//! - `POST /_plugins/_ml/_predict/text_embedding/{id}` with `{"text_docs": [...]}`: the
//!   embeddings, in ml-commons' `inference_results` shape.
//!
//! A cluster with ml-commons gets every call unchanged.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::error::{invalid, ApiError};
use super::inference::{embed, MAX_INPUTS};
use super::{passthrough, AppState};
use crate::encoder::{ModelInfo, TextKind};
use crate::engine::path::EnginePath;
use crate::error::ErrorCode;
use crate::types::name::DocId;

/// The index ml-commons keeps its models in (named in the hits, as OpenSearch names it).
const MODEL_INDEX: &str = ".plugins-ml-model";

/// Forwards the call when the cluster has ml-commons.
async fn forwarded(
    state: &AppState,
    method: &Method,
    segments: &[&str],
    body: &Bytes,
) -> Result<Option<Response>, ApiError> {
    if !state.searcher.capabilities().await?.engine_serves_ml_commons() {
        return Ok(None);
    }
    let mut path = EnginePath::root().api("_plugins").api("_ml");
    for s in segments {
        path = match *s {
            "models" => path.api("models"),
            "_search" => path.api("_search"),
            "_predict" => path.api("_predict"),
            name => path.name(&DocId::try_from(name).map_err(|e| invalid(format!("`{name}`: {e}")))?),
        };
    }
    Ok(Some(passthrough::forward(state, method.clone(), path, passthrough::json_body(body)?, false).await?))
}

/// A sidecar model as ml-commons describes a deployed text-embedding model.
fn model_doc(m: &ModelInfo) -> Value {
    json!({
        "name": m.name,
        "algorithm": "TEXT_EMBEDDING",
        "model_version": "1",
        "model_format": "ONNX",
        "model_state": "DEPLOYED",
        "description": format!("served by semantic-sidecar ({} pooling{})", m.pooling, if m.normalize { ", normalized" } else { "" }),
        "model_config": {
            "model_type": "bert",
            "embedding_dimension": m.dims,
            "framework_type": "SENTENCE_TRANSFORMERS",
        },
        "deploy_to_all_nodes": true,
        "is_hidden": false,
    })
}

/// A 404 in ml-commons' words, naming the known models.
fn unknown(id: &str, known: &[ModelInfo]) -> ApiError {
    let names: Vec<&str> = known.iter().map(|m| m.name.as_str()).collect();
    let e = ApiError::new(
        ErrorCode::NotFound,
        format!("Failed to find model with the provided model id: {id} (this sidecar serves: {})", names.join(", ")),
    );
    ApiError { status: Some(StatusCode::NOT_FOUND), ..e }
}

/// `GET /_plugins/_ml/models/{id}`.
pub async fn get_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Some(r) = forwarded(&state, &method, &["models", &id], &body).await? {
        return Ok(r);
    }
    let known = state.encoders.infos();
    let name = state.searcher.endpoints().model_for(&id).await.map_err(|_| unknown(&id, &known))?;
    let m = known.iter().find(|m| m.name == name).ok_or_else(|| unknown(&id, &known))?;
    Ok(Json(model_doc(m)).into_response())
}

/// Whether model `m` matches a model search `query` (the shapes listed in the module docs).
/// Pure.
fn matches(m: &ModelInfo, query: Option<&Value>) -> Result<bool, String> {
    let Some(q) = query else { return Ok(true) };
    let Some((kind, spec)) = q.as_object().filter(|o| o.len() == 1).and_then(|o| o.iter().next()) else {
        return Err("a model search takes one query".into());
    };
    let doc = model_doc(m);
    let field_is = |field: &str, wanted: &Value| -> Result<bool, String> {
        let wanted = wanted.get("query").or_else(|| wanted.get("value")).unwrap_or(wanted);
        let have = match field {
            "_id" | "model_id" | "name" | "name.keyword" => json!(m.name),
            "model_state" | "algorithm" => doc[field].clone(),
            other => return Err(format!("`{other}` is not searched (known: name, _id, model_state, algorithm)")),
        };
        Ok(match (wanted, &have) {
            (Value::String(w), Value::String(h)) => w.eq_ignore_ascii_case(h),
            _ => false,
        })
    };
    match (kind.as_str(), spec) {
        ("match_all", _) => Ok(true),
        ("ids", s) => Ok(s["values"].as_array().is_some_and(|v| v.iter().any(|x| x == &json!(m.name)))),
        ("term" | "match", Value::Object(f)) if f.len() == 1 => {
            let (field, wanted) = f.iter().next().expect("one field");
            field_is(field, wanted)
        }
        (other, _) => Err(format!("`{other}` is not served in a model search (known: match_all, ids, term, match)")),
    }
}

/// `GET|POST /_plugins/_ml/models/_search`.
pub async fn search_models(State(state): State<AppState>, method: Method, body: Bytes) -> Result<Response, ApiError> {
    if let Some(r) = forwarded(&state, &method, &["models", "_search"], &body).await? {
        return Ok(r);
    }
    let q: Value = match passthrough::json_body(&body)? {
        Some(b) => serde_json::from_slice(&b).map_err(|e| invalid(format!("the search body is not JSON: {e}")))?,
        None => json!({}),
    };
    let count = |k: &str, d: u64| {
        q.get(k).map_or(Ok(d), |v| v.as_u64().ok_or_else(|| invalid(format!("`{k}` must be a non-negative integer"))))
    };
    let (from, size) = (count("from", 0)? as usize, count("size", 10)? as usize);
    let mut found = Vec::new();
    for m in state.encoders.infos() {
        if matches(&m, q.get("query")).map_err(invalid)? {
            found.push(m);
        }
    }
    let hits: Vec<Value> = found
        .iter()
        .skip(from)
        .take(size)
        .map(|m| json!({"_index": MODEL_INDEX, "_id": m.name, "_score": 1.0, "_source": model_doc(m)}))
        .collect();
    Ok(Json(json!({
        "took": 0,
        "timed_out": false,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {"total": {"value": found.len(), "relation": "eq"}, "max_score": if hits.is_empty() { Value::Null } else { json!(1.0) }, "hits": hits},
    }))
    .into_response())
}

/// `POST /_plugins/_ml/_predict/{algorithm}/{id}`: `text_embedding` with `text_docs`.
pub async fn predict(
    State(state): State<AppState>,
    Path((algorithm, id)): Path<(String, String)>,
    method: Method,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Some(r) = forwarded(&state, &method, &["_predict", &algorithm, &id], &body).await? {
        return Ok(r);
    }
    if !algorithm.eq_ignore_ascii_case("text_embedding") {
        return Err(invalid(format!(
            "`{algorithm}` is not served: this sidecar predicts text_embedding only (no sparse, rerank or remote models)"
        )));
    }
    let known = state.encoders.infos();
    let model = state.searcher.endpoints().model_for(&id).await.map_err(|_| unknown(&id, &known))?;
    let body: Value = match passthrough::json_body(&body)? {
        Some(b) => serde_json::from_slice(&b).map_err(|e| invalid(format!("the body is not JSON: {e}")))?,
        None => Value::Null,
    };
    let texts: Vec<String> = match body.get("text_docs").and_then(Value::as_array) {
        Some(a) if !a.is_empty() && a.len() <= MAX_INPUTS => a
            .iter()
            .map(|t| t.as_str().map(String::from).ok_or_else(|| invalid("each of `text_docs` must be a string")))
            .collect::<Result<_, _>>()?,
        Some(a) => {
            return Err(ApiError::new(
                ErrorCode::LimitExceeded,
                format!("`text_docs` holds 1 to {MAX_INPUTS} texts, not {}", a.len()),
            ))
        }
        None => return Err(invalid("`text_docs` is required: a list of texts")),
    };
    let results: Vec<Value> = embed(&state, &model, texts, TextKind::Passage)
        .await?
        .into_iter()
        .map(|v| {
            let mut out = Map::new();
            out.insert("name".into(), json!("sentence_embedding"));
            out.insert("data_type".into(), json!("FLOAT32"));
            out.insert("shape".into(), json!([v.len()]));
            out.insert("data".into(), json!(v));
            json!({"output": [Value::Object(out)]})
        })
        .collect();
    Ok(Json(json!({"inference_results": results})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Provider;

    fn minilm() -> ModelInfo {
        ModelInfo {
            name: "all-MiniLM-L6-v2".into(),
            dims: 384,
            max_seq_len: 256,
            pooling: "mean".into(),
            normalize: true,
            provider: Provider::Cpu,
        }
    }

    #[test]
    fn a_model_search_takes_the_queries_discovery_code_sends() {
        let m = minilm();
        for (q, want) in [
            (None, true),
            (Some(json!({"match_all": {}})), true),
            (Some(json!({"term": {"name": "all-MiniLM-L6-v2"}})), true),
            (Some(json!({"match": {"name": {"query": "all-minilm-l6-v2"}}})), true),
            (Some(json!({"term": {"model_state": {"value": "DEPLOYED"}}})), true),
            (Some(json!({"term": {"algorithm": "SPARSE_ENCODING"}})), false),
            (Some(json!({"ids": {"values": ["all-MiniLM-L6-v2"]}})), true),
            (Some(json!({"term": {"_id": "other"}})), false),
        ] {
            assert_eq!(matches(&m, q.as_ref()), Ok(want), "{q:?}");
        }
        assert!(matches(&m, Some(&json!({"term": {"owner": "x"}}))).unwrap_err().contains("owner"));
        assert!(matches(&m, Some(&json!({"bool": {}}))).unwrap_err().contains("bool"));
        let doc = model_doc(&m);
        assert_eq!(
            (doc["model_state"].as_str(), doc["model_config"]["embedding_dimension"].as_u64()),
            (Some("DEPLOYED"), Some(384))
        );
    }
}
