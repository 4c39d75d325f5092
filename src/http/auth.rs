//! Who a request comes from and what it may reach: API keys with scopes and index patterns.
//!
//! Owns: key lookup (SHA-256 digests compared in constant time, every key, always; the key as
//! `x-api-key`, `Authorization: Bearer`, `ApiKey` (the key, or `base64(name:key)` as the official
//! clients send it) or `Basic` (name and key as user and password)), the [`Caller`] each request
//! carries as an extension, and [`authorize`], which checks a request's row of the API table
//! ([`super::apis`]) against the caller. The indices a body names are checked by
//! [`super::middleware::authorize_body`] with [`Caller::check_index`]. Must not touch the engine
//! or know handlers: it decides, the middleware in [`super::middleware`] enforces and counts
//! denials.
//!
//! Patterns are matched against names as written: a remote-cluster name (`cluster:index`) never
//! matches a pattern without a `:`, and a `*` of the client's only matches a `*` of the key's.

use std::sync::Arc;

use axum::http::Method;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::apis::{self, Api, Every};
use super::error::ApiError;
use super::handles::HandleKey;
use crate::error::ErrorCode;
use crate::settings::{ApiKeySetting, Scope};

/// The client a request comes from: its key's name, scope and index patterns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub scope: Scope,
    indices: Vec<String>,
    /// May reach engine APIs outside the table (with `*`).
    pub cluster_admin: bool,
    /// Signs the scroll and PIT ids handed to this caller; `None` without keys.
    pub handles: Option<HandleKey>,
    /// A request without a key on an exempt path (it sees no engine URLs).
    pub probe: bool,
}

impl Caller {
    /// Everything, for a sidecar without keys (loopback only unless allowed otherwise).
    pub fn anonymous() -> Self {
        Caller {
            name: "anonymous".into(),
            scope: Scope::Admin,
            indices: vec!["*".into()],
            cluster_admin: true,
            handles: None,
            probe: false,
        }
    }

    /// A read-only caller on every index, for the paths exempt from keys.
    pub fn probe() -> Self {
        Caller {
            name: "probe".into(),
            scope: Scope::Read,
            indices: vec!["*".into()],
            cluster_admin: false,
            handles: Some(HandleKey::of_digest(&digest("semantic-sidecar exempt probe"))),
            probe: true,
        }
    }

    /// Whether the key's patterns cover every index.
    pub fn covers_everything(&self) -> bool {
        self.indices.iter().any(|p| p == "*")
    }

    /// Whether the key may name `name` (a concrete name or a client's `*` pattern): it must match
    /// one of the key's patterns taken literally. Index names cannot contain `*`, so a `*` of the
    /// client's can only be matched by a `*` of the key's, and then every index the client's
    /// pattern expands to matches the key's pattern too. A remote name (`cluster:index`) only
    /// matches a pattern with a `:` of its own.
    pub fn may_name(&self, name: &str) -> bool {
        let remote = name.contains(':');
        self.indices.iter().any(|p| (!remote || p.contains(':')) && glob(p.as_bytes(), name.as_bytes()))
    }

    /// Refuses an index (or comma list of names and patterns) the key does not cover; `None`
    /// stands for "every index" and needs `*`.
    pub fn check_index(&self, index: Option<&str>) -> Result<(), ApiError> {
        let denied = match index {
            None => (!self.covers_everything()).then(|| "every index".to_string()),
            Some(list) => list.split(',').find(|n| !self.may_name(n)).map(|n| format!("index `{n}`")),
        };
        match denied {
            None => Ok(()),
            Some(what) => Err(forbidden(format!(
                "API key `{}` may not name {what} (its indices: {})",
                self.name,
                self.indices.join(", ")
            ))),
        }
    }

    /// Refuses a request that needs more than the key's scope.
    pub fn check_scope(&self, needed: Scope, what: &str) -> Result<(), ApiError> {
        if self.scope >= needed {
            return Ok(());
        }
        Err(forbidden(format!(
            "API key `{}` has scope `{}`; {what} needs `{}`",
            self.name,
            self.scope.as_str(),
            needed.as_str()
        )))
    }

    /// The engine id inside a scroll or PIT `handle` handed to this caller, or a 403.
    pub fn open_handle<'a>(&self, handle: &'a str, what: &str) -> Result<&'a str, ApiError> {
        match &self.handles {
            None => Ok(handle),
            Some(k) => k.open(handle).ok_or_else(|| {
                forbidden(format!(
                    "the {what} id was not handed to API key `{}` by the sidecar: a key may only use and close its own",
                    self.name
                ))
            }),
        }
    }
}

pub(crate) fn forbidden(reason: String) -> ApiError {
    ApiError::new(ErrorCode::Forbidden, reason)
}

