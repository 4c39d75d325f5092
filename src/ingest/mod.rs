//! Ingest: documents on their way into a pipeline index, with their vectors.
//!
//! - [`mapping`]: the index mappings a pipeline needs on Elasticsearch and OpenSearch (from the
//!   templates in `mappings/`), and the comparison with an existing index;
//! - [`bulk`]: the `_bulk` NDJSON parser and the merging of engine answers (pure);
//! - [`writer`]: embedding documents (passages, the content-hash skip) and writing them, with
//!   item-level 429 retries;
//! - [`admin`]: the checked changes of the pipeline API (model changes, the index's mapping);
//! - [`catalog`]: the live pipeline set, stored in the cluster and followed by every replica;
//! - [`inference`]: the `_inference` text-embedding endpoints, stored in the cluster beside the
//!   pipelines;
//! - [`semantic`]: Elastic's `semantic_text` mappings as a pipeline's, and back (pure);
//! - [`owner`]: which pipeline owns a name (index, alias, data stream, date math, patterns), for
//!   writes and reads.
//!
//! Reads the pipeline type (`crate::types::pipeline`), which it does not own. Must not do raw
//! HTTP (the engine client does), run models directly (the encoder does) or know HTTP routes.

pub mod admin;
pub mod bulk;
pub mod catalog;
pub mod inference;
pub mod mapping;
pub mod os_pipeline;
pub mod owner;
pub mod semantic;
pub mod store;
pub mod writer;
