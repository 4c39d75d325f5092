//! Changing the stored pipelines (`PUT|DELETE /_sidecar/pipeline/{name}`, `semantic-sidecar
//! pipeline`), with the checks that keep every stored vector the model's vector of its text:
//!
//! - the definition is checked like a pipeline file, and this replica must be able to serve it
//!   (its models loaded), so that a pipeline is never stored that nobody can embed for;
//! - its index is another pipeline's: refused (one owner per index);
//! - a vector field that already holds vectors may not change model in place: name a new vector
//!   field (it fills while queries stay on the old one) or reindex into a new index with a job
//!   that carries the new definition (blue/green);
//! - the index is created with the pipeline's mapping when it does not exist; an existing one gets
//!   the vector fields it lacks (a mapping update), and one whose vector field has another
//!   type or size is refused;
//! - written with optimistic concurrency: `if_seq_no`/`if_primary_term` when the caller sends
//!   them (from its GET), else the version this check read; a concurrent change gets 409.
//!
//! Also the state each pipeline reports on GET (served here or why not, its indices, how many
//! documents lack a vector).

use std::sync::Arc;

use axum::http::Method;
use serde_json::{json, Map, Value};

use super::catalog::{servable, CatalogError, Stored};
use super::mapping::{index_body_with, recorded_models, vector_models, with_vector_models, ModelShape, META_KEY};
use super::owner::Owners;
use crate::encoder::EncoderSet;
use crate::engine::path::EnginePath;
use crate::engine::{EngineClient, EngineError, EngineRequest};
use crate::types::name::{IndexName, IndexPattern};
use crate::types::pipeline::Pipeline;

/// What a `PUT` did.
#[derive(Debug)]
pub struct PutOutcome {
    pub stored: Stored,
    pub created: bool,
    /// The index did not exist and was created with the pipeline's mapping.
    pub index_created: bool,
    /// Vector fields added to an existing index's mapping.
    pub fields_added: Vec<String>,
}

/// The pipeline API's operations over one replica's catalog.
pub struct Admin<'a> {
    pub owners: &'a Owners,
    pub encoders: &'a Arc<EncoderSet>,
    pub engine: &'a EngineClient,
}

fn invalid(reason: String) -> CatalogError {
    CatalogError::Invalid(reason)
}

