//! Reindexing an existing index into a vector index: resumable, sliced, backpressured, with a
//! per-document error log and an alias swap. One implementation behind `semantic-sidecar
//! reindex` and the `/_jobs` API.
//!
//! Per slice, three stages run at once with bounded channels (two pages in flight between
//! stages, so memory stays bounded whatever the index size): read a page ([`source`]) → embed it
//! through the pipeline (the ingest code, bulk lane, content-hash skip) → write it with an
//! adaptive bulk size ([`sizer`]). After a page is confirmed written, the slice's checkpoint (last
//! sort key and counts) is stored in the `.semantic-sidecar-jobs` index. Writes use the source
//! `_id`, so a page replayed after a crash overwrites instead of duplicating.
//!
//! Failures: item-level 429s are retried with backoff (and shrink the bulk size); other item
//! failures go to `.semantic-sidecar-errors` with the reason and are counted. Engine outages
//! (connection refused, timeouts, 5xx, a lost PIT) pause the slice and retry it from its
//! checkpoint with backoff for up to `MAX_OUTAGE`.
//!
//! Several sidecars on one cluster: a job document carries a lease (owner, expiry) and is only
//! ever written with optimistic concurrency (`if_seq_no` / `if_primary_term`), all writes of one
//! replica serialised, so exactly one replica runs a job: a `409` means another replica took it,
//! and the run stops without writing again. The owner renews the lease every `reindex.lease / 3`
//! (checkpoints renew it too); `serve` looks for `running` jobs whose lease ran out (their replica
//! died) and adopts them ([`Jobs::adopt_orphans`]), resuming from the last checkpoint; `resume` of a
//! job leased elsewhere waits for the lease to run out. Writes by `_id` make replayed pages harmless.
//!
//! Finish: the target is refreshed, counts are verified (documents counted in the source at the
//! start = read = written + failed), and the alias (if any) moves to the target in one atomic
//! `_aliases` call; the old index stays until deleted.

pub mod sizer;
pub mod source;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::Method;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::encoder::{EncoderError, EncoderSet};
use crate::engine::dialect::Dialect;
use crate::engine::path::EnginePath;
use crate::engine::{EngineClient, EngineError, EngineRequest};
use crate::error::ErrorCode;
use crate::ingest::bulk::{self, Action, BulkItem, ItemFailure};
use crate::ingest::mapping::{index_body_with, ModelShape};
use crate::ingest::writer::Ingestor;
use crate::telemetry::Metrics;
use crate::types::name::{DocId, IndexName, PathError};
use crate::types::pipeline::Pipeline;
use sizer::BulkSizer;
use source::{ReadSpec, Reader};

/// Where job state lives.
pub const JOBS_INDEX: &str = ".semantic-sidecar-jobs";
/// Where documents that could not be written go.
pub const ERRORS_INDEX: &str = ".semantic-sidecar-errors";
/// How long a slice keeps retrying through an engine outage.
const MAX_OUTAGE: Duration = Duration::from_secs(300);
/// Rounds of item-level 429 retries before an item counts as failed.
const MAX_ITEM_ROUNDS: u32 = 30;

/// Why a job could not be started or run.
#[derive(Debug, thiserror::Error)]
pub enum ReindexError {
    #[error("{0}")]
    Invalid(String),
    #[error("no job `{0}`")]
    NotFound(String),
    /// A client's id that is not of the job id format (so never looked up).
    #[error("no job `{0}`: job ids look like rx-1700000000000-0a1b")]
    BadJobId(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    #[error("{0}")]
    Failed(String),
    /// Another sidecar holds (or took) the job's lease.
    #[error("job `{id}` is run by another sidecar ({owner})")]
    LeaseLost { id: String, owner: String },
}

impl From<PathError> for ReindexError {
    fn from(e: PathError) -> Self {
        ReindexError::Invalid(e.to_string())
    }
}

/// Whether `id` has the format of the sidecar's job ids, `rx-<ms>-<4 hex>`: only those name
/// a job document (a client's id never becomes part of an engine path otherwise).
pub fn is_job_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix("rx-") else { return false };
    let Some((ms, hex)) = rest.split_once('-') else { return false };
    (1..=20).contains(&ms.len())
        && ms.bytes().all(|b| b.is_ascii_digit())
        && hex.len() == 4
        && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The engine path of job `id`'s document; an id not of the job format is refused.
fn job_doc(id: &str) -> Result<EnginePath, ReindexError> {
    if !is_job_id(id) {
        let shown: String = id.chars().take(64).collect();
        return Err(ReindexError::BadJobId(shown.escape_debug().to_string()));
    }
    Ok(EnginePath::at_index(JOBS_INDEX)?.api("_doc").id(&DocId::try_from(id)?))
}

impl ReindexError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ReindexError::Invalid(_) => ErrorCode::InvalidInput,
            ReindexError::NotFound(_) | ReindexError::BadJobId(_) => ErrorCode::NotFound,
            ReindexError::Engine(e) => e.code(),
            ReindexError::Encoder(e) => e.code(),
            ReindexError::Failed(_) => ErrorCode::Internal,
            ReindexError::LeaseLost { .. } => ErrorCode::Unavailable,
        }
    }
}

fn default_slices() -> u32 {
    1
}

