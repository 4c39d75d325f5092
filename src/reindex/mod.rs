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

mod finish;
mod job;
mod pipeline;
mod prepare;
pub mod sizer;
pub mod source;

pub use job::{is_job_id, BulkStats, JobControl, JobRequest, JobSpec, JobState, Lease, SliceState, Status};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::Method;
use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::encoder::{EncoderError, EncoderSet};
use crate::engine::path::EnginePath;
use crate::engine::{EngineClient, EngineError, EngineRequest};
use crate::error::ErrorCode;
use crate::ingest::catalog::servable;
use crate::ingest::owner::Owners;
use crate::ingest::writer::{Ingestor, Routed};
use crate::telemetry::Metrics;
use crate::types::name::PathError;
use crate::types::pipeline::Pipeline;
use job::{job_doc, now_ms};
use pipeline::SliceRun;
use sizer::BulkSizer;

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

/// The reindex service; cheap to share.
pub struct Reindexer {
    engine: EngineClient,
    encoders: Arc<EncoderSet>,
    owners: Arc<Owners>,
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

impl Reindexer {
    pub fn new(
        engine: EngineClient,
        encoders: Arc<EncoderSet>,
        owners: Arc<Owners>,
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
            owners,
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

    /// A served pipeline by name (or by the index it owns).
    fn pipeline(&self, name: &str) -> Result<Arc<Pipeline>, ReindexError> {
        let snap = self.owners.catalog().snapshot();
        if let Some((_, why)) = snap.unavailable.get(name) {
            return Err(ReindexError::Invalid(format!("pipeline `{name}` is {why}")));
        }
        snap.served
            .get(name)
            .or_else(|| snap.served.values().find(|s| s.pipeline.index == name))
            .map(|s| s.pipeline.clone())
            .ok_or_else(|| ReindexError::Invalid(format!("no pipeline `{name}` (pipelines: {})", snap.describe())))
    }

    /// The pipeline a job embeds with: the definition it carries, else the stored one.
    fn job_pipeline(&self, spec: &JobSpec) -> Result<Arc<Pipeline>, ReindexError> {
        match &spec.definition {
            Some(p) => Ok(Arc::new(p.clone())),
            None => self.pipeline(&spec.pipeline),
        }
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
        let mut p = (*self.job_pipeline(&spec)?).clone();
        p.index = spec.target.clone();
        servable(&p, &self.encoders).map_err(|r| ReindexError::Invalid(format!("pipeline `{}`: {r}", p.name)))?;
        let routed = Routed::single(&spec.target, Arc::new(p));
        let ingestor = Ingestor::new(self.owners.clone(), self.encoders.clone(), self.max_chars, self.max_inputs);
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
                routed: &routed,
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

#[cfg(test)]
mod tests {
    use super::pipeline::retryable;
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
