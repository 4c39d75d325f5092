//! Cross-cutting request handling: API-key authentication and authorisation (decided in
//! [`super::auth`]), body-size limit, gzip request bodies,
//! request timeout, metrics, the engine's headers on every answer, and turning the framework's
//! plain-text rejections into JSON errors.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::request_id::{MakeRequestId, RequestId};

use super::apis::{Api, BodyNames, Every};
use super::auth::{self, Caller, Route};
use super::body_names::{self, Target};
use super::error::{ApiError, Denied};
use super::handles::HandleKey;
use super::AppState;
use crate::error::ErrorCode;
use crate::telemetry::{DenialLabels, RequestLabels, RouteLabels};

/// Identifies the caller by its credentials ([`ApiKeys::identify_request`]) and refuses what the
/// key's scope and index patterns do not cover on the request's row of the API table
/// ([`auth::authorize`]); the [`Caller`] and its [`Route`] go on as request extensions for
/// [`authorize_body`]. Exempt paths (probes) are served as a read-only caller on every index;
/// without configured keys every request is the anonymous admin. The path is canonical here
/// ([`super::canonical`] runs before routing).
///
/// [`ApiKeys::identify_request`]: auth::ApiKeys::identify_request
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let deny = |reason: &str, key: &str, e: ApiError| {
        state.metrics.auth_denials.get_or_create(&DenialLabels { reason: reason.into(), key: key.into() }).inc();
        e.into_response()
    };
    let caller = if !state.api_keys.is_enabled() {
        Caller::anonymous()
    } else {
        match state.api_keys.identify_request(req.headers()) {
            Ok(Some(c)) => c,
            Ok(None) if state.settings.server.auth_exempt_paths.iter().any(|p| p == req.uri().path()) => {
                Caller::probe()
            }
            Err(auth::InvalidKey) => {
                return deny("invalid_key", "", ApiError::new(ErrorCode::Unauthenticated, "invalid API key"));
            }
            Ok(None) => {
                let e = ApiError::new(
                    ErrorCode::Unauthenticated,
                    "missing API key: send `x-api-key`, or `Authorization` with `Bearer`, `ApiKey` or `Basic` credentials",
                );
                return deny("missing_key", "", e);
            }
        }
    };
    let segments = match super::canonical::canonical(req.uri().path()) {
        Ok(c) => c.segments,
        Err(reason) => return ApiError::new(ErrorCode::InvalidInput, reason).into_response(),
    };
    let route = match auth::authorize(&caller, req.method(), &segments, &state.settings.server.engine_apis) {
        Ok(r) => r,
        Err((e, why)) => return deny(why, &caller.name, e),
    };
    let name = caller.name.clone();
    req.extensions_mut().insert(caller);
    req.extensions_mut().insert(route);
    let resp = next.run(req).await;
    if resp.extensions().get::<Denied>().is_some() {
        // a handler or the body check refused an index named in the body
        state.metrics.auth_denials.get_or_create(&DenialLabels { reason: "index".into(), key: name }).inc();
    }
    resp
}

/// Refuses a body that is not a JSON object (or NDJSON lines of them) on any API of the table;
/// checks every index, scroll id and PIT id a body names ([`super::body_names`], by the body
/// kind of the request's [`Route`]) against the caller, after the body is bounded and
/// decompressed; unwraps the caller's scroll and PIT handles ([`super::handles`]) before the
/// handler sees them and signs the ones the answer hands out. Callers without keys (the
/// anonymous admin) pass unchecked. Bodies over 1 MiB are parsed off the async workers.
pub async fn authorize_body(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (Some(caller), Some(Route(Some(api)))) =
        (req.extensions().get::<Caller>().cloned(), req.extensions().get::<Route>().copied())
    else {
        return next.run(req).await;
    };
    let (mut parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    // every body an API of the table takes is a JSON object, or NDJSON lines of them: an array
    // or a scalar would be read as a struct's fields by position
    if bytes.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|&first| first != b'{') {
        let e =
            ApiError::new(ErrorCode::InvalidInput, "the request body must be a JSON object (or NDJSON lines of them)");
        return e.into_response();
    }
    let Some(handles) = caller.handles.clone() else {
        return next.run(Request::from_parts(parts, Body::from(bytes))).await;
    };
    let checked = match check_body(&state, &caller, api, &parts, bytes).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if let Some(uri) = checked.uri {
        parts.uri = uri;
    }
    let query = parts.uri.query().unwrap_or("");
    let hands_out = checked.pit
        || api.name == "open point in time"
        || (api.body == BodyNames::Scroll && parts.method != axum::http::Method::DELETE)
        || form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == "scroll");
    let resp = next.run(Request::from_parts(parts, Body::from(checked.body))).await;
    if !hands_out {
        return resp;
    }
    sign_answer(resp, &handles, api.name == "open point in time").await
}