/// `*` matches any run of bytes; everything else itself.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while n < name.len() {
        if p < pattern.len() && pattern[p] != b'*' && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            mark = n;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            n = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Credentials were sent, but they are no key of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidKey;

/// The configured keys, as digests.
#[derive(Clone, Default)]
pub struct ApiKeys(Arc<Vec<([u8; 32], Caller)>>);

impl ApiKeys {
    pub fn new(keys: &[ApiKeySetting]) -> Self {
        let entries = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let d = digest(k.key().expose());
                let caller = Caller {
                    name: k.name(i),
                    scope: k.scope(),
                    indices: k.indices(),
                    cluster_admin: k.cluster_admin(),
                    handles: Some(HandleKey::of_digest(&d)),
                    probe: false,
                };
                (d, caller)
            })
            .collect();
        ApiKeys(Arc::new(entries))
    }

    pub fn is_enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// The caller whose key `presented` is; every key is compared, always, and the position is
    /// picked without branching on the comparison.
    pub fn identify(&self, presented: &str) -> Option<Caller> {
        let d = digest(presented);
        let mut found = subtle::Choice::from(0);
        let mut at = 0u64;
        for (i, (k, _)) in self.0.iter().enumerate() {
            let hit = k.ct_eq(&d);
            at.conditional_assign(&(i as u64), hit);
            found |= hit;
        }
        bool::from(found).then(|| self.0[at as usize].1.clone())
    }

    /// The caller of a request's credentials: `x-api-key`, or `Authorization` with `Bearer KEY`,
    /// `ApiKey KEY`, `ApiKey base64(name:key)` or `Basic base64(name:key)`. `Ok(None)`: none
    /// sent; `Err`: sent but not a key of this table (or the name does not match the key).
    pub fn identify_request(&self, headers: &axum::http::HeaderMap) -> Result<Option<Caller>, InvalidKey> {
        if let Some(v) = headers.get("x-api-key") {
            return v.to_str().ok().and_then(|k| self.identify(k)).map(Some).ok_or(InvalidKey);
        }
        let Some(auth) = headers.get(axum::http::header::AUTHORIZATION) else {
            return Ok(None);
        };
        let (scheme, rest) = auth.to_str().ok().and_then(|a| a.split_once(' ')).ok_or(InvalidKey)?;
        let rest = rest.trim();
        let named = |encoded: &str| -> Option<Caller> {
            let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (name, key) = text.split_once(':')?;
            self.identify(key).filter(|c| c.name == name)
        };
        let found = match scheme.to_ascii_lowercase().as_str() {
            "bearer" => self.identify(rest),
            "apikey" => self.identify(rest).or_else(|| named(rest)),
            "basic" => named(rest),
            _ => None,
        };
        found.map(Some).ok_or(InvalidKey)
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// How a request was placed in the API table: its row, or none (an unlisted engine API, served
/// only to `cluster_admin` keys). Goes on as a request extension for the body check.
#[derive(Clone, Copy, Debug)]
pub struct Route(pub Option<&'static Api>);

/// Checks `method segments` (canonical, see [`super::canonical`]) against `caller`: the row's
/// scope, then every index its path names (and `*` for APIs on every index). An API the table
/// does not list needs `cluster_admin` and `*`; the off families need `server.engine_apis` too.
/// The error carries the denial's reason label for the metrics.
pub fn authorize(
    caller: &Caller,
    method: &Method,
    segments: &[String],
    engine_apis: &[String],
) -> Result<Route, (ApiError, &'static str)> {
    let shown: String = segments.join("/").chars().take(120).collect();
    let what = format!("{method} /{shown}");
    let Some(api) = apis::lookup(method, segments) else {
        if let Some(f) = apis::off_family(segments).filter(|f| !engine_apis.iter().any(|a| a == f)) {
            let reason = format!(
                "{what}: `{f}` APIs are not served through the sidecar (they act with its own engine credentials); list `{f}` in server.engine_apis to let keys with cluster_admin reach them"
            );
            return Err((forbidden(reason), "unlisted"));
        }
        if !caller.cluster_admin {
            let reason = format!(
                "{what} is not an API the sidecar serves to API key `{}`: only a key with cluster_admin = true reaches engine APIs outside its table",
                caller.name
            );
            return Err((forbidden(reason), "unlisted"));
        }
        caller.check_index(None).map_err(|e| (e, "index"))?;
        return Ok(Route(None));
    };
    caller.check_scope(api.scope, &what).map_err(|e| (e, "scope"))?;
    if api.every == Every::Yes {
        caller.check_index(None).map_err(|e| (e, "index"))?;
    }
    for list in api.path_indices(segments) {
        caller.check_index(Some(list)).map_err(|e| (e, "index"))?;
    }
    Ok(Route(Some(api)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Secret;
    use proptest::prelude::*;

    fn caller(scope: Scope, indices: &[&str]) -> Caller {
        Caller {
            name: "k".into(),
            scope,
            indices: indices.iter().map(|s| s.to_string()).collect(),
            cluster_admin: false,
            handles: None,
            probe: false,
        }
    }

    fn segs(p: &str) -> Vec<String> {
        super::super::canonical::canonical(p).unwrap().segments
    }

    fn decide(c: &Caller, m: Method, p: &str) -> Result<Route, &'static str> {
        authorize(c, &m, &segs(p), &[]).map_err(|(_, why)| why)
    }

    fn scoped(key: &str, name: &str, scope: Scope, indices: &[&str]) -> ApiKeySetting {
        ApiKeySetting::scoped(name, key, scope, indices)
    }

    #[test]
    fn keys_are_identified_exactly_and_bare_keys_are_admin_on_everything() {
        let keys = ApiKeys::new(&[
            ApiKeySetting::Plain(Secret::new("alpha-key-123")),
            scoped("beta-key-456", "web", Scope::Read, &["docs-*"]),
        ]);
        assert!(keys.is_enabled());
        let alpha = keys.identify("alpha-key-123").unwrap();
        assert_eq!((alpha.name.as_str(), alpha.scope, alpha.covers_everything()), ("key-0", Scope::Admin, true));
        assert!(!alpha.cluster_admin, "a bare key reaches the table, not what is outside it");
        let web = keys.identify("beta-key-456").unwrap();
        assert_eq!((web.name.as_str(), web.scope), ("web", Scope::Read));
        assert!(keys.identify("alpha-key-12").is_none());
        assert!(keys.identify("").is_none());
        assert!(!ApiKeys::default().is_enabled());
    }

    #[test]
    fn the_official_clients_credentials_are_accepted() {
        use axum::http::{HeaderMap, HeaderValue};
        let keys = ApiKeys::new(&[scoped("s3cret", "web", Scope::Read, &["docs"])]);
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let with = |name: &str, value: String| {
            let mut h = HeaderMap::new();
            h.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(&value).unwrap(),
            );
            keys.identify_request(&h).map(|c| c.map(|c| c.name))
        };
        let web = Ok(Some("web".to_string()));
        assert_eq!(with("x-api-key", "s3cret".into()), web);
        assert_eq!(with("authorization", "Bearer s3cret".into()), web);
        assert_eq!(with("authorization", "ApiKey s3cret".into()), web);
        assert_eq!(with("authorization", format!("ApiKey {}", b64("web:s3cret"))), web);
        assert_eq!(with("authorization", format!("Basic {}", b64("web:s3cret"))), web);
        assert_eq!(
            with("authorization", format!("Basic {}", b64("other:s3cret"))),
            Err(InvalidKey),
            "name and key must match"
        );
        assert_eq!(with("authorization", format!("ApiKey {}", b64("web:nope"))), Err(InvalidKey));
        assert_eq!(with("authorization", "Digest s3cret".into()), Err(InvalidKey));
        assert_eq!(keys.identify_request(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn patterns_cover_what_they_match_and_client_wildcards_only_inside_them() {
        let c = caller(Scope::Read, &["docs", "logs-*"]);
        assert!(c.may_name("docs") && c.may_name("logs-2026") && c.may_name("logs-*") && c.may_name("logs-2026*"));
        assert!(!c.may_name("docs2") && !c.may_name("log*") && !c.may_name("*") && !c.may_name("secret"));
        assert!(c.check_index(Some("docs,logs-1")).is_ok());
        assert!(c.check_index(Some("docs,secret")).is_err());
        assert!(c.check_index(None).is_err());
        assert!(caller(Scope::Read, &["*"]).check_index(None).is_ok());
    }

    #[test]
    fn remote_cluster_names_never_match_a_local_pattern() {
        let c = caller(Scope::Read, &["docs-*", "*"]);
        assert!(!c.may_name("docs-x:secret") && !c.may_name("remote:docs-1") && !c.may_name("*:*"));
        assert!(caller(Scope::Read, &["eu:docs-*"]).may_name("eu:docs-1"));
    }

    #[test]
    fn every_api_class_needs_its_scope() {
        use Scope::*;
        let cases = [
            (Method::GET, "/", Read),
            (Method::POST, "/search", Read),
            (Method::POST, "/embed", Read),
            (Method::POST, "/v1/embeddings", Read),
            (Method::GET, "/docs/_search", Read),
            (Method::POST, "/docs/_count", Read),
            (Method::GET, "/docs/_doc/1", Read),
            (Method::HEAD, "/docs", Read),
            (Method::GET, "/docs/_mapping", Read),
            (Method::POST, "/docs/_mget", Read),
            (Method::POST, "/_msearch", Read),
            (Method::GET, "/_cat/indices", Read),
            (Method::GET, "/_cluster/health", Read),
            (Method::POST, "/_search/scroll", Read),
            (Method::DELETE, "/_pit", Read),
            (Method::POST, "/docs/_pit", Read),
            (Method::PUT, "/docs/_doc/1", Write),
            (Method::DELETE, "/docs/_doc/1", Write),
            (Method::POST, "/docs/_update/1", Write),
            (Method::POST, "/_bulk", Write),
            (Method::POST, "/docs/_refresh", Write),
            (Method::PUT, "/docs", Admin),
            (Method::DELETE, "/docs", Admin),
            (Method::PUT, "/docs/_mapping", Admin),
            (Method::PUT, "/docs/_settings", Admin),
            (Method::POST, "/_aliases", Admin),
            (Method::PUT, "/_cluster/settings", Admin),
            (Method::GET, "/_cluster/settings", Admin),
            (Method::POST, "/_jobs/reindex", Admin),
            (Method::GET, "/_jobs/rx-1-abcd", Admin),
            (Method::PUT, "/_scripts/x", Admin),
            (Method::POST, "/_reindex", Admin),
            (Method::POST, "/docs/_close", Admin),
            (Method::DELETE, "/_search/scroll/_all", Admin),
            (Method::GET, "/_search/point_in_time/_all", Admin),
        ];
        for (m, p, needed) in cases {
            let row = apis::lookup(&m, &segs(p)).unwrap_or_else(|| panic!("{m} {p} is in the table"));
            assert_eq!(row.scope, needed, "{m} {p}");
        }
    }

    #[test]
    fn unlisted_and_off_apis_are_denied_by_default() {
        let admin = caller(Scope::Admin, &["*"]);
        assert_eq!(decide(&admin, Method::POST, "/_security/api_key").unwrap_err(), "unlisted");
        assert_eq!(decide(&admin, Method::GET, "/_nodes").unwrap_err(), "unlisted");
        assert_eq!(decide(&admin, Method::POST, "/_data_stream/x").unwrap_err(), "unlisted");
        let root = Caller { cluster_admin: true, ..admin.clone() };
        assert!(decide(&root, Method::POST, "/_data_stream/x").is_ok(), "cluster_admin reaches the unlisted");
        assert_eq!(decide(&root, Method::POST, "/_snapshot/r/s").unwrap_err(), "unlisted", "off families stay off");
        let on = authorize(&root, &Method::POST, &segs("/_snapshot/r/s"), &["_snapshot".into()]);
        assert!(on.is_ok(), "unless configured");
        let scoped_root = Caller { cluster_admin: true, ..caller(Scope::Admin, &["docs"]) };
        assert_eq!(decide(&scoped_root, Method::POST, "/_data_stream/x").unwrap_err(), "index");
    }

    #[test]
    fn the_indices_of_the_path_are_what_is_checked() {
        let web = caller(Scope::Read, &["docs"]);
        assert!(decide(&web, Method::GET, "/docs/_search").is_ok());
        assert_eq!(decide(&web, Method::GET, "/docs,logs/_search").unwrap_err(), "index");
        assert_eq!(decide(&web, Method::GET, "/_cat/indices").unwrap_err(), "index");
        assert!(decide(&web, Method::GET, "/_cat/indices/docs").is_ok());
        assert_eq!(decide(&web, Method::POST, "/_count").unwrap_err(), "index");
        // percent-decoded once: the index is the whole decoded segment, which no key covers
        assert_eq!(decide(&web, Method::POST, "/docs%2F_delete_by_query/_search").unwrap_err(), "index");
        assert_eq!(decide(&web, Method::POST, "/docs/_doc/1").unwrap_err(), "scope");
        // both indices of a clone are checked
        let admin = caller(Scope::Admin, &["docs"]);
        assert_eq!(decide(&admin, Method::PUT, "/docs/_clone/secret").unwrap_err(), "index");
    }

    proptest! {
        #[test]
        fn a_literal_name_matches_only_itself(a in "[a-z0-9-]{1,12}", b in "[a-z0-9-]{1,12}") {
            prop_assert_eq!(glob(a.as_bytes(), b.as_bytes()), a == b);
        }

        #[test]
        fn a_prefix_pattern_matches_exactly_its_prefix(p in "[a-z-]{0,6}", n in "[a-z*-]{0,12}") {
            let pat = format!("{p}*");
            prop_assert_eq!(glob(pat.as_bytes(), n.as_bytes()), n.starts_with(&p));
        }
    }
}
