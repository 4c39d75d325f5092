//! Who a request comes from and what it may reach: API keys with scopes and index patterns.
//!
//! Owns: key lookup (SHA-256 digests compared in constant time, every key, always), the
//! [`Caller`] each request carries as an extension, and [`classify`], the one table that maps a
//! method and path to the [`Scope`] it needs and the indices it names. Handlers that take index
//! names from the body (`/search`, `_bulk`, `_mget`, `_msearch`, `/_search`) check them with
//! [`Caller::check_index`]. Must not touch the engine or know handlers: it decides, the
//! middleware in [`super::middleware`] enforces and counts denials.
//!
//! Anything this table does not know is `admin`; a request that names no index needs a key
//! whose patterns include `*`.

use std::sync::Arc;

use axum::http::Method;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::error::ApiError;
use crate::error::ErrorCode;
use crate::settings::{ApiKeySetting, Scope};

/// The client a request comes from: its key's name, scope and index patterns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub scope: Scope,
    indices: Vec<String>,
}

impl Caller {
    /// Everything, for a sidecar without keys (loopback only unless allowed otherwise).
    pub fn anonymous() -> Self {
        Caller { name: "anonymous".into(), scope: Scope::Admin, indices: vec!["*".into()] }
    }

    /// A read-only caller on every index, for the probes exempt from keys.
    pub fn probe() -> Self {
        Caller { name: "probe".into(), scope: Scope::Read, indices: vec!["*".into()] }
    }

    fn covers_everything(&self) -> bool {
        self.indices.iter().any(|p| p == "*")
    }

    /// Whether the key may name `name` (a concrete name or a client's `*` pattern): it must match
    /// one of the key's patterns taken literally. Index names cannot contain `*`, so a `*` of the
    /// client's can only be matched by a `*` of the key's, and then every index the client's
    /// pattern expands to matches the key's pattern too.
    pub fn may_name(&self, name: &str) -> bool {
        self.indices.iter().any(|p| glob(p.as_bytes(), name.as_bytes()))
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
}

fn forbidden(reason: String) -> ApiError {
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

/// The configured keys, as digests.
#[derive(Clone, Default)]
pub struct ApiKeys(Arc<Vec<([u8; 32], Caller)>>);

impl ApiKeys {
    pub fn new(keys: &[ApiKeySetting]) -> Self {
        let entries = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                (digest(k.key().expose()), Caller { name: k.name(i), scope: k.scope(), indices: k.indices() })
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
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// The indices a request names, as far as its path tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Names {
    /// None that matter: the sidecar's own encode APIs, `GET /`, scroll and PIT continuations
    /// (their ids come from a search the key was allowed).
    Unchecked,
    /// Every index (cluster APIs, `/_count` over everything): the key needs `*`.
    All,
    /// This comma list of names and patterns.
    Pattern(String),
    /// The handler reads them from the body and checks them itself.
    Body,
}

/// What a request needs: a scope, and the indices it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub scope: Scope,
    pub names: Names,
}

/// The engine read APIs that follow an index (`/{index}/_search`), besides the document APIs.
pub(crate) const INDEX_READS: &[&str] = &[
    "_search",
    "_count",
    "_mget",
    "_msearch",
    "_field_caps",
    "_validate",
    "_explain",
    "_termvectors",
    "_mtermvectors",
    "_analyze",
    "_pit",
];
/// Read when fetched, admin when changed: `GET /{index}/_mapping` reads, `PUT` changes it.
const INDEX_READ_WHEN_GET: &[&str] = &["_mapping", "_mappings", "_settings", "_alias", "_aliases", "_stats", "_source"];
/// Document writes.
const INDEX_WRITES: &[&str] =
    &["_doc", "_create", "_update", "_bulk", "_refresh", "_delete_by_query", "_update_by_query", "_flush"];

/// The scope and indices `method path` needs; `segments` are the path's percent-decoded segments.
pub fn classify(method: &Method, segments: &[String]) -> Access {
    let read = matches!(*method, Method::GET | Method::HEAD);
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let a = |scope, names| Access { scope, names };
    match s.as_slice() {
        [] => a(if read { Scope::Read } else { Scope::Admin }, Names::Unchecked),
        ["healthz" | "readyz" | "metrics" | "embed" | "encode"] | ["v1", "embeddings"] => {
            a(Scope::Read, Names::Unchecked)
        }
        ["search"] => a(Scope::Read, Names::Body),
        ["_jobs", ..] => a(Scope::Admin, Names::All),
        ["_search"] => a(Scope::Read, Names::Body),
        ["_search", "scroll", ..] | ["_pit"] | ["_search", "point_in_time", ..] => a(Scope::Read, Names::Unchecked),
        ["_bulk"] => a(Scope::Write, Names::Body),
        ["_mget" | "_msearch"] => a(Scope::Read, Names::Body),
        ["_count" | "_mapping" | "_mappings" | "_field_caps" | "_analyze"] if read || s[0] != "_mapping" => {
            a(Scope::Read, Names::All)
        }
        ["_refresh"] => a(Scope::Write, Names::All),
        ["_cluster", "health"] if read => a(Scope::Read, Names::All),
        ["_cluster", "health", index] if read => a(Scope::Read, Names::Pattern(index.to_string())),
        ["_cat", "indices" | "count" | "shards" | "segments" | "recovery", index] if read => {
            a(Scope::Read, Names::Pattern(index.to_string()))
        }
        ["_cat", ..] | ["_alias" | "_aliases", ..] | ["_settings" | "_stats"] if read => a(Scope::Read, Names::All),
        [index, rest @ ..] if !index.starts_with('_') => {
            let names = Names::Pattern(index.to_string());
            match rest.first() {
                None if read => a(Scope::Read, names),
                None => a(Scope::Admin, names),
                Some(api) if INDEX_READS.contains(api) => a(Scope::Read, names),
                Some(api) if INDEX_READ_WHEN_GET.contains(api) && read => a(Scope::Read, names),
                Some(api) if INDEX_WRITES.contains(api) && read && matches!(*api, "_doc" | "_source") => {
                    a(Scope::Read, names)
                }
                Some(api) if INDEX_WRITES.contains(api) => a(Scope::Write, names),
                Some(_) => a(Scope::Admin, names),
            }
        }
        _ => a(Scope::Admin, Names::All),
    }
}

/// The path's segments, percent-decoded (`None` when one is not UTF-8).
pub fn segments(path: &str) -> Option<Vec<String>> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8().ok().map(|c| c.into_owned()))
        .collect()
}

