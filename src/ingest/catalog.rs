//! The live set of pipelines: stored in the cluster (`.semantic-sidecar-pipelines`, one document
//! per pipeline, written with optimistic concurrency), so that every sidecar on the cluster serves
//! the same set, and followed by polling the index (every `ingest.watch_interval`): a pipeline put
//! through one replica is served by every other within that period, without a restart.
//!
//! Each replica checks every stored pipeline against the models it has loaded; one whose models
//! are missing here is kept aside as *unavailable* (reported by `/readyz`, and every write or
//! semantic read of its index refused with that reason), never half-applied. Pipeline files
//! (`ingest.pipelines`) are a bootstrap: written to the cluster when absent there; a file that
//! disagrees with the cluster is reported and the cluster's definition is served.
//!
//! A *fixed* catalog (the eval and bench commands, a reindex job's own target) holds a given set
//! and never touches the store.
//!
//! Owns the store's format and the snapshot; which pipeline owns an index name is
//! [`super::owner`]'s question, the HTTP API is `http::pipelines`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use axum::http::Method;
use serde_json::{json, Value};

use super::writer::check_query_model;
use crate::encoder::EncoderSet;
use crate::engine::path::EnginePath;
use crate::engine::{EngineClient, EngineError, EngineRequest};
use crate::error::ErrorCode;
use crate::types::name::DocId;
use crate::types::pipeline::Pipeline;

/// Where pipelines live in the cluster.
pub const PIPELINES_INDEX: &str = ".semantic-sidecar-pipelines";
/// Most pipelines one cluster holds (one search reads them all).
pub const MAX_PIPELINES: usize = 1000;

/// Why a pipeline operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// A concurrent write, a stale `if_seq_no`, or a change the index's vectors forbid.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl CatalogError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CatalogError::Invalid(_) => ErrorCode::InvalidInput,
            CatalogError::NotFound(_) => ErrorCode::NotFound,
            CatalogError::Conflict(_) => ErrorCode::Conflict,
            CatalogError::Unavailable(_) => ErrorCode::Unavailable,
            CatalogError::Engine(e) => e.code(),
        }
    }
}

/// A pipeline as the store holds it: its definition and the version that wrote it.
#[derive(Clone, Debug)]
pub struct Stored {
    pub pipeline: Arc<Pipeline>,
    pub seq_no: u64,
    pub primary_term: u64,
}

/// The pipelines one replica serves, at one moment. Requests read one snapshot.
#[derive(Default, Debug)]
pub struct Snapshot {
    /// Pipelines this replica can serve, by name.
    pub served: BTreeMap<String, Stored>,
    /// Pipelines this replica cannot serve (a model it has not loaded), by name, with why.
    pub unavailable: BTreeMap<String, (Stored, String)>,
    /// Stored documents that are not a valid pipeline (written by another version), with why.
    pub invalid: BTreeMap<String, String>,
}

impl Snapshot {
    /// The pipeline called `name`, served or not.
    pub fn named(&self, name: &str) -> Option<&Stored> {
        self.served.get(name).or_else(|| self.unavailable.get(name).map(|(s, _)| s))
    }

    /// Every pipeline, served or not, with why it is not served.
    pub fn all(&self) -> impl Iterator<Item = (&Stored, Option<&str>)> {
        self.served.values().map(|s| (s, None)).chain(self.unavailable.values().map(|(s, why)| (s, Some(why.as_str()))))
    }

    /// `name → index` of every pipeline, for error messages.
    pub fn describe(&self) -> String {
        let names: Vec<String> =
            self.all().map(|(s, _)| format!("{} → {}", s.pipeline.name, s.pipeline.index)).collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    }

    fn versions(&self) -> BTreeMap<String, (u64, u64)> {
        self.all().map(|(s, _)| (s.pipeline.name.clone(), (s.seq_no, s.primary_term))).collect()
    }
}

