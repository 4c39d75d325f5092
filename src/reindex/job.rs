//! Job state and leases: what a client asks for ([`JobRequest`]), the stored job document
//! ([`JobState`]: spec, per-slice checkpoints, counts, lease), the live control handle, and the
//! reads and optimistic-concurrency writes of job documents in `.semantic-sidecar-jobs`.
//! Must not read, embed or write documents (the stages do).
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use axum::http::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::*;
use crate::engine::path::EnginePath;
use crate::engine::{EngineError, EngineRequest};
use crate::types::name::DocId;

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
pub(super) fn job_doc(id: &str) -> Result<EnginePath, ReindexError> {
    if !is_job_id(id) {
        let shown: String = id.chars().take(64).collect();
        return Err(ReindexError::BadJobId(shown.escape_debug().to_string()));
    }
    Ok(EnginePath::at_index(JOBS_INDEX)?.api("_doc").id(&DocId::try_from(id)?))
}

pub(super) fn default_slices() -> u32 {
    1
}

/// What a client asks for (`POST /_jobs/reindex`, or the CLI flags).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// A pipeline name (or the index it targets).
    #[serde(default)]
    pub pipeline: String,
    /// A new definition of pipeline `pipeline` (the JSON `PUT /_sidecar/pipeline/{name}` takes):
    /// the job embeds with it, and at the end it is stored owning the alias (blue/green: how an
    /// index changes model).
    #[serde(default)]
    pub definition: Option<Value>,
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
    /// The definition the job embeds with, when the request carried one (else the stored pipeline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<crate::types::pipeline::Pipeline>,
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

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Live view and cancel switch of a running job.
pub struct JobControl {
    pub(super) cancel: AtomicBool,
    pub(super) live: Mutex<JobState>,
    pub(super) started: Instant,
    pub(super) read_at_start: u64,
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

impl Reindexer {
    pub(super) async fn exists(&self, index: &str) -> Result<bool, ReindexError> {
        let path = EnginePath::at_index(index)?.build();
        let r = self.engine.send(EngineRequest::new(Method::HEAD, path).passthrough()).await?;
        Ok(r.status.is_success())
    }

    pub(super) async fn ensure_state_indices(&self) -> Result<(), ReindexError> {
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
    pub(super) async fn save(&self, state: &JobState) -> Result<(), ReindexError> {
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
    pub(super) async fn load_versioned(&self, id: &str) -> Result<(JobState, (u64, u64)), ReindexError> {
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
    pub(super) async fn adopt(&self, id: &str, version: (u64, u64)) {
        self.versions.lock().await.insert(id.to_string(), version);
    }

    /// A stored job.
    pub async fn load(&self, id: &str) -> Result<JobState, ReindexError> {
        Ok(self.load_versioned(id).await?.0)
    }
}
