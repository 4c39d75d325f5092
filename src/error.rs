//! Error codes shared by the domain modules.
//!
//! Each module has its own `thiserror` enum and maps every variant to one of these codes; the
//! HTTP layer (`http/error.rs`) alone turns a code into a status. Domain code never names an
//! HTTP status.

use serde::Serialize;

/// A small, stable classification of failures; also the `error.type` clients see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The client's request is malformed or names something invalid.
    InvalidInput,
    /// The client did not present a valid API key.
    Unauthenticated,
    /// The client's key does not reach this API or index (its scope or index patterns).
    Forbidden,
    /// No such route or resource.
    NotFound,
    /// The resource changed meanwhile (a stale version), or the change conflicts with its state.
    Conflict,
    /// The request body is larger than `server.max_body_size`.
    PayloadTooLarge,
    /// The sidecar gave up on a request that took longer than `server.request_timeout`.
    RequestTimeout,
    /// The engine could not be reached (connection refused, DNS, TLS).
    EngineUnavailable,
    /// The engine did not answer within `engine.request_timeout`.
    EngineTimeout,
    /// The engine refused the sidecar's credentials (401, or 403 `security_exception`).
    EngineAuth,
    /// The engine kept answering 429 after every retry.
    EngineOverloaded,
    /// The engine answered with an error about the request (4xx other than 401/403/429).
    EngineRejected,
    /// The engine failed (5xx after retries) or answered something unparseable.
    EngineFailed,
    /// The cluster is a flavour or version the sidecar does not support.
    EngineUnsupported,
    /// The request names a model that is not loaded.
    ModelNotFound,
    /// The request is well-formed but over a configured limit (inputs, characters, tokens).
    LimitExceeded,
    /// The sidecar's own queue is full; retry after a moment.
    Overloaded,
    /// The sidecar is shutting down or has no model for the call.
    Unavailable,
    /// A bug or an unexpected state in the sidecar.
    Internal,
}
