//! The engine client against the real node (scripts/engine: OpenSearch or Elasticsearch): detection,
//! a vector index lifecycle, typed errors for auth failures, blocks and unreachable engines.

mod common;

use common::{dead_url, engine_flavor, engine_flavor_name, engine_settings, engine_url, unique_index, FaultProxy};
use reqwest::Method;
use semantic_sidecar::engine::{Dialect, EngineClient, EngineError, EngineRequest, Flavor};
use semantic_sidecar::error::ErrorCode;
use serde_json::{json, Value};

fn client(url: &str, extra: &[(&str, &str)]) -> EngineClient {
    EngineClient::new(&engine_settings(url, extra).engine).unwrap()
}

#[tokio::test]
async fn detects_flavour_and_version_of_the_real_node() {
    let c = client(&engine_url(), &[]);
    let info = c.info().await.unwrap();
    assert_eq!(info.flavor, engine_flavor());
    match engine_flavor_name().as_str() {
        "opensearch" => {
            assert_eq!(info.dialect, Dialect::Opensearch);
            assert_eq!((info.version.major, info.version.minor), (2, 19), "{}", info.version);
            assert_eq!(info.vector_field_type(), "knn_vector");
        }
        name => {
            assert_eq!(info.dialect, Dialect::Elasticsearch);
            let major = if name == "elasticsearch9" { 9 } else { 8 };
            assert_eq!(info.version.major, major, "{}", info.version);
            assert_eq!(info.vector_field_type(), "dense_vector");
        }
    }
    assert_eq!(info.cluster_name.as_deref(), Some("semantic-sidecar-dev"));
}

#[tokio::test]
async fn a_flavour_mismatch_with_the_configuration_is_reported() {
    let (wrong, right) = match engine_flavor() {
        Flavor::Opensearch => ("elasticsearch", "opensearch"),
        Flavor::Elasticsearch => ("opensearch", "elasticsearch"),
    };
    let c = client(&engine_url(), &[("SIDECAR__ENGINE__FLAVOR", wrong)]);
    let e = c.info().await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::EngineUnsupported);
    assert!(e.to_string().contains(right), "{e}");
    let ok = client(&engine_url(), &[("SIDECAR__ENGINE__FLAVOR", right)]);
    assert!(ok.info().await.is_ok());
}

