//! Elasticsearch's inference API for text embeddings, `_inference[/text_embedding]/{id}`:
//! `PUT` creates an endpoint naming a model of this sidecar, `GET` lists or shows endpoints,
//! `DELETE` removes one, `POST` embeds `input`, answered in Elasticsearch's shapes. Where the
//! cluster's own inference service works (module and licence), every call is forwarded to it
//! instead. The endpoints are [`crate::ingest::inference`]'s (cluster state).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::{invalid, ApiError};
use super::{engine_answer, passthrough, AppState};
use crate::encoder::{EncodeOptions, Input, Lane, Pooled, TextKind};
use crate::engine::path::EnginePath;
use crate::engine::EngineRequest;
use crate::error::ErrorCode;
use crate::types::name::DocId;

/// Most inputs one `POST _inference` embeds.
pub(super) const MAX_INPUTS: usize = 512;

/// The task types this sidecar serves, and why it serves no other.
fn check_task(task: &str) -> Result<(), ApiError> {
    match task {
        "text_embedding" | "_all" => Ok(()),
        "sparse_embedding" => Err(invalid("no sparse embedding model is served by this sidecar (text_embedding only)")),
        "rerank" => Err(invalid("no reranking model is served by this sidecar (text_embedding only)")),
        "completion" | "chat_completion" => {
            Err(invalid("no completion model is served by this sidecar (text_embedding only)"))
        }
        other => Err(invalid(format!("task type `{other}` is not served by this sidecar (text_embedding only)"))),
    }
}

/// Forwards the call when the cluster serves `_inference` itself.
async fn forwarded(
    state: &AppState,
    method: &Method,
    segments: &[&str],
    body: &Bytes,
) -> Result<Option<Response>, ApiError> {
    if !state.searcher.capabilities().await?.engine_serves_inference() {
        return Ok(None);
    }
    let mut path = EnginePath::root().api("_inference");
    for s in segments {
        path = path.name(&DocId::try_from(*s).map_err(|e| invalid(format!("`{s}`: {e}")))?);
    }
    Ok(Some(passthrough::forward(state, method.clone(), path, passthrough::json_body(body)?, false).await?))
}

/// `GET /_inference`, `GET /_inference/_all`: every endpoint.
pub async fn list(State(state): State<AppState>, method: Method, body: Bytes) -> Result<Response, ApiError> {
    if let Some(r) = forwarded(&state, &method, &[], &body).await? {
        return Ok(r);
    }
    all(&state).await
}

async fn all(state: &AppState) -> Result<Response, ApiError> {
    let set = state.searcher.endpoints().all().await?;
    Ok(Json(json!({"endpoints": set.values().map(|e| e.to_json()).collect::<Vec<_>>()})).into_response())
}

/// `_inference/{id}`.
pub async fn one(
    State(state): State<AppState>,
    method: Method,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Some(r) = forwarded(&state, &method, &[&id], &body).await? {
        return Ok(r);
    }
    if id == "_all" && method == Method::GET {
        return all(&state).await;
    }
    serve(&state, &method, &id, &body).await
}

/// `_inference/{task_type}/{id}`.
pub async fn two(
    State(state): State<AppState>,
    method: Method,
    Path((task, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Some(r) = forwarded(&state, &method, &[&task, &id], &body).await? {
        return Ok(r);
    }
    check_task(&task)?;
    if id == "_all" && method == Method::GET {
        return all(&state).await;
    }
    serve(&state, &method, &id, &body).await
}

fn object(body: &Bytes) -> Result<Value, ApiError> {
    match passthrough::json_body(body)? {
        Some(b) => serde_json::from_slice(&b).map_err(|e| invalid(format!("the request body: {e}"))),
        None => Err(invalid("the request needs a JSON body")),
    }
}

async fn serve(state: &AppState, method: &Method, id: &str, body: &Bytes) -> Result<Response, ApiError> {
    let endpoints = state.searcher.endpoints();
    match *method {
        Method::GET => match endpoints.all().await?.get(id) {
            Some(e) => Ok(Json(json!({"endpoints": [e.to_json()]})).into_response()),
            None => Err(ApiError::new(ErrorCode::NotFound, format!("Inference endpoint not found [{id}]"))),
        },
        Method::PUT => Ok(Json(endpoints.put(id, &object(body)?).await?.to_json()).into_response()),
        Method::DELETE => {
            endpoints.delete(id).await?;
            Ok(Json(json!({"acknowledged": true, "pipelines": [], "indexes": []})).into_response())
        }
        Method::POST => infer(state, id, &object(body)?).await,
        _ => Err(invalid(format!("{method} is not served on _inference"))),
    }
}

/// `POST _inference[/text_embedding]/{id}` `{"input": text or [texts], "input_type": ...}`.
async fn infer(state: &AppState, id: &str, body: &Value) -> Result<Response, ApiError> {
    let m = body.as_object().ok_or_else(|| invalid("the body must be a JSON object"))?;
    if let Some(k) = m.keys().find(|k| !["input", "input_type", "task_settings", "timeout"].contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown key `{k}` for a text_embedding inference (known: input, input_type, task_settings)"
        )));
    }
    let inputs: Vec<String> = match m.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str().map(String::from).ok_or_else(|| invalid("`input` must be a string or a list of strings"))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(invalid("`input` is required: a string or a list of strings")),
    };
    if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        return Err(ApiError::new(
            ErrorCode::LimitExceeded,
            format!("`input` holds 1 to {MAX_INPUTS} texts, not {}", inputs.len()),
        ));
    }
    let input_type = m
        .get("input_type")
        .or_else(|| m.get("task_settings").and_then(|t| t.get("input_type")))
        .and_then(Value::as_str)
        .unwrap_or("ingest");
    let kind = match input_type.to_ascii_lowercase().as_str() {
        "ingest" | "internal_ingest" => TextKind::Passage,
        "search" | "internal_search" => TextKind::Query,
        "classification" | "clustering" => TextKind::Raw,
        other => {
            return Err(invalid(format!(
                "input_type `{other}` is not one of ingest, search, classification, clustering"
            )))
        }
    };
    let endpoint = state.searcher.endpoints().all().await?.get(id).cloned();
    let endpoint =
        endpoint.ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("Inference endpoint not found [{id}]")))?;
    let embeddings: Vec<Value> =
        embed(state, &endpoint.model, inputs, kind).await?.into_iter().map(|v| json!({"embedding": v})).collect();
    Ok(Json(json!({"text_embedding": embeddings})).into_response())
}

