//! `serve` over real HTTP on port 0: health, readiness against the real engine (up and down),
//! Prometheus metrics, API-key authentication, body limit, JSON errors, graceful shutdown of
//! the real binary on SIGTERM, and `config check`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{dead_url, engine_settings, engine_url};
use semantic_sidecar::engine::EngineClient;
use semantic_sidecar::http::{self, AppState};
use semantic_sidecar::settings::Settings;
use serde_json::Value;
use tokio::sync::oneshot;

struct Server {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(settings: Settings) -> Server {
        let engine = EngineClient::new(&settings.engine).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let state = AppState::new(settings, engine);
        let task = tokio::spawn(http::serve(listener, state, async move {
            let _ = rx.await;
        }));
        Server { url, stop: Some(tx), task }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(15), &mut self.task).await.expect("server stops").unwrap().unwrap();
    }
}

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn healthz_readyz_and_unknown_routes() {
    let server = Server::start(engine_settings(&engine_url(), &[])).await;
    let (s, body) = get(&format!("{}/healthz", server.url)).await;
    assert_eq!((s, body["status"].as_str()), (200, Some("ok")));

    let (s, body) = get(&format!("{}/readyz", server.url)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["status"], "ready");
    let flavor = common::engine_flavor().to_string();
    assert_eq!(body["engine"]["flavor"], flavor.as_str());
    let major = match common::engine_flavor_name().as_str() {
        "opensearch" => "2.",
        "elasticsearch9" => "9.",
        _ => "8.",
    };
    assert!(body["engine"]["version"].as_str().unwrap().starts_with(major), "{body}");
    // what the test node lacks is named, and the analyzers the pipelines use are there
    let missing: Vec<&str> = body["engine"]["missing"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let expect: &[&str] = if common::on_elasticsearch() {
        &["rank-rrf module", "lang-painless module", "reindex module"]
    } else {
        &["neural-search plugin"]
    };
    for e in expect {
        assert!(missing.iter().any(|m| m.starts_with(e)), "{e} not in {missing:?}");
    }
    assert!(!missing.iter().any(|m| m.starts_with("analyzer")), "{missing:?}");

    // a route the sidecar does not know is the engine's to answer (its own "no handler" error)
    let (s, body) = get(&format!("{}/no/such/route", server.url)).await;
    assert!((400..500).contains(&s), "{s} {body}");
    assert!(!body["error"].is_null(), "{body}");
    // a method the sidecar does not forward is a JSON 405 naming the ones it does
    let r = reqwest::Client::new().patch(format!("{}/_cat/indices", server.url)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["reason"].as_str().unwrap().contains("GET, HEAD, POST, PUT or DELETE"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn readyz_is_503_with_a_reason_when_the_engine_is_down() {
    let server = Server::start(engine_settings(&dead_url().await, &[])).await;
    let (s, body) = get(&format!("{}/readyz", server.url)).await;
    assert_eq!(s, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["engine"]["error"]["type"], "engine_unavailable");
    let (s, _) = get(&format!("{}/healthz", server.url)).await;
    assert_eq!(s, 200, "the process is still healthy");
    let metrics = reqwest::get(format!("{}/metrics", server.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "sidecar_engine_up 0"), "{metrics}");
    server.stop().await;
}

/// A minimal check of the Prometheus/OpenMetrics text format: every line is a comment
/// (`# HELP`, `# TYPE`, `# UNIT`, `# EOF`) or `name{labels} value` with a numeric value.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let kind = rest.split_whitespace().next().unwrap();
            assert!(matches!(kind, "HELP" | "TYPE" | "UNIT" | "EOF"), "bad comment line: {line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("non-numeric value: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unterminated labels: {line}");
        }
        samples.push((series.to_string(), value));
    }
    samples
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_requests() {
    let server = Server::start(engine_settings(&engine_url(), &[])).await;
    for _ in 0..3 {
        get(&format!("{}/healthz", server.url)).await;
    }
    get(&format!("{}/readyz", server.url)).await;
    let resp = reqwest::get(format!("{}/metrics", server.url)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().contains("text"));
    let samples = parse_prometheus(&resp.text().await.unwrap());
    let find = |prefix: &str| samples.iter().find(|(s, _)| s.starts_with(prefix)).map(|(_, v)| *v);
    assert_eq!(
        find(r#"sidecar_http_requests_total{method="GET",route="/healthz",status="200"}"#),
        Some(3.0),
        "{samples:?}"
    );
    assert_eq!(find("sidecar_engine_up"), Some(1.0));
    let info = format!(r#"sidecar_engine_info{{flavor="{}""#, common::engine_flavor());
    assert_eq!(find(&info), Some(1.0));
    assert!(find("sidecar_http_request_duration_seconds_bucket").is_some());
    assert!(find("sidecar_build_info").is_some());
    server.stop().await;
}

#[tokio::test]
async fn api_keys_guard_everything_but_the_probes() {
    let key = "sidecar-test-key-0123456789";
    let server = Server::start(engine_settings(
        &engine_url(),
        &[("SIDECAR__SERVER__API_KEYS", &format!("{key},second-key-xyz"))],
    ))
    .await;
    let c = reqwest::Client::new();
    let metrics = format!("{}/metrics", server.url);

    let r = c.get(&metrics).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "unauthenticated");

    let r = c.get(&metrics).header("x-api-key", "wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c.get(&metrics).header("authorization", "Basic c2lkZWNhcjp4").send().await.unwrap();
    assert_eq!(r.status(), 401);

    assert_eq!(c.get(&metrics).header("x-api-key", key).send().await.unwrap().status(), 200);
    assert_eq!(c.get(&metrics).bearer_auth("second-key-xyz").send().await.unwrap().status(), 200);
    assert_eq!(c.get(format!("{}/healthz", server.url)).send().await.unwrap().status(), 200, "probes are exempt");
    assert_eq!(c.get(format!("{}/readyz", server.url)).send().await.unwrap().status(), 200);
    server.stop().await;

    let open = Server::start(engine_settings(&engine_url(), &[])).await;
    assert_eq!(c.get(format!("{}/metrics", open.url)).send().await.unwrap().status(), 200, "no keys: no auth");
    open.stop().await;
}

#[tokio::test]
async fn oversized_bodies_get_413_with_a_json_error() {
    let server = Server::start(engine_settings(&engine_url(), &[("SIDECAR__SERVER__MAX_BODY_SIZE", "1KiB")])).await;
    let c = reqwest::Client::new();
    let r = c.post(format!("{}/healthz", server.url)).body(vec![b'x'; 4096]).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "payload_too_large");
    assert!(body["error"]["reason"].as_str().unwrap().contains("1KiB"), "{body}");
    // under the limit, the request reaches routing (GET-only route: 405, not 413)
    let r = c.post(format!("{}/healthz", server.url)).body(vec![b'x'; 100]).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], 405, "framework rejections are JSON too");
    server.stop().await;
}

fn binary() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_semantic-sidecar"));
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

#[tokio::test]
async fn the_binary_serves_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("sidecar.url");
    let mut child = binary()
        .args(["--log-format", "pretty", "serve", "--url-file"])
        .arg(&url_file)
        .env("SIDECAR__SERVER__LISTEN", "127.0.0.1:0")
        .env("SIDECAR__ENGINE__URLS", engine_url())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !url_file.exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "the server did not write its URL");
        assert!(child.try_wait().unwrap().is_none(), "the server exited early");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = std::fs::read_to_string(&url_file).unwrap().trim().to_string();
    let (s, body) = get(&format!("{url}/readyz")).await;
    assert_eq!(s, 200, "{body}");

    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the server did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "exit {status:?}; log:\n{log}");
    assert!(log.contains("shutdown requested"), "{log}");
    assert!(!url_file.exists(), "the URL file is removed on a clean stop");
}

