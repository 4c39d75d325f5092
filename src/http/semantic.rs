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
//! - `PUT _index_template/{name}` and `PUT _component_template/{name}` with a `semantic_text`
//!   field: stored with the engine mapping (the field's settings recorded in its `_meta`);
//!   `GET` of templates and `POST _index_template/_simulate*` show `semantic_text` again;
//! - an index such a template makes, by `PUT /{index}` or by a first write (`_bulk`, `_doc`,
//!   `_create`, `_reindex`): the sidecar asks the engine which mapping the index will get
//!   (`_index_template/_simulate_index`), creates it and stores the pipeline behind the field
//!   before the write is routed ([`adopt`]);
//! - legacy templates (`_template`) naming `semantic_text`: refused (400), pointing to
//!   `_index_template`.
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
    app_view, app_view_of_answer, engine_mappings, mentions_semantic_text, pipeline_for, pipeline_name, record,
    records_semantic_text, semantic_fields, vector_field, SemanticMapping,
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
            _ => create_from_template(state, index, q, body).await,
        },
        (Method::PUT | Method::POST, [index, "_mapping" | "_mappings"]) if !index.starts_with('_') => match parsed() {
            Some(b) if mentions_semantic_text(&b) => put_mapping(state, index, q, b).await.map(Some),
            _ => Ok(None),
        },
        (Method::PUT | Method::POST, ["_index_template" | "_component_template", name])
            if !name.starts_with('_') =>
        {
            match parsed() {
                Some(b) if mentions_semantic_text(&b) => put_template(state, method, name, path, q, b).await.map(Some),
                _ => Ok(None),
            }
        }
        (Method::PUT | Method::POST, ["_template", name]) => match parsed() {
            Some(b) if mentions_semantic_text(&b) => Err(invalid(format!(
                "legacy template `{name}` maps a semantic_text field: the sidecar serves semantic_text in composable templates; put it as PUT _index_template/{name} (index_patterns, template.mappings)"
            ))),
            _ => Ok(None),
        },
        (Method::GET, [index]) if !index.starts_with('_') => Ok(Some(get_app_view(state, method, path, q, None).await?)),
        (Method::GET, [.., "_mapping" | "_mappings"]) | (Method::GET, ["_index_template" | "_component_template", ..]) => {
            Ok(Some(get_app_view(state, method, path, q, None).await?))
        }
        (Method::POST, ["_index_template", "_simulate_index" | "_simulate", ..]) => {
            Ok(Some(get_app_view(state, method, path, q, body).await?))
        }
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
    let at = EnginePath::root().index(&name).query(q).build();
    let resp = state.engine.send(EngineRequest::new(Method::PUT, at).json(&body).passthrough()).await?;
    state.ingestor.owners().invalidate();
    if !resp.status.is_success() {
        return Ok(engine_answer(resp));
    }
    store_or_undo(state, &name, &p).await?;
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

/// `PUT _index_template/{name}` or `PUT _component_template/{name}` whose `template.mappings`
/// has a `semantic_text` field: checked as an index's would be (the model, the chunking),
/// stored with the engine mapping and the field's record.
async fn put_template(
    state: &AppState,
    method: &Method,
    name: &str,
    path: &EnginePath,
    q: &QueryString,
    mut body: Value,
) -> Result<Response, ApiError> {
    let mappings = body.pointer("/template/mappings").filter(|m| mentions_semantic_text(m)).cloned().ok_or_else(|| {
        invalid(format!(
            "template `{name}`: a semantic_text field is served in `template.mappings.properties`, not elsewhere in a template"
        ))
    })?;
    let m = one_field(&mappings)?;
    // the template's own pipeline is never stored: each index it makes gets one named after it
    let p = plan(state, TEMPLATE_PLACEHOLDER, &m).await?;
    body["template"]["mappings"] = engine_side(state, &mappings, &p, true).await?;
    let req = EngineRequest::new(method.clone(), path.clone().query(q).build()).json(&body).passthrough();
    Ok(engine_answer(state.engine.send(req).await?))
}

/// The index name a template's field is planned for (checks only; never stored).
const TEMPLATE_PLACEHOLDER: &str = "semantic-text-template";

/// The pipeline an index named `index` needs when the templates would give it a recorded
/// `semantic_text` field; `None` when no template would.
async fn template_pipeline(state: &AppState, index: &IndexName) -> Result<Option<Pipeline>, ApiError> {
    let path = EnginePath::root().api("_index_template").api("_simulate_index").index(index).build();
    let r = state.engine.send(EngineRequest::new(Method::POST, path).passthrough().idempotent(true)).await?;
    if !r.status.is_success() {
        return Ok(None);
    }
    let simulated: Value = r.json()?;
    let Some(mappings) = simulated.pointer("/template/mappings").filter(|m| records_semantic_text(m)) else {
        return Ok(None);
    };
    let m = one_field(&app_view(mappings))
        .map_err(|e| invalid(format!("the templates matching index `{index}` map semantic_text: {}", e.reason)))?;
    plan(state, index.as_str(), &m).await.map(Some)
}

