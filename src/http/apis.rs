//! The one table of every API the sidecar serves: for each method and path template, the scope
//! it needs and every place it names indices (path segments, body fields, NDJSON headers).
//!
//! Deny by default: a request that matches no row is refused for every key except those with an
//! explicit `cluster_admin` grant, and the engine's security, snapshot, plugin and node APIs are
//! refused even to them unless `server.engine_apis` lists their family. The authentication
//! middleware ([`super::middleware::authenticate`]) looks a request up here once, on its
//! canonical path ([`super::canonical`]), and the body check
//! ([`super::middleware::authorize_body`]) reads the body kind the row names; the routed
//! handlers and the passthrough never decide access themselves.
//!
//! Pure: no I/O, no state. The row order matters only where a literal and a name could both
//! match (`/_search/scroll/_all` before `/_search/scroll/{id}`): the first matching row wins.

use axum::http::Method;

use crate::settings::Scope;

/// One segment of a path template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seg {
    /// This literal segment.
    Lit(&'static str),
    /// A comma list of index names, aliases or patterns, each checked against the key.
    Index,
    /// A name that is not an index (document id, alias, template, job id).
    Name,
}

/// Where a request's body names indices, beside its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyNames {
    /// The body names none (or there is none).
    None,
    /// A query DSL body: terms lookups, `indexed_shape`, `more_like_this`/`percolate` documents,
    /// lookup runtime fields, `indices_boost`, and a `pit` (whose id must be the caller's own).
    Query,
    /// `_bulk`: each action line's `_index`.
    Bulk,
    /// `_msearch`: each header's `index` and `indices`, and each search body as [`BodyNames::Query`].
    Msearch,
    /// `_mget` / `_mtermvectors`: each `docs[]._index`.
    Docs,
    /// The sidecar's own `POST /search`: its `index` and the lookups of its `filter`.
    Sidecar,
    /// Scroll continuation or clearing: the scroll ids must be ones handed to this caller.
    Scroll,
    /// Closing point-in-time contexts: the ids must be ones handed to this caller.
    Pit,
    /// A body the sidecar does not read that names indices (`_aliases`, `_reindex`, search
    /// templates): a non-empty one needs a key on every index.
    Unparsed,
}

/// Whether a request reaches every index, whatever its path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Every {
    /// Only the indices it names.
    No,
    /// Every index (cluster APIs, `/_count`): the key needs `*`.
    Yes,
    /// `/_search`: every index, unless the body searches a point in time.
    UnlessPit,
}

/// One row of the table.
#[derive(Debug)]
pub struct Api {
    /// What the row is, in denials and in the scope matrix.
    pub name: &'static str,
    methods: u8,
    pub path: &'static [Seg],
    pub scope: Scope,
    pub body: BodyNames,
    pub every: Every,
}

const G: u8 = 1;
const H: u8 = 2;
const P: u8 = 4;
const U: u8 = 8;
const D: u8 = 16;

/// The bit of a method in [`Api::methods`]; methods the sidecar forwards none of are 0.
fn method_bit(m: &Method) -> u8 {
    match *m {
        Method::GET => G,
        Method::HEAD => H,
        Method::POST => P,
        Method::PUT => U,
        Method::DELETE => D,
        _ => 0,
    }
}

impl Api {
    /// Whether `method` is one this row serves.
    pub fn serves(&self, method: &Method) -> bool {
        self.methods & method_bit(method) != 0
    }

    /// The methods this row serves, for tests and docs.
    pub fn methods(&self) -> Vec<Method> {
        [(G, Method::GET), (H, Method::HEAD), (P, Method::POST), (U, Method::PUT), (D, Method::DELETE)]
            .into_iter()
            .filter(|(b, _)| self.methods & b != 0)
            .map(|(_, m)| m)
            .collect()
    }

    fn matches(&self, segments: &[String]) -> bool {
        self.path.len() == segments.len()
            && self.path.iter().zip(segments).all(|(t, s)| match t {
                Seg::Lit(l) => s == l,
                Seg::Index => !s.starts_with('_') && !s.is_empty(),
                Seg::Name => !s.is_empty(),
            })
    }

