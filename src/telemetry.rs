//! Logs and metrics.
//!
//! Logs: `tracing` with JSON lines by default or human-readable output; lowercase messages with
//! values as fields; client errors at debug, server errors at error; secrets never logged.
//!
//! Metrics: a Prometheus registry owned by each server instance (no global recorder, so several
//! servers can live in one test process). Rendered in the text exposition format at `/metrics`.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::settings::{LogFormat, Provider};

/// Installs the global tracing subscriber. Call once, from `main`.
pub fn init_tracing(format: LogFormat, level: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    if let Err(e) = result {
        eprintln!("tracing already initialised: {e}");
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EngineLabels {
    pub flavor: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

/// Why a request was refused before it reached a handler: `missing_key`, `invalid_key`,
/// `scope`, `index` (the key's name, never the key, for the last two).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    pub reason: String,
    pub key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaneLabels {
    pub model: String,
    pub lane: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub model: String,
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub model: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: String,
}

/// Latency buckets from 50 µs to about 1.6 s: query stages take tens of microseconds to tens of
/// milliseconds, batches up to seconds.
fn stage_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The encoder's metrics, per model.
#[derive(Clone)]
pub struct EncoderMetrics {
    inputs: Family<ModelLabels, Counter>,
    tokens: Family<ModelLabels, Counter>,
    truncated_tokens: Family<ModelLabels, Counter>,
    rejected: Family<ModelLabels, Counter>,
    batches: Family<ModelLabels, Counter>,
    padded_tokens: Family<ModelLabels, Counter>,
    batch_size: Family<ModelLabels, Histogram>,
    batch_seconds: Family<LaneLabels, Histogram>,
    queue_wait: Family<LaneLabels, Histogram>,
    tokenize_seconds: Family<ModelLabels, Histogram>,
    queue_depth: Family<LaneLabels, Gauge>,
    provider: Family<ProviderLabels, Gauge>,
    cache_lookups: Family<CacheLabels, Counter>,
    cache_entries: Gauge,
}

impl EncoderMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = EncoderMetrics {
            inputs: Family::default(),
            tokens: Family::default(),
            truncated_tokens: Family::default(),
            rejected: Family::default(),
            batches: Family::default(),
            padded_tokens: Family::default(),
            batch_size: Family::new_with_constructor(|| Histogram::new(exponential_buckets(1.0, 2.0, 10))),
            batch_seconds: Family::new_with_constructor(stage_buckets),
            queue_wait: Family::new_with_constructor(stage_buckets),
            tokenize_seconds: Family::new_with_constructor(stage_buckets),
            queue_depth: Family::default(),
            provider: Family::default(),
            cache_lookups: Family::default(),
            cache_entries: Gauge::default(),
        };
        registry.register("encoder_inputs", "texts encoded", m.inputs.clone());
        registry.register(
            "encoder_tokens",
            "tokens encoded (after truncation, special tokens included)",
            m.tokens.clone(),
        );
        registry.register(
            "encoder_truncated_tokens",
            "tokens cut by truncation at max_seq_len",
            m.truncated_tokens.clone(),
        );
        registry.register("encoder_rejected", "requests refused because the queue was full", m.rejected.clone());
        registry.register("encoder_batches", "batches run", m.batches.clone());
        registry.register(
            "encoder_padded_tokens",
            "token slots run, padding included (batch size x longest)",
            m.padded_tokens.clone(),
        );
        registry.register("encoder_batch_size", "inputs per batch", m.batch_size.clone());
        registry.register(
            "encoder_batch_seconds",
            "time to run one batch (inference and pooling), by lane",
            m.batch_seconds.clone(),
        );
        registry.register(
            "encoder_queue_wait_seconds",
            "time an input waited in its lane before a session took it, by lane",
            m.queue_wait.clone(),
        );
        registry.register(
            "encoder_tokenize_seconds",
            "time to tokenize one request's inputs",
            m.tokenize_seconds.clone(),
        );
        registry.register(
            "encoder_cache_lookups",
            "query-vector cache lookups, by outcome (hit, miss)",
            m.cache_lookups.clone(),
        );
        registry.register("encoder_cache_entries", "vectors held by the query-vector cache", m.cache_entries.clone());
        registry.register("encoder_queue_depth", "inputs waiting, by lane", m.queue_depth.clone());
        registry.register("encoder_provider", "1 for the execution provider each model runs on", m.provider.clone());
        m
    }

    fn model(name: &str) -> ModelLabels {
        ModelLabels { model: name.to_string() }
    }

    pub fn observe_inputs(&self, model: &str, tokens: usize, truncated: usize, inputs: usize) {
        let l = Self::model(model);
        self.inputs.get_or_create(&l).inc_by(inputs as u64);
        self.tokens.get_or_create(&l).inc_by(tokens as u64);
        self.truncated_tokens.get_or_create(&l).inc_by(truncated as u64);
    }

    pub fn rejected(&self, model: &str) {
        self.rejected.get_or_create(&Self::model(model)).inc();
    }

    pub fn observe_batch(&self, model: &str, lane: &str, size: usize, longest: usize, took: std::time::Duration) {
        let l = Self::model(model);
        self.batches.get_or_create(&l).inc();
        self.padded_tokens.get_or_create(&l).inc_by((size * longest) as u64);
        self.batch_size.get_or_create(&l).observe(size as f64);
        let lane = LaneLabels { model: model.to_string(), lane: lane.to_string() };
        self.batch_seconds.get_or_create(&lane).observe(took.as_secs_f64());
    }

    pub fn observe_queue_wait(&self, model: &str, lane: &str, waited: std::time::Duration) {
        let lane = LaneLabels { model: model.to_string(), lane: lane.to_string() };
        self.queue_wait.get_or_create(&lane).observe(waited.as_secs_f64());
    }

    pub fn observe_tokenize(&self, model: &str, took: std::time::Duration) {
        self.tokenize_seconds.get_or_create(&Self::model(model)).observe(took.as_secs_f64());
    }

    pub fn cache_lookups(&self, model: &str, hits: usize, misses: usize) {
        for (outcome, n) in [("hit", hits), ("miss", misses)] {
            if n > 0 {
                let l = CacheLabels { model: model.to_string(), outcome: outcome.to_string() };
                self.cache_lookups.get_or_create(&l).inc_by(n as u64);
            }
        }
    }

    pub fn set_cache_entries(&self, n: usize) {
        self.cache_entries.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_queue_depth(&self, model: &str, interactive: usize, bulk: usize) {
        for (lane, n) in [("interactive", interactive), ("bulk", bulk)] {
            self.queue_depth
                .get_or_create(&LaneLabels { model: model.to_string(), lane: lane.to_string() })
                .set(n as i64);
        }
    }

    pub fn set_provider(&self, model: &str, provider: Provider) {
        self.provider
            .get_or_create(&ProviderLabels { model: model.to_string(), provider: provider.to_string() })
            .set(1);
    }
}

/// The service's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram>,
    pub engine_up: Gauge,
    pub engine_info: Family<EngineLabels, Gauge>,
    pub encoder: EncoderMetrics,
    /// Reindex documents by outcome: read, written, failed, unchanged (not embedded again).
    pub reindex_docs: Family<OutcomeLabels, Counter>,
    /// The adaptive bulk size of the last reindex batch.
    pub reindex_bulk_size: Gauge,
    /// Requests refused by authentication or authorisation.
    pub auth_denials: Family<DenialLabels, Counter>,
    /// Where a search's time went, by stage (see [`SearchStage`]).
    pub search_stages: Family<StageLabels, Histogram>,
}

/// The stages of a search whose time is measured, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchStage {
    /// Reading the request and planning it (JSON parse, validation, pipeline lookup).
    Parse,
    /// Tokenizing the query text(s).
    Tokenize,
    /// Waiting in the encoder's interactive lane for a session.
    QueueWait,
    /// The batch holding the query on ONNX Runtime (inference, pooling).
    OrtRun,
    /// The whole encode call (the three above plus handing over between threads).
    Encode,
    /// Round trips to the engine (request out until the whole answer is in).
    Engine,
    /// Decoding the engine's answer, fusing the legs and shaping the page.
    Fusion,
    /// Writing the answer as JSON bytes.
    Serialize,
    /// From the request's body to its serialised answer.
    Total,
}

