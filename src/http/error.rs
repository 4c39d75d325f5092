//! The one place where error codes become HTTP statuses and JSON bodies.
//!
//! Every error a client sees has the shape
//! `{"error": {"type": "<code>", "reason": "<text>"}, "status": <http status>}`, close to what
//! Elasticsearch returns, so ES clients surface it sensibly.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::encoder::{EncoderError, QUEUE_FULL_RETRY_AFTER};
use crate::engine::EngineError;
use crate::error::ErrorCode;

/// The status for each code. Exhaustive on purpose: a new code must be given a status here.
pub fn status_for(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::EngineUnavailable => StatusCode::BAD_GATEWAY,
        ErrorCode::EngineTimeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::EngineAuth => StatusCode::BAD_GATEWAY,
        ErrorCode::EngineOverloaded => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::EngineRejected => StatusCode::BAD_REQUEST,
        ErrorCode::EngineFailed => StatusCode::BAD_GATEWAY,
        ErrorCode::EngineUnsupported => StatusCode::BAD_GATEWAY,
        ErrorCode::ModelNotFound => StatusCode::NOT_FOUND,
        ErrorCode::LimitExceeded => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::Overloaded => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Marks a response as the sidecar's own refusal of a key (not an engine's 403), for the
/// denial counter.
#[derive(Clone, Copy, Debug)]
pub struct Denied;

/// An error on its way to a client.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub reason: String,
    /// Overrides the code's status: an engine's 4xx is passed through as it came.
    pub status: Option<StatusCode>,
    pub retry_after: Option<Duration>,
}

/// A 400 `invalid_input`: the request itself is wrong, and `reason` says how.
pub fn invalid(reason: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidInput, reason)
}

impl ApiError {
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        ApiError { code, reason: reason.into(), status: None, retry_after: None }
    }

    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| status_for(self.code))
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let code = e.code();
        let status = match (&e, e.engine_status()) {
            (EngineError::Rejected { .. }, Some(s)) => StatusCode::from_u16(s).ok(),
            _ => None,
        };
        let retry_after = matches!(e, EngineError::Overloaded { .. }).then(|| Duration::from_secs(1));
        // where the engine is stays in the sidecar's log, never in a client's answer
        let reason = match &e {
            EngineError::Unreachable { .. } => {
                tracing::warn!(error = %e, "engine unreachable");
                "the engine is unreachable (the sidecar's log has the details)".to_string()
            }
            EngineError::Timeout { timeout, .. } => {
                tracing::warn!(error = %e, "engine timed out");
                format!("the engine did not answer within {timeout:?}")
            }
            _ => e.to_string(),
        };
        ApiError { code, reason, status, retry_after }
    }
}

impl From<EncoderError> for ApiError {
    fn from(e: EncoderError) -> Self {
        let retry_after = matches!(e, EncoderError::QueueFull { .. }).then_some(QUEUE_FULL_RETRY_AFTER);
        ApiError { code: e.code(), reason: e.to_string(), status: None, retry_after }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = ?self.code, status = status.as_u16(), reason = %self.reason, "request failed");
        } else {
            tracing::debug!(code = ?self.code, status = status.as_u16(), reason = %self.reason, "request rejected");
        }
        let body = json!({"error": {"type": self.code, "reason": self.reason}, "status": status.as_u16()});
        let mut resp = (status, Json(body)).into_response();
        if let Some(ra) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&ra.as_secs().max(1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if self.code == ErrorCode::Forbidden {
            resp.extensions_mut().insert(Denied);
        }
        if self.code == ErrorCode::Unauthenticated {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"semantic-sidecar\""));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_client_errors_pass_through_as_rejected_with_the_engine_status() {
        let e = EngineError::Rejected {
            status: 404,
            error_type: "index_not_found_exception".into(),
            reason: "no such index".into(),
        };
        let api = ApiError::from(e);
        assert_eq!(api.status(), StatusCode::NOT_FOUND);
        assert_eq!(api.code, ErrorCode::EngineRejected);
    }

    #[test]
    fn overload_becomes_429_with_retry_after() {
        let resp = ApiError::from(EngineError::Overloaded { attempts: 3 }).into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(resp.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn unreachable_engine_is_a_bad_gateway() {
        let e = EngineError::Unreachable { url: "http://x/".into(), reason: "refused".into() };
        assert_eq!(ApiError::from(e).status(), StatusCode::BAD_GATEWAY);
    }
}