    /// The index lists the path names, one per [`Seg::Index`] segment.
    pub fn path_indices<'a>(&self, segments: &'a [String]) -> Vec<&'a str> {
        self.path.iter().zip(segments).filter(|(t, _)| **t == Seg::Index).map(|(_, s)| s.as_str()).collect()
    }
}

use BodyNames as B;
use Every::{No as Named, UnlessPit, Yes as All};
use Scope::{Admin, Read, Write};
use Seg::{Index as I, Lit as L, Name as N};

macro_rules! api {
    ($name:literal, $m:expr, [$($s:expr),*], $scope:expr, $body:expr, $every:expr) => {
        Api { name: $name, methods: $m, path: &[$($s),*], scope: $scope, body: $body, every: $every }
    };
}

/// Every API the sidecar serves, first match wins.
pub static APIS: &[Api] = &[
    // the sidecar's own
    api!("info", G | H, [], Read, B::None, Named),
    api!("health", G | H, [L("healthz")], Read, B::None, Named),
    api!("readiness", G | H, [L("readyz")], Read, B::None, Named),
    api!("metrics", G | H, [L("metrics")], Read, B::None, Named),
    api!("embed", P, [L("embed")], Read, B::None, Named),
    api!("openai embeddings", P, [L("v1"), L("embeddings")], Read, B::None, Named),
    api!("encode", P, [L("encode")], Read, B::None, Named),
    api!("hybrid search", P, [L("search")], Read, B::Sidecar, Named),
    api!("start reindex job", P, [L("_jobs"), L("reindex")], Admin, B::None, All),
    api!("reindex job", G | D, [L("_jobs"), N], Admin, B::None, All),
    api!("sidecar pipelines", G, [L("_sidecar"), L("pipeline")], Admin, B::None, All),
    api!("sidecar pipeline", G | U | D, [L("_sidecar"), L("pipeline"), N], Admin, B::None, All),
    // Elasticsearch's inference API (text embeddings): reading and embedding need read,
    // changing the endpoints (cluster state) admin on every index
    api!("inference endpoints", G, [L("_inference")], Read, B::None, Named),
    api!("inference endpoint", G | P, [L("_inference"), N], Read, B::None, Named),
    api!("inference endpoint", U | D, [L("_inference"), N], Admin, B::None, All),
    api!("inference endpoint", G | P, [L("_inference"), N, N], Read, B::None, Named),
    api!("inference endpoint", U | D, [L("_inference"), N, N], Admin, B::None, All),
    // trained-model inference (embeddings of a sidecar model where the cluster has no ML)
    api!("ml-commons model search", G | P, [L("_plugins"), L("_ml"), L("models"), L("_search")], Read, B::None, Named),
    api!("ml-commons model", G, [L("_plugins"), L("_ml"), L("models"), N], Read, B::None, Named),
    api!("ml-commons predict", P, [L("_plugins"), L("_ml"), L("_predict"), N, N], Read, B::None, Named),
    api!("trained model infer", P, [L("_ml"), L("trained_models"), N, L("_infer")], Read, B::None, Named),
    api!(
        "trained model infer",
        P,
        [L("_ml"), L("trained_models"), N, L("deployment"), L("_infer")],
        Read,
        B::None,
        Named
    ),
    // OpenSearch search pipelines (the sidecar keeps those it scores hybrid queries with)
    api!("search pipelines", G, [L("_search"), L("pipeline")], Admin, B::None, All),
    api!("search pipeline", G | U | D, [L("_search"), L("pipeline"), N], Admin, B::None, All),
    // scroll and point in time, before the searches whose paths they extend
    api!("clear every scroll", D, [L("_search"), L("scroll"), L("_all")], Admin, B::None, All),
    api!("scroll", G | P | D, [L("_search"), L("scroll")], Read, B::Scroll, Named),
    api!("scroll", G | P | D, [L("_search"), L("scroll"), N], Read, B::Scroll, Named),
    api!("every point in time", G | D, [L("_search"), L("point_in_time"), L("_all")], Admin, B::None, All),
    api!("close point in time", D, [L("_search"), L("point_in_time")], Read, B::Pit, Named),
    api!("open point in time", P, [I, L("_search"), L("point_in_time")], Read, B::None, Named),
    api!("open point in time", P, [I, L("_pit")], Read, B::None, Named),
    api!("close point in time", D, [L("_pit")], Read, B::Pit, Named),
    // reads
    api!("search", G | P, [L("_search")], Read, B::Query, UnlessPit),
    api!("search", G | P, [I, L("_search")], Read, B::Query, Named),
    api!("search template", G | P, [L("_search"), L("template")], Read, B::Unparsed, All),
    api!("search template", G | P, [I, L("_search"), L("template")], Read, B::Unparsed, Named),
    api!("msearch", G | P, [L("_msearch")], Read, B::Msearch, Named),
    api!("msearch", G | P, [I, L("_msearch")], Read, B::Msearch, Named),
    api!("count", G | P, [L("_count")], Read, B::Query, All),
    api!("count", G | P, [I, L("_count")], Read, B::Query, Named),
    api!("mget", G | P, [L("_mget")], Read, B::Docs, Named),
    api!("mget", G | P, [I, L("_mget")], Read, B::Docs, Named),
    api!("explain", G | P, [I, L("_explain"), N], Read, B::Query, Named),
    api!("validate query", G | P, [L("_validate"), L("query")], Read, B::Query, All),
    api!("validate query", G | P, [I, L("_validate"), L("query")], Read, B::Query, Named),
    api!("termvectors", G | P, [I, L("_termvectors")], Read, B::None, Named),
    api!("termvectors", G | P, [I, L("_termvectors"), N], Read, B::None, Named),
    api!("mtermvectors", G | P, [L("_mtermvectors")], Read, B::Docs, Named),
    api!("mtermvectors", G | P, [I, L("_mtermvectors")], Read, B::Docs, Named),
    api!("field caps", G | P, [L("_field_caps")], Read, B::Query, All),
    api!("field caps", G | P, [I, L("_field_caps")], Read, B::Query, Named),
    api!("analyze", G | P, [L("_analyze")], Read, B::None, All),
    api!("analyze", G | P, [I, L("_analyze")], Read, B::None, Named),
    api!("get document", G | H, [I, L("_doc"), N], Read, B::None, Named),
    api!("get source", G | H, [I, L("_source"), N], Read, B::None, Named),
    api!("get index", G | H, [I], Read, B::None, Named),
    api!("get mapping", G, [L("_mapping")], Read, B::None, All),
    api!("get mapping", G, [I, L("_mapping")], Read, B::None, Named),
    api!("get mapping", G, [I, L("_mappings")], Read, B::None, Named),
    api!("get field mapping", G, [I, L("_mapping"), L("field"), N], Read, B::None, Named),
    api!("get settings", G, [L("_settings")], Read, B::None, All),
    api!("get settings", G, [I, L("_settings")], Read, B::None, Named),
    api!("get settings", G, [I, L("_settings"), N], Read, B::None, Named),
    api!("get aliases", G | H, [L("_alias")], Read, B::None, All),
    api!("get aliases", G | H, [L("_alias"), N], Read, B::None, All),
    api!("get aliases", G | H, [L("_aliases")], Read, B::None, All),
    api!("get aliases", G | H, [I, L("_alias")], Read, B::None, Named),
    api!("get aliases", G | H, [I, L("_aliases")], Read, B::None, Named),
    api!("stats", G, [L("_stats")], Read, B::None, All),
    api!("stats", G, [I, L("_stats")], Read, B::None, Named),
    api!("stats", G, [I, L("_stats"), N], Read, B::None, Named),
    api!("cat", G, [L("_cat"), L("indices"), I], Read, B::None, Named),
    api!("cat", G, [L("_cat"), L("count"), I], Read, B::None, Named),
    api!("cat", G, [L("_cat"), L("shards"), I], Read, B::None, Named),
    api!("cat", G, [L("_cat"), L("segments"), I], Read, B::None, Named),
    api!("cat", G, [L("_cat"), L("recovery"), I], Read, B::None, Named),
    api!("cat", G, [L("_cat")], Read, B::None, All),
    api!("cat", G, [L("_cat"), N], Read, B::None, All),
    api!("cat", G, [L("_cat"), N, N], Read, B::None, All),
    api!("cluster health", G, [L("_cluster"), L("health")], Read, B::None, All),
    api!("cluster health", G, [L("_cluster"), L("health"), I], Read, B::None, Named),
    api!("resolve index", G, [L("_resolve"), L("index"), I], Read, B::None, Named),
    // document writes
    api!("bulk", P | U, [L("_bulk")], Write, B::Bulk, Named),
    api!("bulk", P | U, [I, L("_bulk")], Write, B::Bulk, Named),
    api!("index document", P, [I, L("_doc")], Write, B::None, Named),
    api!("index document", P | U | D, [I, L("_doc"), N], Write, B::None, Named),
    api!("create document", P | U, [I, L("_create"), N], Write, B::None, Named),
    api!("update document", P, [I, L("_update"), N], Write, B::None, Named),
    api!("refresh", G | P, [L("_refresh")], Write, B::None, All),
    api!("refresh", G | P, [I, L("_refresh")], Write, B::None, Named),
    api!("flush", G | P, [L("_flush")], Write, B::None, All),
    api!("flush", G | P, [I, L("_flush")], Write, B::None, Named),
    api!("delete by query", P, [I, L("_delete_by_query")], Write, B::Query, Named),
    api!("update by query", P, [I, L("_update_by_query")], Write, B::Query, Named),
    // index administration
    api!("create index", U, [I], Admin, B::None, Named),
    api!("delete index", D, [I], Admin, B::None, Named),
    api!("put mapping", P | U, [I, L("_mapping")], Admin, B::None, Named),
    api!("put mapping", P | U, [I, L("_mappings")], Admin, B::None, Named),
    api!("put settings", U, [I, L("_settings")], Admin, B::None, Named),
    api!("alias", H | P | U | D, [I, L("_alias"), N], Admin, B::None, Named),
    api!("alias", H | P | U | D, [I, L("_aliases"), N], Admin, B::None, Named),
    api!("open index", P, [I, L("_open")], Admin, B::None, Named),
    api!("close index", P, [I, L("_close")], Admin, B::None, Named),
    api!("force merge", P, [I, L("_forcemerge")], Admin, B::None, Named),
    api!("clone index", P | U, [I, L("_clone"), I], Admin, B::None, Named),
    api!("split index", P | U, [I, L("_split"), I], Admin, B::None, Named),
    api!("shrink index", P | U, [I, L("_shrink"), I], Admin, B::None, Named),
    api!("rollover", P, [I, L("_rollover")], Admin, B::None, Named),
    api!("rollover", P, [I, L("_rollover"), I], Admin, B::None, Named),
    api!("update aliases", P, [L("_aliases")], Admin, B::Unparsed, All),
    api!("reindex", P, [L("_reindex")], Admin, B::Unparsed, All),
    // cluster administration (every index)
    api!("cluster settings", G | U, [L("_cluster"), L("settings")], Admin, B::None, All),
    api!("cluster state", G, [L("_cluster"), L("state")], Admin, B::None, All),
    api!("cluster stats", G, [L("_cluster"), L("stats")], Admin, B::None, All),
    api!("index templates", G, [L("_index_template")], Admin, B::None, All),
    api!("index template", G | H | P | U | D, [L("_index_template"), N], Admin, B::None, All),
    api!("simulate index template", P, [L("_index_template"), L("_simulate_index"), I], Admin, B::None, All),
    api!("simulate template", P, [L("_index_template"), L("_simulate")], Admin, B::None, All),
    api!("simulate template", P, [L("_index_template"), L("_simulate"), N], Admin, B::None, All),
    api!("component templates", G, [L("_component_template")], Admin, B::None, All),
    api!("component template", G | H | P | U | D, [L("_component_template"), N], Admin, B::None, All),
    api!("legacy templates", G, [L("_template")], Admin, B::None, All),
    api!("legacy template", G | H | P | U | D, [L("_template"), N], Admin, B::None, All),
    api!("ingest pipelines", G, [L("_ingest"), L("pipeline")], Admin, B::None, All),
    api!("ingest pipeline", G | P | U | D, [L("_ingest"), L("pipeline"), N], Admin, B::None, All),
    api!("simulate ingest pipeline", G | P, [L("_ingest"), L("pipeline"), N, L("_simulate")], Admin, B::None, All),
    api!("stored script", G | P | U | D, [L("_scripts"), N], Admin, B::None, All),
    api!("tasks", G, [L("_tasks")], Admin, B::None, All),
    api!("task", G, [L("_tasks"), N], Admin, B::None, All),
    api!("cancel task", P, [L("_tasks"), N, L("_cancel")], Admin, B::None, All),
    api!("license", G, [L("_license")], Admin, B::None, All),
];

