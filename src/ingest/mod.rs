//! Ingest: pipelines (which fields become which vectors, in which index) and the index mappings
//! they need on Elasticsearch and OpenSearch.
//!
//! Owns the pipeline files and the mapping templates; must not do raw HTTP (the engine client
//! does) nor run models (the encoder does).
//! Also: the bulk parser and writer (passages, the content-hash skip, item-level 429 retries),
//! and the resolution of aliases and date math to pipeline indices ([`resolve`]).

pub mod bulk;
pub mod mapping;
pub mod resolve;
pub mod writer;
