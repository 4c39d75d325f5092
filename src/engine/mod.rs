//! One HTTP client for Elasticsearch 8/9 and OpenSearch 2/3.
//!
//! Owns: base URLs (round-robin, failing over on connection errors), authentication (basic, ES
//! `ApiKey`, bearer), TLS with a custom CA (rustls), connect and request timeouts, flavour and
//! version detection from `GET /`, typed errors carrying the engine's own `type` and `reason`,
//! and retries with jittered exponential backoff (see [`retry`]). Must not know about models,
//! vectors or queries beyond the dialect's request shapes.
//!
//! Why `reqwest` and not the official `elasticsearch` crate: we tried it (9.0.0-alpha.1, what
//! cargo resolved in 2026-11) against the real OpenSearch 2.19.1 node of `scripts/engine`: `info`,
//! creating a `knn_vector` index, indexing, a `knn` search and deleting the index all returned
//! 2xx, so no header or product check breaks OpenSearch. It is still not used, because its
//! `Transport` has no retries, no backoff, no failover between nodes and no connect timeout, all
//! of which this module must own; the sidecar forwards raw bodies (`_bulk` NDJSON, `_search`
//! passthrough) that its typed builders would only wrap; and it is an alpha release of a large
//! generated API that roughly doubles the debug build. One `reqwest` client serves both products.
//!
//! Concurrency: [`EngineClient`] is cheap to clone (an `Arc` inside) and safe to share across
//! tasks. Cancel-safety: dropping a request future drops the in-flight HTTP request; nothing is
//! left half-done on the sidecar side (the engine may still have executed it).
//!
//! Headers both ways: a client's `X-Opaque-Id`, `traceparent` and `tracestate` reach the engine
//! with every request made while serving it ([`forwarding`], a task-local scope set by the HTTP
//! layer); the engine's `Warning` and `X-Elastic-Product` come back in [`EngineResponse::headers`],
//! and the product header is remembered ([`EngineClient::product_header`]) so that answers the
//! sidecar builds itself carry it too (the official Elasticsearch clients refuse a server
//! without it).
//!
//! Not supported: node sniffing, AWS SigV4 signing, cookies, HTTP proxies from the environment.

pub mod dialect;
pub mod path;
pub mod retry;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use url::Url;

pub use dialect::{Dialect, EngineInfo, Flavor, Version};
use retry::{Failure, RetryPolicy};

use crate::error::ErrorCode;
use crate::settings::{EngineSettings, FlavorSetting};

/// Why a request to the engine failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot build the engine client: {0}")]
    Setup(String),
    #[error("engine at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("engine at {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("engine refused the sidecar's credentials or their privileges ({status}): {reason}")]
    Auth { status: u16, reason: String },
    #[error("engine is overloaded: still 429 after {attempts} attempts")]
    Overloaded { attempts: u32 },
    #[error("engine rejected the request ({status} {error_type}): {reason}")]
    Rejected { status: u16, error_type: String, reason: String },
    #[error("engine failed ({status} {error_type}): {reason}")]
    Failed { status: u16, error_type: String, reason: String },
    #[error("engine answered something the sidecar cannot read: {0}")]
    InvalidResponse(String),
    #[error("{0}")]
    Unsupported(String),
}

impl EngineError {
    pub fn code(&self) -> ErrorCode {
        match self {
            EngineError::Setup(_) => ErrorCode::Internal,
            EngineError::Unreachable { .. } => ErrorCode::EngineUnavailable,
            EngineError::Timeout { .. } => ErrorCode::EngineTimeout,
            EngineError::Auth { .. } => ErrorCode::EngineAuth,
            EngineError::Overloaded { .. } => ErrorCode::EngineOverloaded,
            EngineError::Rejected { .. } => ErrorCode::EngineRejected,
            EngineError::Failed { .. } | EngineError::InvalidResponse(_) => ErrorCode::EngineFailed,
            EngineError::Unsupported(_) => ErrorCode::EngineUnsupported,
        }
    }

    /// The engine's HTTP status, for errors that came with one.
    pub fn engine_status(&self) -> Option<u16> {
        match self {
            EngineError::Auth { status, .. }
            | EngineError::Rejected { status, .. }
            | EngineError::Failed { status, .. } => Some(*status),
            EngineError::Overloaded { .. } => Some(429),
            _ => None,
        }
    }
}

/// A request body.
#[derive(Clone, Debug)]
pub enum Body {
    Json(Bytes),
    /// Newline-delimited JSON (`_bulk`, `_msearch`).
    Ndjson(Bytes),
}