/// API families that are never forwarded unless `server.engine_apis` lists them (then only to
/// keys with `cluster_admin`).
pub use crate::settings::ENGINE_API_FAMILIES as OFF_FAMILIES;

/// The row serving `method` on the canonical `segments`, if any.
pub fn lookup(method: &Method, segments: &[String]) -> Option<&'static Api> {
    APIS.iter().find(|a| a.serves(method) && a.matches(segments))
}

/// The off family `segments` belongs to, if any.
pub fn off_family(segments: &[String]) -> Option<&'static str> {
    let first = segments.first()?;
    OFF_FAMILIES.iter().copied().find(|f| *f == first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        p.split('/').filter(|s| !s.is_empty()).map(String::from).collect()
    }

    #[test]
    fn every_row_is_reachable_by_its_own_path_and_method() {
        for (n, api) in APIS.iter().enumerate() {
            let path: Vec<String> = api
                .path
                .iter()
                .map(|s| match s {
                    Seg::Lit(l) => l.to_string(),
                    Seg::Index => "docs".into(),
                    Seg::Name => "some-name".into(),
                })
                .collect();
            for m in api.methods() {
                let hit = lookup(&m, &path).unwrap();
                // an earlier row may serve the same shape only with the same needs
                assert_eq!((hit.scope, hit.body, hit.every), (api.scope, api.body, api.every), "row {n}: {api:?}");
            }
        }
    }

    #[test]
    fn literals_win_over_names_and_unknown_apis_find_no_row() {
        assert_eq!(lookup(&Method::DELETE, &segs("/_search/scroll/_all")).unwrap().scope, Scope::Admin);
        assert_eq!(lookup(&Method::DELETE, &segs("/_search/scroll/abc")).unwrap().scope, Scope::Read);
        assert!(lookup(&Method::GET, &segs("/_search/point_in_time/_all")).unwrap().every == Every::Yes);
        assert!(lookup(&Method::GET, &segs("/_Search")).is_none(), "names are case sensitive");
        assert!(lookup(&Method::POST, &segs("/_security/api_key")).is_none());
        assert!(lookup(&Method::PATCH, &segs("/docs")).is_none());
        assert!(lookup(&Method::POST, &segs("/docs/_unknown")).is_none());
        assert_eq!(off_family(&segs("/_snapshot/r/s")), Some("_snapshot"));
        assert_eq!(off_family(&segs("/_search")), None);
    }

    #[test]
    fn the_path_indices_are_the_index_segments() {
        let s = segs("/docs/_clone/docs-copy");
        assert_eq!(lookup(&Method::PUT, &s).unwrap().path_indices(&s), vec!["docs", "docs-copy"]);
        let s = segs("/_cat/indices/logs-*");
        assert_eq!(lookup(&Method::GET, &s).unwrap().path_indices(&s), vec!["logs-*"]);
    }
}
