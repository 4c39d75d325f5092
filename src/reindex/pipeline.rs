//! One slice's run: read a page ([`super::source`]) → embed it through the ingest code (bulk
//! lane, content-hash skip) → write it with an adaptive bulk size ([`super::sizer`]), with
//! bounded channels between the stages, item-level 429 retries and the error log. Owns the
//! stages only; checkpoints are stored through the job state ([`super::job`]).
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::sizer::BulkSizer;
use super::source::{ReadSpec, Reader};
use super::*;
use crate::engine::dialect::Dialect;
use crate::engine::{EngineError, EngineRequest};
use crate::ingest::bulk::{self, Action, BulkItem, ItemFailure};
use crate::ingest::writer::{Ingestor, Routed};
use crate::types::name::IndexName;

/// What every stage of one slice's run needs.
pub(super) struct SliceRun<'a> {
    pub(super) job: &'a str,
    pub(super) spec: &'a JobSpec,
    pub(super) dialect: Dialect,
    pub(super) slice: u32,
    pub(super) ingestor: &'a Ingestor,
    pub(super) routed: &'a Routed,
    pub(super) sizer: &'a Mutex<BulkSizer>,
    pub(super) control: &'a JobControl,
}

/// A page on its way through the stages.
pub(super) struct Batch {
    pub(super) items: Vec<BulkItem>,
    pub(super) failures: Vec<ItemFailure>,
    pub(super) unchanged: usize,
    pub(super) read: usize,
    pub(super) last_sort: Option<Value>,
}

/// What one batch's write did.
#[derive(Default)]
pub(super) struct Written {
    pub(super) written: u64,
    pub(super) failed: u64,
    /// Items the engine pushed back with a 429 (and that were tried again).
    pub(super) item_429s: u64,
}

/// A document that was not written: (position in the batch, status, error type, reason).
pub(super) type ItemError = (usize, u16, String, String);