/// A body that passed [`check_body`]: handles unwrapped, and whether it searched a PIT.
struct CheckedBody {
    body: axum::body::Bytes,
    uri: Option<axum::http::Uri>,
    pit: bool,
}

async fn check_body(
    state: &AppState,
    caller: &Caller,
    api: &'static Api,
    parts: &axum::http::request::Parts,
    bytes: axum::body::Bytes,
) -> Result<CheckedBody, ApiError> {
    let segments =
        super::canonical::canonical(parts.uri.path()).map_err(|r| ApiError::new(ErrorCode::InvalidInput, r))?.segments;
    let path_indices: Vec<String> = api.path_indices(&segments).into_iter().map(String::from).collect();
    if api.body == BodyNames::Unparsed && !bytes.iter().all(u8::is_ascii_whitespace) && !caller.covers_everything() {
        return Err(auth::forbidden(format!(
            "the body of {} names indices the sidecar does not read: API key `{}` needs `*` for it",
            api.name, caller.name
        )));
    }
    let (kind, b) = (api.body, bytes.clone());
    let read = move || {
        let p: Vec<&str> = path_indices.iter().map(String::as_str).collect();
        body_names::targets(kind, &b, &p)
    };
    let found = if bytes.len() > 1 << 20 {
        tokio::task::spawn_blocking(read).await.unwrap_or_else(|e| Err(format!("reading the body failed: {e}")))
    } else {
        read()
    };
    let targets = found.map_err(|r| ApiError::new(ErrorCode::InvalidInput, r))?;
    let mut uri = None;
    if api.body == BodyNames::Scroll {
        if form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).any(|(k, _)| k == "scroll_id") {
            return Err(ApiError::new(ErrorCode::InvalidInput, "send the scroll id in the body, not as `scroll_id=`"));
        }
        if let Some(id) = segments.get(2) {
            let raw = caller.open_handle(id, "scroll")?;
            let path = super::canonical::path_of(&[segments[0].clone(), segments[1].clone(), raw.to_string()]);
            let pq = match parts.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            uri = Some(pq.parse().map_err(|e| ApiError::new(ErrorCode::InvalidInput, format!("the scroll id: {e}")))?);
        }
    }
    let mut text = None::<String>;
    let mut pit = false;
    for t in targets {
        match t {
            Target::Index(list) => caller.check_index(Some(&list))?,
            Target::IndexOrPipeline(n) => {
                let index = state.searcher.index_of(&n);
                caller.check_index(Some(&index))?
            }
            Target::Every => caller.check_index(None)?,
            Target::Pit(h) | Target::Scroll(h) => {
                let what = if api.body == BodyNames::Scroll { "scroll" } else { "point-in-time" };
                let raw = caller.open_handle(&h, what)?;
                pit |= api.body != BodyNames::Scroll;
                let t = text.get_or_insert_with(|| String::from_utf8_lossy(&bytes).into_owned());
                *t = t.replace(&format!("\"{h}\""), &format!("\"{raw}\""));
            }
        }
    }
    if api.every == Every::UnlessPit && !pit {
        caller.check_index(None)?;
    }
    let body = text.map_or(bytes, axum::body::Bytes::from);
    Ok(CheckedBody { body, uri, pit })
}

