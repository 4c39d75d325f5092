//! Inference endpoints (Elasticsearch's `_inference` API, `text_embedding` task) served by the
//! sidecar's own models where the cluster has no inference service (it needs an Enterprise
//! licence since 8.18/9.0): an endpoint names a model this sidecar loaded, by
//! `service_settings.model_id`. Endpoints are cluster state, stored in the hidden index
//! `.semantic-sidecar-inference` (one document each, created with `op_type=create`), so every
//! replica sees the same set; each replica reads it at most every [`CACHE_FOR`].
//!
//! `query_vector_builder.text_embedding.model_id` and (later) `semantic_text`'s `inference_id`
//! resolve through [`Endpoints::model_for`]: an endpoint id, or a model's own name.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::{json, Map, Value};

use super::catalog::{ensure_hidden_index, CatalogError};
use crate::encoder::EncoderSet;
use crate::engine::path::EnginePath;
use crate::engine::{EngineClient, EngineError, EngineRequest};
use crate::types::name::{DocId, IndexName};

/// Where endpoints live in the cluster.
pub const INFERENCE_INDEX: &str = ".semantic-sidecar-inference";
/// How long a replica trusts its copy of the endpoint set.
pub const CACHE_FOR: Duration = Duration::from_secs(2);
/// Most endpoints one cluster holds.
pub const MAX_ENDPOINTS: usize = 1000;
/// The services whose endpoints this sidecar serves with its own models.
pub const SERVICES: &[&str] = &["elasticsearch", "sidecar"];

/// One `text_embedding` endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub id: String,
    /// The sidecar model it embeds with.
    pub model: String,
    /// As the client wrote them (echoed back, with `dimensions`, `similarity` and
    /// `element_type` filled in).
    pub service: String,
    pub service_settings: Map<String, Value>,
    pub task_settings: Map<String, Value>,
    pub chunking_settings: Value,
}

impl Endpoint {
    /// Elasticsearch's shape of an endpoint.
    pub fn to_json(&self) -> Value {
        json!({
            "inference_id": self.id,
            "task_type": "text_embedding",
            "service": self.service,
            "service_settings": self.service_settings,
            "task_settings": self.task_settings,
            "chunking_settings": self.chunking_settings,
        })
    }
}

fn invalid(m: impl Into<String>) -> CatalogError {
    CatalogError::Invalid(m.into())
}

/// The sidecar model a `model_id` names: its own name, or Elastic's spelling of it (a leading
/// `.`, a platform suffix such as `_linux-x86_64`).
pub fn model_named(encoders: &EncoderSet, model_id: &str) -> Option<String> {
    let names: Vec<String> = encoders.infos().into_iter().map(|i| i.name).collect();
    let bare = model_id.trim_start_matches('.');
    let bare = bare.split_once("_linux").map_or(bare, |(b, _)| b);
    names.into_iter().find(|n| n == model_id || n.eq_ignore_ascii_case(bare))
}

fn known_models(encoders: &EncoderSet) -> String {
    let names: Vec<String> = encoders.infos().into_iter().map(|i| i.name).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Elastic's chunking settings, checked, with their defaults filled in (`sentence`: at most 250
/// words, one sentence of overlap; `word`: 250 words, 100 of overlap; `none`).
pub fn chunking_settings(v: Option<&Value>) -> Result<Value, CatalogError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(json!({"strategy": "sentence", "max_chunk_size": 250, "sentence_overlap": 1}));
    };
    let m = v.as_object().ok_or_else(|| invalid("chunking_settings must be an object"))?;
    let int = |k: &str, d: u64| -> Result<u64, CatalogError> {
        match m.get(k) {
            None => Ok(d),
            Some(x) => {
                x.as_u64().ok_or_else(|| invalid(format!("chunking_settings.{k} must be a non-negative integer")))
            }
        }
    };
    let only = |allowed: &[&str]| match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(format!("chunking_settings: unknown key `{k}` (known: {})", allowed.join(", ")))),
        None => Ok(()),
    };
    match m.get("strategy").and_then(Value::as_str).unwrap_or("sentence") {
        "sentence" => {
            only(&["strategy", "max_chunk_size", "sentence_overlap"])?;
            let (size, overlap) = (int("max_chunk_size", 250)?, int("sentence_overlap", 1)?);
            if !(20..=300).contains(&size) || overlap > 1 {
                return Err(invalid(
                    "chunking_settings: sentence max_chunk_size is 20 to 300 words, sentence_overlap 0 or 1",
                ));
            }
            Ok(json!({"strategy": "sentence", "max_chunk_size": size, "sentence_overlap": overlap}))
        }
        "word" => {
            only(&["strategy", "max_chunk_size", "overlap"])?;
            let (size, overlap) = (int("max_chunk_size", 250)?, int("overlap", 100)?);
            if !(10..=300).contains(&size) || overlap > size / 2 {
                return Err(invalid(
                    "chunking_settings: word max_chunk_size is 10 to 300 words, overlap at most half of it",
                ));
            }
            Ok(json!({"strategy": "word", "max_chunk_size": size, "overlap": overlap}))
        }
        "none" => {
            only(&["strategy"])?;
            Ok(json!({"strategy": "none"}))
        }
        other => Err(invalid(format!("chunking_settings.strategy `{other}` is not one of sentence, word, none"))),
    }
}

