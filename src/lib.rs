//! semantic-sidecar: semantic and hybrid search beside an existing Elasticsearch or OpenSearch
//! cluster, with no ML nodes, licences or engine plugins.
//!
//! Module map (see README.md for the concern → file table):
//! - [`settings`]: layered configuration and every default;
//! - [`encoder`]: ONNX Runtime sessions, tokenization, batching queue, pooling, whitening;
//! - [`engine`]: the HTTP client for Elasticsearch and OpenSearch (dialects, retries);
//! - [`query`]: pure search logic (request validation, engine request bodies, fusion);
//! - [`search`]: the I/O around it (encode the query, send legs, shape answers);
//! - [`reindex`]: resumable reindex jobs into vector indices;
//! - [`http`]: routes, middleware, error → status mapping, server lifecycle;
//! - [`telemetry`]: logs and Prometheus metrics;
//! - [`error`]: the error codes shared by the domain modules.

pub mod bench;
pub mod bench_search;
pub mod chart;
pub mod cli;
pub mod encoder;
pub mod engine;
pub mod error;
pub mod eval;
pub mod http;
pub mod ingest;
pub mod query;
pub mod reindex;
pub mod search;
pub mod settings;
pub mod telemetry;
