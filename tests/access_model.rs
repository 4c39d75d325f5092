//! The sidecar's access decisions against a small reference model, for every generated (key,
//! method, path spelling, body) request.
//!
//! The real router runs in process with three scoped keys and an engine URL on which nothing
//! listens: a request the sidecar lets through is answered 502 (it tried to reach the engine),
//! one it refuses gets a 4xx before anything is sent. The reference model below knows nothing of
//! the sidecar's table: it says which API each request is, the scope that API needs, and every
//! index the request names (path, body, NDJSON headers, lookups), the way the engines read them.
//! The two must agree on every generated request. And every row of the API table, under each
//! spelling the engines read as the same request, is answered as its canonical spelling. No
//! engine is needed.

mod common;

use axum::body::Body;
use axum::http::{Method, Request};
use common::{dead_url, engine_settings};
use semantic_sidecar::engine::EngineClient;
use semantic_sidecar::http::{self, AppState};
use semantic_sidecar::settings::{ApiKeySetting, Scope};
use tower::ServiceExt;

const APIS: &[&str] =
    &["_search", "_count", "_bulk", "_msearch", "_mget", "_doc/1", "_settings", "_cluster/settings", "_unknown", ""];
const INDICES: &[Option<&str>] = &[
    None,
    Some("docs-a"),
    Some("docs-b,docs-c"),
    Some("secret"),
    Some("docs-a,secret"),
    Some("docs-a:secret"),
    Some("*"),
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE"];

/// How the path is spelt: all but `Upper` are the same request to the engines.
#[derive(Clone, Copy, Debug)]
enum Spelling {
    Plain,
    TrailingSlash,
    DoubleSlash,
    EncodedUnderscore,
    Upper,
}

/// The indices a body names as the engines read it (`None`: the path's, or every index), or
/// `Err` when one of them is not a JSON string.
type Named = Result<Vec<Option<&'static str>>, ()>;

/// The bodies generated for `api`, each with what it names.
fn bodies(api: &str) -> Vec<(String, Named)> {
    let lookup = |i: &str| format!(r#"{{"query":{{"terms":{{"u":{{"index":"{i}","id":"1","path":"p"}}}}}}}}"#);
    match api {
        "_search" | "_count" => vec![
            (String::new(), Ok(vec![])),
            (r#"{"query":{"match_all":{}}}"#.into(), Ok(vec![])),
            (lookup("docs-b"), Ok(vec![Some("docs-b")])),
            (lookup("secret"), Ok(vec![Some("secret")])),
            (
                r#"{"query":{"more_like_this":{"like":[{"_index":"secret","_id":"1"}]}}}"#.into(),
                Ok(vec![Some("secret")]),
            ),
            (r#"{"query":{"terms":{"u":{"index":7,"id":"1","path":"p"}}}}"#.into(), Err(())),
        ],
        "_bulk" => vec![
            ("{\"delete\":{\"_index\":\"docs-a\",\"_id\":\"1\"}}\n".into(), Ok(vec![Some("docs-a")])),
            ("{\"delete\":{\"_index\":\"secret\",\"_id\":\"1\"}}\n".into(), Ok(vec![Some("secret")])),
            ("{\"delete\":{\"_id\":\"1\"}}\n".into(), Ok(vec![None])),
            ("{\"delete\":{\"_index\":123,\"_id\":\"1\"}}\n".into(), Err(())),
        ],
        "_msearch" => vec![
            ("{\"index\":\"docs-a\"}\n{}\n".into(), Ok(vec![Some("docs-a")])),
            ("{\"index\":\"docs-a\",\"indices\":\"secret\"}\n{}\n".into(), Ok(vec![Some("docs-a"), Some("secret")])),
            ("{}\n{}\n".into(), Ok(vec![None])),
            ("{\"index\":true}\n{}\n".into(), Err(())),
        ],
        "_mget" => vec![
            (r#"{"docs":[{"_index":"docs-a","_id":"1"}]}"#.into(), Ok(vec![Some("docs-a")])),
            (r#"{"docs":[{"_index":"secret","_id":"1"}]}"#.into(), Ok(vec![Some("secret")])),
            (r#"{"ids":["1"]}"#.into(), Ok(vec![None])),
            (r#"{"docs":[{"_index":123,"_id":"1"}]}"#.into(), Err(())),
        ],
        "_doc/1" => vec![(r#"{"t":"x"}"#.into(), Ok(vec![]))],
        _ => vec![(String::new(), Ok(vec![]))],
    }
}

/// The reference model: whether a key of `scope` on `docs-*` may make this request.
fn allowed(scope: Scope, method: &str, index: Option<&str>, api: &str, spelling: Spelling, body: &Named) -> bool {
    let Ok(body_names) = body else { return false };
    if matches!(spelling, Spelling::Upper) && !api.is_empty() {
        return false; // `_Search` is no API
    }
    // the scope the API needs, `None` when the sidecar serves no such API
    let needs = match (api, method, index.is_some()) {
        ("_search" | "_count" | "_msearch" | "_mget", "GET" | "POST", _) => Some(Scope::Read),
        ("_bulk", "POST" | "PUT", _) => Some(Scope::Write),
        ("_doc/1", "GET", true) => Some(Scope::Read),
        ("_doc/1", "PUT" | "POST" | "DELETE", true) => Some(Scope::Write),
        ("_settings", "GET", _) => Some(Scope::Read),
        ("_settings", "PUT", true) => Some(Scope::Admin),
        ("_cluster/settings", "GET" | "PUT", false) => Some(Scope::Admin),
        ("", "GET", _) => Some(Scope::Read),
        ("", "PUT" | "DELETE", true) => Some(Scope::Admin),
        _ => None,
    };
    let Some(needs) = needs else { return false };
    if scope < needs {
        return false;
    }
    // writes take one concrete index (the engines refuse a list or a pattern there too)
    let writes_one = api == "_bulk" || api == "_doc/1" || (api.is_empty() && method != "GET");
    if writes_one && index.is_some_and(|i| i.contains(',') || i.contains('*')) {
        return false;
    }
    // every index named: the path's, each body item's (an item without one takes the path's)
    let path: Vec<&str> = index.map(|i| i.split(',').collect()).unwrap_or_default();
    let mut names: Vec<Option<&str>> = path.iter().map(|p| Some(*p)).collect();
    for n in body_names {
        match n {
            Some(n) => names.push(Some(n)),
            None if path.is_empty() => names.push(None),
            None => {}
        }
    }
    let cluster_wide = matches!(api, "_search" | "_count" | "_settings" | "_cluster/settings") && index.is_none();
    if cluster_wide {
        names.push(None);
    }
    // `None` (every index) needs `*`; remote names never match `docs-*`
    names.iter().all(|n| n.is_some_and(|n| !n.contains(':') && n.starts_with("docs-")))
}

fn path_of(index: Option<&str>, api: &str, spelling: Spelling) -> String {
    let mut segs: Vec<String> = index.map(|i| vec![i.to_string()]).unwrap_or_default();
    segs.extend(api.split('/').filter(|s| !s.is_empty()).map(String::from));
    match spelling {
        Spelling::Plain => format!("/{}", segs.join("/")),
        Spelling::TrailingSlash => format!("/{}/", segs.join("/")),
        Spelling::DoubleSlash => format!("//{}", segs.join("//")),
        Spelling::EncodedUnderscore => {
            format!("/{}", segs.iter().map(|s| s.replacen('_', "%5F", 1)).collect::<Vec<_>>().join("/"))
        }
        Spelling::Upper => format!(
            "/{}",
            segs.iter()
                .map(|s| if s.starts_with('_') { s.to_uppercase() } else { s.clone() })
                .collect::<Vec<_>>()
                .join("/")
        ),
    }
}

fn key(name: &str, scope: Scope) -> ApiKeySetting {
    ApiKeySetting::scoped(name, &format!("{name}-key"), scope, &["docs-*"])
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn router(rt: &tokio::runtime::Runtime) -> axum::Router {
    rt.block_on(async {
        let url = dead_url().await;
        let mut settings = engine_settings(&url, &[("SIDECAR__ENGINE__RETRY__MAX_RETRIES", "0")]);
        settings.server.api_keys =
            vec![key("reader", Scope::Read), key("writer", Scope::Write), key("boss", Scope::Admin)];
        let engine = EngineClient::new(&settings.engine).unwrap();
        http::router(AppState::new(settings, engine))
    })
}

/// Every combination of the generators (3 keys × 4 methods × 7 index lists × 10 APIs × 5
/// spellings × up to 6 bodies): exhaustive, so the same run on every machine.
#[test]
fn the_sidecar_decides_as_the_reference_model() {
    let rt = runtime();
    let app = router(&rt);
    let spellings =
        [Spelling::Plain, Spelling::TrailingSlash, Spelling::DoubleSlash, Spelling::EncodedUnderscore, Spelling::Upper];
    let (mut forwarded_n, mut refused_n, mut wrong) = (0, 0, Vec::new());
    for (name, scope) in [("reader", Scope::Read), ("writer", Scope::Write), ("boss", Scope::Admin)] {
        for method in METHODS {
            for index in INDICES {
                for api in APIS {
                    for spelling in spellings {
                        for (body, named) in bodies(api) {
                            let path = path_of(*index, api, spelling);
                            let want = allowed(scope, method, *index, api, spelling, &named);
                            let ndjson = matches!(*api, "_bulk" | "_msearch");
                            let req = Request::builder()
                                .method(Method::from_bytes(method.as_bytes()).unwrap())
                                .uri(&path)
                                .header("x-api-key", format!("{name}-key"))
                                .header(
                                    "content-type",
                                    if ndjson { "application/x-ndjson" } else { "application/json" },
                                )
                                .body(Body::from(body.clone()))
                                .unwrap();
                            let status = rt.block_on(app.clone().oneshot(req)).unwrap().status().as_u16();
                            let forwarded = (500..600).contains(&status);
                            assert!(forwarded || (400..500).contains(&status), "{method} {path}: {status}");
                            if forwarded {
                                forwarded_n += 1;
                            } else {
                                refused_n += 1;
                            }
                            if forwarded != want {
                                wrong.push(format!(
                                    "{method} {path} {} as {name}: sidecar {status}, model {want}",
                                    body.escape_debug()
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    println!("{forwarded_n} requests forwarded, {refused_n} refused");
    assert!(wrong.is_empty(), "{} decisions differ from the model:\n{}", wrong.len(), wrong.join("\n"));
    assert!(forwarded_n > 500 && refused_n > 500, "both outcomes are exercised");
}

/// Every row of the API table, under every spelling the engines read as the same request, gets
/// the same answer as its canonical spelling, for keys of each scope; and a key whose scope is
/// below the row's is refused with 403 (`*` keys, so that index patterns play no part).
#[test]
fn every_row_of_the_table_decides_the_same_under_every_spelling() {
    use semantic_sidecar::http::apis::{Seg, APIS};
    let rt = runtime();
    let app = rt.block_on(async {
        let url = dead_url().await;
        let mut settings = engine_settings(&url, &[("SIDECAR__ENGINE__RETRY__MAX_RETRIES", "0")]);
        settings.server.api_keys = ["reader", "writer", "boss"]
            .iter()
            .zip([Scope::Read, Scope::Write, Scope::Admin])
            .map(|(n, s)| ApiKeySetting::scoped(n, &format!("{n}-key"), s, &["*"]))
            .collect();
        let engine = EngineClient::new(&settings.engine).unwrap();
        http::router(AppState::new(settings, engine))
    });
    let send = |method: &Method, path: &str, key: &str| {
        let req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        rt.block_on(app.clone().oneshot(req)).unwrap().status().as_u16()
    };
    // a scroll id in the path must be one the sidecar handed to the key: sign it as it would
    let handle = |key: &str| {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(key.as_bytes()).into();
        semantic_sidecar::http::handles::HandleKey::of_digest(&digest).sign("some-scroll")
    };
    let mut checked = 0;
    for api in APIS {
        for method in api.methods() {
            for (key, scope) in [("reader-key", Scope::Read), ("writer-key", Scope::Write), ("boss-key", Scope::Admin)]
            {
                let segs: Vec<String> = api
                    .path
                    .iter()
                    .map(|s| match s {
                        Seg::Lit(l) => l.to_string(),
                        Seg::Index => "docs".into(),
                        Seg::Name if api.name == "scroll" => handle(key),
                        Seg::Name => "some-name".into(),
                    })
                    .collect();
                let canonical = format!("/{}", segs.join("/"));
                let spellings = [
                    format!("{canonical}/"),
                    format!("/{}", segs.join("//")),
                    format!("/{}", segs.iter().map(|s| s.replacen('_', "%5F", 1)).collect::<Vec<_>>().join("/")),
                ];
                let want = send(&method, &canonical, key);
                if scope < api.scope {
                    assert_eq!(want, 403, "{method} {canonical} ({}) with {key}", api.name);
                } else {
                    assert_ne!(want, 403, "{method} {canonical} ({}) with {key}", api.name);
                }
                for spelt in &spellings {
                    assert_eq!(send(&method, spelt, key), want, "{method} {spelt} vs {canonical} with {key}");
                    checked += 1;
                }
            }
        }
    }
    println!("{checked} spelled requests answered as their canonical spelling");
}