impl SearchStage {
    pub const ALL: [SearchStage; 9] = [
        SearchStage::Parse,
        SearchStage::Tokenize,
        SearchStage::QueueWait,
        SearchStage::OrtRun,
        SearchStage::Encode,
        SearchStage::Engine,
        SearchStage::Fusion,
        SearchStage::Serialize,
        SearchStage::Total,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SearchStage::Parse => "parse",
            SearchStage::Tokenize => "tokenize",
            SearchStage::QueueWait => "queue_wait",
            SearchStage::OrtRun => "ort_run",
            SearchStage::Encode => "encode",
            SearchStage::Engine => "engine",
            SearchStage::Fusion => "fusion",
            SearchStage::Serialize => "serialize",
            SearchStage::Total => "total",
        }
    }
}

/// The stage times of one search, summed per stage (a search with two engine round trips
/// adds both to `engine`).
#[derive(Clone, Debug, Default)]
pub struct StageTimes {
    times: [Option<std::time::Duration>; 9],
}

impl StageTimes {
    pub fn add(&mut self, stage: SearchStage, d: std::time::Duration) {
        let t = self.times[stage as usize].get_or_insert_default();
        *t += d;
    }

    /// Runs `f`, adding its wall time to `stage`.
    pub fn time<T>(&mut self, stage: SearchStage, f: impl FnOnce() -> T) -> T {
        let t = std::time::Instant::now();
        let out = f();
        self.add(stage, t.elapsed());
        out
    }

