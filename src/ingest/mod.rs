//! Ingest: pipelines (which fields become which vectors, in which index) and the index mappings
//! they need on Elasticsearch and OpenSearch.
//!
//! Owns the pipeline files and the mapping templates; must not do raw HTTP (the engine client
//! does) nor run models (the encoder does).
//!
//! Not yet here (the vector-ingest issue goes on): the ES-compatible `_bulk`/`_doc` endpoints,
//! passage chunking at write time, the content-hash skip and the demo corpus.

pub mod mapping;
pub mod pipeline;
