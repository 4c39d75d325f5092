//! One spelling per path, before routing and authorisation: the route that authorises a request
//! is the route that serves it.
//!
//! A client's path is split on `/`, empty segments (a trailing slash, `//`) are dropped, each
//! segment is percent-decoded exactly once and must be UTF-8, `.` and `..` segments are refused,
//! and the path is rebuilt with every byte outside `A-Z a-z 0-9 - . _ ~ , * :` percent-encoded.
//! So `/_search/`, `//_search` and `/%5Fsearch` all become `/_search`, while `/docs%2F_bulk`
//! stays one segment (`docs/_bulk`, an invalid index name, never the `_bulk` API). Names are
//! case sensitive, as on the engines: `/_Search` is not `/_search` and matches no API.
//!
//! Runs as the outermost step of [`super::router`] (a layer around the whole router, since a
//! layer inside it runs after routing). Pure apart from the middleware function.

use axum::extract::Request;
use axum::http::uri::{PathAndQuery, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::error::ApiError;
use crate::error::ErrorCode;

/// Bytes kept as they are when a segment is encoded again.
const KEPT: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b',').remove(b'*').remove(b':');

/// Most segments a path may have (the deepest engine API has five).
const MAX_SEGMENTS: usize = 16;

/// A path in its one spelling: the decoded segments and the path built from them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonicalPath {
    pub segments: Vec<String>,
    pub path: String,
}

/// The canonical form of `raw` (a URI path), or why it has none.
pub fn canonical(raw: &str) -> Result<CanonicalPath, String> {
    let mut segments = Vec::new();
    for s in raw.split('/').filter(|s| !s.is_empty()) {
        let decoded = percent_decode_str(s)
            .decode_utf8()
            .map_err(|_| format!("path segment `{}` is not UTF-8 once percent-decoded", s.escape_debug()))?;
        if decoded == "." || decoded == ".." {
            return Err(format!("`{decoded}` path segments are refused"));
        }
        if decoded.is_empty() || decoded.contains('\0') {
            return Err("a path segment is empty or holds a NUL once percent-decoded".into());
        }
        segments.push(decoded.into_owned());
        if segments.len() > MAX_SEGMENTS {
            return Err(format!("the path has more than {MAX_SEGMENTS} segments"));
        }
    }
    let path = path_of(&segments);
    Ok(CanonicalPath { segments, path })
}

/// The path of decoded `segments`, each encoded on its own (the canonical spelling).
pub fn path_of(segments: &[String]) -> String {
    if segments.is_empty() {
        return "/".to_string();
    }
    segments.iter().map(|s| format!("/{}", utf8_percent_encode(s, KEPT))).collect()
}

/// Rewrites the request's path to its canonical form, or answers 400 with the reason.
pub async fn normalize(mut req: Request, next: Next) -> Response {
    let c = match canonical(req.uri().path()) {
        Ok(c) => c,
        Err(reason) => return ApiError::new(ErrorCode::InvalidInput, reason).into_response(),
    };
    if c.path != req.uri().path() {
        let pq = match req.uri().query() {
            Some(q) => format!("{}?{q}", c.path),
            None => c.path.clone(),
        };
        let mut parts = req.uri().clone().into_parts();
        match PathAndQuery::try_from(pq) {
            Ok(pq) => parts.path_and_query = Some(pq),
            Err(e) => return ApiError::new(ErrorCode::InvalidInput, format!("the path: {e}")).into_response(),
        }
        match Uri::from_parts(parts) {
            Ok(u) => *req.uri_mut() = u,
            Err(e) => return ApiError::new(ErrorCode::InvalidInput, format!("the path: {e}")).into_response(),
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn path(raw: &str) -> String {
        canonical(raw).unwrap().path
    }

    #[test]
    fn spellings_of_one_api_become_one_path() {
        for raw in ["/_search", "/_search/", "//_search", "/%5Fsearch", "/%5fsearch/", "/_search//"] {
            assert_eq!(path(raw), "/_search", "{raw}");
        }
        assert_eq!(path("/"), "/");
        assert_eq!(path(""), "/");
        assert_eq!(path("/docs/_doc/1/"), "/docs/_doc/1");
        assert_eq!(path("/docs,logs-*/_search"), "/docs,logs-*/_search");
        assert_eq!(path("/_Search"), "/_Search", "case is kept: the engines do not fold it");
    }

    #[test]
    fn an_encoded_slash_stays_inside_its_segment() {
        let c = canonical("/docs%2F_delete_by_query/_search").unwrap();
        assert_eq!(c.segments, vec!["docs/_delete_by_query", "_search"]);
        assert_eq!(c.path, "/docs%2F_delete_by_query/_search");
        // decoded once: a doubly encoded `_` stays a literal `%5F`
        assert_eq!(canonical("/%255Fsearch").unwrap().segments, vec!["%5Fsearch"]);
    }

    #[test]
    fn dot_segments_bad_utf8_and_nul_are_refused() {
        for raw in ["/docs/..", "/./_search", "/%2E%2E/_cluster", "/docs/%FF", "/docs/%00"] {
            assert!(canonical(raw).is_err(), "{raw}");
        }
        assert!(canonical(&"/a".repeat(17)).is_err());
    }

    proptest! {
        /// Canonical is a fixed point, and its segments read back the same.
        #[test]
        fn canonical_is_idempotent(raw in "(/[a-z_%0-9A-F.,*:]{0,6}){0,6}/?") {
            if let Ok(c) = canonical(&raw) {
                let again = canonical(&c.path).unwrap();
                prop_assert_eq!(&again, &c);
            }
        }
    }
}
