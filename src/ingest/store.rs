//! A small piece of shared state kept in the cluster: one hidden index, one document per id
//! holding a JSON `definition` as its owner wrote it. Every replica reads the whole set, at most
//! every `ttl`, so replicas behind a load balancer agree within that time; a write forgets this
//! replica's copy at once. The search and ingest pipelines the sidecar keeps for an OpenSearch
//! cluster without the neural-search plugin live in stores like this.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::{json, Value};

use super::catalog::{ensure_hidden_index, CatalogError};
use crate::engine::path::EnginePath;
use crate::engine::{EngineClient, EngineError, EngineRequest};
use crate::types::name::{DocId, IndexName};

/// Most documents one store holds.
pub const MAX_DOCS: usize = 1000;

type Cached = Option<(Instant, Arc<BTreeMap<String, Value>>)>;

/// One store.
pub struct DocStore {
    engine: Option<EngineClient>,
    index: IndexName,
    /// What a document is, in errors ("search pipeline").
    what: &'static str,
    ttl: Duration,
    cache: Mutex<Cached>,
}

impl DocStore {
    /// The store in the hidden index `index`; without an engine it is empty and cannot change.
    pub fn new(engine: Option<EngineClient>, index: &'static str, what: &'static str, ttl: Duration) -> DocStore {
        let index = IndexName::try_from(index).expect("a valid store index name");
        DocStore { engine, index, what, ttl, cache: Mutex::new(None) }
    }

    fn engine(&self) -> Result<&EngineClient, CatalogError> {
        self.engine.as_ref().ok_or_else(|| CatalogError::Unavailable(format!("this process keeps no {}s", self.what)))
    }

    fn doc_id(&self, id: &str) -> Result<DocId, CatalogError> {
        if id.starts_with('_') || id.len() > 200 {
            return Err(CatalogError::Invalid(format!(
                "{} id `{id}` may not start with `_` or be longer than 200 bytes",
                self.what
            )));
        }
        DocId::try_from(id).map_err(|e| CatalogError::Invalid(format!("{} id: {e}", self.what)))
    }

    /// Every definition by id (this replica's copy, at most `ttl` old).
    pub async fn all(&self) -> Result<Arc<BTreeMap<String, Value>>, CatalogError> {
        if let Some((at, set)) = self.cache.lock().expect("store lock").as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(set.clone());
            }
        }
        let Some(engine) = self.engine.as_ref() else { return Ok(Arc::default()) };
        let path = EnginePath::root().index(&self.index).api("_search").param("size", &MAX_DOCS.to_string()).build();
        let body = json!({"sort": ["_doc"]});
        let r = engine.send(EngineRequest::new(Method::POST, path).json(&body).idempotent(true).passthrough()).await?;
        let set: BTreeMap<String, Value> = match r.status.as_u16() {
            404 => BTreeMap::new(),
            s if (200..300).contains(&s) => {
                let v: Value = r.json()?;
                let hits = v.pointer("/hits/hits").and_then(Value::as_array).cloned().unwrap_or_default();
                hits.iter()
                    .filter_map(|h| Some((h["_id"].as_str()?.to_string(), h.pointer("/_source/definition")?.clone())))
                    .collect()
            }
            s => return Err(EngineError::from_answer(s, &r.body).into()),
        };
        let set = Arc::new(set);
        *self.cache.lock().expect("store lock") = Some((Instant::now(), set.clone()));
        Ok(set)
    }

    /// The definition stored as `id`.
    pub async fn get(&self, id: &str) -> Result<Option<Value>, CatalogError> {
        Ok(self.all().await?.get(id).cloned())
    }

    fn forget(&self) {
        *self.cache.lock().expect("store lock") = None;
    }

    /// Stores `definition` as `id`, replacing what was there.
    pub async fn put(&self, id: &str, definition: &Value) -> Result<(), CatalogError> {
        let engine = self.engine()?;
        let doc_id = self.doc_id(id)?;
        ensure_hidden_index(
            engine,
            &self.index,
            json!({"updated_ms": {"type": "long"}, "definition": {"type": "object", "enabled": false}}),
        )
        .await?;
        let path = EnginePath::root().index(&self.index).api("_doc").id(&doc_id).param("refresh", "true").build();
        let doc = json!({"updated_ms": crate::telemetry::now_ms(), "definition": definition});
        let r = engine.send(EngineRequest::new(Method::PUT, path).json(&doc).passthrough()).await?;
        self.forget();
        if !r.status.is_success() {
            return Err(EngineError::from_answer(r.status.as_u16(), &r.body).into());
        }
        Ok(())
    }

    /// Deletes `id`; whether it was there.
    pub async fn delete(&self, id: &str) -> Result<bool, CatalogError> {
        let engine = self.engine()?;
        let path =
            EnginePath::root().index(&self.index).api("_doc").id(&self.doc_id(id)?).param("refresh", "true").build();
        let r = engine.send(EngineRequest::new(Method::DELETE, path).passthrough()).await?;
        self.forget();
        match r.status.as_u16() {
            404 => Ok(false),
            s if (200..300).contains(&s) => Ok(true),
            s => Err(EngineError::from_answer(s, &r.body).into()),
        }
    }
}