/// What a client asks for (`POST /_jobs/reindex`, or the CLI flags).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// A pipeline name (or the index it targets).
    #[serde(default)]
    pub pipeline: String,
    /// Default: the pipeline's index.
    #[serde(default)]
    pub source: Option<String>,
    /// Default: `{source}-{unix time}`. Created from the pipeline (and the source's other fields) when missing.
    #[serde(default)]
    pub target: Option<String>,
    /// Reindex a subset (query DSL).
    #[serde(default)]
    pub query: Option<Value>,
    #[serde(default = "default_slices")]
    pub slices: u32,
    /// Moved to the target when the job is done.
    #[serde(default)]
    pub alias: Option<String>,
    /// `_source` filtering of the read.
    #[serde(default)]
    pub source_includes: Option<Vec<String>>,
    #[serde(default)]
    pub page_size: Option<usize>,
    /// Largest bulk request (documents); the size adapts below it.
    #[serde(default)]
    pub bulk_size: Option<usize>,
    /// Read with scroll even when PITs are available.
    #[serde(default)]
    pub scroll: bool,
    /// Continue this job from its checkpoints instead of starting a new one.
    #[serde(default)]
    pub resume: Option<String>,
}

/// A job's resolved, stored parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub pipeline: String,
    pub source: String,
    pub target: String,
    pub query: Option<Value>,
    pub slices: u32,
    pub alias: Option<String>,
    pub source_includes: Option<Vec<String>>,
    /// Vector fields of the source that the pipeline no longer writes (a model being dropped):
    /// left out of the read and of the target's mapping.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_excludes: Vec<String>,
    pub page_size: usize,
    pub bulk_size: usize,
    pub scroll: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Cancelled,
    Failed,
    Done,
}

/// One slice's checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SliceState {
    pub id: u32,
    /// Sort key of the last document confirmed written.
    pub search_after: Option<Value>,
    pub read: u64,
    pub written: u64,
    pub failed: u64,
    /// Written with their stored vectors (content hash unchanged): not embedded again.
    pub unchanged: u64,
    pub done: bool,
    /// Times the slice was read again from its start (a lost cursor whose keys do not carry over).
    pub restarts: u32,
    /// Engine outages waited through.
    pub outages: u32,
}

/// Bulk sizes the job went through.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BulkStats {
    pub size: usize,
    pub low_water: usize,
    pub shrinks: u64,
    pub grows: u64,
    pub item_429s: u64,
}

/// Who runs a job, until when (renewed while it runs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    pub until_ms: u64,
}

/// A job as stored and reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    pub id: String,
    pub spec: JobSpec,
    pub status: Status,
    /// Documents in the source (with the query) when the job was created.
    pub source_count: u64,
    pub slices: Vec<SliceState>,
    pub reader: Option<String>,
    pub bulk: BulkStats,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Milliseconds spent running, over all runs.
    pub running_ms: u64,
    pub error: Option<String>,
    pub alias_swapped: bool,
    /// Set while a replica runs the job (absent in jobs stored before leases).
    #[serde(default)]
    pub lease: Option<Lease>,
}

impl JobState {
    pub fn total(&self, f: impl Fn(&SliceState) -> u64) -> u64 {
        self.slices.iter().map(f).sum()
    }

    /// The numbers a client shows.
    pub fn progress(&self, run_started: Option<Instant>, read_at_start: u64) -> Value {
        let read = self.total(|s| s.read);
        // live: since this run started; stored: over all runs
        let (done, secs) = match run_started {
            Some(t) => (read.saturating_sub(read_at_start), t.elapsed().as_secs_f64()),
            None => (read, self.running_ms as f64 / 1000.0),
        };
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let left = self.source_count.saturating_sub(read);
        json!({
            "source": self.source_count,
            "read": read,
            "written": self.total(|s| s.written),
            "failed": self.total(|s| s.failed),
            "unchanged": self.total(|s| s.unchanged),
            "docs_per_s": rate,
            "eta_s": if rate > 0.0 { Some(left as f64 / rate) } else { None },
            "bulk_size": self.bulk.size,
        })
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Live view and cancel switch of a running job.
pub struct JobControl {
    cancel: AtomicBool,
    live: Mutex<JobState>,
    started: Instant,
    read_at_start: u64,
}

impl JobControl {
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// The job's latest state, with live progress numbers.
    pub fn snapshot(&self) -> (JobState, Value) {
        let s = self.live.lock().map(|s| s.clone()).expect("job state lock");
        let p = s.progress(Some(self.started), self.read_at_start);
        (s, p)
    }
}

/// What every stage of one slice's run needs.
struct SliceRun<'a> {
    job: &'a str,
    spec: &'a JobSpec,
    dialect: Dialect,
    slice: u32,
    ingestor: &'a Ingestor,
    sizer: &'a Mutex<BulkSizer>,
    control: &'a JobControl,
}

/// A page on its way through the stages.
struct Batch {
    items: Vec<BulkItem>,
    failures: Vec<ItemFailure>,
    unchanged: usize,
    read: usize,
    last_sort: Option<Value>,
}

/// The reindex service; cheap to share.
pub struct Reindexer {
    engine: EngineClient,
    encoders: Arc<EncoderSet>,
    pipelines: Vec<Arc<Pipeline>>,
    max_chars: usize,
    max_inputs: usize,
    metrics: Metrics,
    /// This replica's lease owner name.
    owner: String,
    lease: Duration,
    /// `(_seq_no, _primary_term)` of each job document this replica owns, as it last wrote it;
    /// the lock also serialises this replica's writes of job documents.
    versions: tokio::sync::Mutex<std::collections::HashMap<String, (u64, u64)>>,
}

fn retryable(e: &ReindexError) -> bool {
    match e {
        ReindexError::Engine(e) => match e {
            EngineError::Unreachable { .. }
            | EngineError::Timeout { .. }
            | EngineError::Overloaded { .. }
            | EngineError::Failed { .. }
            | EngineError::InvalidResponse(_) => true,
            // a PIT or scroll that expired or died with a node
            EngineError::Rejected { status: 404, error_type, reason, .. } => {
                error_type.contains("search_context_missing")
                    || reason.contains("search context")
                    || reason.contains("No search context")
            }
            _ => false,
        },
        _ => false,
    }
}

impl Reindexer {
    pub fn new(
        engine: EngineClient,
        encoders: Arc<EncoderSet>,
        pipelines: Vec<Arc<Pipeline>>,
        max_chars: usize,
        max_inputs: usize,
        metrics: Metrics,
    ) -> Self {
        let owner = format!(
            "{}-{}-{:08x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "sidecar".into()),
            std::process::id(),
            rand::random::<u32>()
        );
        Reindexer {
            engine,
            encoders,
            pipelines,
            max_chars,
            max_inputs,
            metrics,
            owner,
            lease: Duration::from_secs(15),
            versions: Default::default(),
        }
    }