/// Elasticsearch's trained-model inference, `POST /_ml/trained_models/{id}[/deployment]/_infer`
/// with `{"docs": [{"text_field": "..."}, ...]}`, where the cluster has no machine learning:
/// the text embeddings of the sidecar model `id` names (a model or an inference endpoint; the
/// query prefix, as for `query_vector_builder`) as `{"inference_results": [{"predicted_value":
/// [...]}]}`. Code that checks that a model is deployed before using its id in a
/// `query_vector_builder` (LangChain's `DenseVectorStrategy(model_id=...)`) finds the model; an
/// unknown id is a 404, as Elasticsearch answers.
pub async fn ml_infer(
    State(state): State<AppState>,
    Path(params): Path<Vec<(String, String)>>,
    uri: axum::http::Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = params.into_iter().find(|(k, _)| k == "id").map(|(_, v)| v).unwrap_or_default();
    if state.searcher.capabilities().await?.engine_serves_ml() {
        let model = DocId::try_from(id.as_str()).map_err(|e| invalid(format!("`{id}`: {e}")))?;
        let mut path = EnginePath::root().api("_ml").api("trained_models").name(&model);
        if uri.path().contains("/deployment/") {
            path = path.api("deployment");
        }
        let mut req = EngineRequest::new(Method::POST, path.api("_infer").build()).passthrough();
        if let Some(b) = passthrough::json_body(&body)? {
            req = req.json_bytes(b);
        }
        return Ok(engine_answer(state.engine.send(req).await?));
    }
    let model = state.searcher.endpoints().model_for(&id).await.map_err(|e| {
        let e = ApiError::new(ErrorCode::NotFound, format!("Could not find trained model [{id}]: {e}"));
        ApiError { status: Some(axum::http::StatusCode::NOT_FOUND), ..e }
    })?;
    let body = object(&body)?;
    let docs = body
        .get("docs")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("`docs` is required: a list of {field: text} objects"))?;
    if docs.is_empty() || docs.len() > MAX_INPUTS {
        return Err(ApiError::new(
            ErrorCode::LimitExceeded,
            format!("`docs` holds 1 to {MAX_INPUTS} documents, not {}", docs.len()),
        ));
    }
    let texts: Vec<String> = docs
        .iter()
        .map(|d| match d.as_object().map(|m| m.values().collect::<Vec<_>>()).as_deref() {
            Some([Value::String(s)]) => Ok(s.clone()),
            _ => Err(invalid("each of `docs` is an object with one text field, e.g. {\"text_field\": \"...\"}")),
        })
        .collect::<Result<_, _>>()?;
    let results: Vec<Value> = embed(&state, &model, texts, TextKind::Query)
        .await?
        .into_iter()
        .map(|v| json!({"predicted_value": v}))
        .collect();
    Ok(Json(json!({"inference_results": results})).into_response())
}

/// One vector per text from `model` (the bulk lane for more than one text).
pub(super) async fn embed(
    state: &AppState,
    model: &str,
    texts: Vec<String>,
    kind: TextKind,
) -> Result<Vec<Vec<f32>>, ApiError> {
    let lane = if texts.len() > 1 { Lane::Bulk } else { Lane::Interactive };
    let opts = EncodeOptions { kind, truncate: true, lane, ..EncodeOptions::default() };
    let out = state.encoders.get(Some(model))?.encode(texts.into_iter().map(Input::Text).collect(), opts).await?;
    out.outputs
        .into_iter()
        .map(|o| match o {
            Pooled::Vector(v) => Ok(v),
            Pooled::Tokens(_) => Err(invalid(format!("model `{model}` gives token vectors, not one per text"))),
        })
        .collect()
}