/// One request to the engine. `path` is relative to a base URL and may carry a query string.
#[derive(Clone, Debug)]
pub struct EngineRequest {
    pub method: Method,
    pub path: String,
    pub body: Option<Body>,
    /// Whether repeating the request is harmless (GET, HEAD, PUT, DELETE by default; searches too).
    pub idempotent: bool,
    /// Return the engine's own error answers (after retries) as responses instead of errors, for
    /// requests forwarded on behalf of a client that must see them unchanged.
    pub passthrough: bool,
    /// The body came from a client: when the engine drops the connection after it was sent
    /// (a body that crashed or stalled a node), it is sent again at most once, to another node.
    pub client_body: bool,
}

impl EngineRequest {
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        let idempotent = matches!(method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS);
        EngineRequest { method, path: path.into(), body: None, idempotent, passthrough: false, client_body: false }
    }
    pub fn json(mut self, value: &serde_json::Value) -> Self {
        self.body = Some(Body::Json(Bytes::from(serde_json::to_vec(value).expect("a JSON value serialises"))));
        self
    }
    /// A client's JSON body, forwarded unchanged (see [`EngineRequest::client_body`]).
    pub fn json_bytes(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(Body::Json(body.into()));
        self.client_body = true;
        self
    }
    /// Marks the body as a client's (see [`EngineRequest::client_body`]).
    pub fn from_client(mut self) -> Self {
        self.client_body = true;
        self
    }
    pub fn ndjson(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(Body::Ndjson(body.into()));
        self
    }
    /// Returns the engine's error answers as responses (see [`EngineRequest::passthrough`]).
    pub fn passthrough(mut self) -> Self {
        self.passthrough = true;
        self
    }
    /// Marks a POST as safe to repeat (e.g. `_search`, `_msearch`, `_refresh`).
    pub fn idempotent(mut self, yes: bool) -> Self {
        self.idempotent = yes;
        self
    }
}

/// A successful (2xx, or 404 on HEAD) answer from the engine.
#[derive(Clone, Debug)]
pub struct EngineResponse {
    pub status: StatusCode,
    pub body: Bytes,
    /// The engine's headers a client must see unchanged: [`RESPONSE_HEADERS`].
    pub headers: HeaderMap,
}

/// Engine response headers passed back to clients.
pub const RESPONSE_HEADERS: &[&str] = &["warning", "x-elastic-product"];
/// Client request headers passed on to the engine.
pub const FORWARDED_HEADERS: &[&str] = &["x-opaque-id", "traceparent", "tracestate"];

tokio::task_local! {
    static FORWARDED: HeaderMap;
}

/// Runs `fut` with `headers` (the client's [`FORWARDED_HEADERS`]) added to every engine request
/// it makes on this task.
pub async fn forwarding<F: std::future::Future>(headers: HeaderMap, fut: F) -> F::Output {
    FORWARDED.scope(headers, fut).await
}

impl EngineResponse {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, EngineError> {
        serde_json::from_slice(&self.body).map_err(|e| EngineError::InvalidResponse(e.to_string()))
    }
}

/// Authentication towards the engine.
#[derive(Clone)]
enum Auth {
    None,
    Basic { username: String, password: String },
    Header(HeaderValue),
}

struct Inner {
    http: reqwest::Client,
    urls: Vec<Url>,
    auth: Auth,
    retry: RetryPolicy,
    flavor: FlavorSetting,
    request_timeout: Duration,
    next: AtomicUsize,
    /// The engine's `X-Elastic-Product`, once an answer carried it.
    product: OnceLock<HeaderValue>,
}

/// The engine client. Clone freely.
#[derive(Clone)]
pub struct EngineClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EngineClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.inner.urls.iter().map(Url::as_str).collect();
        f.debug_struct("EngineClient").field("urls", &urls).field("retry", &self.inner.retry).finish_non_exhaustive()
    }
}

