//! Documents on their way in: for indices that have a pipeline, the configured source fields are
//! embedded (bulk lane of the encoder) and the vectors written into the documents before they
//! go to the engine. Other indices pass through untouched.
//!
//! Per-document problems (a source field that is not text, text over the limits, an update that
//! touches only some of a vector's sources) fail that item alone; a full encoder queue fails the
//! whole request (the HTTP layer answers 429 with Retry-After), so nothing is dropped silently.
//!
//! Content-hash skip: with `hash_field`, documents that carry an `_id` are looked up first
//! (`_mget` of the hash and vector fields); unchanged text keeps the stored vectors.
//!
//! Item-level 429s from the engine are retried (only those items) with the engine's backoff.
//!
//! Chunking: with `[chunking]`, the text of the first `[[fields]]` entry is also cut into
//! passages of `max_tokens` model tokens with `overlap` (slices of the original text), stored as
//! nested `{text, vector}` objects in `passages_field`, so long documents are searchable past
//! the model's max_seq_len.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::bulk::{self, Action, BulkItem, ItemFailure};
use super::owner::{Owner, Owners, WriteRoute};
use crate::encoder::manifest::Manifest;
use crate::encoder::{EncodeOptions, EncoderError, EncoderSet, Input, Lane, Pooled, TextKind};
use crate::engine::path::EnginePath;
use crate::engine::{EngineClient, EngineError, EngineRequest, EngineResponse};
use crate::types::pipeline::Pipeline;

/// Why the ingest configuration was refused at startup.
#[derive(Debug, thiserror::Error)]
#[error("ingest: pipeline `{pipeline}`: {reason}")]
pub struct IngestConfigError {
    pub pipeline: String,
    pub reason: String,
}

/// Embeds the documents written to pipeline indices; [`Owners`] says which pipeline owns a name.
pub struct Ingestor {
    owners: Arc<Owners>,
    encoders: Arc<EncoderSet>,
    max_chars: usize,
    max_inputs: usize,
}

/// What the engine made of a bulk request.
pub enum BulkOutcome {
    /// The engine-shaped `{took, errors, items}`, after item-level retries.
    Items(Value),
    /// The engine refused the whole request; its answer, to pass on unchanged.
    Answer(EngineResponse),
}

fn item_status(item: &Value) -> Option<u64> {
    item.as_object()?.values().next()?.get("status")?.as_u64()
}

/// Sends `items` as one bulk request; items the engine rejects with 429 are sent again (only
/// them) with the engine's backoff policy until they land or the retry budget is spent, so a
/// busy cluster delays documents instead of dropping them. Items still rejected at the end are
/// reported as 429 to the client.
pub async fn send_bulk(engine: &EngineClient, path: &str, items: &[&BulkItem]) -> Result<BulkOutcome, EngineError> {
    let resp =
        engine.send(EngineRequest::new(reqwest::Method::POST, path).ndjson(bulk::write(items)).passthrough()).await?;
    if !resp.status.is_success() {
        return Ok(BulkOutcome::Answer(resp));
    }
    let mut answer: Value = resp.json()?;
    let policy = engine.retry_policy();
    let started = std::time::Instant::now();
    let mut retry = 0u32;
    while let Some(results) = answer["items"].as_array() {
        let rejected: Vec<usize> =
            results.iter().enumerate().filter(|(_, r)| item_status(r) == Some(429)).map(|(i, _)| i).collect();
        if rejected.is_empty() || rejected.len() > items.len() {
            break;
        }
        let Some(delay) = policy.delay(retry, started.elapsed(), rand::random::<f64>(), None) else { break };
        tracing::debug!(
            items = rejected.len(),
            retry = retry + 1,
            delay_ms = delay.as_millis() as u64,
            "bulk items rejected with 429, retrying them"
        );
        tokio::time::sleep(delay).await;
        let subset: Vec<&BulkItem> = rejected.iter().map(|&i| items[i]).collect();
        let resp = engine
            .send(EngineRequest::new(reqwest::Method::POST, path).ndjson(bulk::write(&subset)).passthrough())
            .await?;
        if !resp.status.is_success() {
            break;
        }
        let again: Value = resp.json()?;
        let Some(new_items) = again["items"].as_array() else { break };
        for (k, &i) in rejected.iter().enumerate() {
            if let Some(r) = new_items.get(k) {
                answer["items"][i] = r.clone();
            }
        }
        retry += 1;
    }
    let errors = answer["items"].as_array().is_some_and(|a| a.iter().any(|r| item_status(r).is_none_or(|s| s >= 300)));
    answer["errors"] = Value::Bool(errors);
    Ok(BulkOutcome::Items(answer))
}

