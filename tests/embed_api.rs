//! The embedding APIs over real HTTP with the real model: TEI `/embed`, OpenAI `/v1/embeddings`
//! (also through the official `openai` Python client), bert-as-service `/encode`; parity with the
//! golden vectors; bad input; a full queue; readiness and metrics.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{cosine, encoder_settings, engine_url, golden};
use semantic_sidecar::encoder::EncoderSet;
use semantic_sidecar::engine::EngineClient;
use semantic_sidecar::http::{self, AppState};
use semantic_sidecar::settings::Settings;
use semantic_sidecar::telemetry::Metrics;
use serde_json::{json, Value};

struct Server {
    url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(settings: Settings) -> Server {
    let metrics = Metrics::new();
    let enc_settings = settings.encoder.clone();
    let em = metrics.encoder.clone();
    let encoders = tokio::task::spawn_blocking(move || EncoderSet::load(&enc_settings, &em)).await.unwrap().unwrap();
    let engine = EngineClient::new(&settings.engine).unwrap();
    let state = AppState::with_encoders(settings, engine, metrics, encoders);
    let (url, tx) = http::serve_local(state).await.unwrap();
    Server { url, _stop: tx }
}

fn settings(extra: &[(&str, &str)]) -> Settings {
    let url = engine_url();
    let mut pairs = vec![("SIDECAR__ENGINE__URLS", url.as_str())];
    pairs.extend_from_slice(extra);
    encoder_settings(&pairs)
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[tokio::test]
async fn all_three_apis_match_the_golden_vectors() {
    let s = start(settings(&[])).await;
    let gold = golden();
    let texts: Vec<&str> = gold.iter().map(|g| g.text.as_str()).collect();
    let worst = |vs: Vec<Vec<f32>>| vs.iter().zip(&gold).map(|(v, g)| cosine(v, &g.embedding)).fold(1.0, f64::min);

    let (st, body) = post(&format!("{}/embed", s.url), json!({"inputs": texts, "truncate": true})).await;
    assert_eq!(st, 200, "{body}");
    let tei: Vec<Vec<f32>> = body.as_array().unwrap().iter().map(floats).collect();
    let (st, one) = post(&format!("{}/embed", s.url), json!({"inputs": texts[2]})).await;
    assert_eq!(st, 200);
    assert!(cosine(&floats(&one[0]), &gold[2].embedding) > 0.9999);

    let (st, body) =
        post(&format!("{}/v1/embeddings", s.url), json!({"input": texts, "model": "all-MiniLM-L6-v2"})).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "all-MiniLM-L6-v2");
    let tokens: usize = gold.iter().map(|g| g.input_ids.len()).sum();
    assert_eq!(body["usage"]["prompt_tokens"], tokens);
    assert_eq!(body["usage"]["total_tokens"], tokens);
    let oa: Vec<Vec<f32>> = body["data"].as_array().unwrap().iter().map(|d| floats(&d["embedding"])).collect();
    assert!(body["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .all(|(i, d)| d["index"] == i && d["object"] == "embedding"));

    let (st, body) = post(
        &format!("{}/v1/embeddings", s.url),
        json!({"input": texts, "model": "all-MiniLM-L6-v2", "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(st, 200);
    let b64: Vec<Vec<f32>> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let bytes = base64::engine::general_purpose::STANDARD.decode(d["embedding"].as_str().unwrap()).unwrap();
            bytes.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        })
        .collect();
    assert_eq!(b64, oa, "base64 carries the same floats");

    let (st, body) = post(&format!("{}/encode", s.url), json!({"id": 7, "texts": texts, "is_tokenized": false})).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!((body["id"].clone(), body["status"].clone()), (json!(7), json!(200)));
    let bas: Vec<Vec<f32>> = body["results"].as_array().unwrap().iter().map(floats).collect();

    let (w1, w2, w3) = (worst(tei), worst(oa), worst(bas));
    println!("api parity: /embed {w1:.9}, /v1/embeddings {w2:.9}, /encode {w3:.9}");
    assert!(w1 >= 0.9999 && w2 >= 0.9999 && w3 >= 0.9999);

    let (st, body) =
        post(&format!("{}/encode", s.url), json!({"id": "x", "texts": [["hello", "world"]], "is_tokenized": true}))
            .await;
    assert_eq!(st, 200, "{body}");
    let (_, plain) = post(&format!("{}/embed", s.url), json!({"inputs": "hello world"})).await;
    assert!(cosine(&floats(&body["results"][0]), &floats(&plain[0])) > 0.99999);
}

#[tokio::test]
async fn the_openai_python_client_gets_the_same_vectors_as_embed() {
    let s = start(settings(&[])).await;
    let python = std::env::var("SIDECAR_TEST_PYTHON").unwrap_or_else(|_| {
        format!("{}/.cache/semantic-sidecar/venv/bin/python", std::env::var("HOME").unwrap_or_default())
    });
    assert!(std::path::Path::new(&python).is_file(), "no python with the openai client at {python}: run scripts/setup");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let url = s.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python).arg(script).arg(url).arg("all-MiniLM-L6-v2").output().unwrap()
    })
    .await
    .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "{text}");
}