#[test]
fn config_check_prints_redacted_settings_and_fails_on_bad_ones() {
    let out = binary()
        .args(["config", "check"])
        .env("SIDECAR__ENGINE__USERNAME", "elastic")
        .env("SIDECAR__ENGINE__PASSWORD", "pw-that-must-not-print")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("[engine]") && stdout.contains("<redacted>"), "{stdout}");
    assert!(!stdout.contains("pw-that-must-not-print"));

    let out = binary().args(["config", "check"]).env("SIDECAR__SERVER__LISTEN", "nowhere").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(&f, "[engine]\nurl = \"http://x:9200\"\n").unwrap();
    let out = binary().args(["--config"]).arg(&f).args(["config", "check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `url`"));
}

#[test]
fn serve_refuses_to_start_with_a_model_that_does_not_fit_its_graph() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::default_model_dir();
    for f in ["model.onnx", "tokenizer.json"] {
        std::os::unix::fs::symlink(src.join(f), tmp.path().join(f)).unwrap();
    }
    let manifest = std::fs::read_to_string(src.join("model.toml")).unwrap().replace("dims = 384", "dims = 768");
    std::fs::write(tmp.path().join("model.toml"), manifest).unwrap();
    let out = binary()
        .args(["serve"])
        .env("SIDECAR__SERVER__LISTEN", "127.0.0.1:0")
        .env("SIDECAR__ENGINE__URLS", engine_url())
        .env("SIDECAR__ENCODER__MODELS", tmp.path())
        .env("ORT_DYLIB_PATH", common::ort_library())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("does not match its manifest") && log.contains("768"), "{log}");

    let out =
        binary().args(["config", "check"]).env("SIDECAR__ENCODER__MODELS", "/nonexistent/model").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("encoder.models[0]"));
}

