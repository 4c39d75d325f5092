//! Elastic's `semantic_text` mappings through the sidecar on an Elasticsearch cluster that
//! cannot serve them (no inference service: Basic licence, or the module missing): the index
//! APIs that carry a mapping are intercepted before they are forwarded.
//!
//! - `PUT /{index}` with a `semantic_text` field: the index is created with the engine mapping
//!   of [`crate::ingest::semantic`] and the pipeline behind the field is stored (the index is
//!   deleted again when the pipeline cannot be);
//! - `PUT /{index}/_mapping` adding one to an existing index: the same, except that `_source`
//!   keeps the vector and the passages (an index's `_source` excludes are fixed at creation);
//! - `GET /{index}`, `GET /{index}/_mapping`: the answer shows `semantic_text` as Elasticsearch
//!   does, without the sidecar's fields;
//! - `DELETE /{index}`: the pipeline behind its `semantic_text` field goes with it;
//! - index and component templates naming `semantic_text`: refused (400), since an index made
//!   from a template would have no pipeline.
//!
//! One `semantic_text` field per index is served. A cluster whose own inference service works
//! gets every request unchanged.

use axum::body::Bytes;
use axum::http::Method;
use axum::response::Response;
use serde_json::Value;

use super::error::{invalid, ApiError};
use super::{engine_answer, AppState};
use crate::engine::dialect::Dialect;
use crate::engine::path::{EnginePath, QueryString};
use crate::engine::EngineRequest;
use crate::ingest::inference::chunking_settings;
use crate::ingest::mapping::{index_body_with, ModelShape};
use crate::ingest::semantic::{
    app_view_of_answer, engine_mappings, mentions_semantic_text, pipeline_for, pipeline_name, record, semantic_fields,
    vector_field, SemanticMapping,
};
use crate::types::name::IndexName;
use crate::types::pipeline::Pipeline;

/// Serves the request when it is one of the module's; `None`: forward it as it is.
pub async fn intercept(
    state: &AppState,
    method: &Method,
    segments: &[String],
    path: &EnginePath,
    q: &QueryString,
    body: Option<&Bytes>,
) -> Result<Option<Response>, ApiError> {
    let caps = state.searcher.capabilities().await?;
    if caps.info.dialect != Dialect::Elasticsearch || caps.engine_serves_inference() {
        return Ok(None);
    }
    let parsed = || body.and_then(|b| serde_json::from_slice::<Value>(b).ok());
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (method.clone(), seg.as_slice()) {
        (Method::PUT, [index]) if !index.starts_with('_') => match parsed() {
            Some(b) if b.get("mappings").is_some_and(mentions_semantic_text) => {
                create_index(state, index, q, b).await.map(Some)
            }
            _ => Ok(None),
        },
        (Method::PUT | Method::POST, [index, "_mapping" | "_mappings"]) if !index.starts_with('_') => match parsed() {
            Some(b) if mentions_semantic_text(&b) => put_mapping(state, index, q, b).await.map(Some),
            _ => Ok(None),
        },
        (Method::PUT | Method::POST, ["_index_template" | "_component_template" | "_template", name]) => {
            match parsed() {
                Some(b) if mentions_semantic_text(&b) => Err(invalid(format!(
                    "template `{name}` maps a semantic_text field: this cluster has no inference service and the sidecar serves semantic_text on indices created through it (PUT /{{index}} with the field in its mappings), not from templates"
                ))),
                _ => Ok(None),
            }
        }
        (Method::GET, [index]) if !index.starts_with('_') => Ok(Some(get_app_view(state, path, q).await?)),
        (Method::GET, [.., "_mapping" | "_mappings"]) => Ok(Some(get_app_view(state, path, q).await?)),
        (Method::DELETE, [index]) if !index.starts_with('_') => delete_index(state, index, q).await.map(Some),
        _ => Ok(None),
    }
}

