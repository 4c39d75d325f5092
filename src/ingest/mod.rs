//! Ingest: pipelines (which fields become which vectors, in which index) and the index mappings
//! they need on Elasticsearch and OpenSearch.
//!
//! Owns the pipeline files and the mapping templates; must not do raw HTTP (the engine client
//! does) nor run models (the encoder does).
//!
//! Not yet here (the vector-ingest issue goes on): passage chunking at write time, the
//! content-hash skip, item-level 429 retries and the demo corpus.

pub mod bulk;
pub mod mapping;
pub mod pipeline;
pub mod writer;
