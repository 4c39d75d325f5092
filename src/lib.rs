//! semantic-sidecar: semantic and hybrid search beside an existing Elasticsearch or OpenSearch
//! cluster, with no ML nodes, licences or engine plugins.
//!
//! Module map, bottom floor first (see README.md for the concern → file table). A module uses
//! only the ones above it in this list; `tests/layering.rs` fails on an upward use or a circle.
//! - [`error`]: the error codes shared by the domain modules;
//! - [`types`]: plain shared data: checked index names and ids, pipeline files, their `[search]`;
//! - [`settings`]: layered configuration, every default and every check of a value;
//! - [`telemetry`]: logs and Prometheus metrics;
//! - [`engine`]: the HTTP client for Elasticsearch and OpenSearch (paths, dialects, retries);
//! - [`encoder`]: ONNX Runtime sessions, tokenization, batching queue, pooling, whitening;
//! - [`query`]: pure search logic (request validation, engine request bodies, fusion);
//! - [`ingest`]: mappings, the `_bulk` parser and writer, the cluster's pipeline set and which
//!   pipeline owns a name;
//! - [`search`]: the I/O around query (encode the query, send legs, shape answers);
//! - [`reindex`]: resumable reindex jobs into vector indices;
//! - [`setup`]: shared setup of service and commands (model names → folders, loading encoders);
//! - [`http`]: routes, middleware, error → status mapping, server lifecycle;
//! - [`commands`]: the subcommands `main.rs` dispatches to (serve, embed, eval, bench, ...).

pub mod commands;
pub mod encoder;
pub mod engine;
pub mod error;
pub mod http;
pub mod ingest;
pub mod query;
pub mod reindex;
pub mod search;
pub mod settings;
pub mod setup;
pub mod telemetry;
pub mod types;