    pub fn get(&self, stage: SearchStage) -> Option<std::time::Duration> {
        self.times[stage as usize]
    }

    /// `{"parse": 0.04, "encode": 3.1, ...}` in milliseconds, the stages that ran.
    pub fn to_json_ms(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for s in SearchStage::ALL {
            if let Some(d) = self.get(s) {
                let ms = (d.as_secs_f64() * 1e6).round() / 1e3;
                m.insert(s.as_str().into(), serde_json::json!(ms));
            }
        }
        serde_json::Value::Object(m)
    }

    /// The stages as a `Server-Timing` header value (milliseconds), e.g.
    /// `parse;dur=0.012, encode;dur=3.1, engine;dur=4.7, total;dur=8.2`.
    pub fn server_timing(&self) -> String {
        SearchStage::ALL
            .iter()
            .filter_map(|&s| self.get(s).map(|d| format!("{};dur={:.3}", s.as_str(), d.as_secs_f64() * 1e3)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Adds every stage that ran to the `search_stage_seconds` histograms.
    pub fn observe(&self, into: &Family<StageLabels, Histogram>) {
        for s in SearchStage::ALL {
            if let Some(d) = self.get(s) {
                into.get_or_create(&StageLabels { stage: s.as_str().to_string() }).observe(d.as_secs_f64());
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sidecar");
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests served, by route and status", http_requests.clone());
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register("http_request_duration_seconds", "HTTP request latency", http_duration.clone());
        let engine_up = Gauge::default();
        registry.register("engine_up", "1 when the last readiness probe reached the engine", engine_up.clone());
        let engine_info = Family::<EngineLabels, Gauge>::default();
        registry.register(
            "engine_info",
            "flavour and version of the engine at the last successful probe",
            engine_info.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION").to_string() }).set(1);
        registry.register("build_info", "the sidecar's version", build);
        let encoder = EncoderMetrics::register(&mut registry);
        let reindex_docs = Family::<OutcomeLabels, Counter>::default();
        registry.register("reindex_documents", "reindex documents by outcome", reindex_docs.clone());
        let reindex_bulk_size = Gauge::default();
        registry.register("reindex_bulk_size", "documents per bulk request (adaptive)", reindex_bulk_size.clone());
        let auth_denials = Family::<DenialLabels, Counter>::default();
        registry.register(
            "auth_denials",
            "requests refused for a missing or invalid API key, or beyond the key's scope or indices",
            auth_denials.clone(),
        );
        let search_stages = Family::<StageLabels, Histogram>::new_with_constructor(stage_buckets);
        registry.register(
            "search_stage_seconds",
            "where a search's time went, by stage (parse, tokenize, queue_wait, ort_run, encode, engine, fusion, serialize, total)",
            search_stages.clone(),
        );
        Metrics {
            search_stages,
            auth_denials,
            reindex_docs,
            reindex_bulk_size,
            encoder,
            registry: Arc::new(Mutex::new(registry)),
            http_requests,
            http_duration,
            engine_up,
            engine_info,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
