//! Which pipeline index a write's index name lands in when it is not a pipeline index itself:
//! an alias (its write index) or date math (`<docs-{now/d}>`), resolved on the engine with
//! `GET /{name}/_alias` and cached for a few seconds, so that no write reaches a pipeline index
//! without its vectors.
//!
//! Owns the cache only; the engine answers, [`super::writer::Ingestor`] asks.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::Value;

use crate::engine::path::EnginePath;

use crate::engine::{EngineClient, EngineError, EngineRequest};
use crate::types::name::{IndexName, IndexPattern};

/// How long a resolution is trusted (an alias moved by a reindex is seen after this).
const TTL: Duration = Duration::from_secs(5);
/// Names cached at most; the cache starts over beyond.
const MAX_CACHED: usize = 4096;

pub struct Resolver {
    pipeline_indices: BTreeSet<String>,
    cache: Mutex<HashMap<String, (Instant, Option<String>)>>,
}

impl Resolver {
    pub fn new(pipeline_indices: BTreeSet<String>) -> Self {
        Resolver { pipeline_indices, cache: Mutex::new(HashMap::new()) }
    }

    /// The pipeline index `name` writes to, if any. A name the engine does not know resolves to
    /// none (a write then creates a plain index, as it would without the sidecar).
    pub async fn resolve(&self, engine: &EngineClient, name: &str) -> Result<Option<String>, EngineError> {
        if self.pipeline_indices.contains(name) {
            return Ok(Some(name.to_string()));
        }
        if self.pipeline_indices.is_empty() {
            return Ok(None);
        }
        if let Some((at, r)) = self.cache.lock().expect("resolver cache").get(name) {
            if at.elapsed() < TTL {
                return Ok(r.clone());
            }
        }
        let at = if name.starts_with('<') {
            EnginePath::root().date_math(name)
        } else {
            IndexName::try_from(name).map(|n| EnginePath::root().index(&n))
        };
        // a name neither engine accepts: the engine refuses the write itself
        let Ok(at) = at else { return Ok(None) };
        let r = engine.send(EngineRequest::new(Method::GET, at.api("_alias").build()).passthrough()).await?;
        let resolved = if r.status.is_success() { write_index(&r.json::<Value>()?, name) } else { None };
        let target = resolved.filter(|i| self.pipeline_indices.contains(i));
        let mut cache = self.cache.lock().expect("resolver cache");
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(name.to_string(), (Instant::now(), target.clone()));
        Ok(target)
    }
}

impl Resolver {
    /// A pipeline index among every index `names` (a comma list of names, aliases, patterns or
    /// date math) expands to on the engine, if any: what `_update_by_query` or a `_reindex` into
    /// `names` would write to without vectors. Not cached: these requests are rare.
    pub async fn any_pipeline_index(&self, engine: &EngineClient, names: &str) -> Result<Option<String>, EngineError> {
        if self.pipeline_indices.is_empty() {
            return Ok(None);
        }
        for name in names.split(',') {
            if self.pipeline_indices.contains(name) {
                return Ok(Some(name.to_string()));
            }
            let at = if name.starts_with('<') {
                EnginePath::root().date_math(name)
            } else {
                IndexPattern::try_from(name).map(|p| EnginePath::root().pattern(&p))
            };
            let Ok(at) = at else { continue };
            let r = engine.send(EngineRequest::new(Method::GET, at.api("_alias").build()).passthrough()).await?;
            if !r.status.is_success() {
                continue;
            }
            let expanded = r.json::<Value>()?;
            let hit = expanded.as_object().and_then(|m| m.keys().find(|i| self.pipeline_indices.contains(*i)).cloned());
            if hit.is_some() {
                return Ok(hit);
            }
        }
        Ok(None)
    }
}

/// The concrete index a write to `name` goes to, from `GET /{name}/_alias`: the only index, or
/// the one marked `is_write_index` for `name`.
fn write_index(aliases: &Value, name: &str) -> Option<String> {
    let m = aliases.as_object()?;
    if m.len() == 1 {
        return m.keys().next().cloned();
    }
    m.iter()
        .find(|(_, v)| {
            v.pointer(&format!("/aliases/{}/is_write_index", name.replace('~', "~0").replace('/', "~1")))
                == Some(&Value::Bool(true))
        })
        .map(|(k, _)| k.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_write_index_is_the_only_one_or_the_marked_one() {
        assert_eq!(write_index(&json!({"docs-v2": {"aliases": {"docs": {}}}}), "docs").as_deref(), Some("docs-v2"));
        let two = json!({"a": {"aliases": {"docs": {}}}, "b": {"aliases": {"docs": {"is_write_index": true}}}});
        assert_eq!(write_index(&two, "docs").as_deref(), Some("b"));
        let none = json!({"a": {"aliases": {"docs": {}}}, "b": {"aliases": {"docs": {}}}});
        assert_eq!(write_index(&none, "docs"), None);
    }
}