#[tokio::test]
async fn options_and_their_errors() {
    let s = start(settings(&[("SIDECAR__ENCODER__AUTO_TRUNCATE", "false")])).await;
    let long = golden().into_iter().find(|g| g.input_ids.len() == 256).unwrap().text;

    let (st, body) = post(&format!("{}/embed", s.url), json!({"inputs": [long.clone()]})).await;
    assert_eq!(st, 422, "auto_truncate=false refuses long inputs: {body}");
    assert!(body["error"]["reason"].as_str().unwrap().contains("max_seq_len"), "{body}");
    let r = reqwest::Client::new()
        .post(format!("{}/embed", s.url))
        .json(&json!({"inputs": ["short", long], "truncate": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let header = r.headers()["x-truncated-tokens"].to_str().unwrap().to_string();
    let (first, second) = header.split_once(',').unwrap();
    assert_eq!(first, "0");
    assert!(second.parse::<usize>().unwrap() > 0, "the long input reports its cut tokens: {header}");

    let (st, body) = post(&format!("{}/embed", s.url), json!({"inputs": "abc", "normalize": false})).await;
    assert_eq!(st, 200);
    let norm: f32 = floats(&body[0]).iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() > 1e-3, "normalize=false returns the raw pooled vector (norm {norm})");

    let (st, body) =
        post(&format!("{}/v1/embeddings", s.url), json!({"input": "x", "model": "text-embedding-3-small"})).await;
    assert_eq!(st, 404);
    assert_eq!(body["error"]["type"], "model_not_found");
    assert!(body["error"]["reason"].as_str().unwrap().contains("all-MiniLM-L6-v2"), "lists the loaded models");

    let (st, body) = post(
        &format!("{}/v1/embeddings", s.url),
        json!({"input": "x", "model": "all-MiniLM-L6-v2", "dimensions": 128}),
    )
    .await;
    assert_eq!(st, 400);
    assert!(body["error"]["reason"].as_str().unwrap().contains("dimensions"), "{body}");
    let (st, _) = post(
        &format!("{}/v1/embeddings", s.url),
        json!({"input": "x", "model": "all-MiniLM-L6-v2", "dimensions": 384}),
    )
    .await;
    assert_eq!(st, 200);
    let (st, body) =
        post(&format!("{}/v1/embeddings", s.url), json!({"input": [1, 2, 3], "model": "all-MiniLM-L6-v2"})).await;
    assert_eq!(st, 400);
    assert!(body["error"]["reason"].as_str().unwrap().contains("token-array"));
    let (st, _) = post(
        &format!("{}/v1/embeddings", s.url),
        json!({"input": "x", "model": "all-MiniLM-L6-v2", "encoding_format": "int8"}),
    )
    .await;
    assert_eq!(st, 400);
    let (st, _) = post(&format!("{}/embed", s.url), json!({"inputs": "x", "prompt_name": "document"})).await;
    assert_eq!(st, 400);
}

#[tokio::test]
async fn bad_input_gets_a_json_4xx_and_the_server_stays_up() {
    let s = start(settings(&[
        ("SIDECAR__ENCODER__MAX_INPUTS_PER_REQUEST", "16"),
        ("SIDECAR__ENCODER__MAX_INPUT_CHARS", "1000"),
        ("SIDECAR__SERVER__MAX_BODY_SIZE", "64KiB"),
    ]))
    .await;
    let c = reqwest::Client::new();
    let embed = format!("{}/embed", s.url);
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        ("number instead of text", c.post(&embed).json(&json!({"inputs": 5})), 422, ""),
        ("list of numbers", c.post(&embed).json(&json!({"inputs": [1, 2]})), 422, ""),
        ("unknown field", c.post(&embed).json(&json!({"inputs": "x", "pooling": "cls"})), 422, "pooling"),
        ("missing field", c.post(&embed).json(&json!({"text": "x"})), 422, ""),
        ("empty list", c.post(&embed).json(&json!({"inputs": []})), 400, "no inputs"),
        ("too many inputs", c.post(&embed).json(&json!({"inputs": vec!["a"; 17]})), 422, "max_inputs_per_request"),
        ("huge input", c.post(&embed).json(&json!({"inputs": "x".repeat(1001)})), 422, "max_input_chars"),
        ("not JSON", c.post(&embed).header("content-type", "application/json").body("{inputs: "), 400, ""),
        (
            "invalid UTF-8",
            c.post(&embed).header("content-type", "application/json").body(b"{\"inputs\": \"\xff\xfe\"}".to_vec()),
            400,
            "",
        ),
        ("no content type", c.post(&embed).body("{\"inputs\": \"x\"}"), 415, ""),
        ("body over the limit", c.post(&embed).json(&json!({"inputs": "y".repeat(70_000)})), 413, "max_body_size"),
        ("encode: wrong text type", c.post(format!("{}/encode", s.url)).json(&json!({"texts": [1]})), 400, "texts[0]"),
        (
            "encode: tokens not strings",
            c.post(format!("{}/encode", s.url)).json(&json!({"texts": [[1, 2]], "is_tokenized": true})),
            400,
            "texts[0]",
        ),
    ];
    for (what, req, status, needle) in cases {
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{what}");
        let body: Value = r.json().await.unwrap_or_else(|e| panic!("{what}: the error body is not JSON: {e}"));
        assert!(body["error"]["type"].is_string(), "{what}: {body}");
        let reason = body["error"]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(needle), "{what}: `{reason}` does not name `{needle}`");
    }
    assert_eq!(c.get(format!("{}/healthz", s.url)).send().await.unwrap().status(), 200);
    let (st, _) = post(&embed, json!({"inputs": "still serving"})).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let s = start(settings(&[
        ("SIDECAR__ENCODER__QUEUE_CAPACITY", "8"),
        ("SIDECAR__ENCODER__MAX_INPUTS_PER_REQUEST", "8"),
        ("SIDECAR__ENCODER__INTRA_THREADS", "1"),
    ]))
    .await;
    let long = golden().into_iter().find(|g| g.input_ids.len() == 256).unwrap().text;
    let body = json!({"inputs": vec![long; 8]});
    let c = reqwest::Client::new();
    let url = format!("{}/embed", s.url);
    let mut saw_429 = false;
    for _round in 0..5 {
        let sends = (0..6).map(|_| c.post(&url).json(&body).send());
        for r in futures_util::future::join_all(sends).await {
            let r = r.unwrap();
            match r.status().as_u16() {
                200 => {}
                429 => {
                    assert!(r.headers().contains_key("retry-after"));
                    let b: Value = r.json().await.unwrap();
                    assert_eq!(b["error"]["type"], "overloaded");
                    saw_429 = true;
                }
                other => panic!("unexpected status {other}"),
            }
        }
        if saw_429 {
            break;
        }
    }
    assert!(saw_429, "six concurrent 8-input requests against room for 8 must overflow");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (st, _) = post(&url, json!({"inputs": "room again"})).await;
    assert_eq!(st, 200, "the queue drains and serves again");
}