/// A raw HTTP/1.1 exchange: writes `request`, reads until the server closes or `wait` passes.
async fn raw(addr: &str, request: &[u8], wait: Duration) -> (Vec<u8>, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, false),
        }
    }
}

#[tokio::test]
async fn slow_clients_are_bounded_headers_bodies_and_connections() {
    let settings = engine_settings(
        &engine_url(),
        &[
            ("SIDECAR__SERVER__HEADER_READ_TIMEOUT", "1s"),
            ("SIDECAR__SERVER__BODY_READ_TIMEOUT", "1s"),
            ("SIDECAR__SERVER__MAX_CONNECTIONS", "1"),
        ],
    );
    let server = Server::start(settings).await;
    let addr = server.url.trim_start_matches("http://").to_string();
    // slowloris: headers that never end; the connection is closed, nothing is answered
    let (got, closed) = raw(&addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", Duration::from_secs(10)).await;
    assert!(closed, "the connection stays open past header_read_timeout");
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"), "{}", String::from_utf8_lossy(&got));
    // a body that stops arriving: a JSON 408
    let (got, _) = raw(
        &addr,
        b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"inputs\":",
        Duration::from_secs(10),
    )
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_read_timeout"), "{text}");
    // one connection slot: a second client waits while the first holds it, and is served after
    let holder = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let waiting = tokio::spawn({
        let url = format!("{}/healthz", server.url);
        async move { reqwest::get(url).await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "served beyond server.max_connections");
    drop(holder);
    let status = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap().unwrap();
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn answers_are_gzipped_when_the_client_asks() {
    use std::io::Read;
    let server = Server::start(engine_settings(&engine_url(), &[])).await;
    let r = reqwest::Client::new()
        .get(format!("{}/readyz", server.url))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("content-encoding").map(|v| v.to_str().unwrap()), Some("gzip"));
    let zipped = r.bytes().await.unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&zipped[..]).read_to_string(&mut text).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], "ready", "{v}");
    let plain = reqwest::get(format!("{}/readyz", server.url)).await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none(), "no gzip unless asked");
    server.stop().await;
}

#[tokio::test]
async fn where_the_engine_is_never_reaches_a_client_without_a_key() {
    let dead = dead_url().await;
    let mut settings = engine_settings(&dead, &[("SIDECAR__ENGINE__RETRY__MAX_RETRIES", "0")]);
    settings.server.api_keys =
        vec![semantic_sidecar::settings::ApiKeySetting::Plain(semantic_sidecar::settings::Secret::new("ops-key-1"))];
    let server = Server::start(settings).await;
    let port = dead.rsplit(':').next().unwrap().to_string();
    let c = reqwest::Client::new();
    // a probe without a key: up or not, never where
    let r = c.get(format!("{}/readyz", server.url)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let text = r.text().await.unwrap();
    assert!(!text.contains(&port) && !text.contains("127.0.0.1"), "{text}");
    // a key holder sees the nodes
    let r = c.get(format!("{}/readyz", server.url)).header("x-api-key", "ops-key-1").send().await.unwrap();
    assert!(r.text().await.unwrap().contains(&port));
    // a 502 from a dead engine says so without naming it
    let r = c.get(format!("{}/_cat/indices", server.url)).header("x-api-key", "ops-key-1").send().await.unwrap();
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    let reason = body["error"]["reason"].as_str().unwrap();
    assert!(reason.contains("unreachable") && !reason.contains(&port), "{body}");
    server.stop().await;
}