/// Whether this replica's models can serve `p`: every model it names loaded, a query model that
/// embeds in its field's space, passages that fit the model. The reason when not.
pub fn servable(p: &Pipeline, encoders: &EncoderSet) -> Result<(), String> {
    for m in p.models() {
        encoders.get(Some(m)).map_err(|e| format!("model `{m}`: {e}"))?;
    }
    let field_model = p.field_model(p.live_field());
    if p.query_model() != field_model {
        let q = encoders.get(Some(p.query_model())).map_err(|e| e.to_string())?;
        let f = encoders.get(Some(field_model)).map_err(|e| e.to_string())?;
        check_query_model(q.manifest(), f.manifest()).map_err(|r| format!("search.query_model: {r}"))?;
    }
    if let Some(c) = &p.chunking {
        let m = encoders.get(Some(&p.model)).map_err(|e| e.to_string())?.manifest().max_seq_len;
        let room = m.saturating_sub(2);
        if c.max_tokens > room {
            return Err(format!(
                "chunking.max_tokens {} does not fit the model's max_seq_len {m} (at most {room} with [CLS] and [SEP])",
                c.max_tokens
            ));
        }
    }
    Ok(())
}

/// Where the pipelines come from.
enum Source {
    Fixed,
    Cluster { engine: EngineClient, interval: Duration },
}

/// The live pipeline set of one replica.
pub struct Catalog {
    source: Source,
    encoders: Arc<EncoderSet>,
    current: RwLock<Arc<Snapshot>>,
    /// Bumped on every change of the snapshot (owner caches start over).
    generation: AtomicU64,
    /// Pipeline files that disagree with the cluster's definition.
    file_notes: Mutex<Vec<String>>,
}

impl Catalog {
    /// A set that never changes and is not stored; every pipeline must be servable and own a
    /// distinct index.
    pub fn fixed(pipelines: Vec<Pipeline>, encoders: Arc<EncoderSet>) -> Result<Catalog, (String, String)> {
        let mut snap = Snapshot::default();
        for p in pipelines {
            servable(&p, &encoders).map_err(|r| (p.name.clone(), r))?;
            if let Some(o) = snap.served.values().find(|s| s.pipeline.index == p.index) {
                return Err((
                    p.name.clone(),
                    format!("a second pipeline targets index `{}` ({})", p.index, o.pipeline.name),
                ));
            }
            if snap.served.contains_key(&p.name) {
                return Err((p.name.clone(), "two pipelines have this name".into()));
            }
            snap.served.insert(p.name.clone(), Stored { pipeline: Arc::new(p), seq_no: 0, primary_term: 0 });
        }
        Ok(Catalog::with(Source::Fixed, encoders, snap))
    }

    /// The cluster's set; [`Catalog::start`] loads it and follows it.
    pub fn cluster(engine: EngineClient, encoders: Arc<EncoderSet>, interval: Duration) -> Catalog {
        Catalog::with(Source::Cluster { engine, interval }, encoders, Snapshot::default())
    }

    fn with(source: Source, encoders: Arc<EncoderSet>, snap: Snapshot) -> Catalog {
        Catalog {
            source,
            encoders,
            current: RwLock::new(Arc::new(snap)),
            generation: AtomicU64::new(0),
            file_notes: Mutex::new(Vec::new()),
        }
    }

    /// Whether the set is stored in the cluster (the pipeline API can change it).
    pub fn is_stored(&self) -> bool {
        matches!(self.source, Source::Cluster { .. })
    }