impl EngineClient {
    /// Builds a client from validated settings. No request is sent.
    pub fn new(settings: &EngineSettings) -> Result<Self, EngineError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .user_agent(concat!("semantic-sidecar/", env!("CARGO_PKG_VERSION")))
            .no_proxy();
        if let Some(path) = &settings.ca_cert {
            let pem =
                std::fs::read(path).map_err(|e| EngineError::Setup(format!("reading {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| EngineError::Setup(format!("parsing {}: {e}", path.display())))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let auth = match (&settings.username, &settings.password, &settings.api_key, &settings.bearer_token) {
            (Some(u), Some(p), _, _) => Auth::Basic { username: u.clone(), password: p.expose().to_string() },
            (_, _, Some(key), _) => Auth::Header(sensitive_header(&format!("ApiKey {}", key.expose()))?),
            (_, _, _, Some(token)) => Auth::Header(sensitive_header(&format!("Bearer {}", token.expose()))?),
            _ => Auth::None,
        };
        let http = builder.build().map_err(|e| EngineError::Setup(e.to_string()))?;
        Ok(EngineClient {
            inner: Arc::new(Inner {
                http,
                urls: settings.parsed_urls(),
                auth,
                retry: RetryPolicy::from(&settings.retry),
                flavor: settings.flavor,
                request_timeout: settings.request_timeout,
                next: AtomicUsize::new(0),
                product: OnceLock::new(),
            }),
        })
    }

    /// The retry policy of `engine.retry` (also used for item-level retries of bulk requests).
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    /// The `X-Elastic-Product` header the engine sends, once any answer carried it (Elasticsearch
    /// only; OpenSearch sends none).
    pub fn product_header(&self) -> Option<&HeaderValue> {
        self.inner.product.get()
    }

    /// The configured base URLs.
    pub fn urls(&self) -> &[Url] {
        &self.inner.urls
    }

    /// `GET /`: detects flavour and version, and checks them against `engine.flavor`.
    pub async fn info(&self) -> Result<EngineInfo, EngineError> {
        self.info_with(&self.inner.retry).await
    }

    /// Like [`EngineClient::info`] with one attempt only: for readiness probes.
    pub async fn probe(&self) -> Result<EngineInfo, EngineError> {
        self.info_with(&RetryPolicy::none()).await
    }

    /// `GET /` on every configured URL at once, one attempt each, checked like [`Self::info`]:
    /// which nodes answer (for `/readyz`, which shows a degraded cluster). The URLs come back
    /// without credentials or paths.
    pub async fn probe_each(&self) -> Vec<(String, Result<EngineInfo, EngineError>)> {
        let req = EngineRequest::new(Method::GET, "/");
        let probes = self.inner.urls.iter().map(|base| {
            let req = req.clone();
            async move {
                let shown = format!("{}://{}", base.scheme(), base.host_str().unwrap_or("?"))
                    + &base.port().map(|p| format!(":{p}")).unwrap_or_default();
                let r = match self.attempt(base, &req).await {
                    Ok(resp) => self.identify(&resp.body),
                    Err(a) => Err(a.error),
                };
                (shown, r)
            }
        });
        futures_util::future::join_all(probes).await
    }

    async fn info_with(&self, policy: &RetryPolicy) -> Result<EngineInfo, EngineError> {
        let resp = self.send_with(EngineRequest::new(Method::GET, "/"), policy).await?;
        self.identify(&resp.body)
    }

    /// The cluster `GET /` describes, checked against `engine.flavor`.
    fn identify(&self, body: &[u8]) -> Result<EngineInfo, EngineError> {
        let info = dialect::detect(body).map_err(|e| match e {
            dialect::DetectError::Malformed(m) => EngineError::InvalidResponse(m),
            unsupported => EngineError::Unsupported(unsupported.to_string()),
        })?;
        let expected = match self.inner.flavor {
            FlavorSetting::Auto => None,
            FlavorSetting::Elasticsearch => Some(Flavor::Elasticsearch),
            FlavorSetting::Opensearch => Some(Flavor::Opensearch),
        };
        if let Some(want) = expected.filter(|w| *w != info.flavor) {
            return Err(EngineError::Unsupported(format!(
                "engine.flavor is `{want}` but the cluster says it is {} {}",
                info.flavor, info.version
            )));
        }
        Ok(info)
    }

    /// GET a path and parse the JSON answer.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, EngineError> {
        self.send(EngineRequest::new(Method::GET, path)).await?.json()
    }

    /// Sends a request with the configured retry policy.
    pub async fn send(&self, req: EngineRequest) -> Result<EngineResponse, EngineError> {
        self.send_with(req, &self.inner.retry).await
    }

    async fn send_with(&self, req: EngineRequest, policy: &RetryPolicy) -> Result<EngineResponse, EngineError> {
        let started = Instant::now();
        let mut retry = 0u32;
        let mut resent_client_body = false;
        let mut url_index = self.inner.next.fetch_add(1, Ordering::Relaxed);
        loop {
            let base = &self.inner.urls[url_index % self.inner.urls.len()];
            let outcome = self.attempt(base, &req).await;
            let (failure, retry_after, error, answer) = match outcome {
                Ok(resp) => return Ok(resp),
                Err(AttemptError { failure, retry_after, error, answer }) => (failure, retry_after, error, answer),
            };
            // A client's body on which a node dropped the connection may be what brought the
            // node down: it is sent again at most once, and only to another node (a node killed
            // mid-request is survived on a cluster; one node is never sent it twice).
            let dropped_on_client_body = req.client_body && matches!(failure, Some(Failure::Transport));
            let retryable = failure.is_some_and(|f| RetryPolicy::is_retryable(f, req.idempotent));
            let may_retry = if dropped_on_client_body {
                let again = retryable && !resent_client_body && self.inner.urls.len() > 1;
                resent_client_body |= again;
                again
            } else {
                retryable
            };
            let delay = if may_retry {
                policy.delay(retry, started.elapsed(), rand::random::<f64>(), retry_after)
            } else {
                None
            };
            let Some(delay) = delay else {
                if let (true, Some(answer)) = (req.passthrough, answer) {
                    return Ok(answer);
                }
                return Err(match (failure, error) {
                    (Some(Failure::Status(429)), _) => EngineError::Overloaded { attempts: retry + 1 },
                    (_, e) => e,
                });
            };
            tracing::debug!(
                method = %req.method, path = %req.path, retry = retry + 1, delay_ms = delay.as_millis() as u64,
                error = %error, "engine request failed, retrying"
            );
            if matches!(failure, Some(Failure::Connect | Failure::Transport)) {
                url_index = url_index.wrapping_add(1);
            }
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }

    async fn attempt(&self, base: &Url, req: &EngineRequest) -> Result<EngineResponse, AttemptError> {
        let url = join(base, &req.path);
        let mut builder = self.inner.http.request(req.method.clone(), url.clone());
        match &self.inner.auth {
            Auth::None => {}
            Auth::Basic { username, password } => builder = builder.basic_auth(username, Some(password)),
            Auth::Header(value) => builder = builder.header(AUTHORIZATION, value.clone()),
        }
        if let Ok(h) = FORWARDED.try_with(HeaderMap::clone) {
            builder = builder.headers(h);
        }
        match &req.body {
            Some(Body::Json(b)) => builder = builder.header(CONTENT_TYPE, "application/json").body(b.clone()),
            Some(Body::Ndjson(b)) => builder = builder.header(CONTENT_TYPE, "application/x-ndjson").body(b.clone()),
            None => {}
        }
        let shown = redact_url(&url);
        let resp =
            builder.send().await.map_err(|e| AttemptError::from_transport(e, &shown, self.inner.request_timeout))?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let mut headers = HeaderMap::new();
        for name in RESPONSE_HEADERS {
            for v in resp.headers().get_all(*name) {
                headers.append(*name, v.clone());
            }
        }
        if let Some(p) = headers.get("x-elastic-product") {
            let _ = self.inner.product.set(p.clone());
        }
        let body =
            resp.bytes().await.map_err(|e| AttemptError::from_transport(e, &shown, self.inner.request_timeout))?;
        if status.is_success() || (req.method == Method::HEAD && status == StatusCode::NOT_FOUND) {
            return Ok(EngineResponse { status, body, headers });
        }
        let code = status.as_u16();
        let error = EngineError::from_answer(code, &body);
        let answer = Some(EngineResponse { status, body, headers });
        Err(AttemptError { failure: Some(Failure::Status(code)), retry_after, error, answer })
    }
}

struct AttemptError {
    failure: Option<Failure>,
    retry_after: Option<Duration>,
    error: EngineError,
    /// The engine's answer, when there was one (for passthrough requests).
    answer: Option<EngineResponse>,
}

impl AttemptError {
    fn from_transport(e: reqwest::Error, url: &str, timeout: Duration) -> Self {
        let (failure, error) = if e.is_timeout() {
            (Failure::Transport, EngineError::Timeout { url: url.to_string(), timeout })
        } else if e.is_connect() {
            (Failure::Connect, EngineError::Unreachable { url: url.to_string(), reason: error_chain(&e) })
        } else {
            (Failure::Transport, EngineError::Unreachable { url: url.to_string(), reason: error_chain(&e) })
        };
        AttemptError { failure: Some(failure), retry_after: None, error, answer: None }
    }
}

/// The whole `source()` chain, since reqwest's top-level message hides the cause.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text.push_str(": ");
        text.push_str(&s.to_string());
        cur = s.source();
    }
    text
}

