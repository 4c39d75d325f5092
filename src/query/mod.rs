//! Query: turning a user's text into engine requests and fusing what comes back.
//!
//! Owns pure logic only (no I/O): fusion today; the request rewriting of the hybrid-search issue
//! will live here too. Must not touch HTTP or the engine client.

pub mod fusion;