    /// Sets `reindex.lease` (default 15 s).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// This replica's name in job leases.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn pipeline(&self, name: &str) -> Result<Arc<Pipeline>, ReindexError> {
        self.pipelines
            .iter()
            .find(|p| p.name == name)
            .or_else(|| self.pipelines.iter().find(|p| p.index == name))
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = self.pipelines.iter().map(|p| p.name.as_str()).collect();
                ReindexError::Invalid(format!(
                    "no pipeline `{name}` (loaded: {})",
                    if names.is_empty() { "none".into() } else { names.join(", ") }
                ))
            })
    }

    async fn exists(&self, index: &str) -> Result<bool, ReindexError> {
        let path = EnginePath::at_index(index)?.build();
        let r = self.engine.send(EngineRequest::new(Method::HEAD, path).passthrough()).await?;
        Ok(r.status.is_success())
    }

    async fn ensure_state_indices(&self) -> Result<(), ReindexError> {
        let defs = [
            (
                JOBS_INDEX,
                json!({"settings": {"index": {"auto_expand_replicas": "0-1"}}, "mappings": {"dynamic": false, "properties": {"status": {"type": "keyword"}, "created_ms": {"type": "long"}}}}),
            ),
            (
                ERRORS_INDEX,
                json!({"settings": {"index": {"auto_expand_replicas": "0-1"}}, "mappings": {"dynamic": false, "properties": {
                "job": {"type": "keyword"}, "doc_id": {"type": "keyword"}, "status": {"type": "integer"},
                "type": {"type": "keyword"}, "reason": {"type": "text"}, "at_ms": {"type": "long"}}}}),
            ),
        ];
        for (index, body) in defs {
            if !self.exists(index).await? {
                let r = self
                    .engine
                    .send(
                        EngineRequest::new(Method::PUT, EnginePath::at_index(index)?.build()).json(&body).passthrough(),
                    )
                    .await?;
                // another process may have created it meanwhile
                if !r.status.is_success() && !String::from_utf8_lossy(&r.body).contains("already_exists") {
                    return Err(ReindexError::Failed(format!(
                        "creating {index}: {}",
                        String::from_utf8_lossy(&r.body)
                    )));
                }
            }
        }
        Ok(())
    }

    /// Stores a job this replica runs (or creates, or ends): a lease while it is running, none
    /// once it has ended; with optimistic concurrency against what this replica wrote last (a new
    /// job: `op_type=create`). A conflict means another replica owns the job now.
    async fn save(&self, state: &JobState) -> Result<(), ReindexError> {
        let mut versions = self.versions.lock().await;
        let mut s = state.clone();
        s.lease = (s.status == Status::Running)
            .then(|| Lease { owner: self.owner.clone(), until_ms: now_ms() + self.lease.as_millis() as u64 });
        let path = match versions.get(&s.id) {
            Some((seq, term)) => {
                job_doc(&s.id)?.param("if_seq_no", &seq.to_string()).param("if_primary_term", &term.to_string())
            }
            None => job_doc(&s.id)?.param("op_type", "create"),
        };
        let doc = serde_json::to_value(&s).map_err(|e| ReindexError::Failed(e.to_string()))?;
        let req = EngineRequest::new(Method::PUT, path.build()).json(&doc).idempotent(true).passthrough();
        let r = self.engine.send(req).await?;
        let written = if r.status.as_u16() == 409 {
            // a retried write of ours may have landed already: then the stored one is ours
            let (stored, version) = self.load_versioned(&s.id).await?;
            if stored.lease.as_ref().map(|l| &l.owner) == s.lease.as_ref().map(|l| &l.owner)
                && stored.updated_ms == s.updated_ms
                && stored.status == s.status
            {
                version
            } else {
                versions.remove(&s.id);
                let owner = stored.lease.map_or_else(|| format!("status {:?}", stored.status), |l| l.owner);
                return Err(ReindexError::LeaseLost { id: s.id.clone(), owner });
            }
        } else if r.status.is_success() {
            let v: Value = r.json()?;
            (v["_seq_no"].as_u64().unwrap_or(0), v["_primary_term"].as_u64().unwrap_or(1))
        } else {
            return Err(EngineError::from_answer(r.status.as_u16(), &r.body).into());
        };
        // kept for ended jobs too: the run's last write of an ended job is conditional as well
        versions.insert(s.id.clone(), written);
        Ok(())
    }

    /// A stored job with its `(_seq_no, _primary_term)`.
    async fn load_versioned(&self, id: &str) -> Result<(JobState, (u64, u64)), ReindexError> {
        let r = self.engine.send(EngineRequest::new(Method::GET, job_doc(id)?.build()).passthrough()).await?;
        if r.status.as_u16() == 404 {
            return Err(ReindexError::NotFound(id.to_string()));
        }
        let v: Value = r.json()?;
        let state = serde_json::from_value(v["_source"].clone())
            .map_err(|e| ReindexError::Failed(format!("job `{id}` is unreadable: {e}")))?;
        Ok((state, (v["_seq_no"].as_u64().unwrap_or(0), v["_primary_term"].as_u64().unwrap_or(1))))
    }

    /// Takes over a stored job at `version` (its lease ran out, or it is not running): this
    /// replica's next write of it claims the lease, or fails if another replica was faster.
    async fn adopt(&self, id: &str, version: (u64, u64)) {
        self.versions.lock().await.insert(id.to_string(), version);
    }

    /// A stored job.
    pub async fn load(&self, id: &str) -> Result<JobState, ReindexError> {
        Ok(self.load_versioned(id).await?.0)
    }

    /// Validates a request and stores a new job (or loads the one to resume); creates the target.
    pub async fn prepare(&self, req: JobRequest) -> Result<JobState, ReindexError> {
        if let Some(id) = &req.resume {
            // a malformed id is refused before anything is created on the engine
            job_doc(id)?;
        }
        self.ensure_state_indices().await?;
        if let Some(id) = &req.resume {
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
                    return Err(ReindexError::LeaseLost { id: id.clone(), owner: l.owner.clone() });
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
            self.pipeline(&s.spec.pipeline)?;
            return Ok(s);
        }
        let p = self.pipeline(&req.pipeline)?;
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
        if !self.exists(&source).await? {
            return Err(ReindexError::Invalid(format!("the source index `{source}` does not exist")));
        }
        let source_props = self.source_properties(&source).await?;
        let source_excludes = stale_vectors(&p, &source_props);
        if !self.exists(&target).await? {
            self.create_target(&p, source_props, &target, &source_excludes).await?;
        }
        let count_body = match &req.query {
            Some(q) => json!({"query": q}),
            None => json!({}),
        };
        let c: Value = self
            .engine
            .send(
                EngineRequest::new(Method::POST, EnginePath::at_index(&source)?.api("_count").build())
                    .json(&count_body)
                    .idempotent(true),
            )
            .await?
            .json()?;
        let source_count = c["count"].as_u64().unwrap_or(0);
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

    /// The top-level properties of the source's mapping.
    async fn source_properties(&self, source: &str) -> Result<Map<String, Value>, ReindexError> {
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
    async fn create_target(
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
        let mut body = index_body_with(&info, &tp, shape, &other).map_err(|e| ReindexError::Invalid(e.to_string()))?;
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

    /// Starts a job's run and returns its control handle (for the HTTP API and the CLI's bar).
    pub fn control(&self, state: &JobState) -> Arc<JobControl> {
        Arc::new(JobControl {
            cancel: AtomicBool::new(false),
            live: Mutex::new(state.clone()),
            started: Instant::now(),
            read_at_start: state.total(|s| s.read),
        })
    }

    /// Runs a prepared job to its end (done, cancelled or failed); the final state is stored.
    pub async fn run(&self, state: JobState, control: Arc<JobControl>) -> JobState {
        let started = Instant::now();
        if let Ok(mut live) = control.live.lock() {
            *live = state;
        }
        let heartbeat = async {
            loop {
                tokio::time::sleep(self.lease / 3).await;
                match self.checkpoint(&control, |_| {}).await {
                    Err(e @ ReindexError::LeaseLost { .. }) => return Err::<(), _>(e),
                    Err(e) => tracing::warn!(error = %e, "could not renew the job lease"),
                    Ok(()) => {}
                }
            }
        };
        let result = tokio::select! {
            r = self.run_inner(&control) => r,
            Err(e) = heartbeat => Err(e),
        };
        let mut s = control.live.lock().map(|s| s.clone()).expect("job state lock");
        s.running_ms += started.elapsed().as_millis() as u64;
        if let Err(ReindexError::LeaseLost { owner, .. }) = &result {
            // another replica runs it now: write nothing more
            tracing::warn!(job = %s.id, %owner, "the job's lease went to another sidecar; stopping here");
            s.error = Some(format!("taken over by {owner}"));
            if let Ok(mut live) = control.live.lock() {
                *live = s.clone();
            }
            return s;
        }
        match result {
            Ok(()) if control.cancelled() => s.status = Status::Cancelled,
            Ok(()) => {}
            Err(e) => {
                tracing::error!(job = %s.id, error = %e, "reindex job failed");
                s.status = Status::Failed;
                s.error = Some(e.to_string());
            }
        }
        s.updated_ms = now_ms();
        // the final state matters (a stored `running` reads as a crashed run): wait out a short outage
        let until = Instant::now() + Duration::from_secs(120);
        while let Err(e) = self.save(&s).await {
            if matches!(e, ReindexError::LeaseLost { .. }) || Instant::now() > until {
                tracing::error!(job = %s.id, error = %e, "could not store the final job state");
                break;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        if let Ok(mut live) = control.live.lock() {
            *live = s.clone();
        }
        s
    }

    /// Updates the job's state and stores it.
    async fn checkpoint(&self, control: &JobControl, update: impl FnOnce(&mut JobState)) -> Result<(), ReindexError> {
        let snapshot = {
            let mut s = control.live.lock().expect("job state lock");
            update(&mut s);
            s.updated_ms = now_ms();
            s.clone()
        };
        self.save(&snapshot).await
    }

    async fn run_inner(&self, control: &JobControl) -> Result<(), ReindexError> {
        let (spec, id) = {
            let s = control.live.lock().expect("job state lock");
            (s.spec.clone(), s.id.clone())
        };
        self.checkpoint(control, |s| s.status = Status::Running).await?;
        let info = self.engine.info().await?;
        let mut p = (*self.pipeline(&spec.pipeline)?).clone();
        p.index = spec.target.clone();
        let ingestor = Ingestor::new(vec![p], self.encoders.clone(), self.max_chars, self.max_inputs)
            .map_err(|e| ReindexError::Invalid(e.to_string()))?;
        let sizer = Mutex::new({
            let b = control.live.lock().expect("job state lock").bulk.clone();
            let mut z = BulkSizer::new(b.size.max(1), 8.min(spec.bulk_size), spec.bulk_size);
            z.low_water = b.low_water.max(1).min(z.size);
            z
        });
        let todo: Vec<u32> =
            control.live.lock().expect("job state lock").slices.iter().filter(|s| !s.done).map(|s| s.id).collect();
        let runs = todo.iter().map(|&slice| {
            let run = SliceRun {
                job: &id,
                spec: &spec,
                dialect: info.dialect,
                slice,
                ingestor: &ingestor,
                sizer: &sizer,
                control,
            };
            async move { self.run_slice(&run).await }
        });
        let results = join_all(runs).await;
        for r in results {
            r?;
        }
        if control.cancelled() {
            return Ok(());
        }
        self.finish(control).await
    }

    /// Reads, embeds and writes one slice, through engine outages.
    async fn run_slice(&self, run: &SliceRun<'_>) -> Result<(), ReindexError> {
        let SliceRun { job, slice, control, .. } = *run;
        let mut outage_started: Option<Instant> = None;
        let mut attempt = 0u32;
        let read_of = || control.live.lock().expect("job state lock").slices[slice as usize].read;
        loop {
            let before = read_of();
            let r = self.run_slice_once(run).await;
            if read_of() > before {
                // it made progress before this error: a new outage, with its own budget
                outage_started = None;
                attempt = 0;
            }
            match r {
                Ok(()) => return Ok(()),
                Err(e) if retryable(&e) => {
                    let since = *outage_started.get_or_insert_with(Instant::now);
                    if since.elapsed() > MAX_OUTAGE || control.cancelled() {
                        return Err(e);
                    }
                    let delay = self
                        .engine
                        .retry_policy()
                        .delay(attempt.min(6), Duration::ZERO, rand::random::<f64>(), None)
                        .unwrap_or(Duration::from_secs(1))
                        .max(Duration::from_millis(500));
                    tracing::warn!(job, slice, error = %e, delay_ms = delay.as_millis() as u64, "engine trouble, the slice resumes from its checkpoint");
                    attempt += 1;
                    self.checkpoint(control, |s| s.slices[slice as usize].outages += 1).await.ok();
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn run_slice_once(&self, run: &SliceRun<'_>) -> Result<(), ReindexError> {
        let SliceRun { job, spec, dialect, slice, ingestor, sizer, control } = *run;
        let after = control.live.lock().expect("job state lock").slices[slice as usize].search_after.clone();
        let read_spec = ReadSpec {
            index: IndexName::try_from(spec.source.as_str())?,
            query: spec.query.clone(),
            source_includes: spec.source_includes.clone(),
            source_excludes: spec.source_excludes.clone(),
            page_size: spec.page_size,
            slice,
            slices: spec.slices,
        };
        let (mut reader, resumed) = Reader::open(&self.engine, dialect, read_spec, after.clone(), spec.scroll).await?;
        let kind = reader.kind();
        let restart = after.is_some() && !resumed;
        self.checkpoint(control, |s| {
            s.reader = Some(kind.to_string());
            if restart {
                // the keys do not carry over to a new cursor: read the slice again from its start
                let sl = &mut s.slices[slice as usize];
                *sl = SliceState { id: slice, restarts: sl.restarts + 1, outages: sl.outages, ..SliceState::default() };
            }
        })
        .await?;

        let (page_tx, mut page_rx) = mpsc::channel::<source::Page>(2);
        let (batch_tx, mut batch_rx) = mpsc::channel::<Batch>(2);
        let target = spec.target.clone();
        let read = async {
            let r = async {
                while !control.cancelled() {
                    match reader.next().await? {
                        Some(page) => {
                            if page_tx.send(page).await.is_err() {
                                break;
                            }
                        }
                        None => break,
                    }
                }
                Ok::<(), ReindexError>(())
            }
            .await;
            drop(page_tx);
            r
        };
        let embed = async {
            let r = async {
                while let Some(page) = page_rx.recv().await {
                    let read = page.hits.len();
                    let mut items: Vec<BulkItem> = page
                        .hits
                        .iter()
                        .map(|h| {
                            let mut meta = Map::new();
                            meta.insert("_index".into(), json!(target));
                            meta.insert("_id".into(), h["_id"].clone());
                            BulkItem {
                                action: Action::Index,
                                meta,
                                source: Some(h.get("_source").cloned().unwrap_or(json!({}))),
                                line: 0,
                            }
                        })
                        .collect();
                    let prepared = ingestor.prepare(&mut items, Some(&target), &self.engine).await?;
                    let batch = Batch {
                        items,
                        failures: prepared.failures,
                        unchanged: prepared.skipped,
                        read,
                        last_sort: page.last_sort,
                    };
                    if batch_tx.send(batch).await.is_err() {
                        break;
                    }
                }
                Ok::<(), ReindexError>(())
            }
            .await;
            drop(batch_tx);
            r
        };
        let write = async {
            while let Some(batch) = batch_rx.recv().await {
                let (written, failed, item_429s) = self.write_batch(job, spec, &batch, sizer).await?;
                let (size, low, shrinks, grows) = {
                    let z = sizer.lock().expect("sizer lock");
                    (z.size, z.low_water, z.shrinks, z.grows)
                };
                self.metrics.reindex_docs.get_or_create(&outcome("read")).inc_by(batch.read as u64);
                self.metrics.reindex_docs.get_or_create(&outcome("written")).inc_by(written);
                self.metrics.reindex_docs.get_or_create(&outcome("failed")).inc_by(failed);
                self.metrics.reindex_docs.get_or_create(&outcome("unchanged")).inc_by(batch.unchanged as u64);
                self.metrics.reindex_bulk_size.set(size as i64);
                self.checkpoint(control, |s| {
                    let sl = &mut s.slices[slice as usize];
                    sl.read += batch.read as u64;
                    sl.written += written;
                    sl.failed += failed;
                    sl.unchanged += batch.unchanged as u64;
                    if batch.last_sort.is_some() {
                        sl.search_after = batch.last_sort.clone();
                    }
                    s.bulk.size = size;
                    s.bulk.low_water = low;
                    s.bulk.shrinks = shrinks;
                    s.bulk.grows = grows;
                    s.bulk.item_429s += item_429s;
                })
                .await?;
            }
            Ok::<(), ReindexError>(())
        };
        let result = tokio::try_join!(read, embed, write);
        reader.close().await;
        result?;
        if !control.cancelled() {
            self.checkpoint(control, |s| s.slices[slice as usize].done = true).await?;
        }
        Ok(())
    }

    /// Writes one embedded page with the adaptive bulk size; returns (written, failed, item 429s).
    async fn write_batch(
        &self,
        job: &str,
        spec: &JobSpec,
        batch: &Batch,
        sizer: &Mutex<BulkSizer>,
    ) -> Result<(u64, u64, u64), ReindexError> {
        let mut errors: Vec<(usize, u16, String, String)> =
            batch.failures.iter().map(|f| (f.position, f.status, f.error_type.to_string(), f.reason.clone())).collect();
        let failed: std::collections::HashSet<usize> = batch.failures.iter().map(|f| f.position).collect();
        let mut pending: Vec<usize> = (0..batch.items.len()).filter(|p| !failed.contains(p)).collect();
        let (mut written, mut item_429s, mut round) = (0u64, 0u64, 0u32);
        let policy = self.engine.retry_policy().clone();
        let started = Instant::now();
        while !pending.is_empty() {
            let size = sizer.lock().expect("sizer lock").size;
            let mut again = Vec::new();
            for chunk in pending.chunks(size) {
                let items: Vec<&BulkItem> = chunk.iter().map(|&p| &batch.items[p]).collect();
                let req = EngineRequest::new(Method::POST, "/_bulk").ndjson(bulk::write(&items)).passthrough();
                let resp = match self.engine.send(req).await {
                    Ok(r) => r,
                    Err(EngineError::Overloaded { .. } | EngineError::Timeout { .. }) => {
                        sizer.lock().expect("sizer lock").pressure();
                        again.extend_from_slice(chunk);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                match resp.status.as_u16() {
                    200..=299 => {}
                    429 | 413 => {
                        sizer.lock().expect("sizer lock").pressure();
                        again.extend_from_slice(chunk);
                        continue;
                    }
                    s => return Err(EngineError::from_answer(s, &resp.body).into()),
                }
                let v: Value = resp.json()?;
                let results = v["items"].as_array().cloned().unwrap_or_default();
                if results.len() != chunk.len() {
                    return Err(EngineError::InvalidResponse(format!(
                        "_bulk answered {} of {} items",
                        results.len(),
                        chunk.len()
                    ))
                    .into());
                }
                let mut pushed_back = false;
                for (&pos, r) in chunk.iter().zip(&results) {
                    let body = r.as_object().and_then(|o| o.values().next()).cloned().unwrap_or_default();
                    let status = body["status"].as_u64().unwrap_or(500) as u16;
                    match status {
                        200..=299 => written += 1,
                        429 => {
                            item_429s += 1;
                            pushed_back = true;
                            again.push(pos);
                        }
                        _ => errors.push((
                            pos,
                            status,
                            body.pointer("/error/type").and_then(Value::as_str).unwrap_or("error").to_string(),
                            body.pointer("/error/reason")
                                .and_then(Value::as_str)
                                .map(String::from)
                                .unwrap_or_else(|| body["error"].to_string()),
                        )),
                    }
                }
                let mut z = sizer.lock().expect("sizer lock");
                if pushed_back {
                    z.pressure();
                } else {
                    z.healthy();
                }
            }
            pending = again;
            if pending.is_empty() {
                break;
            }
            round += 1;
            if round >= MAX_ITEM_ROUNDS {
                for &p in &pending {
                    errors.push((
                        p,
                        429,
                        "es_rejected_execution_exception".into(),
                        format!("still rejected after {round} attempts"),
                    ));
                }
                break;
            }
            let delay = policy
                .delay(round.min(6), Duration::ZERO, rand::random::<f64>(), None)
                .unwrap_or(Duration::from_millis(500));
            tracing::debug!(job, items = pending.len(), round, "bulk items pushed back, retrying them");
            tokio::time::sleep(delay.min(Duration::from_secs(5))).await;
        }
        let failed = errors.len() as u64;
        if !errors.is_empty() {
            self.log_errors(job, spec, batch, &errors).await?;
        }
        tracing::trace!(job, took_ms = started.elapsed().as_millis() as u64, written, failed, "batch written");
        Ok((written, failed, item_429s))
    }

    /// Stores failed documents in the error index (one per job and document: a replay overwrites).
    async fn log_errors(
        &self,
        job: &str,
        spec: &JobSpec,
        batch: &Batch,
        errors: &[(usize, u16, String, String)],
    ) -> Result<(), ReindexError> {
        let mut body = String::new();
        for (pos, status, t, reason) in errors {
            let item = &batch.items[*pos];
            let doc_id = item.meta.get("_id").and_then(Value::as_str).unwrap_or("").to_string();
            let mut source = item.source.clone().unwrap_or(Value::Null);
            // vectors are regenerated on a retry; keep the log small
            if let (Some(m), Ok(p)) = (source.as_object_mut(), self.pipeline(&spec.pipeline)) {
                for f in &p.fields {
                    m.remove(&f.vector);
                }
                if let Some(c) = &p.chunking {
                    m.remove(&c.passages_field);
                }
            }
            body.push_str(&json!({"index": {"_index": ERRORS_INDEX, "_id": format!("{job}:{doc_id}")}}).to_string());
            body.push('\n');
            body.push_str(
                &json!({"job": job, "source_index": spec.source, "target_index": spec.target, "doc_id": doc_id,
                    "status": status, "type": t, "reason": reason, "at_ms": now_ms(), "document": source.to_string()})
                .to_string(),
            );
            body.push('\n');
        }
        let v: Value =
            self.engine.send(EngineRequest::new(Method::POST, "/_bulk").ndjson(body).idempotent(true)).await?.json()?;
        if v["errors"].as_bool() != Some(false) {
            return Err(ReindexError::Failed(format!("could not log failed documents in {ERRORS_INDEX}: {v}")));
        }
        Ok(())
    }

    /// Verifies the counts and moves the alias.
    async fn finish(&self, control: &JobControl) -> Result<(), ReindexError> {
        let s = control.live.lock().expect("job state lock").clone();
        self.engine
            .send(
                EngineRequest::new(Method::POST, EnginePath::at_index(&s.spec.target)?.api("_refresh").build())
                    .idempotent(true),
            )
            .await?;
        let (read, written, failed) = (s.total(|x| x.read), s.total(|x| x.written), s.total(|x| x.failed));
        if read != written + failed || read != s.source_count {
            return Err(ReindexError::Failed(format!(
                "counts do not add up: source {} at the start, read {read}, written {written}, failed {failed}; the alias was not moved",
                s.source_count
            )));
        }
        let mut swapped = false;
        if let Some(alias) = &s.spec.alias {
            self.swap_alias(alias, &s.spec.target).await?;
            swapped = true;
        }
        self.checkpoint(control, |x| {
            x.status = Status::Done;
            x.alias_swapped = swapped;
        })
        .await
    }

    /// Points `alias` at `target` alone, in one `_aliases` call.
    pub async fn swap_alias(&self, alias: &str, target: &str) -> Result<(), ReindexError> {
        let path = EnginePath::root().api("_alias").index(&IndexName::try_from(alias)?).build();
        let r = self.engine.send(EngineRequest::new(Method::GET, path).passthrough()).await?;
        let mut actions = Vec::new();
        if r.status.is_success() {
            let v: Value = r.json()?;
            for index in v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
                if index != target {
                    actions.push(json!({"remove": {"index": index, "alias": alias}}));
                }
            }
        } else if self.exists(alias).await? {
            return Err(ReindexError::Invalid(format!(
                "`{alias}` is an index, not an alias: it cannot be moved to `{target}`"
            )));
        }
        actions.push(json!({"add": {"index": target, "alias": alias}}));
        self.engine.send(EngineRequest::new(Method::POST, "/_aliases").json(&json!({"actions": actions}))).await?;
        tracing::info!(%alias, %target, "alias moved");
        Ok(())
    }
}

fn outcome(o: &str) -> crate::telemetry::OutcomeLabels {
    crate::telemetry::OutcomeLabels { outcome: o.to_string() }
}

/// The jobs of one process, for the `/_jobs` API.
pub struct Jobs {
    pub reindexer: Arc<Reindexer>,
    running: Mutex<std::collections::BTreeMap<String, Arc<JobControl>>>,
}

impl Jobs {
    pub fn new(reindexer: Arc<Reindexer>) -> Self {
        Jobs { reindexer, running: Mutex::new(Default::default()) }
    }

    fn running(&self, id: &str) -> Option<Arc<JobControl>> {
        self.running.lock().ok().and_then(|m| m.get(id).cloned())
    }

    /// Prepares the job and runs it in the background; returns its first state.
    pub async fn start(self: &Arc<Self>, req: JobRequest) -> Result<JobState, ReindexError> {
        if let Some(id) = &req.resume {
            if self.running(id).is_some() {
                return Err(ReindexError::Invalid(format!("job `{id}` is already running")));
            }
        }
        let state = self.reindexer.prepare(req).await?;
        let first = state.clone();
        self.spawn_run(state);
        Ok(first)
    }

    /// The job's state and progress numbers.
    pub async fn get(&self, id: &str) -> Result<Value, ReindexError> {
        let (state, progress, here) = match self.running(id) {
            Some(c) => {
                let (s, p) = c.snapshot();
                (s, p, true)
            }
            None => {
                let s = self.reindexer.load(id).await?;
                let p = s.progress(None, 0);
                (s, p, false)
            }
        };
        let mut v = serde_json::to_value(&state).map_err(|e| ReindexError::Failed(e.to_string()))?;
        v["progress"] = progress;
        v["running_here"] = json!(here);
        if here {
            v["lease"] = json!({"owner": self.reindexer.owner()});
        }
        Ok(v)
    }

    /// Cancels a job: a running one stops at its next checkpoint; a stored `running` one (its
    /// process died) is marked cancelled. Either way it can be resumed.
    pub async fn cancel(&self, id: &str) -> Result<Value, ReindexError> {
        if let Some(c) = self.running(id) {
            c.cancel();
            return Ok(json!({"id": id, "status": "cancelling"}));
        }
        let (mut s, version) = self.reindexer.load_versioned(id).await?;
        if s.status == Status::Running {
            // another replica may run it: this write takes its lease away, so it stops at its
            // next checkpoint or lease renewal
            self.reindexer.adopt(id, version).await;
            s.status = Status::Cancelled;
            s.updated_ms = now_ms();
            self.reindexer.save(&s).await?;
        }
        Ok(json!({"id": id, "status": s.status}))
    }

    /// Runs a stored job here (prepared or adopted) in the background.
    fn spawn_run(self: &Arc<Self>, state: JobState) -> Arc<JobControl> {
        let control = self.reindexer.control(&state);
        if let Ok(mut m) = self.running.lock() {
            m.insert(state.id.clone(), control.clone());
        }
        let (jobs, c) = (self.clone(), control.clone());
        tokio::spawn(async move {
            let id = state.id.clone();
            let done = jobs.reindexer.run(state, c).await;
            tracing::info!(job = %id, status = ?done.status, "reindex job ended here");
            if let Ok(mut m) = jobs.running.lock() {
                m.remove(&id);
            }
        });
        control
    }

    /// Every `every` (with jitter), adopts `running` jobs whose lease ran out (their sidecar
    /// died) and whose pipeline this sidecar has. Runs until the returned task is aborted.
    pub fn adopt_orphans(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let jobs = self.clone();
        tokio::spawn(async move {
            loop {
                let jitter = Duration::from_millis(rand::random::<u64>() % (every.as_millis() as u64 / 2 + 1));
                tokio::time::sleep(every + jitter).await;
                match jobs.adopt_once().await {
                    Ok(n) if n > 0 => {
                        tracing::info!(adopted = n, "adopted reindex jobs whose sidecar stopped renewing them")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "looking for orphaned reindex jobs failed"),
                }
            }
        })
    }

    async fn adopt_once(self: &Arc<Self>) -> Result<usize, ReindexError> {
        let r = self
            .reindexer
            .engine
            .send(EngineRequest::new(Method::HEAD, EnginePath::at_index(JOBS_INDEX)?.build()).passthrough())
            .await?;
        if !r.status.is_success() {
            return Ok(0);
        }
        let body = json!({"size": 50, "seq_no_primary_term": true, "query": {"term": {"status": "running"}}});
        let v: Value = self
            .reindexer
            .engine
            .send(
                EngineRequest::new(Method::POST, EnginePath::at_index(JOBS_INDEX)?.api("_search").build())
                    .json(&body)
                    .idempotent(true),
            )
            .await?
            .json()?;
        let mut adopted = 0;
        for hit in v.pointer("/hits/hits").and_then(Value::as_array).into_iter().flatten() {
            let Ok(state) = serde_json::from_value::<JobState>(hit["_source"].clone()) else { continue };
            let expired = state.lease.as_ref().is_none_or(|l| l.until_ms < now_ms());
            if !expired || self.running(&state.id).is_some() || self.reindexer.pipeline(&state.spec.pipeline).is_err() {
                continue;
            }
            let version = (hit["_seq_no"].as_u64().unwrap_or(0), hit["_primary_term"].as_u64().unwrap_or(1));
            tracing::info!(job = %state.id, previous = ?state.lease.as_ref().map(|l| &l.owner), "adopting a reindex job");
            self.reindexer.adopt(&state.id, version).await;
            let mut state = state;
            state.error = None;
            self.spawn_run(state);
            adopted += 1;
        }
        Ok(adopted)
    }
}

/// Vector fields of the source's mapping (`props`) that `p` does not write: the old model's field
/// once a pipeline has dropped it.
fn stale_vectors(p: &Pipeline, props: &Map<String, Value>) -> Vec<String> {
    props
        .iter()
        .filter(|(k, v)| {
            matches!(v.get("type").and_then(Value::as_str), Some("dense_vector" | "knn_vector"))
                && !p.fields.iter().any(|f| &f.vector == *k)
        })
        .map(|(k, _)| k.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_job_id_format_names_a_job_document() {
        assert!(is_job_id("rx-1796313512711-f672"));
        assert_eq!(
            job_doc("rx-1796313512711-f672").unwrap().build(),
            "/.semantic-sidecar-jobs/_doc/rx-1796313512711-f672"
        );
        for bad in [
            "",
            "rx-",
            "rx-1-",
            "rx-1-abc",
            "rx-1-ABCD",
            "rx-x-abcd",
            "rx-1-abcd/../../_cluster/settings",
            "../../_cluster/settings",
            "rx-1-abcd#",
            "rx-123456789012345678901-abcd",
        ] {
            assert!(!is_job_id(bad), "{bad:?}");
            assert!(matches!(job_doc(bad), Err(ReindexError::BadJobId(_))), "{bad:?}");
        }
    }

    #[test]
    fn a_gateway_failure_writing_job_state_is_waited_out_not_fatal() {
        let e = ReindexError::Engine(EngineError::from_answer(502, b"Bad Gateway"));
        assert!(retryable(&e));
        let e = ReindexError::Engine(EngineError::from_answer(400, br#"{"error":{"type":"x","reason":"y"}}"#));
        assert!(!retryable(&e));
    }
}