/// The pipeline behind `m` on `index`: the model its `inference_id` names (default: the
/// sidecar's default model), the same one for `search_inference_id`, and the chunking of the
/// mapping, else of the endpoint, else Elastic's default.
async fn plan(state: &AppState, index: &str, m: &SemanticMapping) -> Result<Pipeline, ApiError> {
    let endpoints = state.searcher.endpoints();
    let model = match &m.inference_id {
        Some(id) => {
            endpoints.model_for(id).await.map_err(|e| invalid(format!("semantic_text field `{}`: {e}", m.field)))?
        }
        None => state.encoders.get(None)?.manifest().name.clone(),
    };
    if let Some(s) = &m.search_inference_id {
        let search_model = endpoints.model_for(s).await.map_err(|e| invalid(format!("search_inference_id: {e}")))?;
        if search_model != model {
            return Err(invalid(format!(
                "semantic_text field `{}`: search_inference_id `{s}` embeds with `{search_model}`, inference_id with `{model}`; the sidecar searches a field with the model that wrote it",
                m.field
            )));
        }
    }
    let inference_id = m.inference_id.clone().unwrap_or_else(|| model.clone());
    let endpoint_chunking = endpoints.all().await?.get(&inference_id).map(|e| e.chunking_settings.clone());
    let given = m.chunking_settings.clone().or(endpoint_chunking.filter(|c| !c.is_null()));
    let chunking = chunking_settings(given.as_ref())?;
    let max_seq_len = state.encoders.get(Some(&model))?.manifest().max_seq_len;
    pipeline_for(index, m, &inference_id, &model, &chunking, max_seq_len).map_err(invalid)
}

/// The one `semantic_text` field of `mappings` (a second is refused).
fn one_field(mappings: &Value) -> Result<SemanticMapping, ApiError> {
    let mut fields = semantic_fields(mappings).map_err(invalid)?;
    if fields.len() > 1 {
        let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
        return Err(invalid(format!(
            "the sidecar serves one semantic_text field per index, the mapping has {names:?}: map one, and copy_to it from the other text fields"
        )));
    }
    fields.pop().ok_or_else(|| invalid("semantic_text must be the type of a top-level field"))
}

/// The engine `mappings` for the app's, with the pipeline `p` behind its field.
async fn engine_side(state: &AppState, app: &Value, p: &Pipeline, with_source: bool) -> Result<Value, ApiError> {
    let info = state.engine.info().await?;
    let enc = state.encoders.get(Some(&p.model))?;
    let shape = ModelShape::of(enc.manifest());
    let body = index_body_with(&info, p, shape, &|_| None).map_err(|e| invalid(e.to_string()))?;
    let mut theirs = body["mappings"].clone();
    if !with_source {
        if let Some(m) = theirs.as_object_mut() {
            m.remove("_source");
        }
    }
    let field = &p.semantic_text.as_ref().expect("a semantic_text pipeline").field;
    let similarity = theirs["properties"][vector_field(field)]["similarity"].as_str().unwrap_or("cosine").to_string();
    let rec = record(p, enc.manifest().output_dims(), &similarity);
    Ok(engine_mappings(app, field, &theirs, rec))
}

/// Stores `p` (the index exists with its mapping).
async fn store(state: &AppState, p: &Pipeline) -> Result<(), ApiError> {
    let def = serde_json::to_value(p).map_err(|e| invalid(e.to_string()))?;
    super::pipelines::admin(state).put(&p.name, &def, None).await?;
    Ok(())
}