/// Reads a `PUT _inference/[text_embedding/]{id}` body into an endpoint of this sidecar.
pub fn parse_endpoint(id: &str, body: &Value, encoders: &EncoderSet) -> Result<Endpoint, CatalogError> {
    let m = body.as_object().ok_or_else(|| invalid("the endpoint must be a JSON object"))?;
    if let Some(k) =
        m.keys().find(|k| !["service", "service_settings", "task_settings", "chunking_settings"].contains(&k.as_str()))
    {
        return Err(invalid(format!(
            "unknown key `{k}` (known: service, service_settings, task_settings, chunking_settings)"
        )));
    }
    let service = m.get("service").and_then(Value::as_str).ok_or_else(|| invalid("`service` is required"))?;
    if !SERVICES.contains(&service) {
        return Err(invalid(format!(
            "service `{service}` is not served here: this sidecar embeds text with its own models, as service `elasticsearch` (or `sidecar`) with service_settings.model_id one of: {}",
            known_models(encoders)
        )));
    }
    let mut settings = match m.get("service_settings") {
        Some(Value::Object(s)) => s.clone(),
        _ => return Err(invalid("`service_settings` must be an object with `model_id`")),
    };
    let model_id = settings
        .get("model_id")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("service_settings.model_id is required"))?;
    let model = model_named(encoders, model_id).ok_or_else(|| {
        invalid(format!(
            "service_settings.model_id `{model_id}` is not a model of this sidecar (models: {})",
            known_models(encoders)
        ))
    })?;
    let encoder = encoders.get(Some(&model)).map_err(|e| invalid(e.to_string()))?;
    let dims = encoder.info().dims;
    if let Some(d) = settings.get("dimensions").and_then(Value::as_u64) {
        if d as usize != dims {
            return Err(invalid(format!("service_settings.dimensions {d} is not model `{model}`'s {dims}")));
        }
    }
    settings.insert("dimensions".into(), json!(dims));
    settings.entry("similarity").or_insert(json!("cosine"));
    settings.entry("element_type").or_insert(json!("float"));
    let task_settings = match m.get("task_settings") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(t)) => t.clone(),
        Some(_) => return Err(invalid("`task_settings` must be an object")),
    };
    Ok(Endpoint {
        id: id.to_string(),
        model,
        service: service.to_string(),
        service_settings: settings,
        task_settings,
        chunking_settings: chunking_settings(m.get("chunking_settings"))?,
    })
}

fn from_doc(hit: &Value) -> Option<Endpoint> {
    let d = hit.pointer("/_source/definition")?;
    Some(Endpoint {
        id: hit.get("_id")?.as_str()?.to_string(),
        model: hit.pointer("/_source/model")?.as_str()?.to_string(),
        service: d.get("service")?.as_str()?.to_string(),
        service_settings: d.get("service_settings")?.as_object()?.clone(),
        task_settings: d.get("task_settings").and_then(Value::as_object).cloned().unwrap_or_default(),
        chunking_settings: d.get("chunking_settings").cloned().unwrap_or(Value::Null),
    })
}

/// The endpoint set as last read, and when.
type Cached = Option<(Instant, Arc<BTreeMap<String, Endpoint>>)>;

/// The endpoint set, read from the cluster.
pub struct Endpoints {
    engine: Option<EngineClient>,
    encoders: Arc<EncoderSet>,
    cache: Mutex<Cached>,
}

fn store_index() -> IndexName {
    IndexName::try_from(INFERENCE_INDEX).expect("a valid index name")
}

fn doc_id(id: &str) -> Result<DocId, CatalogError> {
    if id.starts_with('_') || id.len() > 200 {
        return Err(invalid(format!("inference id `{id}` may not start with `_` or be longer than 200 bytes")));
    }
    DocId::try_from(id).map_err(|e| invalid(format!("inference id: {e}")))
}

impl Endpoints {
    /// Endpoints stored through `engine`; without one (tests, eval) the set is empty and
    /// cannot change.
    pub fn new(engine: Option<EngineClient>, encoders: Arc<EncoderSet>) -> Endpoints {
        Endpoints { engine, encoders, cache: Mutex::new(None) }
    }

    fn engine(&self) -> Result<&EngineClient, CatalogError> {
        self.engine
            .as_ref()
            .ok_or_else(|| CatalogError::Unavailable("this process keeps no inference endpoints".into()))
    }

