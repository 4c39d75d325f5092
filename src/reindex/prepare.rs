//! Preparing a job: the request checked against its pipeline and the source, a new job stored
//! (or the one to resume loaded), and the target index created with the pipeline's mapping
//! plus the source's other fields. Must not run slices.
use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::{json, Map, Value};

use super::*;
use crate::engine::path::EnginePath;
use crate::engine::EngineRequest;
use crate::ingest::catalog::servable;
use crate::ingest::mapping::{index_body_with, with_vector_models, ModelShape};
use crate::types::name::IndexName;
use crate::types::pipeline::Pipeline;
use std::sync::Arc;

/// Vector fields of the source's mapping (`props`) that `p` does not write: the old model's field
/// once a pipeline has dropped it.
pub(super) fn stale_vectors(p: &Pipeline, props: &Map<String, Value>) -> Vec<String> {
    props
        .iter()
        .filter(|(k, v)| {
            matches!(v.get("type").and_then(Value::as_str), Some("dense_vector" | "knn_vector"))
                && !p.fields.iter().any(|f| &f.vector == *k)
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// The names and sizes of a new job, checked before anything is asked of the engine.
struct Checked {
    source: String,
    target: String,
    page_size: usize,
    bulk_size: usize,
}

impl Checked {
    fn of(req: &JobRequest, p: &Pipeline) -> Result<Self, ReindexError> {
        let source = req.source.clone().unwrap_or_else(|| p.index.clone());
        let target = req.target.clone().unwrap_or_else(|| format!("{source}-{}", now_ms() / 1000));
        let names = [("source", Some(&source)), ("target", Some(&target)), ("alias", req.alias.as_ref())];
        for (k, v) in names.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))) {
            IndexName::try_from(v.as_str()).map_err(|e| ReindexError::Invalid(format!("`{k}`: {e}")))?;
        }
        if source == target {
            return Err(ReindexError::Invalid(format!(
                "source and target are both `{source}`: reindex into a new index"
            )));
        }
        if !(1..=64).contains(&req.slices) {
            return Err(ReindexError::Invalid(format!("`slices` {} must be between 1 and 64", req.slices)));
        }
        let page_size = req.page_size.unwrap_or(200);
        let bulk_size = req.bulk_size.unwrap_or(500);
        if !(1..=10_000).contains(&page_size) || !(1..=10_000).contains(&bulk_size) {
            return Err(ReindexError::Invalid("`page_size` and `bulk_size` must be between 1 and 10000".into()));
        }
        if let Some(q) = &req.query {
            if !q.is_object() {
                return Err(ReindexError::Invalid("`query` must be a query DSL object".into()));
            }
        }
        Ok(Checked { source, target, page_size, bulk_size })
    }
}

impl Reindexer {
    /// Validates a request and stores a new job (or loads the one to resume); creates the target.
    pub async fn prepare(&self, req: JobRequest) -> Result<JobState, ReindexError> {
        if let Some(id) = &req.resume {
            // a malformed id is refused before anything is created on the engine
            job_doc(id)?;
        }
        self.ensure_state_indices().await?;
        if let Some(id) = &req.resume {
            return self.resume(id).await;
        }
        let (p, definition) = self.request_pipeline(&req)?;
        let Checked { source, target, page_size, bulk_size } = Checked::of(&req, &p)?;
        if !self.exists(&source).await? {
            return Err(ReindexError::Invalid(format!("the source index `{source}` does not exist")));
        }
        self.check_destination(&p, &target, req.alias.as_deref()).await?;
        let source_props = self.source_properties(&source).await?;
        let source_excludes = stale_vectors(&p, &source_props);
        // the query is run (and refused if the engine refuses it) before anything is created
        let source_count = self.count(&source, req.query.as_ref()).await?;
        if !self.exists(&target).await? {
            self.create_target(&p, source_props, &target, &source_excludes).await?;
        }
        let now = now_ms();
        let id = format!("rx-{now}-{:04x}", rand::random::<u16>());
        let state = JobState {
            id,
            spec: JobSpec {
                pipeline: p.name.clone(),
                source,
                target,
                query: req.query,
                slices: req.slices,
                alias: req.alias,
                source_includes: req.source_includes,
                source_excludes,
                page_size,
                bulk_size,
                scroll: req.scroll,
                definition,
            },
            status: Status::Running,
            source_count,
            slices: (0..req.slices).map(|id| SliceState { id, ..SliceState::default() }).collect(),
            reader: None,
            bulk: BulkStats { size: bulk_size, low_water: bulk_size, ..BulkStats::default() },
            created_ms: now,
            updated_ms: now,
            running_ms: 0,
            error: None,
            alias_swapped: false,
            lease: None,
        };
        self.save(&state).await?;
        Ok(state)
    }

    /// Loads job `id` to run it again here, once no live replica holds its lease.
    async fn resume(&self, id: &str) -> Result<JobState, ReindexError> {
        let (mut s, mut version) = self.load_versioned(id).await?;
        if s.status == Status::Done {
            return Err(ReindexError::Invalid(format!("job `{id}` is already done")));
        }
        // leased by a replica that may still be alive: wait for the lease to run out
        let give_up = Instant::now() + self.lease + Duration::from_secs(5);
        while let Some(l) = s.lease.as_ref().filter(|l| s.status == Status::Running && l.owner != self.owner) {
            let left = l.until_ms.saturating_sub(now_ms());
            if left == 0 {
                break;
            }
            if Instant::now() > give_up {
                return Err(ReindexError::LeaseLost { id: id.to_string(), owner: l.owner.clone() });
            }
            tracing::info!(job = %id, owner = %l.owner, wait_ms = left, "the job is leased; waiting for the lease to run out");
            tokio::time::sleep(Duration::from_millis(left.min(1000) + 50)).await;
            (s, version) = self.load_versioned(id).await?;
        }
        if s.status == Status::Done {
            return Err(ReindexError::Invalid(format!("job `{id}` is already done")));
        }
        self.adopt(id, version).await;
        s.status = Status::Running;
        s.error = None;
        self.job_pipeline(&s.spec)?;
        Ok(s)
    }