/// The answer with the scroll and PIT ids it hands out signed for the caller.
async fn sign_answer(resp: Response, handles: &HandleKey, opened_pit: bool) -> Response {
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::new(ErrorCode::Internal, "reading the engine's answer failed").into_response();
    };
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    if !handles.sign_answer(&mut v, opened_pit) {
        return Response::from_parts(parts, Body::from(bytes));
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(serde_json::to_vec(&v).unwrap_or_default()))
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

/// The deepest nesting of `{`/`[` in `body` (JSON or NDJSON), brackets inside strings not
/// counted. One pass, no allocation, stops as soon as `limit` is passed.
pub fn json_depth_over(body: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Reads the whole body (408 when it does not arrive within `server.body_read_timeout`) and
/// refuses one nested deeper than `server.max_json_depth` before any handler parses
/// it or the engine sees it (the engines' parsers recurse; a deep enough body is a
/// `StackOverflowError`, which halts an Elasticsearch node). Bodies over 1 MiB are scanned off
/// the async workers.
pub async fn limit_depth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.settings.server.max_json_depth;
    let max = usize::try_from(state.settings.server.max_body_size.bytes()).unwrap_or(usize::MAX);
    let (parts, body) = req.into_parts();
    let wait = state.settings.server.body_read_timeout;
    let bytes = match tokio::time::timeout(wait, axum::body::to_bytes(body, max)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return too_large(state.settings.server.max_body_size),
        Err(_) => {
            let e = ApiError::new(
                ErrorCode::InvalidInput,
                format!("the request body did not arrive within server.body_read_timeout ({wait:?})"),
            );
            return ApiError { status: Some(StatusCode::REQUEST_TIMEOUT), ..e }.into_response();
        }
    };
    let deep = if bytes.len() > 1 << 20 {
        let b = bytes.clone();
        tokio::task::spawn_blocking(move || json_depth_over(&b, limit)).await.unwrap_or(true)
    } else {
        json_depth_over(&bytes, limit)
    };
    if deep {
        return ApiError::new(
            ErrorCode::InvalidInput,
            format!("the request body is nested deeper than server.max_json_depth ({limit})"),
        )
        .into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
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
    let what = format!("{} {}", req.method(), req.uri().path().chars().take(120).collect::<String>());
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
    let mut reason = String::from_utf8_lossy(&body).trim().to_string();
    if reason.is_empty() {
        reason = match status {
            StatusCode::METHOD_NOT_ALLOWED => format!("{what}: the method is not allowed on this path"),
            StatusCode::NOT_FOUND => format!("{what}: no such API"),
            s => format!("{what}: {}", s.canonical_reason().unwrap_or("refused")),
        };
    }
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

#[cfg(test)]
mod tests {
    use super::json_depth_over;
    use proptest::prelude::*;

    #[test]
    fn depth_counts_brackets_outside_strings_only() {
        assert!(!json_depth_over(br#"{"a": [1, {"b": 2}]}"#, 3));
        assert!(json_depth_over(br#"{"a": [1, {"b": [2]}]}"#, 3));
        assert!(!json_depth_over(br#"{"a": "[[[[[[{{{{{"}"#, 1), "brackets in a string");
        assert!(!json_depth_over(br#"{"a": "\"[[[["}"#, 1), "an escaped quote does not end the string");
        let ndjson = b"{\"index\":{}}\n{\"t\":[1]}\n";
        assert!(!json_depth_over(ndjson, 2) && json_depth_over(ndjson, 1));
        let deep = "[".repeat(5000);
        assert!(json_depth_over(deep.as_bytes(), 64));
    }

    proptest! {
        #[test]
        fn depth_agrees_with_nesting_built_on_purpose(n in 1usize..200, limit in 1usize..200) {
            let body = format!("{}1{}", "{\"a\":[".repeat(n), "]}".repeat(n));
            prop_assert_eq!(json_depth_over(body.as_bytes(), limit), 2 * n > limit);
        }
    }
}
