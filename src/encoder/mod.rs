//! The encoder: text in, vectors out, through ONNX Runtime.
//!
//! Owns the model manifests, tokenizers, the batching queue, the session threads, pooling,
//! whitening and normalisation. Must not touch HTTP, the engine or the async runtime's worker
//! threads: callers get an [`Encoder`] handle whose `encode` tokenizes (on a blocking thread for
//! large inputs), reserves room in the bounded queue, and awaits a oneshot reply.
//!
//! Cancel-safety: dropping an `encode` future abandons its job; the session threads skip the
//! inputs of abandoned jobs that are not yet running, and the queue room is released.
//!
//! Not supported yet: cross-encoders, sparse vectors, dense layers after pooling, CPU/GPU
//! sessions of one model side by side.

pub mod cache;
pub mod manifest;
pub mod pooling;
pub mod queue;
pub mod runtime;
pub mod tokenize;
pub mod whitening;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::error::ErrorCode;
use crate::settings::EncoderSettings;
pub use crate::settings::Provider;
use crate::telemetry::EncoderMetrics;
use cache::{CacheKey, Cached, VectorCache};
use manifest::{Manifest, ModelDir};
pub use pooling::Pooled;
pub use queue::Lane;
use queue::{BatchLimits, BatchQueue, Job};
use tokenize::{Encoded, TextTokenizer};

/// Why encoding failed, or a model could not be loaded.
#[derive(Clone, Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("model manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("model `{model}` does not match its manifest: {reason}")]
    ModelMismatch { model: String, reason: String },
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("whitening: {0}")]
    Whitening(String),
    #[error("unknown model `{name}` (loaded: {available})")]
    UnknownModel { name: String, available: String },
    #[error("no inputs: send at least one text")]
    NoInputs,
    #[error("{got} inputs is more than encoder.max_inputs_per_request ({max})")]
    TooManyInputs { got: usize, max: usize },
    #[error("input {index} has {chars} characters, more than encoder.max_input_chars ({max})")]
    InputTooLong { index: usize, chars: usize, max: usize },
    #[error(
        "input {index} has {tokens} tokens, more than the model's max_seq_len ({max}); send truncate=true to cut it"
    )]
    TooManyTokens { index: usize, tokens: usize, max: usize },
    #[error("{0}")]
    InvalidOption(String),
    #[error("the encoder queue is full ({capacity} inputs); retry later")]
    QueueFull { capacity: usize },
    #[error("the encoder is shutting down")]
    ShuttingDown,
    #[error("inference failed: {0}")]
    Inference(String),
}

impl EncoderError {
    pub fn code(&self) -> ErrorCode {
        match self {
            EncoderError::Manifest { .. }
            | EncoderError::ModelMismatch { .. }
            | EncoderError::Runtime(_)
            | EncoderError::Tokenizer(_)
            | EncoderError::Whitening(_)
            | EncoderError::Inference(_) => ErrorCode::Internal,
            EncoderError::UnknownModel { .. } => ErrorCode::ModelNotFound,
            EncoderError::NoInputs | EncoderError::InvalidOption(_) => ErrorCode::InvalidInput,
            EncoderError::TooManyInputs { .. }
            | EncoderError::InputTooLong { .. }
            | EncoderError::TooManyTokens { .. } => ErrorCode::LimitExceeded,
            EncoderError::QueueFull { .. } => ErrorCode::Overloaded,
            EncoderError::ShuttingDown => ErrorCode::Unavailable,
        }
    }
}

/// One input: text, or words already split (bert-as-service's `is_tokenized`).
#[derive(Clone, Debug)]
pub enum Input {
    Text(String),
    Words(Vec<String>),
}

impl Input {
    fn chars(&self) -> usize {
        match self {
            Input::Text(t) => t.chars().count(),
            Input::Words(w) => w.iter().map(|s| s.chars().count() + 1).sum(),
        }
    }
}

/// Which prefix of the manifest applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TextKind {
    Query,
    Passage,
    #[default]
    Raw,
}

