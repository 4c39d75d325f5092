//! Retries and backoff, through a fault-injecting proxy in front of the real engine node.

mod common;

use std::time::{Duration, Instant};

use common::{engine_settings, engine_url, Fault, FaultProxy};
use reqwest::Method;
use semantic_sidecar::engine::{EngineClient, EngineError, EngineRequest};
use serde_json::json;

fn client(url: &str, max_retries: &str) -> EngineClient {
    EngineClient::new(&engine_settings(url, &[("SIDECAR__ENGINE__RETRY__MAX_RETRIES", max_retries)]).engine).unwrap()
}

#[tokio::test]
async fn succeeds_after_429s() {
    let proxy = FaultProxy::start(&engine_url(), None).await;
    proxy.inject(Fault::Status(429), 2);
    let info = client(&proxy.url, "4").info().await.unwrap();
    assert_eq!(info.flavor, common::engine_flavor());
    assert_eq!(proxy.count(), 3, "two rejected attempts, then the real answer");
}

#[tokio::test]
async fn succeeds_after_dropped_connections() {
    let proxy = FaultProxy::start(&engine_url(), None).await;
    proxy.inject(Fault::Drop, 2);
    let info = client(&proxy.url, "4").info().await.unwrap();
    assert_eq!(info.flavor, common::engine_flavor());
    assert_eq!(proxy.count(), 3);
}

#[tokio::test]
async fn succeeds_after_gateway_errors_on_idempotent_requests() {
    let proxy = FaultProxy::start(&engine_url(), None).await;
    proxy.inject(Fault::Status(502), 1);
    proxy.inject(Fault::Status(503), 1);
    proxy.inject(Fault::Status(504), 1);
    let health: serde_json::Value = client(&proxy.url, "4").get_json("/_cluster/health").await.unwrap();
    assert!(health["status"].is_string(), "{health}");
    assert_eq!(proxy.count(), 4);
}

#[tokio::test]
async fn gives_up_on_persistent_429_after_the_retry_budget() {
    let proxy = FaultProxy::start(&engine_url(), None).await;
    proxy.always(Some(Fault::Status(429)));
    let e = client(&proxy.url, "3").info().await.unwrap_err();
    assert!(matches!(e, EngineError::Overloaded { attempts: 4 }), "{e:?}");
    assert_eq!(proxy.count(), 4, "one attempt plus max_retries=3");
}

#[tokio::test]
async fn gives_up_on_persistent_drops_after_the_retry_budget() {
    let proxy = FaultProxy::start(&engine_url(), None).await;
    proxy.always(Some(Fault::Drop));
    let e = client(&proxy.url, "2").info().await.unwrap_err();
    assert!(matches!(e, EngineError::Unreachable { .. }), "{e:?}");
    assert_eq!(proxy.count(), 3);
}

#[tokio::test]
async fn the_time_budget_ends_retrying_before_the_count_does() {
    let proxy = FaultProxy::start(&engine_url(), None).await;
    proxy.always(Some(Fault::Status(503)));
    let s = engine_settings(
        &proxy.url,
        &[
            ("SIDECAR__ENGINE__RETRY__MAX_RETRIES", "100"),
            ("SIDECAR__ENGINE__RETRY__INITIAL_BACKOFF", "20ms"),
            ("SIDECAR__ENGINE__RETRY__MAX_BACKOFF", "40ms"),
            ("SIDECAR__ENGINE__RETRY__MAX_ELAPSED", "300ms"),
        ],
    );
    let started = Instant::now();
    let e = EngineClient::new(&s.engine).unwrap().info().await.unwrap_err();
    assert!(matches!(e, EngineError::Failed { status: 503, .. }), "{e:?}");
    let n = proxy.count();
    assert!(n > 1 && n < 100, "retried {n} times");
    // Generous bound: only proves the 300 ms budget, not 100 retries, decided the end.
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn non_idempotent_requests_are_not_repeated_on_gateway_errors() {
    let proxy = FaultProxy::start(&engine_url(), None).await;
    proxy.inject(Fault::Status(503), 1);
    let c = client(&proxy.url, "4");
    let req = EngineRequest::new(Method::POST, "/retry-test-post/_doc").json(&json!({"x": 1}));
    let e = c.send(req).await.unwrap_err();
    assert!(matches!(e, EngineError::Failed { status: 503, .. }), "{e:?}");
    assert_eq!(proxy.count(), 1, "a POST that may have run is not sent twice");

    // ...but a 429 (rejected before running) is retried even for a POST.
    proxy.reset_count();
    proxy.inject(Fault::Status(429), 1);
    let index = common::unique_index("retry-post");
    let req = EngineRequest::new(Method::POST, format!("/{index}/_doc?refresh=true")).json(&json!({"x": 1}));
    c.send(req).await.unwrap();
    assert_eq!(proxy.count(), 2);
    c.send(EngineRequest::new(Method::DELETE, format!("/{index}"))).await.unwrap();
}

#[tokio::test]
async fn a_client_body_the_engine_dropped_the_connection_on_is_not_sent_again() {
    let proxy = FaultProxy::start(&engine_url(), None).await;
    let c = client(&proxy.url, "4");
    proxy.inject(Fault::Drop, 1);
    let forwarded = EngineRequest::new(Method::POST, "/_search").json_bytes(&br#"{"size": 0}"#[..]).idempotent(true);
    let e = c.send(forwarded).await.unwrap_err();
    assert!(matches!(e, EngineError::Unreachable { .. }), "{e:?}");
    assert_eq!(proxy.count(), 1, "a client's body that may have brought a node down is not sent again");
    // the same search built by the sidecar itself is retried
    proxy.reset_count();
    proxy.inject(Fault::Drop, 1);
    c.send(EngineRequest::new(Method::POST, "/_search").json(&json!({"size": 0})).idempotent(true)).await.unwrap();
    assert_eq!(proxy.count(), 2);
}

#[tokio::test]
async fn a_client_body_dropped_by_one_node_is_sent_once_more_to_another() {
    let (a, b) = (FaultProxy::start(&engine_url(), None).await, FaultProxy::start(&engine_url(), None).await);
    a.always(Some(Fault::Drop));
    let urls = format!("{},{}", a.url, b.url);
    let c = EngineClient::new(&engine_settings(&urls, &[("SIDECAR__ENGINE__RETRY__MAX_RETRIES", "4")]).engine).unwrap();
    for _ in 0..2 {
        let req = EngineRequest::new(Method::POST, "/_search").json_bytes(&br#"{"size": 0}"#[..]).idempotent(true);
        c.send(req).await.unwrap();
    }
    assert_eq!(a.count(), 1, "the dropping node got the body once (round-robin starts there once)");
    assert_eq!(b.count(), 2, "the other node answered both");
}