#[tokio::test]
async fn readyz_and_metrics_show_the_models() {
    let s = start(settings(&[])).await;
    let long = golden().into_iter().find(|g| g.input_ids.len() == 256).unwrap().text;
    let (st, _) = post(&format!("{}/embed", s.url), json!({"inputs": [long, "short"], "truncate": true})).await;
    assert_eq!(st, 200);
    let ready: Value = reqwest::get(format!("{}/readyz", s.url)).await.unwrap().json().await.unwrap();
    assert_eq!(ready["models"][0]["name"], "all-MiniLM-L6-v2");
    assert_eq!(ready["models"][0]["provider"], "cpu");
    assert_eq!(ready["models"][0]["dims"], 384);
    let text = reqwest::get(format!("{}/metrics", s.url)).await.unwrap().text().await.unwrap();
    let value = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(value(r#"sidecar_encoder_provider{model="all-MiniLM-L6-v2",provider="cpu"}"#), Some(1.0), "{text}");
    assert_eq!(value(r#"sidecar_encoder_inputs_total{model="all-MiniLM-L6-v2"}"#), Some(2.0));
    assert!(value(r#"sidecar_encoder_truncated_tokens_total{model="all-MiniLM-L6-v2"}"#).unwrap() > 0.0);
    assert!(value(r#"sidecar_encoder_batches_total{model="all-MiniLM-L6-v2"}"#).unwrap() >= 1.0);
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_cut_with_a_json_413() {
    let s = start(settings(&[("SIDECAR__SERVER__MAX_BODY_SIZE", "4KiB")])).await;
    // No Content-Length: the limit must be enforced while reading the stream.
    let chunks: Vec<Result<String, std::io::Error>> = std::iter::once(Ok("{\"inputs\": \"".to_string()))
        .chain((0..64).map(|_| Ok("x".repeat(256))))
        .chain(std::iter::once(Ok("\"}".to_string())))
        .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = reqwest::Client::new()
        .post(format!("{}/embed", s.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["type"], "payload_too_large");
    let (st, _) = post(&format!("{}/embed", s.url), json!({"inputs": "small"})).await;
    assert_eq!(st, 200);
}
