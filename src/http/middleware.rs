//! Cross-cutting request handling: API-key authentication, body-size limit, gzip request bodies,
//! request timeout, metrics, the engine's headers on every answer, and turning the framework's
//! plain-text rejections into JSON errors.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower_http::request_id::{MakeRequestId, RequestId};

use super::error::ApiError;
use super::AppState;
use crate::error::ErrorCode;
use crate::telemetry::{RequestLabels, RouteLabels};

/// SHA-256 digests of the configured API keys. Comparing digests in constant time hides both
/// the key and its length from timing.
#[derive(Clone, Default)]
pub struct ApiKeys(Vec<[u8; 32]>);

impl ApiKeys {
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        ApiKeys(keys.into_iter().map(digest).collect())
    }

    pub fn is_enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// True when `presented` matches one of the keys; every key is compared, always.
    pub fn accepts(&self, presented: &str) -> bool {
        let d = digest(presented);
        self.0.iter().fold(subtle::Choice::from(0), |acc, k| acc | k.ct_eq(&d)).into()
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn presented_key(req: &Request) -> Option<&str> {
    if let Some(v) = req.headers().get("x-api-key") {
        return v.to_str().ok();
    }
    let auth = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
}

/// Rejects requests without a valid API key, except on the exempt paths.
pub async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !state.api_keys.is_enabled() || state.settings.server.auth_exempt_paths.iter().any(|p| p == req.uri().path()) {
        return next.run(req).await;
    }
    match presented_key(&req) {
        Some(key) if state.api_keys.accepts(key) => next.run(req).await,
        Some(_) => ApiError::new(ErrorCode::Unauthenticated, "invalid API key").into_response(),
        None => {
            ApiError::new(ErrorCode::Unauthenticated, "missing API key: send `x-api-key` or `Authorization: Bearer`")
                .into_response()
        }
    }
}

/// Refuses a declared `Content-Length` over the limit before the body is read. Bodies without a
/// length are cut by `DefaultBodyLimit` in the extractors, and [`json_rejections`] shapes that 413.
pub async fn limit_body(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.settings.server.max_body_size;
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.bytes()) {
        return too_large(limit);
    }
    next.run(req).await
}

fn too_large(limit: crate::settings::ByteSize) -> Response {
    ApiError::new(ErrorCode::PayloadTooLarge, format!("request body is larger than server.max_body_size ({limit})"))
        .into_response()
}

/// Decodes `Content-Encoding: gzip` request bodies (the official clients' `http_compress`), the
/// decoded size bounded by `server.max_body_size` like any body; other encodings are a 415.
/// Runs after authentication: nothing is inflated for a client without a key.
pub async fn decompress(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let encoding =
        req.headers().get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("identity") | Some("") => return next.run(req).await,
        Some("gzip" | "x-gzip") => {}
        Some(other) => {
            let e = ApiError::new(
                ErrorCode::InvalidInput,
                format!("Content-Encoding `{other}` is not supported: send gzip or an uncompressed body"),
            );
            return ApiError { status: Some(StatusCode::UNSUPPORTED_MEDIA_TYPE), ..e }.into_response();
        }
    }
    let limit = state.settings.server.max_body_size;
    let max = usize::try_from(limit.bytes()).unwrap_or(usize::MAX);
    let (mut parts, body) = req.into_parts();
    let Ok(compressed) = axum::body::to_bytes(body, max).await else {
        return too_large(limit);
    };
    let inflated = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&compressed[..]).take(max as u64 + 1).read_to_end(&mut out).map(|_| out)
    })
    .await;
    let out = match inflated {
        Ok(Ok(out)) if out.len() <= max => out,
        Ok(Ok(_)) => return too_large(limit),
        Ok(Err(e)) => {
            return ApiError::new(ErrorCode::InvalidInput, format!("the gzip request body could not be decoded: {e}"))
                .into_response()
        }
        Err(e) => return ApiError::new(ErrorCode::Internal, format!("gzip decoding failed: {e}")).into_response(),
    };
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    next.run(Request::from_parts(parts, Body::from(out))).await
}

/// Passes the client's `X-Opaque-Id` / `traceparent` / `tracestate` to every engine request made
/// for it, echoes `X-Opaque-Id` back as Elasticsearch does, and gives every answer the engine's
/// `X-Elastic-Product` header when the engine sends one, answers the sidecar builds itself
/// (fused hybrid results, its own errors) included: the official Elasticsearch clients refuse a
/// server without it.
pub async fn engine_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut forwarded = axum::http::HeaderMap::new();
    for name in crate::engine::FORWARDED_HEADERS {
        if let Some(v) = req.headers().get(*name) {
            forwarded.insert(*name, v.clone());
        }
    }
    let opaque = req.headers().get("x-opaque-id").cloned();
    let mut resp = crate::engine::forwarding(forwarded, next.run(req)).await;
    let h = resp.headers_mut();
    if let (Some(p), false) = (state.engine.product_header(), h.contains_key("x-elastic-product")) {
        h.insert("x-elastic-product", p.clone());
    }
    if let (Some(o), false) = (opaque, h.contains_key("x-opaque-id")) {
        h.insert("x-opaque-id", o);
    }
    resp
}

/// Gives up on a request after `server.request_timeout` with a JSON 504.
pub async fn timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.settings.server.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            ErrorCode::RequestTimeout,
            format!("request took longer than server.request_timeout ({limit:?})"),
        )
        .into_response(),
    }
}

/// Counts requests and records latency by route template (never by raw path: bounded labels).
pub async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let route =
        req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    let m = &state.metrics;
    m.http_requests
        .get_or_create(&RequestLabels {
            method: method.clone(),
            route: route.clone(),
            status: resp.status().as_str().into(),
        })
        .inc();
    m.http_duration.get_or_create(&RouteLabels { method, route }).observe(started.elapsed().as_secs_f64());
    resp
}

/// Replaces the framework's plain-text 413/415/422/400 rejections with the JSON error shape.
pub async fn json_rejections(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let is_json =
        resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(resp.status().is_client_error()) {
        return resp;
    }
    let status = resp.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large(state.settings.server.max_body_size);
    }
    let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap_or_default();
    let reason = String::from_utf8_lossy(&body).trim().to_string();
    let code = if status == StatusCode::NOT_FOUND { ErrorCode::NotFound } else { ErrorCode::InvalidInput };
    ApiError { code, reason, status: Some(status), retry_after: None }.into_response()
}

/// Request ids: a per-process random prefix and a counter (`x-request-id`, kept if the client sent one).
#[derive(Clone)]
pub struct SidecarRequestId {
    prefix: u32,
    counter: std::sync::Arc<AtomicU64>,
}

impl Default for SidecarRequestId {
    fn default() -> Self {
        SidecarRequestId { prefix: rand::random(), counter: Default::default() }
    }
}

impl MakeRequestId for SidecarRequestId {
    fn make_request_id<B>(&mut self, _req: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{:08x}-{n}", self.prefix)).ok().map(RequestId::new)
    }
}

/// The JSON 404 for unknown routes.
pub async fn not_found(req: Request<Body>) -> Response {
    ApiError::new(ErrorCode::NotFound, format!("no route for {} {}", req.method(), req.uri().path())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_match_exactly() {
        let keys = ApiKeys::new(["alpha-key-123", "beta-key-456"]);
        assert!(keys.is_enabled());
        assert!(keys.accepts("alpha-key-123"));
        assert!(keys.accepts("beta-key-456"));
        assert!(!keys.accepts("alpha-key-12"));
        assert!(!keys.accepts(""));
        assert!(!ApiKeys::default().is_enabled());
    }
}
