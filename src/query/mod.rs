//! Query: turning a user's text into engine requests and fusing what comes back.
//!
//! Pure logic only (no I/O): request validation ([`request`]), the engine request bodies of every
//! dialect and fusion ([`build`]), fusion ([`fusion`]), the shaping of answers ([`answer`]) and the URL parameters of a fused
//! search ([`params`]), Elasticsearch's retrievers run by the sidecar ([`retriever`]), and its
//! queries on `semantic_text` fields ([`semantic`]).
//! The I/O around them (encode, send, fuse) lives in `crate::search`.

pub mod answer;
pub mod build;
pub mod compat;
pub mod fusion;
pub mod os_hybrid;
pub mod params;
pub mod request;
pub mod retriever;
pub mod semantic;
