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

use crate::encoder::Provider;
use crate::settings::LogFormat;

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
    batch_seconds: Family<ModelLabels, Histogram>,
    queue_depth: Family<LaneLabels, Gauge>,
    provider: Family<ProviderLabels, Gauge>,
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
            batch_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 14))),
            queue_depth: Family::default(),
            provider: Family::default(),
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
            "time to run one batch (inference and pooling)",
            m.batch_seconds.clone(),
        );
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

    pub fn observe_batch(&self, model: &str, size: usize, longest: usize, took: std::time::Duration) {
        let l = Self::model(model);
        self.batches.get_or_create(&l).inc();
        self.padded_tokens.get_or_create(&l).inc_by((size * longest) as u64);
        self.batch_size.get_or_create(&l).observe(size as f64);
        self.batch_seconds.get_or_create(&l).observe(took.as_secs_f64());
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
        Metrics {
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