/// Per-call options.
#[derive(Clone, Copy, Debug)]
pub struct EncodeOptions {
    pub kind: TextKind,
    /// Override the manifest's normalisation.
    pub normalize: Option<bool>,
    /// Cut inputs longer than max_seq_len (else fail with [`EncoderError::TooManyTokens`]).
    pub truncate: bool,
    pub lane: Lane,
    /// Wait for queue room (internal bulk callers) instead of failing with `QueueFull`.
    pub wait_for_room: bool,
    /// Look texts up in (and add them to) the query-vector cache, when there is one.
    pub cache: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            kind: TextKind::Raw,
            normalize: None,
            truncate: true,
            lane: Lane::Interactive,
            wait_for_room: false,
            cache: false,
        }
    }
}

/// Where an encode call's time went.
#[derive(Clone, Copy, Debug, Default)]
pub struct EncodeTimes {
    pub tokenize: Duration,
    /// The longest any input waited in its lane for a session.
    pub queue_wait: Duration,
    /// The longest batch holding one of the inputs (inference, pooling, whitening).
    pub run: Duration,
    /// Inputs answered from the query-vector cache.
    pub cache_hits: usize,
}

/// Vectors and token accounting for one call.
#[derive(Clone, Debug)]
pub struct Encoding {
    pub outputs: Vec<Pooled>,
    /// Tokens per input after truncation (special tokens included).
    pub tokens: Vec<usize>,
    /// Tokens cut per input.
    pub truncated: Vec<usize>,
    pub times: EncodeTimes,
}

/// Limits applied before anything is queued.
#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    pub max_inputs: usize,
    pub max_chars: usize,
    pub queue_capacity: usize,
}

/// A loaded model and its session threads. Cheap to share behind an `Arc`.
pub struct Encoder {
    manifest: Manifest,
    /// Name, ONNX file and output size: what the query-vector cache keys on.
    identity: Arc<str>,
    cache: Option<Arc<VectorCache>>,
    tokenizer: Arc<TextTokenizer>,
    queue: Arc<BatchQueue>,
    room: Arc<Semaphore>,
    provider: Provider,
    limits: RequestLimits,
    metrics: EncoderMetrics,
}

impl Drop for Encoder {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// What `/readyz` shows of a model.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub dims: usize,
    pub max_seq_len: usize,
    pub pooling: String,
    pub normalize: bool,
    pub provider: Provider,
}

/// The model's whitening transform, when its manifest names one, checked against its dims.
fn load_whitening(model: &ModelDir) -> Result<Option<Arc<whitening::Whitening>>, EncoderError> {
    let Some(spec) = &model.manifest.whitening else {
        return Ok(None);
    };
    let path = model.path(&spec.file);
    let text =
        std::fs::read_to_string(&path).map_err(|e| EncoderError::Whitening(format!("{}: {e}", path.display())))?;
    let file: whitening::WhiteningFile =
        serde_json::from_str(&text).map_err(|e| EncoderError::Whitening(format!("{}: {e}", path.display())))?;
    let w = whitening::Whitening::from_file(&file, spec.dims)?;
    if w.input_dims() != model.manifest.dims {
        return Err(EncoderError::Whitening(format!(
            "{} was fitted on {}-dim vectors, the model makes {}",
            path.display(),
            w.input_dims(),
            model.manifest.dims
        )));
    }
    Ok(Some(Arc::new(w)))
}

/// Name, ONNX file and output dims: what the query-vector cache keys on.
fn identity(model: &ModelDir) -> Arc<str> {
    format!(
        "{}\u{0}{}\u{0}{}",
        model.manifest.name,
        model.path(&model.manifest.onnx).display(),
        model.manifest.output_dims()
    )
    .into()
}

impl Encoder {
    /// Loads `dir`, builds `settings.sessions_per_model` sessions and starts their threads.
    /// Blocking (reads files, builds sessions): call it outside async workers.
    pub fn load(
        dir: &std::path::Path,
        settings: &EncoderSettings,
        metrics: &EncoderMetrics,
    ) -> Result<Encoder, EncoderError> {
        Self::load_model(ModelDir::load(dir)?, settings, metrics)
    }