    /// The pipeline a new job embeds with: the definition it carries (checked like a `PUT` of
    /// it, and servable here), else the stored pipeline it names.
    fn request_pipeline(&self, req: &JobRequest) -> Result<(Arc<Pipeline>, Option<Pipeline>), ReindexError> {
        let Some(def) = &req.definition else { return Ok((self.pipeline(&req.pipeline)?, None)) };
        if req.pipeline.is_empty() {
            return Err(ReindexError::Invalid("`pipeline`: name the pipeline the definition is for".into()));
        }
        let p = Pipeline::from_json(&req.pipeline, def).map_err(|e| ReindexError::Invalid(e.to_string()))?;
        servable(&p, &self.encoders).map_err(|r| ReindexError::Invalid(format!("pipeline `{}`: {r}", p.name)))?;
        Ok((Arc::new(p.clone()), Some(p)))
    }

    /// What the end of the job will do, checked before anything is copied: the alias can be
    /// moved (it is not an index, nor another pipeline's), and an existing target has the
    /// pipeline's vector fields mapped.
    async fn check_destination(&self, p: &Pipeline, target: &str, alias: Option<&str>) -> Result<(), ReindexError> {
        let snap = self.owners.catalog().snapshot();
        let other = |name: &str| {
            snap.all()
                .find(|(s, _)| s.pipeline.index == name && s.pipeline.name != p.name)
                .map(|(s, _)| s.pipeline.name.clone())
        };
        if let Some(alias) = alias {
            if alias == target {
                return Err(ReindexError::Invalid(format!("`alias` and `target` are both `{alias}`")));
            }
            let r = self.owners.resolve(&self.engine, alias).await?;
            if r.write.as_ref().is_some_and(|w| w.send_to() == alias) && !r.indices.is_empty() {
                return Err(ReindexError::Invalid(format!(
                    "`{alias}` is an index, not an alias: it cannot be moved to `{target}` at the end; pick a new alias name (or reindex `{alias}` into a new index and delete it before moving an alias of that name)"
                )));
            }
            if let Some(q) = other(alias) {
                return Err(ReindexError::Invalid(format!(
                    "alias `{alias}` belongs to pipeline `{q}`; moving it would leave `{q}` owning this job's target: reindex with pipeline `{q}` or pick another alias"
                )));
            }
        }
        if let Some(q) = other(target) {
            return Err(ReindexError::Invalid(format!(
                "target `{target}` belongs to pipeline `{q}`; name a new target"
            )));
        }
        if self.exists(target).await? {
            let props = self.source_properties(target).await?;
            for f in &p.fields {
                let kind = props.get(&f.vector).and_then(|v| v.get("type")).and_then(Value::as_str);
                if !matches!(kind, Some("dense_vector" | "knn_vector")) {
                    return Err(ReindexError::Invalid(format!(
                        "target `{target}` exists without `{}` mapped as a vector field; name a new target (it is created with the pipeline's mapping) or delete it",
                        f.vector
                    )));
                }
            }
        }
        Ok(())
    }

    /// How many documents of `source` the job's `query` (all, without one) matches.
    async fn count(&self, source: &str, query: Option<&Value>) -> Result<u64, ReindexError> {
        let body = match query {
            Some(q) => json!({"query": q}),
            None => json!({}),
        };
        let c: Value = self
            .engine
            .send(
                EngineRequest::new(Method::POST, EnginePath::at_index(source)?.api("_count").build())
                    .json(&body)
                    .idempotent(true),
            )
            .await?
            .json()?;
        Ok(c["count"].as_u64().unwrap_or(0))
    }

    /// The top-level properties of the source's mapping.
    pub(super) async fn source_properties(&self, source: &str) -> Result<Map<String, Value>, ReindexError> {
        let m: Value = self.engine.get_json(&EnginePath::at_index(source)?.api("_mapping").build()).await?;
        Ok(m.as_object()
            .and_then(|o| o.values().next())
            .and_then(|v| v.pointer("/mappings/properties"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default())
    }

    /// The pipeline's index body for `target`, with the source's other fields' mappings kept
    /// (except `excluded`).
    pub(super) async fn create_target(
        &self,
        p: &Pipeline,
        src_props: Map<String, Value>,
        target: &str,
        excluded: &[String],
    ) -> Result<(), ReindexError> {
        let info = self.engine.info().await?;
        let enc = self.encoders.get(Some(&p.model))?;
        let shape = ModelShape::of(enc.manifest());
        let mut tp = p.clone();
        tp.index = target.to_string();
        let other =
            |m: &str| self.encoders.get(Some(m)).ok().map(|e| (e.manifest().output_dims(), e.manifest().normalize));
        let mut body = with_vector_models(
            index_body_with(&info, &tp, shape, &other).map_err(|e| ReindexError::Invalid(e.to_string()))?,
            &tp,
        );
        if let Some(props) = body.pointer_mut("/mappings/properties").and_then(Value::as_object_mut) {
            for (k, v) in src_props {
                if !excluded.contains(&k) {
                    props.entry(k).or_insert(v);
                }
            }
        }
        self.engine.send(EngineRequest::new(Method::PUT, EnginePath::at_index(target)?.build()).json(&body)).await?;
        tracing::info!(%target, "created the target index");
        Ok(())
    }
}
