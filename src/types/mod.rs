//! Plain data types every layer shares: checked engine object names ([`name`]), the pipeline
//! files ([`pipeline`]) and their `[search]` section ([`search`]).
//!
//! The floor of the crate: these files import nothing of the crate but each other, so settings
//! can check pipeline files and index names at load, and both ingest and query read the same
//! pipeline type without importing each other. No I/O but reading a pipeline file; no HTTP, no
//! models.

pub mod name;
pub mod pipeline;
pub mod search;