/// Checks `access` against `caller`: the scope first, then the indices of the path.
pub fn authorize(
    caller: &Caller,
    access: &Access,
    method: &Method,
    path: &str,
) -> Result<(), (ApiError, &'static str)> {
    let what = format!("{method} {}", path.chars().take(120).collect::<String>());
    caller.check_scope(access.scope, &what).map_err(|e| (e, "scope"))?;
    let r = match &access.names {
        Names::Unchecked | Names::Body => Ok(()),
        Names::All => caller.check_index(None),
        // an invalid name a key's patterns cover is the handler's 400 to give
        Names::Pattern(p) => caller.check_index(Some(p)),
    };
    r.map_err(|e| (e, "index"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{ScopedKey, Secret};
    use proptest::prelude::*;

    fn caller(scope: Scope, indices: &[&str]) -> Caller {
        Caller { name: "k".into(), scope, indices: indices.iter().map(|s| s.to_string()).collect() }
    }

    fn access(method: Method, path: &str) -> Access {
        classify(&method, &segments(path).unwrap())
    }

    #[test]
    fn keys_are_identified_exactly_and_bare_keys_are_admin_on_everything() {
        let keys = ApiKeys::new(&[
            ApiKeySetting::Plain(Secret::new("alpha-key-123")),
            ApiKeySetting::Scoped(ScopedKey {
                key: Secret::new("beta-key-456"),
                name: Some("web".into()),
                scope: Scope::Read,
                indices: vec!["docs-*".into()],
            }),
        ]);
        assert!(keys.is_enabled());
        assert_eq!(keys.identify("alpha-key-123").unwrap(), caller(Scope::Admin, &["*"]).renamed("key-0"));
        let web = keys.identify("beta-key-456").unwrap();
        assert_eq!((web.name.as_str(), web.scope), ("web", Scope::Read));
        assert!(keys.identify("alpha-key-12").is_none());
        assert!(keys.identify("").is_none());
        assert!(!ApiKeys::default().is_enabled());
    }

    impl Caller {
        fn renamed(mut self, n: &str) -> Self {
            self.name = n.into();
            self
        }
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
            (Method::GET, "/_nodes", Admin),
            (Method::POST, "/docs/_close", Admin),
            (Method::POST, "/_snapshot/r/s", Admin),
        ];
        for (m, p, needed) in cases {
            assert_eq!(access(m.clone(), p).scope, needed, "{m} {p}");
        }
    }

    #[test]
    fn the_indices_of_the_path_are_what_is_checked() {
        assert_eq!(access(Method::GET, "/docs,logs-*/_search").names, Names::Pattern("docs,logs-*".into()));
        assert_eq!(access(Method::GET, "/_cat/indices/docs-*").names, Names::Pattern("docs-*".into()));
        assert_eq!(access(Method::GET, "/_cat/indices").names, Names::All);
        assert_eq!(access(Method::POST, "/_count").names, Names::All);
        assert_eq!(access(Method::POST, "/_bulk").names, Names::Body);
        // percent-decoded before it is read: the index is the whole decoded segment
        assert_eq!(
            access(Method::POST, "/docs%2F_delete_by_query/_search").names,
            Names::Pattern("docs/_delete_by_query".into())
        );
        let web = caller(Scope::Read, &["docs"]);
        let hostile = access(Method::POST, "/docs%2F_delete_by_query/_search");
        assert!(authorize(&web, &hostile, &Method::POST, "/x").is_err());
        let (e, why) =
            authorize(&web, &access(Method::POST, "/docs/_doc/1"), &Method::POST, "/docs/_doc/1").unwrap_err();
        assert_eq!((e.code, why), (ErrorCode::Forbidden, "scope"));
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