    /// Like [`Encoder::load`], from a manifest already read (the CLI edits it, e.g. to fit
    /// whitening on un-whitened vectors).
    pub fn load_model(
        model: ModelDir,
        settings: &EncoderSettings,
        metrics: &EncoderMetrics,
    ) -> Result<Encoder, EncoderError> {
        let ort_path = settings
            .ort_library
            .as_ref()
            .ok_or_else(|| EncoderError::Runtime("encoder.ort_library is not set (nor ORT_DYLIB_PATH)".into()))?;
        let env = runtime::init_runtime(ort_path)?;
        let tokenizer = Arc::new(TextTokenizer::load(&model)?);
        let whitening = load_whitening(&model)?;
        // With several session threads, the first never takes bulk work: queries do not wait
        // behind it. It runs with fewer intra-op threads (sized for one short query, leaving the
        // other cores to the engine and HTTP); the others with `intra_threads` for throughput.
        let reserved = settings.sessions_per_model > 1 && settings.reserve_interactive_session;
        let bulk_sessions = if reserved { settings.sessions_per_model - 1 } else { settings.sessions_per_model };
        let queue = Arc::new(
            BatchQueue::new(BatchLimits {
                max_batch_tokens: settings.max_batch_tokens,
                max_batch_requests: settings.max_batch_requests,
            })
            .with_max_bulk_running(bulk_sessions),
        );
        let opts = runtime::SessionOptions {
            providers: settings.execution_providers.clone(),
            require_gpu: settings.require_gpu,
            intra_threads: settings.effective_intra_threads(),
            inter_threads: settings.inter_threads,
            spinning: settings.thread_spinning,
        };
        let mut provider = Provider::Cpu;
        for i in 0..settings.sessions_per_model {
            let accept_bulk = !(reserved && i == 0);
            let opts = runtime::SessionOptions {
                intra_threads: if accept_bulk {
                    opts.intra_threads
                } else {
                    settings.effective_interactive_intra_threads()
                },
                ..opts.clone()
            };
            let (session, p) = runtime::build_session(&env, &model, &opts)?;
            provider = p;
            let worker = runtime::Worker {
                manifest: model.manifest.clone(),
                pad_id: tokenizer.pad_id(),
                whitening: whitening.clone(),
                queue: queue.clone(),
                metrics: metrics.clone(),
                accept_bulk,
            };
            std::thread::Builder::new()
                .name(format!("encoder-{}-{i}", model.manifest.name))
                .spawn(move || worker.run(session))
                .map_err(|e| EncoderError::Runtime(format!("spawning a session thread: {e}")))?;
        }
        metrics.set_provider(&model.manifest.name, provider);
        tracing::info!(
            model = %model.manifest.name, provider = %provider, sessions = settings.sessions_per_model,
            dims = model.manifest.output_dims(), pooling = %model.manifest.pooling, "model loaded"
        );
        Ok(Encoder {
            identity: identity(&model),
            manifest: model.manifest,
            cache: None,
            tokenizer,
            queue,
            room: Arc::new(Semaphore::new(settings.queue_capacity)),
            provider,
            limits: RequestLimits {
                max_inputs: settings.max_inputs_per_request,
                max_chars: settings.max_input_chars,
                queue_capacity: settings.queue_capacity,
            },
            metrics: metrics.clone(),
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Passages of `text` by this model's tokens (see [`TextTokenizer::chunk`]).
    pub fn chunk(&self, text: &str, max_tokens: usize, overlap: usize) -> Result<Vec<String>, EncoderError> {
        self.tokenizer.chunk(text, max_tokens, overlap)
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    pub fn info(&self) -> ModelInfo {
        ModelInfo {
            name: self.manifest.name.clone(),
            dims: self.manifest.output_dims(),
            max_seq_len: self.manifest.max_seq_len,
            pooling: self.manifest.pooling.to_string(),
            normalize: self.manifest.normalize,
            provider: self.provider,
        }
    }

    /// Shares `cache` for query vectors (calls with [`EncodeOptions::cache`] use it).
    pub fn with_cache(mut self, cache: Option<Arc<VectorCache>>) -> Self {
        self.cache = cache;
        self
    }

    fn prefix(&self, kind: TextKind) -> &str {
        match kind {
            TextKind::Query => &self.manifest.prefixes.query,
            TextKind::Passage => &self.manifest.prefixes.passage,
            TextKind::Raw => "",
        }
    }

    fn cache_key(&self, prefix: &Arc<str>, input: &Input) -> Option<CacheKey> {
        match input {
            Input::Text(t) if t.len() <= cache::MAX_CACHED_TEXT => {
                Some(CacheKey { model: self.identity.clone(), prefix: prefix.clone(), text: t.clone() })
            }
            _ => None,
        }
    }

    /// Encodes `inputs` (results in input order).
    pub async fn encode(&self, inputs: Vec<Input>, opts: EncodeOptions) -> Result<Encoding, EncoderError> {
        if inputs.is_empty() {
            return Err(EncoderError::NoInputs);
        }
        if inputs.len() > self.limits.max_inputs {
            return Err(EncoderError::TooManyInputs { got: inputs.len(), max: self.limits.max_inputs });
        }
        for (index, input) in inputs.iter().enumerate() {
            let chars = input.chars();
            if chars > self.limits.max_chars {
                return Err(EncoderError::InputTooLong { index, chars, max: self.limits.max_chars });
            }
        }
        let cache = self.cache.as_ref().filter(|_| opts.cache);
        let Some(cache) = cache else {
            let mut out = self.encode_uncached(inputs, opts).await?;
            self.normalize(&mut out.outputs, opts);
            return Ok(out);
        };
        let prefix: Arc<str> = self.prefix(opts.kind).into();
        let keys: Vec<Option<CacheKey>> = inputs.iter().map(|i| self.cache_key(&prefix, i)).collect();
        let found: Vec<Option<Cached>> = keys.iter().map(|k| k.as_ref().and_then(|k| cache.get(k))).collect();
        let hits = found.iter().filter(|f| f.is_some()).count();
        let misses = keys.iter().filter(|k| k.is_some()).count() - hits;
        self.metrics.cache_lookups(&self.manifest.name, hits, misses);
        if !opts.truncate {
            if let Some((index, c)) =
                found.iter().enumerate().find_map(|(i, f)| f.as_ref().filter(|c| c.truncated > 0).map(|c| (i, c)))
            {
                return Err(EncoderError::TooManyTokens {
                    index,
                    tokens: c.tokens + c.truncated,
                    max: self.manifest.max_seq_len,
                });
            }
        }
        let misses: Vec<usize> = (0..inputs.len()).filter(|&i| found[i].is_none()).collect();
        let mut fresh = if misses.is_empty() {
            None
        } else {
            let wanted: Vec<Input> = misses.iter().map(|&i| inputs[i].clone()).collect();
            Some(self.encode_uncached(wanted, opts).await?)
        };
        let mut entries: Vec<Option<Cached>> = found;
        if let Some(f) = fresh.as_mut() {
            let outputs = std::mem::take(&mut f.outputs);
            for ((&i, vector), (&tokens, &truncated)) in
                misses.iter().zip(outputs).zip(f.tokens.iter().zip(&f.truncated))
            {
                let entry = Cached { vector, tokens, truncated };
                if let Some(k) = keys[i].clone() {
                    let held = cache.insert(k, entry.clone());
                    self.metrics.set_cache_entries(held);
                }
                entries[i] = Some(entry);
            }
        }
        let mut out = Encoding {
            outputs: Vec::with_capacity(entries.len()),
            tokens: Vec::with_capacity(entries.len()),
            truncated: Vec::with_capacity(entries.len()),
            times: fresh.map(|f| f.times).unwrap_or_default(),
        };
        for e in entries.into_iter().flatten() {
            out.outputs.push(e.vector);
            out.tokens.push(e.tokens);
            out.truncated.push(e.truncated);
        }
        out.times.cache_hits = hits;
        self.normalize(&mut out.outputs, opts);
        Ok(out)
    }

    fn normalize(&self, outputs: &mut [Pooled], opts: EncodeOptions) {
        if opts.normalize.unwrap_or(self.manifest.normalize) {
            for o in outputs {
                if let Pooled::Vector(v) = o {
                    pooling::l2_normalize(v);
                }
            }
        }
    }

    /// Tokenizes, queues and waits: the model's raw (un-normalised) outputs.
    async fn encode_uncached(&self, inputs: Vec<Input>, opts: EncodeOptions) -> Result<Encoding, EncoderError> {
        let total_chars: usize = inputs.iter().map(Input::chars).sum();
        let prefix = self.prefix(opts.kind).to_string();
        let tokenize_started = Instant::now();
        // Tokenizing a few short texts takes microseconds; larger requests go to a blocking thread.
        let seqs = if total_chars <= 2_000 {
            tokenize_all(&self.tokenizer, &prefix, &inputs)?
        } else {
            let tk = self.tokenizer.clone();
            tokio::task::spawn_blocking(move || tokenize_all(&tk, &prefix, &inputs))
                .await
                .map_err(|e| EncoderError::Tokenizer(e.to_string()))??
        };
        let tokenize = tokenize_started.elapsed();
        self.metrics.observe_tokenize(&self.manifest.name, tokenize);
        if !opts.truncate {
            if let Some((index, s)) = seqs.iter().enumerate().find(|(_, s)| s.truncated > 0) {
                return Err(EncoderError::TooManyTokens {
                    index,
                    tokens: s.len() + s.truncated,
                    max: self.manifest.max_seq_len,
                });
            }
        }
        let n = u32::try_from(seqs.len()).unwrap_or(u32::MAX);
        let permit = if opts.wait_for_room {
            self.room.clone().acquire_many_owned(n).await.map_err(|_| EncoderError::ShuttingDown)?
        } else {
            self.room.clone().try_acquire_many_owned(n).map_err(|_| {
                self.metrics.rejected(&self.manifest.name);
                EncoderError::QueueFull { capacity: self.limits.queue_capacity }
            })?
        };
        let tokens: Vec<usize> = seqs.iter().map(Encoded::len).collect();
        let truncated: Vec<usize> = seqs.iter().map(|s| s.truncated).collect();
        self.metrics.observe_inputs(&self.manifest.name, tokens.iter().sum(), truncated.iter().sum(), seqs.len());
        let (job, reply) = Job::new(seqs, Some(permit));
        self.queue.submit(job, opts.lane)?;
        let (outputs, times) = reply.await.map_err(|_| EncoderError::ShuttingDown)??;
        let times = EncodeTimes { tokenize, queue_wait: times.queue_wait, run: times.run, cache_hits: 0 };
        Ok(Encoding { outputs, tokens, truncated, times })
    }
}

fn tokenize_all(tk: &TextTokenizer, prefix: &str, inputs: &[Input]) -> Result<Vec<Encoded>, EncoderError> {
    inputs
        .iter()
        .map(|i| match i {
            Input::Text(t) if prefix.is_empty() => tk.encode(t),
            Input::Text(t) => tk.encode(&format!("{prefix}{t}")),
            Input::Words(w) => tk.encode_words(w),
        })
        .collect()
}

/// Every loaded model, by name; the first configured one is the default.
#[derive(Default)]
pub struct EncoderSet {
    models: BTreeMap<String, Arc<Encoder>>,
    default: Option<String>,
}

impl EncoderSet {
    /// Loads every model of `settings.models`. Blocking.
    pub fn load(settings: &EncoderSettings, metrics: &EncoderMetrics) -> Result<EncoderSet, EncoderError> {
        let mut set = EncoderSet::default();
        let cache =
            (settings.query_cache_entries > 0).then(|| Arc::new(VectorCache::new(settings.query_cache_entries)));
        for dir in &settings.models {
            let enc = Encoder::load(dir, settings, metrics)?.with_cache(cache.clone());
            let name = enc.manifest.name.clone();
            if set.models.contains_key(&name) {
                return Err(EncoderError::Manifest {
                    path: dir.join("model.toml"),
                    reason: format!("a second model is named `{name}`"),
                });
            }
            set.default.get_or_insert_with(|| name.clone());
            set.models.insert(name, Arc::new(enc));
        }
        Ok(set)
    }

    /// The model called `name`, or the default one when `name` is `None`.
    pub fn get(&self, name: Option<&str>) -> Result<Arc<Encoder>, EncoderError> {
        let wanted = name.or(self.default.as_deref());
        wanted.and_then(|n| self.models.get(n)).cloned().ok_or_else(|| EncoderError::UnknownModel {
            name: wanted.unwrap_or("(default)").to_string(),
            available: if self.models.is_empty() {
                "none".into()
            } else {
                self.models.keys().cloned().collect::<Vec<_>>().join(", ")
            },
        })
    }

    pub fn infos(&self) -> Vec<ModelInfo> {
        self.models.values().map(|e| e.info()).collect()
    }
}

/// How long a client told "queue full" should wait.
pub const QUEUE_FULL_RETRY_AFTER: Duration = Duration::from_secs(1);