    /// The pipelines now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.read().expect("catalog lock").clone()
    }

    /// Changes with every new snapshot.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Pipeline files that disagree with the cluster (the cluster's definition is served).
    pub fn file_notes(&self) -> Vec<String> {
        self.file_notes.lock().map(|n| n.clone()).unwrap_or_default()
    }

    fn engine(&self) -> Result<&EngineClient, CatalogError> {
        match &self.source {
            Source::Cluster { engine, .. } => Ok(engine),
            Source::Fixed => Err(CatalogError::Invalid(
                "this process serves a fixed set of pipelines (not the cluster's); use `semantic-sidecar serve`".into(),
            )),
        }
    }

    /// Creates the store, writes the bootstrap files absent from it, loads the set and follows
    /// it in the background (until the catalog is dropped). The engine may be down at start:
    /// then the files are served until the store answers.
    pub async fn start(self: &Arc<Self>, files: Vec<Pipeline>) {
        let Source::Cluster { interval, .. } = self.source else { return };
        let mut bootstrapped = true;
        if let Err(e) = self.bootstrap(&files).await {
            tracing::warn!(error = %e, "pipelines: the cluster's store is not reachable yet; serving the pipeline files until it is");
            let local: BTreeMap<String, Stored> = files
                .iter()
                .map(|p| (p.name.clone(), Stored { pipeline: Arc::new(p.clone()), seq_no: 0, primary_term: 0 }))
                .collect();
            self.install_with(local, BTreeMap::new());
            bootstrapped = false;
        }
        let weak: Weak<Catalog> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(interval).await;
                let Some(me) = weak.upgrade() else { return };
                // until the store has answered once, the files are written to it first
                let r = if bootstrapped { me.reload().await } else { me.bootstrap(&files).await.map(|()| true) };
                bootstrapped |= r.is_ok();
                // said once when reads start failing and once when they work again
                match r {
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "pipelines: could not read the cluster's store; serving the last known set");
                    }
                    Ok(_) if failing => {
                        failing = false;
                        tracing::info!("pipelines: the cluster's store answers again");
                    }
                    _ => {}
                }
            }
        });
    }

    /// Creates the store, writes the pipeline files absent from it (reporting those that differ)
    /// and loads the set once, without following it (the CLI).
    pub async fn bootstrap(&self, files: &[Pipeline]) -> Result<(), CatalogError> {
        self.ensure_store().await?;
        self.reload().await?;
        let mut notes = Vec::new();
        for p in files {
            match self.snapshot().named(&p.name) {
                None => match self.write(p, None).await {
                    Ok(_) => tracing::info!(pipeline = %p.name, "pipeline file written to the cluster"),
                    // another replica wrote it first
                    Err(CatalogError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                },
                Some(s) if *s.pipeline != *p => {
                    let note = format!(
                        "pipeline file `{}` differs from the cluster's definition; the cluster's is served (change it with PUT /_sidecar/pipeline/{})",
                        p.name, p.name
                    );
                    tracing::warn!("{note}");
                    notes.push(note);
                }
                Some(_) => {}
            }
        }
        *self.file_notes.lock().expect("notes lock") = notes;
        self.reload().await?;
        Ok(())
    }

    /// Creates the store index.
    async fn ensure_store(&self) -> Result<(), CatalogError> {
        let properties = json!({
            "name": {"type": "keyword"}, "index": {"type": "keyword"}, "updated_ms": {"type": "long"},
            "definition": {"type": "object", "enabled": false}});
        Ok(ensure_hidden_index(self.engine()?, &store_index(), properties).await?)
    }

    /// Reads the store; installs a new snapshot when it changed. Returns whether it did.
    pub async fn reload(&self) -> Result<bool, CatalogError> {
        let engine = self.engine()?;
        let path = EnginePath::root()
            .index(&store_index())
            .api("_search")
            .param("seq_no_primary_term", "true")
            .param("size", &MAX_PIPELINES.to_string())
            .build();
        let r = engine
            .send(
                EngineRequest::new(Method::POST, path)
                    .json(&json!({"query": {"match_all": {}}, "sort": ["_doc"]}))
                    .idempotent(true)
                    .passthrough(),
            )
            .await?;
        let stored = match r.status.as_u16() {
            // the store was deleted under a running set: keep serving it rather than drop every
            // pipeline at once (a PUT or a restart creates the store again)
            404 if self.generation() > 0 && self.snapshot().all().next().is_some() => {
                return Err(CatalogError::Unavailable(format!(
                    "the pipeline store `{PIPELINES_INDEX}` is gone; serving the last known pipelines"
                )));
            }
            404 => BTreeMap::new(),
            s if (200..300).contains(&s) => parse_hits(&r.json::<Value>()?),
            s => return Err(EngineError::from_answer(s, &r.body).into()),
        };
        let same = {
            let cur = self.snapshot();
            let now: BTreeMap<String, (u64, u64)> = stored
                .iter()
                .filter_map(|(k, v)| v.as_ref().ok().map(|s| (k.clone(), (s.seq_no, s.primary_term))))
                .collect();
            let invalid: Vec<&String> = stored.iter().filter(|(_, v)| v.is_err()).map(|(k, _)| k).collect();
            cur.versions() == now && cur.invalid.keys().collect::<Vec<_>>() == invalid
        };
        if same && self.generation() > 0 {
            return Ok(false);
        }
        let mut valid = BTreeMap::new();
        let mut invalid = BTreeMap::new();
        for (name, s) in stored {
            match s {
                Ok(s) => {
                    valid.insert(name, s);
                }
                Err(why) => {
                    tracing::warn!(pipeline = %name, reason = %why, "stored pipeline is not valid; not served");
                    invalid.insert(name, why);
                }
            }
        }
        self.install_with(valid, invalid);
        Ok(true)
    }

    fn install_with(&self, stored: BTreeMap<String, Stored>, invalid: BTreeMap<String, String>) {
        let mut snap = Snapshot { invalid, ..Snapshot::default() };
        for (name, s) in stored {
            match servable(&s.pipeline, &self.encoders) {
                Ok(()) => {
                    snap.served.insert(name, s);
                }
                Err(why) => {
                    tracing::warn!(pipeline = %name, reason = %why, "pipeline not served by this sidecar");
                    snap.unavailable.insert(name, (s, format!("not served by this sidecar: {why}")));
                }
            }
        }
        *self.current.write().expect("catalog lock") = Arc::new(snap);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The stored definition of `name`, read from the cluster (not the snapshot).
    pub async fn fetch(&self, name: &str) -> Result<Option<Stored>, CatalogError> {
        let engine = self.engine()?;
        let r = engine.send(EngineRequest::new(Method::GET, doc_path(name)?).passthrough()).await?;
        match r.status.as_u16() {
            404 => Ok(None),
            s if (200..300).contains(&s) => {
                let v: Value = r.json()?;
                if v.get("found") == Some(&Value::Bool(false)) {
                    return Ok(None);
                }
                parse_doc(&v).map(Some).map_err(CatalogError::Invalid)
            }
            s => Err(EngineError::from_answer(s, &r.body).into()),
        }
    }

    /// Writes `p` to the store: created when `expect` is none (409 if it exists), else only over
    /// that version (409 if another write came first). Refreshes, so every replica's next poll
    /// sees it, and reloads this replica's snapshot at once.
    pub async fn write(&self, p: &Pipeline, expect: Option<(u64, u64)>) -> Result<Stored, CatalogError> {
        let engine = self.engine()?;
        self.ensure_store().await?;
        let mut path =
            EnginePath::root().index(&store_index()).api("_doc").id(&doc_id(&p.name)?).param("refresh", "true");
        match expect {
            None => path = path.param("op_type", "create"),
            Some((seq, term)) => {
                path = path.param("if_seq_no", &seq.to_string()).param("if_primary_term", &term.to_string())
            }
        }
        let doc = json!({
            "name": p.name,
            "index": p.index,
            "updated_ms": crate::telemetry::now_ms(),
            "definition": serde_json::to_value(p).map_err(|e| CatalogError::Invalid(e.to_string()))?,
        });
        let r = engine.send(EngineRequest::new(Method::PUT, path.build()).json(&doc).passthrough()).await?;
        if r.status.as_u16() == 409 {
            return Err(CatalogError::Conflict(match expect {
                None => format!("pipeline `{}` was created meanwhile by another writer; GET it and retry with its version", p.name),
                Some(_) => format!(
                    "pipeline `{}` was changed by another writer since the version this update is based on; GET it and retry",
                    p.name
                ),
            }));
        }
        if !r.status.is_success() {
            return Err(EngineError::from_answer(r.status.as_u16(), &r.body).into());
        }
        let v: Value = r.json()?;
        let stored = Stored {
            pipeline: Arc::new(p.clone()),
            seq_no: v["_seq_no"].as_u64().unwrap_or(0),
            primary_term: v["_primary_term"].as_u64().unwrap_or(0),
        };
        self.reload().await?;
        Ok(stored)
    }

    /// Deletes `name` from the store (only at version `expect` when given).
    pub async fn delete(&self, name: &str, expect: Option<(u64, u64)>) -> Result<(), CatalogError> {
        let engine = self.engine()?;
        let mut path = EnginePath::root().index(&store_index()).api("_doc").id(&doc_id(name)?).param("refresh", "true");
        if let Some((seq, term)) = expect {
            path = path.param("if_seq_no", &seq.to_string()).param("if_primary_term", &term.to_string());
        }
        let r = engine.send(EngineRequest::new(Method::DELETE, path.build()).passthrough()).await?;
        match r.status.as_u16() {
            404 => Err(CatalogError::NotFound(format!("no pipeline `{name}`"))),
            409 => Err(CatalogError::Conflict(format!(
                "pipeline `{name}` was changed by another writer since that version; GET it and retry"
            ))),
            s if (200..300).contains(&s) => {
                self.reload().await?;
                Ok(())
            }
            s => Err(EngineError::from_answer(s, &r.body).into()),
        }
    }
}

/// Creates a store index of the sidecar's shared state when it is missing: hidden, one shard,
/// a replica only where a second node exists, no dynamic mapping. Another replica creating it
/// meanwhile is fine.
pub async fn ensure_hidden_index(
    engine: &EngineClient,
    index: &crate::types::name::IndexName,
    properties: Value,
) -> Result<(), EngineError> {
    let path = EnginePath::root().index(index).build();
    let head = engine.send(EngineRequest::new(Method::HEAD, path.clone()).passthrough()).await?;
    if head.status.is_success() {
        return Ok(());
    }
    let body = json!({
        "settings": {"index": {"hidden": true, "number_of_shards": 1, "auto_expand_replicas": "0-1"}},
        "mappings": {"dynamic": false, "properties": properties},
    });
    let r = engine.send(EngineRequest::new(Method::PUT, path).json(&body).passthrough()).await?;
    if !r.status.is_success() && !String::from_utf8_lossy(&r.body).contains("already_exists") {
        return Err(EngineError::from_answer(r.status.as_u16(), &r.body));
    }
    Ok(())
}

fn store_index() -> crate::types::name::IndexName {
    crate::types::name::IndexName::try_from(PIPELINES_INDEX).expect("a valid index name")
}

fn doc_id(name: &str) -> Result<DocId, CatalogError> {
    DocId::try_from(name).map_err(|e| CatalogError::Invalid(format!("pipeline name: {e}")))
}

fn doc_path(name: &str) -> Result<String, CatalogError> {
    Ok(EnginePath::root().index(&store_index()).api("_doc").id(&doc_id(name)?).build())
}

/// One stored document (a search hit or a `GET _doc` answer) as a pipeline, or why it is not one.
fn parse_doc(hit: &Value) -> Result<Stored, String> {
    let name = hit["_id"].as_str().unwrap_or_default();
    let def = hit.pointer("/_source/definition").ok_or("the document has no `definition`")?;
    let p = Pipeline::from_json(name, def).map_err(|e| e.to_string())?;
    Ok(Stored {
        pipeline: Arc::new(p),
        seq_no: hit["_seq_no"].as_u64().unwrap_or(0),
        primary_term: hit["_primary_term"].as_u64().unwrap_or(0),
    })
}

/// The store's search answer: each pipeline by name, or why its document is not one.
fn parse_hits(v: &Value) -> BTreeMap<String, Result<Stored, String>> {
    let hits = v.pointer("/hits/hits").and_then(Value::as_array).cloned().unwrap_or_default();
    if hits.len() >= MAX_PIPELINES {
        tracing::warn!(
            "the cluster holds {MAX_PIPELINES} pipelines or more; only the first {MAX_PIPELINES} are served"
        );
    }
    hits.iter().filter_map(|h| Some((h["_id"].as_str()?.to_string(), parse_doc(h)))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, def: Value, seq: u64) -> Value {
        json!({"_id": id, "_seq_no": seq, "_primary_term": 1, "_source": {"definition": def}})
    }

    #[test]
    fn stored_documents_become_pipelines_or_say_why_not() {
        let good =
            json!({"index": "docs", "model": "all-MiniLM-L6-v2", "fields": [{"source": ["text"], "vector": "v"}]});
        let bad = json!({"index": "Docs", "model": "m", "fields": [{"source": ["text"], "vector": "v"}]});
        let answer = json!({"hits": {"hits": [hit("a", good, 3), hit("b", bad, 4), {"_id": "c", "_source": {}}]}});
        let got = parse_hits(&answer);
        let a = got["a"].as_ref().unwrap();
        assert_eq!(
            (a.pipeline.name.as_str(), a.pipeline.index.as_str(), a.seq_no, a.primary_term),
            ("a", "docs", 3, 1)
        );
        assert!(got["b"].as_ref().unwrap_err().contains("`index`"), "{:?}", got["b"]);
        assert!(got["c"].as_ref().unwrap_err().contains("definition"));
    }
}