/// What [`Ingestor::prepare`] decided.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Items that must not be sent, with their reasons.
    pub failures: Vec<ItemFailure>,
    /// Documents whose stored vectors were kept (content-hash skip).
    pub skipped: usize,
}

/// Why one document is refused: (status, error type, reason).
type Refusal = (u16, &'static str, String);

/// One text to embed: (item position, field spec index, text).
struct Pending {
    position: usize,
    target: Target,
    text: String,
}

/// Where a vector goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The vector field of `fields[i]`.
    Field(usize),
    /// `passages_field[k].vector`.
    Passage(usize),
}

/// A document whose `fields[0]` text is split into passages.
struct ToChunk {
    position: usize,
    /// The pipeline's model, whose tokenizer counts the passage tokens.
    model: String,
    text: String,
    max_tokens: usize,
    overlap: usize,
}

/// What a batch needs done, from [`Ingestor::collect_work`].
#[derive(Default)]
struct Work {
    /// Model name -> texts to embed with it.
    work: BTreeMap<String, Vec<Pending>>,
    to_chunk: Vec<ToChunk>,
    /// The content hash of each document of a pipeline with `hash_field`: the sources do not
    /// change while vectors are added, so it is computed once, for the skip and for the write.
    hashes: BTreeMap<usize, String>,
    failures: Vec<ItemFailure>,
    /// (position, field spec) of the documents whose sources give that spec no text: their
    /// vector is cleared instead of kept.
    textless: Vec<(usize, usize)>,
}

/// Whether queries embedded by `query` may search vectors written by `field`: only a static int8
/// copy of the same model (dynamic int8 gives a text another vector depending on its batch-mates,
/// any other model another space).
pub fn check_query_model(query: &Manifest, field: &Manifest) -> Result<(), String> {
    let source = &query.source;
    if source.quantized_from.as_deref() != Some(field.name.as_str()) {
        return Err(format!(
            "`{}` is not a quantized copy of the vector field's model `{}` (its manifest's quantized_from is {}): \
             queries must be embedded in the field's own space",
            query.name,
            field.name,
            source.quantized_from.as_deref().map_or("unset".to_string(), |m| format!("`{m}`"))
        ));
    }
    if source.quantization.as_deref() != Some("int8-static") {
        return Err(format!(
            "`{}` is quantized `{}`, not `int8-static`: dynamic int8 gives a text another vector depending on \
             its batch-mates; make a static copy with models/export.py --quantize int8-static",
            query.name,
            source.quantization.as_deref().unwrap_or("none")
        ));
    }
    let shape = |m: &Manifest| (m.dims, m.normalize, m.pooling, m.lowercase, m.prefixes.clone(), m.whitening.clone());
    if shape(query) != shape(field) {
        return Err(format!(
            "`{}` and `{}` differ in dims, pooling, normalisation, lowercasing, prefixes or whitening",
            query.name, field.name
        ));
    }
    Ok(())
}

/// Where each item of one request goes: the pipeline of every index name its items write to
/// (after [`Ingestor::route`]), and the items refused before anything is embedded.
#[derive(Debug, Default)]
pub struct Routed {
    owners: BTreeMap<String, Arc<Pipeline>>,
    /// Items whose owner this replica cannot serve, or whose name belongs to several pipelines.
    pub refused: Vec<ItemFailure>,
}