#[tokio::test]
async fn vector_index_lifecycle_with_knn_and_match_queries() {
    let c = client(&engine_url(), &[]);
    let index = unique_index("engine-knn");
    let es = engine_flavor() == Flavor::Elasticsearch;
    let mapping = if es {
        json!({
            "settings": {"index": {"number_of_shards": 1, "number_of_replicas": 0}},
            "mappings": {"properties": {
                "title": {"type": "text"},
                "vec": {"type": "dense_vector", "dims": 4, "index": true, "similarity": "cosine"}
            }}
        })
    } else {
        json!({
            "settings": {"index": {"knn": true, "number_of_shards": 1, "number_of_replicas": 0}},
            "mappings": {"properties": {
                "title": {"type": "text"},
                "vec": {"type": "knn_vector", "dimension": 4,
                        "method": {"engine": "lucene", "name": "hnsw", "space_type": "cosinesimil"}}
            }}
        })
    };
    c.send(EngineRequest::new(Method::PUT, format!("/{index}")).json(&mapping)).await.unwrap();

    let docs = [
        ("a", "red apples and green pears", [1.0, 0.0, 0.0, 0.0]),
        ("b", "a fast red car", [0.0, 1.0, 0.0, 0.0]),
        ("c", "quiet blue ocean", [0.0, 0.0, 1.0, 0.0]),
        ("d", "green forest trail", [0.0, 0.0, 0.0, 1.0]),
    ];
    let mut ndjson = String::new();
    for (id, title, vec) in &docs {
        ndjson.push_str(&json!({"index": {"_index": index, "_id": id}}).to_string());
        ndjson.push('\n');
        ndjson.push_str(&json!({"title": title, "vec": vec}).to_string());
        ndjson.push('\n');
    }
    let bulk: Value =
        c.send(EngineRequest::new(Method::POST, "/_bulk?refresh=true").ndjson(ndjson)).await.unwrap().json().unwrap();
    assert_eq!(bulk["errors"], json!(false), "{bulk}");
    assert_eq!(bulk["items"].as_array().unwrap().len(), 4);

    let q = [0.1, 0.05, 0.9, 0.0];
    let knn = if es {
        json!({"size": 2, "knn": {"field": "vec", "query_vector": q, "k": 2, "num_candidates": 10}})
    } else {
        json!({"size": 2, "query": {"knn": {"vec": {"vector": q, "k": 2}}}})
    };
    let hits: Value = c
        .send(EngineRequest::new(Method::POST, format!("/{index}/_search")).json(&knn).idempotent(true))
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(hits["hits"]["hits"][0]["_id"], "c", "{hits}");

    let m = json!({"query": {"match": {"title": "car"}}});
    let hits: Value = c
        .send(EngineRequest::new(Method::POST, format!("/{index}/_search")).json(&m).idempotent(true))
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(hits["hits"]["total"]["value"], 1, "{hits}");
    assert_eq!(hits["hits"]["hits"][0]["_id"], "b");

    let mapping: Value = c.get_json(&format!("/{index}/_mapping")).await.unwrap();
    let want = if es { "dense_vector" } else { "knn_vector" };
    assert_eq!(mapping[&index]["mappings"]["properties"]["vec"]["type"], want);

    c.send(EngineRequest::new(Method::DELETE, format!("/{index}"))).await.unwrap();
    let gone = c.send(EngineRequest::new(Method::GET, format!("/{index}"))).await.unwrap_err();
    match gone {
        EngineError::Rejected { status, ref error_type, ref reason } => {
            assert_eq!(status, 404);
            assert_eq!(error_type, "index_not_found_exception");
            assert!(reason.contains(&index), "{reason}");
        }
        other => panic!("expected a 404 rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_requests_carry_the_engine_reason() {
    let c = client(&engine_url(), &[]);
    let index = unique_index("engine-bad");
    let bad = match engine_flavor() {
        Flavor::Opensearch => json!({"mappings": {"properties": {"v": {"type": "knn_vector", "dimension": 0}}}}),
        Flavor::Elasticsearch => json!({"mappings": {"properties": {"v": {"type": "dense_vector", "dims": 0}}}}),
    };
    let e = c.send(EngineRequest::new(Method::PUT, format!("/{index}")).json(&bad)).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::EngineRejected);
    assert_eq!(e.engine_status(), Some(400));
    assert!(e.to_string().to_lowercase().contains("dim"), "{e}");
}

#[tokio::test]
async fn a_read_only_block_is_a_rejection_not_an_auth_failure() {
    let c = client(&engine_url(), &[]);
    let index = unique_index("engine-ro");
    c.send(EngineRequest::new(Method::PUT, format!("/{index}")).json(&json!({"settings": {"number_of_replicas": 0}})))
        .await
        .unwrap();
    c.send(
        EngineRequest::new(Method::PUT, format!("/{index}/_settings")).json(&json!({"index.blocks.read_only": true})),
    )
    .await
    .unwrap();
    let e =
        c.send(EngineRequest::new(Method::PUT, format!("/{index}/_doc/1")).json(&json!({"x": 1}))).await.unwrap_err();
    assert!(
        matches!(e, EngineError::Rejected { status: 403, ref error_type, .. } if error_type == "cluster_block_exception"),
        "{e:?}"
    );
    c.send(
        EngineRequest::new(Method::PUT, format!("/{index}/_settings")).json(&json!({"index.blocks.read_only": false})),
    )
    .await
    .unwrap();
    c.send(EngineRequest::new(Method::DELETE, format!("/{index}"))).await.unwrap();
}

#[tokio::test]
async fn rejected_credentials_are_a_typed_auth_error() {
    // The local node runs without the security plugin, so a proxy in front of it answers 401
    // with the exact body a secured cluster sends, unless the right Basic credentials come.
    let proxy = FaultProxy::start(&engine_url(), Some(("elastic", "right-password"))).await;
    let wrong = client(
        &proxy.url,
        &[("SIDECAR__ENGINE__USERNAME", "elastic"), ("SIDECAR__ENGINE__PASSWORD", "wrong-password")],
    );
    let e = wrong.info().await.unwrap_err();
    assert!(matches!(e, EngineError::Auth { status: 401, .. }), "{e:?}");
    assert_eq!(e.code(), ErrorCode::EngineAuth);
    assert_eq!(proxy.count(), 1, "auth failures are not retried");
    assert!(!e.to_string().contains("wrong-password"));

    let right = client(
        &proxy.url,
        &[("SIDECAR__ENGINE__USERNAME", "elastic"), ("SIDECAR__ENGINE__PASSWORD", "right-password")],
    );
    assert_eq!(right.info().await.unwrap().flavor, engine_flavor());
}

#[tokio::test]
async fn an_unreachable_engine_is_a_typed_error_after_bounded_retries() {
    let url = dead_url().await;
    let c = client(&url, &[("SIDECAR__ENGINE__RETRY__MAX_RETRIES", "2")]);
    let e = c.info().await.unwrap_err();
    assert!(matches!(e, EngineError::Unreachable { .. }), "{e:?}");
    assert_eq!(e.code(), ErrorCode::EngineUnavailable);
    assert!(e.to_string().contains(&url), "{e}");
}

#[tokio::test]
async fn a_second_url_takes_over_when_the_first_is_down() {
    let dead = dead_url().await;
    let urls = format!("{dead},{}", engine_url());
    let c = client(&urls, &[("SIDECAR__ENGINE__RETRY__MAX_RETRIES", "3")]);
    for _ in 0..4 {
        assert_eq!(c.info().await.unwrap().flavor, engine_flavor());
    }
}