impl Admin<'_> {
    /// Checks and stores `body` as pipeline `name`; `expect` is the caller's version.
    pub async fn put(&self, name: &str, body: &Value, expect: Option<(u64, u64)>) -> Result<PutOutcome, CatalogError> {
        let catalog = self.owners.catalog();
        let p = Pipeline::from_json(name, body).map_err(|e| invalid(e.to_string()))?;
        servable(&p, self.encoders).map_err(|r| {
            CatalogError::Invalid(format!(
                "pipeline `{name}` cannot be served by this sidecar ({r}); put it through a sidecar that has its models loaded"
            ))
        })?;
        if let Some((o, _)) =
            catalog.snapshot().all().find(|(s, _)| s.pipeline.index == p.index && s.pipeline.name != name)
        {
            return Err(CatalogError::Conflict(format!(
                "index `{}` already belongs to pipeline `{}`; one index has one pipeline",
                p.index, o.pipeline.name
            )));
        }
        let current = catalog.fetch(name).await?;
        if let (Some(c), Some(e)) = (&current, expect) {
            if (c.seq_no, c.primary_term) != e {
                return Err(CatalogError::Conflict(format!(
                    "pipeline `{name}` is at _seq_no {} / _primary_term {}, not {} / {}: it changed since that version; GET it and retry",
                    c.seq_no, c.primary_term, e.0, e.1
                )));
            }
        }
        if let Some(c) = &current {
            self.check_model_change(&c.pipeline, &p).await?;
        }
        let (index_created, fields_added) = self.prepare_index(&p).await?;
        let version = expect.or(current.as_ref().map(|c| (c.seq_no, c.primary_term)));
        let stored = catalog.write(&p, version).await?;
        self.owners.invalidate();
        Ok(PutOutcome { stored, created: current.is_none(), index_created, fields_added })
    }

    /// Refuses a vector field whose model changes while the index holds its vectors.
    async fn check_model_change(&self, old: &Pipeline, new: &Pipeline) -> Result<(), CatalogError> {
        let was = vector_models(old);
        for (field, to) in vector_models(new) {
            if let Some(from) = was.get(&field).filter(|from| **from != to) {
                self.refuse_if_holding(new, &new.index, &field, from, &to, false).await?;
            }
        }
        Ok(())
    }

    /// The 409 for `field` of `index` changing model `from` → `to` while it holds vectors
    /// (`recorded`: the old model is the one the index's mapping records).
    async fn refuse_if_holding(
        &self,
        p: &Pipeline,
        index: &str,
        field: &str,
        from: &str,
        to: &str,
        recorded: bool,
    ) -> Result<(), CatalogError> {
        let n = self.count(index, Some(&has_vectors(p, field))).await?;
        if n == 0 {
            return Ok(());
        }
        let whose = if recorded { " (recorded in its mapping)" } else { "" };
        Err(CatalogError::Conflict(format!(
            "pipeline `{}`: `{field}` holds {n} vectors of model `{from}` in `{index}`{whose}; changing it to `{to}` in place would mix two vector spaces. \
             Name a new vector field for `{to}` (it fills as documents are written, while [search] vector stays on `{field}`), \
             or reindex into a new index with the new definition: POST /_jobs/reindex {{\"pipeline\": \"{}\", \"definition\": {{…}}, \"alias\": \"…\"}}",
            p.name, p.name
        )))
    }

    /// Documents of `index` (matching `query`); 0 when it does not exist.
    async fn count(&self, index: &str, query: Option<&Value>) -> Result<u64, CatalogError> {
        let Ok(pattern) = IndexPattern::try_from(index) else { return Ok(0) };
        let path = EnginePath::root().pattern(&pattern).api("_count").build();
        let body = query.map_or(json!({}), |q| json!({"query": q}));
        let r =
            self.engine.send(EngineRequest::new(Method::POST, path).json(&body).idempotent(true).passthrough()).await?;
        if !r.status.is_success() {
            return Ok(0);
        }
        Ok(r.json::<Value>()?["count"].as_u64().unwrap_or(0))
    }

    /// The pipeline's index body (mappings of its vector, passages and text fields).
    async fn index_body(&self, p: &Pipeline) -> Result<Value, CatalogError> {
        let info = self.engine.info().await?;
        let enc = self.encoders.get(Some(&p.model)).map_err(|e| invalid(e.to_string()))?;
        let other =
            |m: &str| self.encoders.get(Some(m)).ok().map(|e| (e.manifest().output_dims(), e.manifest().normalize));
        index_body_with(&info, p, ModelShape::of(enc.manifest()), &other)
            .map_err(|e| invalid(format!("pipeline `{}`: {e}", p.name)))
    }

    /// Creates the index when nothing of that name exists (its mapping recording which model
    /// writes each vector field); else refuses a recorded model that differs while the field holds
    /// vectors, adds the vector fields the mapping lacks, refuses one mapped otherwise, and
    /// records the models.
    async fn prepare_index(&self, p: &Pipeline) -> Result<(bool, Vec<String>), CatalogError> {
        let body = with_vector_models(self.index_body(p).await?, p);
        let r = self.owners.resolve(self.engine, &p.index).await?;
        let name = IndexName::try_from(p.index.as_str()).map_err(|e| invalid(e.to_string()))?;
        if r.indices.is_empty() {
            let at = EnginePath::root().index(&name).build();
            let resp = self.engine.send(EngineRequest::new(Method::PUT, at).json(&body).passthrough()).await?;
            if resp.status.is_success() {
                self.owners.invalidate();
                return Ok((true, Vec::new()));
            }
            if !String::from_utf8_lossy(&resp.body).contains("already_exists") {
                return Err(EngineError::from_answer(resp.status.as_u16(), &resp.body).into());
            }
        }
        let m: Value = self.engine.get_json(&EnginePath::root().index(&name).api("_mapping").build()).await?;
        self.check_recorded_models(p, &m).await?;
        let added = self.add_vector_fields(p, &name, &body, &m).await?;
        self.record_models(p, &name, &m).await?;
        Ok((false, added))
    }

    /// Refuses a vector field whose mapping records another model while it holds vectors (also
    /// when the pipeline was deleted and put again).
    async fn check_recorded_models(&self, p: &Pipeline, mapping: &Value) -> Result<(), CatalogError> {
        let want = vector_models(p);
        for (index, recorded) in recorded_models(mapping) {
            for (field, to) in &want {
                if let Some(from) = recorded.get(field).filter(|from| *from != to) {
                    self.refuse_if_holding(p, &index, field, from, to, true).await?;
                }
            }
        }
        Ok(())
    }

    /// Adds the vector (and passages) fields the existing mapping lacks; refuses one mapped with
    /// another type or size. Returns the fields added.
    async fn add_vector_fields(
        &self,
        p: &Pipeline,
        name: &IndexName,
        body: &Value,
        mapping: &Value,
    ) -> Result<Vec<String>, CatalogError> {
        let wanted = body.pointer("/mappings/properties").and_then(Value::as_object).cloned().unwrap_or_default();
        let mut vector_fields: Vec<String> = p.fields.iter().map(|f| f.vector.clone()).collect();
        vector_fields.extend(p.chunking.as_ref().map(|c| c.passages_field.clone()));
        let mut missing = Map::new();
        for (index, def) in mapping.as_object().into_iter().flatten() {
            let props = def.pointer("/mappings/properties").and_then(Value::as_object);
            for f in &vector_fields {
                match (props.and_then(|p| p.get(f)), wanted.get(f)) {
                    (None, Some(w)) => {
                        missing.insert(f.clone(), w.clone());
                    }
                    (Some(have), Some(w)) => check_field(index, f, have, w)?,
                    _ => {}
                }
            }
        }
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        let added: Vec<String> = missing.keys().cloned().collect();
        let path = EnginePath::root().index(name).api("_mapping").build();
        let resp = self
            .engine
            .send(EngineRequest::new(Method::PUT, path).json(&json!({"properties": missing})).passthrough())
            .await?;
        if !resp.status.is_success() {
            let (_, reason) = crate::engine::engine_reason(&resp.body);
            return Err(invalid(format!(
                "index `{}` exists and its mapping cannot take the vector fields {added:?} ({reason}); give the pipeline a new index (it is created with the mapping), or reindex into one with POST /_jobs/reindex",
                p.index
            )));
        }
        Ok(added)
    }

    /// Records in the mapping's `_meta` (keeping its other keys) which model writes each vector
    /// field, when it does not say so already.
    async fn record_models(&self, p: &Pipeline, name: &IndexName, mapping: &Value) -> Result<(), CatalogError> {
        let want = vector_models(p);
        let recorded = recorded_models(mapping);
        if !recorded.is_empty() && recorded.values().all(|r| want.iter().all(|(f, m)| r.get(f) == Some(m))) {
            return Ok(());
        }
        let mut meta = mapping
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(|d| d.pointer("/mappings/_meta"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut models: Map<String, Value> = meta
            .get(META_KEY)
            .and_then(|v| v.get("vector_models"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        models.extend(want.into_iter().map(|(f, m)| (f, Value::from(m))));
        let ours = meta.entry(META_KEY).or_insert_with(|| json!({}));
        if !ours.is_object() {
            *ours = json!({});
        }
        // other records under the key (a semantic_text field's) stay
        ours["vector_models"] = Value::Object(models);
        let path = EnginePath::root().index(name).api("_mapping").build();
        let resp =
            self.engine.send(EngineRequest::new(Method::PUT, path).json(&json!({"_meta": meta})).passthrough()).await?;
        if !resp.status.is_success() {
            tracing::warn!(index = %name, answer = %String::from_utf8_lossy(&resp.body), "could not record the vector models in the mapping's _meta");
        }
        Ok(())
    }

    /// A GET view of one pipeline: its definition, version, whether this replica serves it, its
    /// indices, and how many documents lack the live vector.
    pub async fn view(&self, s: &Stored, unavailable: Option<&str>) -> Result<Value, CatalogError> {
        let p = &s.pipeline;
        let live = &p.fields[p.live_field()].vector;
        let r = self.owners.resolve(self.engine, &p.index).await?;
        let documents = self.count(&p.index, None).await?;
        let without = self.count(&p.index, Some(&json!({"bool": {"must_not": {"exists": {"field": live}}}}))).await?;
        let models: Vec<Value> =
            p.models().iter().map(|m| json!({"name": m, "loaded": self.encoders.get(Some(m)).is_ok()})).collect();
        Ok(json!({
            "definition": serde_json::to_value(p.as_ref()).unwrap_or(Value::Null),
            "_seq_no": s.seq_no,
            "_primary_term": s.primary_term,
            "served": unavailable.is_none(),
            "reason": unavailable,
            "state": {
                "index": p.index,
                "indices": r.indices,
                "write_index": r.write.as_ref().map(|w| w.index().to_string()),
                "models": models,
                "vector_field": live,
                "documents": documents,
                "documents_without_vector": without,
            },
        }))
    }
}

/// Documents that hold a vector in `field` (a nested query for `{passages_field}.vector`).
fn has_vectors(p: &Pipeline, field: &str) -> Value {
    match p.chunking.as_ref().filter(|c| field == format!("{}.vector", c.passages_field)) {
        Some(c) => json!({"nested": {"path": c.passages_field, "query": {"exists": {"field": field}}}}),
        None => json!({"exists": {"field": field}}),
    }
}

/// An existing vector field's mapping against the one the pipeline needs: same type and size.
fn check_field(index: &str, field: &str, have: &Value, want: &Value) -> Result<(), CatalogError> {
    let kind = |v: &Value| v.get("type").and_then(Value::as_str).map(String::from);
    let dims = |v: &Value| v.get("dims").or_else(|| v.get("dimension")).and_then(Value::as_u64);
    if kind(have) != kind(want) || (dims(have).is_some() && dims(have) != dims(want)) {
        return Err(invalid(format!(
            "index `{index}` maps `{field}` as {} {}, but the pipeline's model needs {} {}: give the pipeline a new vector field or a new index (reindex with POST /_jobs/reindex)",
            kind(have).unwrap_or_else(|| "an object".into()),
            dims(have).map(|d| format!("of {d} dims")).unwrap_or_default(),
            kind(want).unwrap_or_default(),
            dims(want).map(|d| format!("of {d} dims")).unwrap_or_default()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_field_of_another_type_or_size_is_refused_by_name() {
        let want = json!({"type": "dense_vector", "dims": 384});
        assert!(check_field("i", "v", &json!({"type": "dense_vector", "dims": 384, "index": true}), &want).is_ok());
        let e = check_field("i", "v", &json!({"type": "dense_vector", "dims": 768}), &want).unwrap_err().to_string();
        assert!(e.contains("`v`") && e.contains("768") && e.contains("384"), "{e}");
        let e = check_field("i", "v", &json!({"type": "float"}), &want).unwrap_err().to_string();
        assert!(e.contains("float"), "{e}");
        let os = json!({"type": "knn_vector", "dimension": 384});
        assert!(check_field("i", "v", &json!({"type": "knn_vector", "dimension": 384}), &os).is_ok());
    }
}