/// `PUT /{index}` with a `semantic_text` field.
async fn create_index(state: &AppState, index: &str, q: &QueryString, mut body: Value) -> Result<Response, ApiError> {
    let name = IndexName::try_from(index)?;
    let m = one_field(&body["mappings"])?;
    let p = plan(state, index, &m).await?;
    body["mappings"] = engine_side(state, &body["mappings"], &p, true).await?;
    let at = EnginePath::root().index(&name);
    let resp = state
        .engine
        .send(EngineRequest::new(Method::PUT, at.clone().query(q).build()).json(&body).passthrough())
        .await?;
    state.ingestor.owners().invalidate();
    if !resp.status.is_success() {
        return Ok(engine_answer(resp));
    }
    if let Err(e) = store(state, &p).await {
        let undo = state.engine.send(EngineRequest::new(Method::DELETE, at.build()).passthrough()).await;
        if !undo.is_ok_and(|r| r.status.is_success()) {
            tracing::warn!(index, "could not delete the index whose semantic_text pipeline was refused");
        }
        state.ingestor.owners().invalidate();
        return Err(e);
    }
    Ok(engine_answer(resp))
}

/// `PUT /{index}/_mapping` adding (or repeating) a `semantic_text` field.
async fn put_mapping(state: &AppState, index: &str, q: &QueryString, body: Value) -> Result<Response, ApiError> {
    let name = IndexName::try_from(index)
        .map_err(|e| invalid(format!("a mapping with a semantic_text field is put on one index, by its name: {e}")))?;
    let m = one_field(&body)?;
    let p = plan(state, index, &m).await?;
    let snapshot = state.catalog.snapshot();
    if let Some((other, _)) = snapshot.all().find(|(s, _)| s.pipeline.index == index && s.pipeline.name != p.name) {
        return Err(invalid(format!(
            "index `{index}` is pipeline `{}`'s; a semantic_text field would need a pipeline of its own (one pipeline per index)",
            other.pipeline.name
        )));
    }
    if let Some(have) = snapshot.named(&pipeline_name(index)).and_then(|s| s.pipeline.semantic_text.clone()) {
        if have.field != m.field {
            return Err(invalid(format!(
                "index `{index}` has semantic_text field `{}`; the sidecar serves one per index",
                have.field
            )));
        }
    }
    let mapping = engine_side(state, &body, &p, false).await?;
    let path = EnginePath::root().index(&name).api("_mapping").query(q).build();
    let resp = state.engine.send(EngineRequest::new(Method::PUT, path).json(&mapping).passthrough()).await?;
    if !resp.status.is_success() {
        return Ok(engine_answer(resp));
    }
    store(state, &p).await?;
    Ok(engine_answer(resp))
}

/// A `GET` of indices or mappings, the `semantic_text` fields shown as the app mapped them.
async fn get_app_view(state: &AppState, path: &EnginePath, q: &QueryString) -> Result<Response, ApiError> {
    let req = EngineRequest::new(Method::GET, path.clone().query(q).build()).passthrough().idempotent(true);
    let resp = state.engine.send(req).await?;
    let recorded = resp.status.is_success() && resp.body.windows(13).any(|w| w == b"semantic_text");
    if !recorded {
        return Ok(engine_answer(resp));
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(&resp.body) else { return Ok(engine_answer(resp)) };
    app_view_of_answer(&mut v);
    Ok(axum::response::IntoResponse::into_response(axum::Json(v)))
}

/// `DELETE /{index}` (one concrete name); the pipeline behind its `semantic_text` field goes
/// with it.
async fn delete_index(state: &AppState, index: &str, q: &QueryString) -> Result<Response, ApiError> {
    let name = IndexName::try_from(index)?;
    let path = EnginePath::root().index(&name).query(q).build();
    let resp = state.engine.send(EngineRequest::new(Method::DELETE, path).passthrough()).await?;
    state.ingestor.owners().invalidate();
    if resp.status.is_success() {
        let snapshot = state.catalog.snapshot();
        for (s, _) in snapshot.all() {
            if s.pipeline.semantic_text.is_some() && s.pipeline.index == index {
                if let Err(e) = state.catalog.delete(&s.pipeline.name, None).await {
                    tracing::warn!(pipeline = %s.pipeline.name, error = %e, "the semantic_text pipeline of a deleted index stays");
                }
            }
        }
        state.ingestor.owners().invalidate();
    }
    Ok(engine_answer(resp))
}