impl Routed {
    /// Every item of the request goes to `index`, owned by `p` (a reindex job's target).
    pub fn single(index: &str, p: Arc<Pipeline>) -> Routed {
        Routed { owners: BTreeMap::from([(index.to_string(), p)]), refused: Vec::new() }
    }

    /// The pipeline of index name `index` in this request.
    pub fn pipeline(&self, index: &str) -> Option<&Arc<Pipeline>> {
        self.owners.get(index)
    }

    /// Whether any item goes to a pipeline index (or was refused for its owner).
    pub fn touches_pipeline(&self) -> bool {
        !self.owners.is_empty() || !self.refused.is_empty()
    }
}

/// One request's items: their default index and where they go.
#[derive(Clone, Copy)]
struct At<'a> {
    default_index: Option<&'a str>,
    routed: &'a Routed,
}

impl Ingestor {
    pub fn new(owners: Arc<Owners>, encoders: Arc<EncoderSet>, max_chars: usize, max_inputs: usize) -> Ingestor {
        Ingestor { owners, encoders, max_chars, max_inputs }
    }

    /// The owner resolver (and through it the live pipeline set).
    pub fn owners(&self) -> &Arc<Owners> {
        &self.owners
    }

    /// Resolves where each item writes ([`super::owner`]): an item through an alias or date math
    /// gets its concrete index in `_index` (a data stream keeps its name), so that it is embedded
    /// by the pipeline that owns where it lands; items owned by a pipeline this replica cannot
    /// serve are refused (503), never written without vectors.
    pub async fn route(
        &self,
        engine: &EngineClient,
        items: &mut [BulkItem],
        default_index: Option<&str>,
    ) -> Result<Routed, EngineError> {
        let names: BTreeSet<String> = items.iter().filter_map(|i| i.index(default_index)).map(String::from).collect();
        let mut to: BTreeMap<String, Result<WriteRoute, String>> = BTreeMap::new();
        for n in names {
            let r = self.owners.for_write(engine, &n).await?;
            to.insert(n, r);
        }
        let mut routed = Routed::default();
        for (position, item) in items.iter_mut().enumerate() {
            let Some(name) = item.index(default_index).map(String::from) else { continue };
            match &to[&name] {
                Err(why) => routed.refused.push(ItemFailure {
                    position,
                    status: 400,
                    error_type: "illegal_argument_exception",
                    reason: why.clone(),
                }),
                Ok(WriteRoute { owner: Owner::Unavailable(_, why), .. }) => routed.refused.push(ItemFailure {
                    position,
                    status: 503,
                    error_type: "unavailable",
                    reason: why.clone(),
                }),
                Ok(WriteRoute { target, owner }) => {
                    if *target != name {
                        item.meta.insert("_index".into(), Value::from(target.clone()));
                    }
                    if let Owner::Served(p) = owner {
                        routed.owners.insert(target.clone(), p.clone());
                    }
                }
            }
        }
        Ok(routed)
    }