/// `PUT /{index}` without a `semantic_text` field of its own: when a template gives the index
/// one, the index is created as the template says and the pipeline behind the field stored.
async fn create_from_template(
    state: &AppState,
    index: &str,
    q: &QueryString,
    body: Option<&Bytes>,
) -> Result<Option<Response>, ApiError> {
    let Ok(name) = IndexName::try_from(index) else { return Ok(None) };
    let Some(p) = template_pipeline(state, &name).await? else { return Ok(None) };
    let mut req = EngineRequest::new(Method::PUT, EnginePath::root().index(&name).query(q).build()).passthrough();
    // the passthrough checked it: a JSON object
    if let Some(b) = body {
        req = req.json_bytes(b.clone());
    }
    let resp = state.engine.send(req).await?;
    state.ingestor.owners().invalidate();
    if !resp.status.is_success() {
        return Ok(Some(engine_answer(resp)));
    }
    store_or_undo(state, &name, &p).await?;
    Ok(Some(engine_answer(resp)))
}

/// Before a write to names that may not exist yet: each one a template would give a
/// `semantic_text` field is created with its pipeline, so that the write is embedded (the
/// engine would otherwise create it on the write, without vectors). Names that exist, that a
/// pipeline owns, or that are not one concrete index name are left as they are.
pub async fn adopt<'a>(state: &AppState, names: impl IntoIterator<Item = &'a str>) -> Result<(), ApiError> {
    // only one concrete index name can be made by a write; the rest is the engine's to refuse
    let snapshot = state.catalog.snapshot();
    let names: std::collections::BTreeMap<&str, IndexName> = names
        .into_iter()
        .filter(|n| !snapshot.all().any(|(s, _)| s.pipeline.index == *n))
        .filter_map(|n| IndexName::try_from(n).ok().map(|i| (n, i)))
        .collect();
    if names.is_empty() || !state.catalog.is_stored() {
        return Ok(());
    }
    let caps = state.searcher.capabilities().await?;
    if caps.info.dialect != Dialect::Elasticsearch || caps.engine_serves_inference() {
        return Ok(());
    }
    for (n, name) in names {
        let r = state.ingestor.owners().resolve(&state.engine, n).await?;
        if r.write.is_some() || !r.indices.is_empty() {
            continue;
        }
        let Some(p) = template_pipeline(state, &name).await? else { continue };
        let path = EnginePath::root().index(&name).build();
        let resp = state.engine.send(EngineRequest::new(Method::PUT, path).passthrough()).await?;
        state.ingestor.owners().invalidate();
        // another replica's write may have created it a moment ago: its pipeline is stored again
        let exists = resp.body.windows(32).any(|w| w == b"resource_already_exists_exception");
        if !resp.status.is_success() && !exists {
            return Ok(());
        }
        if exists {
            store(state, &p).await?;
        } else {
            store_or_undo(state, &name, &p).await?;
        }
        tracing::info!(index = n, pipeline = %p.name, "index made from a semantic_text template, with its pipeline");
    }
    Ok(())
}

/// Stores `p` for the index just created; deletes the index again when `p` cannot be stored.
async fn store_or_undo(state: &AppState, index: &IndexName, p: &Pipeline) -> Result<(), ApiError> {
    let Err(e) = store(state, p).await else { return Ok(()) };
    let at = EnginePath::root().index(index).build();
    let undo = state.engine.send(EngineRequest::new(Method::DELETE, at).passthrough()).await;
    if !undo.is_ok_and(|r| r.status.is_success()) {
        tracing::warn!(index = index.as_str(), "could not delete the index whose semantic_text pipeline was refused");
    }
    state.ingestor.owners().invalidate();
    Err(e)
}

/// A read of indices, mappings or templates (a `GET`, or a template simulation), the
/// `semantic_text` fields shown as the app mapped them.
async fn get_app_view(
    state: &AppState,
    method: &Method,
    path: &EnginePath,
    q: &QueryString,
    body: Option<&Bytes>,
) -> Result<Response, ApiError> {
    let mut req = EngineRequest::new(method.clone(), path.clone().query(q).build()).passthrough().idempotent(true);
    // the passthrough checked it: a JSON object
    if let Some(b) = body {
        req = req.json_bytes(b.clone());
    }
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
