//! Query: turning a user's text into engine requests and fusing what comes back.
//!
//! Pure logic only (no I/O): request validation ([`request`]), the engine request bodies of every
//! dialect and fusion ([`build`]), fusion ([`fusion`]) and the shaping of answers ([`answer`]).
//! The I/O around them (encode, send, fuse) lives in `crate::search`.

pub mod answer;
pub mod build;
pub mod compat;
pub mod fusion;
pub mod request;