fn sensitive_header(value: &str) -> Result<HeaderValue, EngineError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| EngineError::Setup("credential is not a valid header value".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

fn join(base: &Url, path: &str) -> Url {
    let mut s = base.as_str().trim_end_matches('/').to_string();
    if !path.starts_with('/') {
        s.push('/');
    }
    s.push_str(path);
    Url::parse(&s).unwrap_or_else(|_| base.clone())
}

fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl EngineError {
    /// The error an engine answer with a non-success `status` stands for: 4xx is the engine
    /// refusing the request (not worth repeating), 5xx the engine (or a gateway before it)
    /// failing, which callers may wait out.
    pub fn from_answer(status: u16, body: &[u8]) -> EngineError {
        let (error_type, reason) = engine_reason(body);
        match status {
            // 403 is also a read-only index block (cluster_block_exception): only a security
            // exception is about the sidecar's credentials.
            401 => EngineError::Auth { status, reason },
            403 if error_type == "security_exception" => EngineError::Auth { status, reason },
            400..=499 => EngineError::Rejected { status, error_type, reason },
            _ => EngineError::Failed { status, error_type, reason },
        }
    }
}

/// Pulls `error.type` and `error.reason` out of an engine error body (both products use the
/// same shape; the root cause is preferred when present). Falls back to the raw text.
pub fn engine_reason(body: &[u8]) -> (String, String) {
    #[derive(Deserialize)]
    struct Envelope {
        error: serde_json::Value,
    }
    #[derive(Deserialize)]
    struct Detail {
        #[serde(rename = "type", default)]
        kind: Option<String>,
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        root_cause: Vec<Detail>,
    }
    if let Ok(env) = serde_json::from_slice::<Envelope>(body) {
        match env.error {
            serde_json::Value::String(s) => return ("error".into(), s),
            obj @ serde_json::Value::Object(_) => {
                if let Ok(d) = serde_json::from_value::<Detail>(obj) {
                    let root = d.root_cause.into_iter().next();
                    let kind =
                        d.kind.or_else(|| root.as_ref().and_then(|r| r.kind.clone())).unwrap_or_else(|| "error".into());
                    let reason = d.reason.or_else(|| root.and_then(|r| r.reason)).unwrap_or_default();
                    return (kind, reason);
                }
            }
            _ => {}
        }
    }
    let text = String::from_utf8_lossy(body);
    let snippet: String = text.chars().take(300).collect();
    ("error".into(), snippet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_reasons_are_extracted_from_both_shapes() {
        let es = br#"{"error":{"root_cause":[{"type":"index_not_found_exception","reason":"no such index [x]"}],
            "type":"index_not_found_exception","reason":"no such index [x]","index":"x"},"status":404}"#;
        assert_eq!(engine_reason(es), ("index_not_found_exception".into(), "no such index [x]".into()));
        let plain = br#"{"error":"Content-Type header [text/plain] is not supported","status":406}"#;
        assert_eq!(engine_reason(plain).1, "Content-Type header [text/plain] is not supported");
        let root_only = br#"{"error":{"root_cause":[{"type":"t","reason":"r"}]}}"#;
        assert_eq!(engine_reason(root_only), ("t".into(), "r".into()));
        assert_eq!(engine_reason(b"Bad Gateway").1, "Bad Gateway");
        assert!(matches!(EngineError::from_answer(502, b"Bad Gateway"), EngineError::Failed { status: 502, .. }));
        assert!(matches!(EngineError::from_answer(409, b"{}"), EngineError::Rejected { status: 409, .. }));
        let sec = br#"{"error":{"type":"security_exception","reason":"no"}}"#;
        assert!(matches!(EngineError::from_answer(403, sec), EngineError::Auth { status: 403, .. }));
    }

    #[test]
    fn paths_join_onto_base_urls_with_prefixes() {
        let base = Url::parse("http://h:9200/prefix/").unwrap();
        assert_eq!(join(&base, "/idx/_search?size=1").as_str(), "http://h:9200/prefix/idx/_search?size=1");
        let bare = Url::parse("http://h:9200").unwrap();
        assert_eq!(join(&bare, "_cluster/health").as_str(), "http://h:9200/_cluster/health");
    }

    #[test]
    fn retry_after_reads_seconds() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&h), None);
    }
}
