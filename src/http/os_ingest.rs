//! The sidecar's part of OpenSearch ingest pipelines on writes (`_bulk`, `_doc`, `_create`,
//! `_update`): a document whose pipeline (the item's `pipeline`, the URL's `?pipeline=`, else
//! the index's `index.default_pipeline`, then its `index.final_pipeline`) is one the sidecar
//! keeps ([`super::kept_pipelines`]) gets its `text_chunking` and `text_embedding` steps run
//! here ([`crate::ingest::os_pipeline`]), every document's texts of a step in one encoder call
//! per model; the engine then runs the rest of the pipeline, which it keeps under the same name.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::error::{invalid, ApiError};
use super::AppState;
use crate::encoder::TextKind;
use crate::engine::path::QueryString;
use crate::ingest::bulk::{Action, BulkItem};
use crate::ingest::os_pipeline::{chunk_doc, embed_walk, parse_pipeline, IngestPipeline, Step, Walk};

/// Runs each document's steps, step by step across the documents: a chunking step in place,
/// an embedding step's texts gathered from every document, embedded per model, put back.
async fn run_plans(state: &AppState, mut work: Vec<(&mut Map<String, Value>, Vec<&Step>)>) -> Result<(), ApiError> {
    let rounds = work.iter().map(|w| w.1.len()).max().unwrap_or(0);
    let mut models: BTreeMap<String, String> = BTreeMap::new();
    for r in 0..rounds {
        let mut texts: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // per document: the model and the range of its texts
        let mut slots: Vec<Option<(String, usize, usize)>> = Vec::with_capacity(work.len());
        for (doc, steps) in work.iter_mut() {
            match steps.get(r) {
                Some(Step::Chunk { field_map, algorithm, max_chunks, ignore_missing }) => {
                    chunk_doc(doc, field_map, algorithm, *max_chunks, *ignore_missing);
                    slots.push(None);
                }
                Some(Step::Embed { model_id, field_map }) => {
                    let model = match models.get(model_id) {
                        Some(m) => m.clone(),
                        None => {
                            let m = state
                                .searcher
                                .endpoints()
                                .model_for(model_id)
                                .await
                                .map_err(|e| invalid(format!("text_embedding: {e}")))?;
                            models.insert(model_id.clone(), m.clone());
                            m
                        }
                    };
                    let mut found = Vec::new();
                    embed_walk(doc, field_map, &mut Walk::Gather(&mut found));
                    let list = texts.entry(model.clone()).or_default();
                    slots.push(Some((model, list.len(), found.len())));
                    list.extend(found);
                }
                None => slots.push(None),
            }
        }
        let limit = state.settings.encoder.max_inputs_per_request;
        let mut vectors: BTreeMap<String, Vec<Vec<f32>>> = BTreeMap::new();
        for (model, list) in texts {
            if list.len() > limit {
                return Err(invalid(format!(
                    "the request has {} texts to embed with `{model}`, more than {limit} (encoder.max_inputs_per_request): send fewer documents per request",
                    list.len()
                )));
            }
            let v = if list.is_empty() {
                Vec::new()
            } else {
                super::inference::embed(state, &model, list, TextKind::Passage).await?
            };
            vectors.insert(model, v);
        }
        for ((doc, steps), slot) in work.iter_mut().zip(slots) {
            let (Some(Step::Embed { field_map, .. }), Some((model, start, len))) = (steps.get(r), slot) else {
                continue;
            };
            let mut it = vectors[&model][start..start + len].iter().cloned();
            embed_walk(doc, field_map, &mut Walk::Put(&mut it));
        }
    }
    Ok(())
}

/// Runs `steps` on every document (`_simulate`).
pub(super) async fn run_steps(
    state: &AppState,
    steps: &[Step],
    docs: &mut [&mut Map<String, Value>],
) -> Result<(), ApiError> {
    let work = docs.iter_mut().map(|d| (&mut **d, steps.iter().collect())).collect();
    run_plans(state, work).await
}

/// The kept pipelines a write to `index` goes through: the one named (`explicit`, or else the
/// index's default; `_none` for none), then the index's final pipeline.
async fn pipelines_for(
    state: &AppState,
    kept: &BTreeMap<String, IngestPipeline>,
    index: &str,
    explicit: Option<&str>,
) -> Result<Vec<String>, ApiError> {
    let (default, last) = state.searcher.write_pipelines(index).await?;
    let first = explicit.map(String::from).or(default).filter(|n| n != "_none");
    Ok([first, last].into_iter().flatten().filter(|n| kept.contains_key(n)).collect())
}

/// The kept ingest pipelines, parsed; empty where the sidecar keeps none (or the cluster has
/// the plugin).
async fn kept(state: &AppState) -> Result<BTreeMap<String, IngestPipeline>, ApiError> {
    if !state.searcher.capabilities().await?.sidecar_runs_neural() {
        return Ok(BTreeMap::new());
    }
    let all = state.searcher.ingest_pipelines().all().await?;
    // each was checked when it was put; one that no longer parses is the engine's to refuse
    Ok(all.iter().filter_map(|(k, v)| Some((k.clone(), parse_pipeline(v).ok()??))).collect())
}

/// Runs the kept pipelines' steps on a bulk request's documents; whether any was changed.
pub(super) async fn run_bulk(
    state: &AppState,
    items: &mut [BulkItem],
    default_index: Option<&str>,
    q: &QueryString,
) -> Result<bool, ApiError> {
    let kept = kept(state).await?;
    if kept.is_empty() {
        return Ok(false);
    }
    let mut names: Vec<Vec<String>> = Vec::with_capacity(items.len());
    for item in items.iter() {
        let Some(index) = item.index(default_index).filter(|_| item.doc().is_some()) else {
            names.push(Vec::new());
            continue;
        };
        // an update takes no pipeline of its own, only the index's
        let explicit = match item.action {
            Action::Update => None,
            _ => item.meta.get("pipeline").and_then(Value::as_str).or(q.get("pipeline")),
        };
        names.push(pipelines_for(state, &kept, index, explicit).await?);
    }
    let work: Vec<(&mut Map<String, Value>, Vec<&Step>)> = items
        .iter_mut()
        .zip(&names)
        .filter(|(_, n)| !n.is_empty())
        .filter_map(|(item, n)| {
            let steps = n.iter().flat_map(|name| kept[name].steps.iter()).collect();
            Some((item.doc_mut()?, steps))
        })
        .collect();
    if work.is_empty() {
        return Ok(false);
    }
    run_plans(state, work).await?;
    Ok(true)
}

/// [`run_bulk`] for a one-document write (`_doc`, `_create`: the document; `_update`: the
/// request, whose partial `doc` is processed).
pub(super) async fn run_one(
    state: &AppState,
    index: &str,
    action: Action,
    q: &QueryString,
    body: &mut Value,
) -> Result<bool, ApiError> {
    let mut items = [BulkItem { action, meta: Map::new(), source: Some(body.take()), line: 1 }];
    let changed = run_bulk(state, &mut items, Some(index), q).await;
    *body = items[0].source.take().unwrap_or_default();
    changed
}