    /// Every endpoint (this replica's copy, at most [`CACHE_FOR`] old).
    pub async fn all(&self) -> Result<Arc<BTreeMap<String, Endpoint>>, CatalogError> {
        if let Some((at, set)) = self.cache.lock().expect("endpoints lock").as_ref() {
            if at.elapsed() < CACHE_FOR {
                return Ok(set.clone());
            }
        }
        let Some(engine) = self.engine.as_ref() else { return Ok(Arc::default()) };
        let path =
            EnginePath::root().index(&store_index()).api("_search").param("size", &MAX_ENDPOINTS.to_string()).build();
        let r = engine
            .send(
                EngineRequest::new(Method::POST, path).json(&json!({"sort": ["_doc"]})).idempotent(true).passthrough(),
            )
            .await?;
        let set: BTreeMap<String, Endpoint> = match r.status.as_u16() {
            404 => BTreeMap::new(),
            s if (200..300).contains(&s) => {
                let v: Value = r.json()?;
                let hits = v.pointer("/hits/hits").and_then(Value::as_array).cloned().unwrap_or_default();
                hits.iter().filter_map(from_doc).map(|e| (e.id.clone(), e)).collect()
            }
            s => return Err(EngineError::from_answer(s, &r.body).into()),
        };
        let set = Arc::new(set);
        *self.cache.lock().expect("endpoints lock") = Some((Instant::now(), set.clone()));
        Ok(set)
    }

    fn forget(&self) {
        *self.cache.lock().expect("endpoints lock") = None;
    }

    /// The sidecar model `id` names: an endpoint's, or a loaded model's own name (Elastic's
    /// spelling accepted). `Err` names what is known.
    pub async fn model_for(&self, id: &str) -> Result<String, CatalogError> {
        let all = self.all().await?;
        if let Some(e) = all.get(id) {
            return Ok(e.model.clone());
        }
        model_named(&self.encoders, id).ok_or_else(|| {
            let eps: Vec<&str> = all.keys().map(String::as_str).collect();
            invalid(format!(
                "model_id `{id}` is neither an inference endpoint ({}) nor a model of this sidecar ({})",
                if eps.is_empty() { "none".to_string() } else { eps.join(", ") },
                known_models(&self.encoders)
            ))
        })
    }

    /// Creates `id` (400 when it exists, as Elasticsearch answers).
    pub async fn put(&self, id: &str, body: &Value) -> Result<Endpoint, CatalogError> {
        let e = parse_endpoint(id, body, &self.encoders)?;
        let engine = self.engine()?;
        ensure_hidden_index(
            engine,
            &store_index(),
            json!({"model": {"type": "keyword"}, "updated_ms": {"type": "long"}, "definition": {"type": "object", "enabled": false}}),
        )
        .await?;
        let path = EnginePath::root()
            .index(&store_index())
            .api("_doc")
            .id(&doc_id(id)?)
            .param("op_type", "create")
            .param("refresh", "true")
            .build();
        let doc = json!({"model": e.model, "updated_ms": crate::telemetry::now_ms(), "definition": e.to_json()});
        let r = engine.send(EngineRequest::new(Method::PUT, path).json(&doc).passthrough()).await?;
        self.forget();
        match r.status.as_u16() {
            409 => Err(invalid(format!("Inference endpoint [{id}] already exists"))),
            s if (200..300).contains(&s) => Ok(e),
            s => Err(EngineError::from_answer(s, &r.body).into()),
        }
    }

    /// Deletes `id`.
    pub async fn delete(&self, id: &str) -> Result<(), CatalogError> {
        let path =
            EnginePath::root().index(&store_index()).api("_doc").id(&doc_id(id)?).param("refresh", "true").build();
        let r = self.engine()?.send(EngineRequest::new(Method::DELETE, path).passthrough()).await?;
        self.forget();
        match r.status.as_u16() {
            404 => Err(CatalogError::NotFound(format!("Inference endpoint not found [{id}]"))),
            s if (200..300).contains(&s) => Ok(()),
            s => Err(EngineError::from_answer(s, &r.body).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_settings_get_elastic_defaults_and_bounds() {
        assert_eq!(chunking_settings(None).unwrap()["max_chunk_size"], 250);
        assert_eq!(chunking_settings(Some(&json!({"strategy": "word"}))).unwrap()["overlap"], 100);
        assert_eq!(
            chunking_settings(Some(&json!({"strategy": "sentence", "max_chunk_size": 100, "sentence_overlap": 0})))
                .unwrap()["sentence_overlap"],
            0
        );
        for bad in [
            json!({"strategy": "recursive"}),
            json!({"strategy": "sentence", "max_chunk_size": 5}),
            json!({"strategy": "word", "max_chunk_size": 50, "overlap": 40}),
            json!({"strategy": "sentence", "overlap": 3}),
        ] {
            assert!(chunking_settings(Some(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_endpoint_must_name_a_loaded_model_of_a_served_service() {
        let none = EncoderSet::default();
        let e = parse_endpoint("x", &json!({"service": "openai", "service_settings": {"model_id": "m"}}), &none)
            .unwrap_err();
        assert!(e.to_string().contains("service `openai` is not served here"), "{e}");
        let e = parse_endpoint("x", &json!({"service": "elasticsearch", "service_settings": {"model_id": "m"}}), &none)
            .unwrap_err();
        assert!(e.to_string().contains("`m` is not a model of this sidecar (models: none)"), "{e}");
        let e = parse_endpoint("x", &json!({"service": "elasticsearch"}), &none).unwrap_err();
        assert!(e.to_string().contains("service_settings"), "{e}");
        assert!(doc_id("_all").is_err());
    }
}