pub(super) fn retryable(e: &ReindexError) -> bool {
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

pub(super) fn outcome(o: &str) -> crate::telemetry::OutcomeLabels {
    crate::telemetry::OutcomeLabels { outcome: o.to_string() }
}

impl Reindexer {
    /// Reads, embeds and writes one slice, through engine outages.
    pub(super) async fn run_slice(&self, run: &SliceRun<'_>) -> Result<(), ReindexError> {
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

    /// One try at a slice: opens its reader at the checkpoint, runs the read → embed → write
    /// stages until the slice ends or the job is cancelled, and marks it done.
    pub(super) async fn run_slice_once(&self, run: &SliceRun<'_>) -> Result<(), ReindexError> {
        let SliceRun { job, spec, slice, ingestor, routed, sizer, control, .. } = *run;
        let mut reader = self.open_reader(run).await?;
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
                    let batch = self.embed_page(page, &target, ingestor, routed).await?;
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
                let counts = self.write_batch(job, spec, &batch, sizer).await?;
                self.record_batch(run, &batch, counts).await?;
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

    /// The slice's reader, resumed at its checkpoint where the cursor allows; a slice whose
    /// cursor cannot resume is checkpointed as restarted from its start.
    async fn open_reader(&self, run: &SliceRun<'_>) -> Result<Reader, ReindexError> {
        let SliceRun { spec, dialect, slice, control, .. } = *run;
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
        let (reader, resumed) = Reader::open(&self.engine, dialect, read_spec, after.clone(), spec.scroll).await?;
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
        Ok(reader)
    }

    /// A read page as `index` items into `target`, embedded through the ingest code.
    async fn embed_page(
        &self,
        page: source::Page,
        target: &str,
        ingestor: &Ingestor,
        routed: &Routed,
    ) -> Result<Batch, ReindexError> {
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
        let prepared = ingestor.prepare(&mut items, Some(target), routed, &self.engine).await?;
        Ok(Batch { items, failures: prepared.failures, unchanged: prepared.skipped, read, last_sort: page.last_sort })
    }

    /// Counts a written batch in the metrics and checkpoints the slice past it, with the bulk
    /// sizer's state.
    async fn record_batch(&self, run: &SliceRun<'_>, batch: &Batch, counts: Written) -> Result<(), ReindexError> {
        let SliceRun { slice, sizer, control, .. } = *run;
        let Written { written, failed, item_429s } = counts;
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
        .await
    }

    /// Writes one embedded page with the adaptive bulk size: items the engine pushed back are
    /// tried again (up to [`MAX_ITEM_ROUNDS`]), the others that failed go to the error log.
    pub(super) async fn write_batch(
        &self,
        job: &str,
        spec: &JobSpec,
        batch: &Batch,
        sizer: &Mutex<BulkSizer>,
    ) -> Result<Written, ReindexError> {
        let mut errors: Vec<ItemError> =
            batch.failures.iter().map(|f| (f.position, f.status, f.error_type.to_string(), f.reason.clone())).collect();
        let failed: std::collections::HashSet<usize> = batch.failures.iter().map(|f| f.position).collect();
        let mut pending: Vec<usize> = (0..batch.items.len()).filter(|p| !failed.contains(p)).collect();
        let mut counts = Written::default();
        let mut round = 0u32;
        let policy = self.engine.retry_policy().clone();
        let started = Instant::now();
        while !pending.is_empty() {
            let size = sizer.lock().expect("sizer lock").size;
            let mut again = Vec::new();
            for chunk in pending.chunks(size) {
                self.send_chunk(batch, chunk, sizer, &mut counts, &mut again, &mut errors).await?;
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
        counts.failed = errors.len() as u64;
        if !errors.is_empty() {
            self.log_errors(job, spec, batch, &errors).await?;
        }
        let (written, failed) = (counts.written, counts.failed);
        tracing::trace!(job, took_ms = started.elapsed().as_millis() as u64, written, failed, "batch written");
        Ok(counts)
    }

    /// One `_bulk` of the batch's items at `chunk`: the written are counted, the pushed back
    /// (a 429 or 413 of the whole request, an item's 429) go to `again` and shrink the bulk size,
    /// the others that failed go to `errors`.
    async fn send_chunk(
        &self,
        batch: &Batch,
        chunk: &[usize],
        sizer: &Mutex<BulkSizer>,
        counts: &mut Written,
        again: &mut Vec<usize>,
        errors: &mut Vec<ItemError>,
    ) -> Result<(), ReindexError> {
        let items: Vec<&BulkItem> = chunk.iter().map(|&p| &batch.items[p]).collect();
        let req = EngineRequest::new(Method::POST, "/_bulk").ndjson(bulk::write(&items)).passthrough();
        let resp = match self.engine.send(req).await {
            Ok(r) => r,
            Err(EngineError::Overloaded { .. } | EngineError::Timeout { .. }) => {
                sizer.lock().expect("sizer lock").pressure();
                again.extend_from_slice(chunk);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        match resp.status.as_u16() {
            200..=299 => {}
            429 | 413 => {
                sizer.lock().expect("sizer lock").pressure();
                again.extend_from_slice(chunk);
                return Ok(());
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
                200..=299 => counts.written += 1,
                429 => {
                    counts.item_429s += 1;
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
        Ok(())
    }

    /// Stores failed documents in the error index (one per job and document: a replay overwrites).
    pub(super) async fn log_errors(
        &self,
        job: &str,
        spec: &JobSpec,
        batch: &Batch,
        errors: &[ItemError],
    ) -> Result<(), ReindexError> {
        let mut body = String::new();
        for (pos, status, t, reason) in errors {
            let item = &batch.items[*pos];
            let doc_id = item.meta.get("_id").and_then(Value::as_str).unwrap_or("").to_string();
            let mut source = item.source.clone().unwrap_or(Value::Null);
            // vectors are regenerated on a retry; keep the log small
            if let (Some(m), Ok(p)) = (source.as_object_mut(), self.job_pipeline(spec)) {
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
}