    /// What, besides the text, decides a document's vectors under `p`: each field's model
    /// (name, checkpoint, quantisation, fine-tune, shape, prefixes, whitening), its source
    /// fields, and the chunking. Part of the content hash, so that a changed pipeline re-embeds
    /// unchanged text.
    fn vector_identity(&self, p: &Pipeline) -> String {
        let model = |name: &str| match self.encoders.get(Some(name)) {
            Ok(e) => {
                let m = e.manifest();
                format!(
                    "{}|{}|{:?}|{:?}|{}|{:?}|{}|{:?}|{:?}|{}",
                    m.name,
                    m.source.checkpoint,
                    m.source.quantization,
                    m.source.finetune,
                    m.output_dims(),
                    m.pooling,
                    m.normalize,
                    m.prefixes,
                    m.whitening,
                    m.lowercase
                )
            }
            Err(_) => name.to_string(),
        };
        let mut out: Vec<String> = p
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| format!("{}<-{}:{}", f.vector, f.source.join("+"), model(p.field_model(i))))
            .collect();
        if let Some(c) = &p.chunking {
            out.push(format!("chunks:{}/{}/{}:{}", c.max_tokens, c.overlap, c.passages_field, model(&p.model)));
        }
        out.join(";")
    }

    /// The pipeline of the index an item targets, if any.
    fn pipeline_of(&self, item: &BulkItem, at: At<'_>) -> Option<Arc<Pipeline>> {
        item.index(at.default_index).and_then(|i| at.routed.pipeline(i)).cloned()
    }

    /// [`Ingestor::prepare`] for documents a client sent: an item that sets a field the
    /// pipeline computes (a vector, the passages, the hash) is refused unless the pipeline
    /// accepts client vectors, and is neither embedded nor sent.
    pub async fn prepare_client(
        &self,
        items: &mut [BulkItem],
        default_index: Option<&str>,
        routed: &Routed,
        engine: &EngineClient,
    ) -> Result<Prepared, EncoderError> {
        let at = At { default_index, routed };
        let mut refused: Vec<ItemFailure> = routed.refused.clone();
        let routed_out: BTreeSet<usize> = refused.iter().map(|f| f.position).collect();
        refused.extend(items.iter().enumerate().filter(|(position, _)| !routed_out.contains(position)).filter_map(
            |(position, item)| {
                let p = self.pipeline_of(item, at)?;
                let reason = client_set_field(&p, item)?;
                Some(ItemFailure { position, status: 400, error_type: "illegal_argument_exception", reason })
            },
        ));
        self.prepare_with(items, at, engine, refused).await
    }

    /// Embeds what the pipelines ask for, in place; returns the items that must not be sent.
    /// For documents the sidecar itself assembled (reindex reads, a merged `_update`).
    pub async fn prepare(
        &self,
        items: &mut [BulkItem],
        default_index: Option<&str>,
        routed: &Routed,
        engine: &EngineClient,
    ) -> Result<Prepared, EncoderError> {
        self.prepare_with(items, At { default_index, routed }, engine, routed.refused.clone()).await
    }

    async fn prepare_with(
        &self,
        items: &mut [BulkItem],
        at: At<'_>,
        engine: &EngineClient,
        refused: Vec<ItemFailure>,
    ) -> Result<Prepared, EncoderError> {
        // The pipeline's engine ingest pipeline, unless the item names its own.
        for item in items.iter_mut() {
            if let Some(name) = self.pipeline_of(item, at).and_then(|p| p.engine_pipeline.clone()) {
                item.meta.entry("pipeline").or_insert(Value::String(name));
            }
        }
        let skip: BTreeSet<usize> = refused.iter().map(|f| f.position).collect();
        let Work { mut work, mut to_chunk, mut hashes, mut failures, textless } = self.collect_work(items, at, &skip);
        failures.extend(refused);
        let failed: BTreeSet<usize> = failures.iter().map(|f| f.position).collect();
        let skipped = self.keep_unchanged(items, at, &mut work, &failed, &hashes, engine).await;
        let still: BTreeSet<usize> = work.values().flatten().map(|p| p.position).collect();
        to_chunk.retain(|c| still.contains(&c.position) && !failed.contains(&c.position));
        if !to_chunk.is_empty() {
            self.chunk_documents(items, at, to_chunk, &mut work).await?;
        }
        let embedded = self.embed_work(items, at, work, &failed).await?;
        for pos in embedded {
            let field = self.pipeline_of(&items[pos], at).and_then(|p| p.hash_field.clone());
            if let (Some(field), Some(hash), Some(doc)) = (field, hashes.remove(&pos), items[pos].doc_mut()) {
                doc.insert(field, Value::from(hash));
            }
        }
        self.clear_textless(items, at, &textless);
        Ok(Prepared { failures, skipped })
    }

    /// A document whose sources give a field spec no text has no vector for it: a full document
    /// loses the one it carried (a merged `_update` holds the stored one), a partial update that
    /// sends every source field (empty) sets it to null. Kept where the pipeline accepts client
    /// vectors.
    fn clear_textless(&self, items: &mut [BulkItem], at: At<'_>, textless: &[(usize, usize)]) {
        for &(pos, spec) in textless {
            let Some(p) = self.pipeline_of(&items[pos], at) else { continue };
            if p.accept_client_vectors {
                continue;
            }
            let partial = items[pos].action == Action::Update;
            let Some(doc) = items[pos].doc_mut() else { continue };
            let mut fields = vec![p.fields[spec].vector.clone()];
            if spec == 0 {
                fields.extend(p.chunking.as_ref().map(|c| c.passages_field.clone()));
            }
            if !partial {
                fields.iter().for_each(|f| {
                    doc.remove(f);
                });
            } else if p.fields[spec].source.iter().all(|f| lookup(doc, f).is_some()) {
                fields.into_iter().for_each(|f| {
                    doc.insert(f, Value::Null);
                });
            }
        }
    }

    /// What the items of pipeline indices need embedded, per model; the documents to chunk; the
    /// content hashes; the documents refused.
    fn collect_work(&self, items: &[BulkItem], at: At<'_>, skip: &BTreeSet<usize>) -> Work {
        let mut w = Work::default();
        for (position, item) in items.iter().enumerate() {
            if skip.contains(&position) {
                continue;
            }
            let Some(p) = self.pipeline_of(item, at) else { continue };
            // scripted updates and upserts without `doc` pass through
            let Some(doc) = item.doc() else { continue };
            if p.hash_field.is_some() {
                w.hashes.insert(position, content_hash(&p, &self.vector_identity(&p), doc));
            }
            match self.texts_for(&p, doc, item.action == Action::Update) {
                Ok(texts) => {
                    let with_text: BTreeSet<usize> = texts.iter().map(|(spec, _)| *spec).collect();
                    w.textless.extend((0..p.fields.len()).filter(|s| !with_text.contains(s)).map(|s| (position, s)));
                    if let (Some(c), Some((0, text))) = (&p.chunking, texts.first()) {
                        w.to_chunk.push(ToChunk {
                            position,
                            model: p.model.clone(),
                            text: text.clone(),
                            max_tokens: c.max_tokens,
                            overlap: c.overlap,
                        });
                    }
                    for (spec, text) in texts {
                        w.work.entry(p.field_model(spec).to_string()).or_default().push(Pending {
                            position,
                            target: Target::Field(spec),
                            text,
                        });
                    }
                }
                Err((status, error_type, reason)) => {
                    w.failures.push(ItemFailure { position, status, error_type, reason })
                }
            }
        }
        w
    }

    /// Splits each document of `to_chunk` into passages: written into its `passages_field`, and
    /// each passage's text added to `work`.
    async fn chunk_documents(
        &self,
        items: &mut [BulkItem],
        at: At<'_>,
        to_chunk: Vec<ToChunk>,
        work: &mut BTreeMap<String, Vec<Pending>>,
    ) -> Result<(), EncoderError> {
        // Tokenizing whole documents is CPU work: off the async workers.
        let encoders = self.encoders.clone();
        let chunked = tokio::task::spawn_blocking(move || {
            to_chunk
                .into_iter()
                .map(|c| {
                    let passages = encoders.get(Some(&c.model))?.chunk(&c.text, c.max_tokens, c.overlap)?;
                    Ok((c.position, c.model, passages))
                })
                .collect::<Result<Vec<_>, EncoderError>>()
        })
        .await
        .map_err(|e| EncoderError::Tokenizer(e.to_string()))??;
        for (pos, model, passages) in chunked {
            let Some(p) = self.pipeline_of(&items[pos], at) else { continue };
            let Some(c) = &p.chunking else { continue };
            if let Some(doc) = items[pos].doc_mut() {
                let list: Vec<Value> = passages.iter().map(|t| serde_json::json!({"text": t})).collect();
                doc.insert(c.passages_field.clone(), Value::Array(list));
            }
            for (k, text) in passages.into_iter().enumerate() {
                work.entry(model.clone()).or_default().push(Pending {
                    position: pos,
                    target: Target::Passage(k),
                    text,
                });
            }
        }
        Ok(())
    }

    /// Embeds `work` on the bulk lane, model by model, and writes each vector where it goes;
    /// returns the positions that got one.
    async fn embed_work(
        &self,
        items: &mut [BulkItem],
        at: At<'_>,
        work: BTreeMap<String, Vec<Pending>>,
        failed: &BTreeSet<usize>,
    ) -> Result<BTreeSet<usize>, EncoderError> {
        let mut embedded = BTreeSet::new();
        for (model, pending) in work {
            let pending: Vec<Pending> = pending.into_iter().filter(|p| !failed.contains(&p.position)).collect();
            let encoder = self.encoders.get(Some(&model))?;
            for chunk in pending.chunks(self.max_inputs.max(1)) {
                let inputs = chunk.iter().map(|p| Input::Text(p.text.clone())).collect();
                let opts = EncodeOptions {
                    kind: TextKind::Passage,
                    normalize: None,
                    truncate: true,
                    lane: Lane::Bulk,
                    wait_for_room: false,
                    cache: false,
                };
                let out = encoder.encode(inputs, opts).await?;
                for (p, vector) in chunk.iter().zip(out.outputs) {
                    let Pooled::Vector(v) = vector else { continue };
                    let Some(pipeline) = self.pipeline_of(&items[p.position], at) else { continue };
                    let Some(doc) = items[p.position].doc_mut() else { continue };
                    embedded.insert(p.position);
                    match p.target {
                        Target::Field(spec) => {
                            doc.insert(pipeline.fields[spec].vector.clone(), Value::from(v));
                        }
                        Target::Passage(k) => {
                            let Some(c) = &pipeline.chunking else { continue };
                            if let Some(Value::Object(passage)) =
                                doc.get_mut(&c.passages_field).and_then(|l| l.get_mut(k))
                            {
                                passage.insert("vector".into(), Value::from(v));
                            }
                        }
                    }
                }
            }
        }
        Ok(embedded)
    }

    /// The content-hash skip: documents whose embedded text hashes the same as the stored copy
    /// keep the stored vectors (copied into a full `index`/`create`, left alone by an `update`)
    /// and leave `work`. Returns how many documents were not embedded again. A failed lookup
    /// only means everything is embedded.
    async fn keep_unchanged(
        &self,
        items: &mut [BulkItem],
        at: At<'_>,
        work: &mut BTreeMap<String, Vec<Pending>>,
        failed: &std::collections::BTreeSet<usize>,
        hashes: &BTreeMap<usize, String>,
        engine: &EngineClient,
    ) -> usize {
        // index -> (id -> (position, new hash))
        let mut wanted: BTreeMap<String, BTreeMap<String, (usize, String)>> = BTreeMap::new();
        let positions: std::collections::BTreeSet<usize> = work.values().flatten().map(|p| p.position).collect();
        for &pos in positions.difference(failed) {
            let item = &items[pos];
            let (Some(index), Some(id)) = (item.index(at.default_index), item.meta.get("_id").and_then(Value::as_str))
            else {
                continue;
            };
            if let Some(hash) = hashes.get(&pos) {
                wanted.entry(index.to_string()).or_default().insert(id.to_string(), (pos, hash.clone()));
            }
        }
        let mut unchanged: BTreeMap<usize, Map<String, Value>> = BTreeMap::new();
        for (index, ids) in &wanted {
            let Some(p) = at.routed.pipeline(index) else { continue };
            let hash_field = p.hash_field.clone().unwrap_or_default();
            let mut fields = vec![hash_field.clone()];
            fields.extend(p.fields.iter().map(|f| f.vector.clone()));
            fields.extend(p.chunking.as_ref().map(|c| c.passages_field.clone()));
            let Ok(at) = EnginePath::at_index(index) else { continue };
            let path = at.api("_mget").param("_source_includes", &fields.join(",")).build();
            let body = serde_json::json!({"ids": ids.keys().collect::<Vec<_>>()});
            let Ok(resp) =
                engine.send(EngineRequest::new(reqwest::Method::POST, path).json(&body).idempotent(true)).await
            else {
                continue;
            };
            let Ok(found) = resp.json::<Value>() else { continue };
            for d in found["docs"].as_array().into_iter().flatten() {
                let (Some(id), Some(src)) = (d["_id"].as_str(), d["_source"].as_object()) else { continue };
                let Some((pos, hash)) = ids.get(id) else { continue };
                let complete = p.fields.iter().all(|f| src.get(&f.vector).is_some_and(Value::is_array))
                    && p.chunking.as_ref().is_none_or(|c| src.get(&c.passages_field).is_some_and(Value::is_array));
                if src.get(&hash_field).and_then(Value::as_str) == Some(hash.as_str()) && complete {
                    unchanged.insert(*pos, src.clone());
                }
            }
        }
        for (pos, stored) in &unchanged {
            let item = &mut items[*pos];
            if item.action != Action::Update {
                if let Some(doc) = item.doc_mut() {
                    doc.extend(stored.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        for pending in work.values_mut() {
            pending.retain(|p| !unchanged.contains_key(&p.position));
        }
        unchanged.len()
    }

    /// The text to embed for each field spec of `p`, or the reason the document cannot be taken.
    fn texts_for(
        &self,
        p: &Pipeline,
        doc: &Map<String, Value>,
        partial: bool,
    ) -> Result<Vec<(usize, String)>, Refusal> {
        let mut out = Vec::new();
        for (spec_i, spec) in p.fields.iter().enumerate() {
            let mut parts = Vec::new();
            let mut present = Vec::new();
            for f in &spec.source {
                match lookup(doc, f) {
                    None | Some(Value::Null) => {}
                    Some(Value::String(s)) => {
                        present.push(f.as_str());
                        if !s.is_empty() {
                            parts.push(s.as_str());
                        }
                    }
                    // a semantic_text field takes a list of texts, as Elastic's does
                    Some(Value::Array(a)) if p.semantic_text.is_some() && a.iter().all(Value::is_string) => {
                        present.push(f.as_str());
                        parts.extend(a.iter().filter_map(Value::as_str).filter(|s| !s.is_empty()));
                    }
                    Some(other) => {
                        return Err((
                            400,
                            "illegal_argument_exception",
                            format!(
                                "field [{f}] must be text to be embedded into [{}] (pipeline [{}]), got {}",
                                spec.vector,
                                p.name,
                                json_kind(other)
                            ),
                        ))
                    }
                }
            }
            if partial && !present.is_empty() && present.len() < spec.source.len() {
                let missing: Vec<&str> =
                    spec.source.iter().map(String::as_str).filter(|f| !present.contains(f)).collect();
                return Err((
                    400,
                    "illegal_argument_exception",
                    format!(
                        "this update changes {present:?} but not {missing:?}; [{}] is embedded from all of them, so send them all",
                        spec.vector
                    ),
                ));
            }
            if parts.is_empty() {
                continue;
            }
            let text = parts.join("\n");
            let chars = text.chars().count();
            if chars > self.max_chars {
                return Err((
                    413,
                    "sidecar_document_too_large_exception",
                    format!(
                        "the text for [{}] has {chars} characters, over encoder.max_input_chars ({})",
                        spec.vector, self.max_chars
                    ),
                ));
            }
            out.push((spec_i, text));
        }
        Ok(out)
    }
}

/// Why a client's item may not be written to pipeline `p`'s index: it sets a field the pipeline
/// computes (in the document, or an update's `doc` / `upsert`), or it is a scripted update,
/// whose changes could set one and cannot be embedded. `None` where the pipeline accepts client
/// vectors.
pub fn client_set_field(p: &Pipeline, item: &BulkItem) -> Option<String> {
    if p.accept_client_vectors {
        return None;
    }
    let source = item.source.as_ref();
    if item.action == Action::Update && source.is_some_and(|s| s.get("script").is_some()) {
        return Some(format!(
            "scripted updates are refused on pipeline [{}]'s index: the sidecar cannot embed what a script changes; send the changed fields as a partial `doc`",
            p.name
        ));
    }
    let mut docs: Vec<&Map<String, Value>> = item.doc().into_iter().collect();
    if item.action == Action::Update {
        docs.extend(source.and_then(|s| s.get("upsert")).and_then(Value::as_object));
    }
    let computed = p.computed_fields();
    let field = docs.iter().find_map(|d| computed.iter().find(|f| lookup(d, f).is_some()))?;
    Some(format!(
        "[{field}] is computed by pipeline [{}] from the document's text; a client may not set it (the pipeline's accept_client_vectors = true allows it)",
        p.name
    ))
}

fn lookup<'a>(doc: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut cur = doc.get(parts.next()?)?;
    for p in parts {
        cur = cur.get(p)?;
    }
    Some(cur)
}

/// What kind of JSON value `v` is, in words, for error messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// SHA-256 over every embedded source text of the document, with field names (hex).
pub fn content_hash(p: &Pipeline, identity: &str, doc: &Map<String, Value>) -> String {
    let mut h = Sha256::new();
    h.update(identity.as_bytes());
    h.update([0]);
    for spec in &p.fields {
        for f in &spec.source {
            h.update(f.as_bytes());
            h.update([0]);
            if let Some(Value::String(s)) = lookup(doc, f) {
                h.update(s.as_bytes());
            }
            h.update([0]);
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINILM: &str = include_str!("../../models/all-MiniLM-L6-v2/model.toml");

    fn manifest(name: &str, quantization: Option<&str>, from: Option<&str>) -> Manifest {
        let mut m: Manifest = toml::from_str(MINILM).unwrap();
        m.name = name.into();
        m.source.quantization = quantization.map(Into::into);
        m.source.quantized_from = from.map(Into::into);
        m
    }

    #[test]
    fn only_a_static_int8_copy_of_the_field_model_may_embed_its_queries() {
        let field = manifest("all-MiniLM-L6-v2", None, None);
        let copy = manifest("all-MiniLM-L6-v2-int8-static", Some("int8-static"), Some("all-MiniLM-L6-v2"));
        check_query_model(&copy, &field).unwrap();

        let dynamic = manifest("all-MiniLM-L6-v2-int8", Some("int8"), Some("all-MiniLM-L6-v2"));
        let e = check_query_model(&dynamic, &field).unwrap_err();
        assert!(e.contains("dynamic int8") && e.contains("--quantize int8-static"), "{e}");

        let other = manifest("bge-small-en-v1.5", None, None);
        let e = check_query_model(&other, &field).unwrap_err();
        assert!(e.contains("not a quantized copy of the vector field's model `all-MiniLM-L6-v2`"), "{e}");

        let of_another = manifest("bge-q", Some("int8-static"), Some("bge-small-en-v1.5"));
        assert!(check_query_model(&of_another, &field).unwrap_err().contains("`bge-small-en-v1.5`"));

        let mut prefixed = copy.clone();
        prefixed.prefixes.query = "query: ".into();
        assert!(check_query_model(&prefixed, &field).unwrap_err().contains("prefixes"));
        let mut fewer = copy;
        fewer.dims = 256;
        assert!(check_query_model(&fewer, &field).unwrap_err().contains("dims"));
    }
}
