//! Pipelines and index mappings: every pipeline file parses; Elasticsearch bodies match reviewed
//! snapshots for 8.x and 9.x; the bodies of the engine under test (OpenSearch, or Elasticsearch
//! with every index_type it offers: flat, hnsw, int8_hnsw, bbq_hnsw) apply to the real node and
//! hold vectors found by kNN; and `index create|check` work against it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{engine_settings, engine_url, on_elasticsearch, ort_library, unique_index};
use reqwest::Method;
use semantic_sidecar::engine::dialect::detect;
use semantic_sidecar::engine::Dialect;
use semantic_sidecar::engine::{EngineClient, EngineRequest};
use semantic_sidecar::ingest::mapping::{compare, index_body, ModelShape};
use semantic_sidecar::types::pipeline::{Analyzer, IndexType, Pipeline};
use serde_json::{json, Value};

fn pipelines_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines")
}

const MINILM: ModelShape = ModelShape { dims: 384, normalized: true, language: Some("en") };

/// The shape of a pipeline's model from the committed `models/catalog.toml` (dims, language) or,
/// for the default model, its committed manifest: the snapshots do not need the fetched models.
fn shape_of(model: &str) -> ModelShape<'static> {
    if model == "all-MiniLM-L6-v2" {
        return MINILM;
    }
    let catalog: toml::Table = toml::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/catalog.toml")).unwrap(),
    )
    .unwrap();
    let entry = catalog.get(model).unwrap_or_else(|| panic!("model {model} is neither the default nor in the catalog"));
    let language = match entry["language"].as_str().unwrap() {
        "en" => "en",
        "zh" => "zh",
        other => panic!("language {other} of {model}"),
    };
    ModelShape { dims: entry["dims"].as_integer().unwrap() as usize, normalized: true, language: Some(language) }
}

#[test]
fn every_pipeline_file_parses() {
    let all = Pipeline::load_dir(&pipelines_dir()).unwrap();
    assert!(all.len() >= 2);
    let names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
    assert!(names.contains(&"scifact") && names.contains(&"cmrc"), "{names:?}");
}

#[test]
fn elasticsearch_bodies_match_the_reviewed_snapshots() {
    for version in ["8.15.3", "9.1.0"] {
        let info = detect(format!(r#"{{"version":{{"number":"{version}"}}}}"#).as_bytes()).unwrap();
        for p in Pipeline::load_dir(&pipelines_dir()).unwrap() {
            let body = index_body(&info, &p, shape_of(&p.model)).unwrap();
            let major = version.split('.').next().unwrap();
            insta::assert_json_snapshot!(format!("es{major}_{}", p.name), body);
        }
    }
    // version gates
    let old = detect(br#"{"version":{"number":"8.11.0"}}"#).unwrap();
    let mut cmrc = Pipeline::load(&pipelines_dir().join("cmrc.toml")).unwrap();
    cmrc.vector_index.index_type = IndexType::Int8Hnsw;
    let e = index_body(&old, &cmrc, shape_of(&cmrc.model)).unwrap_err().to_string();
    assert!(e.contains("int8_hnsw needs Elasticsearch 8.12"), "{e}");
}

#[tokio::test]
async fn the_engines_bodies_apply_to_the_real_node_and_hold_vectors() {
    let c = EngineClient::new(&engine_settings(&engine_url(), &[]).engine).unwrap();
    let info = c.info().await.unwrap();
    // Elasticsearch: every index_type it offers; OpenSearch: the pipeline's own and the two it has
    let types: &[IndexType] = match info.dialect {
        Dialect::Elasticsearch => &[IndexType::Flat, IndexType::Hnsw, IndexType::Int8Hnsw, IndexType::BbqHnsw],
        Dialect::Opensearch => &[IndexType::Hnsw, IndexType::Int8Hnsw],
    };
    let mut applied = 0;
    for base in Pipeline::load_dir(&pipelines_dir()).unwrap() {
        for &t in types {
            let mut p = base.clone();
            p.vector_index.index_type = t;
            p.index = unique_index(&format!("map-{}", p.name));
            if t == types[0] {
                // a per-field analyzer beside the pipeline's (english, cjk, …) reaches the engine
                p.field_analyzers.insert(p.fields[0].source[0].clone(), Analyzer::Standard);
            }
            let what = format!("{} with {t:?}", p.name);
            let body = index_body(&info, &p, MINILM).unwrap_or_else(|e| panic!("{what}: {e}"));
            c.send(EngineRequest::new(Method::PUT, format!("/{}", p.index)).json(&body))
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let got: Value = c.get_json(&format!("/{}/_mapping", p.index)).await.unwrap();
            let diffs = compare(&got[&p.index]["mappings"], &body);
            assert!(diffs.is_empty(), "{what}: {diffs:?}");

            // a document with a unit vector is stored and found by kNN
            let mut v = vec![0.0f32; 384];
            v[7] = 1.0;
            let mut w = vec![0.0f32; 384];
            w[8] = 1.0;
            let vector_field = &p.fields[0].vector;
            for (id, vec) in [("1", &v), ("2", &w)] {
                let doc = json!({"title": "t", "text": "body", vector_field: vec});
                let path = format!("/{}/_doc/{id}?refresh=true", p.index);
                c.send(EngineRequest::new(Method::PUT, path).json(&doc))
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
            }
            let q = match info.dialect {
                Dialect::Elasticsearch => {
                    json!({"size": 1, "knn": {"field": vector_field, "query_vector": v, "k": 1, "num_candidates": 10}})
                }
                Dialect::Opensearch => json!({"size": 1, "query": {"knn": {vector_field: {"vector": v, "k": 1}}}}),
            };
            let hits: Value = c
                .send(EngineRequest::new(Method::POST, format!("/{}/_search", p.index)).json(&q).idempotent(true))
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"))
                .json()
                .unwrap();
            assert_eq!(hits["hits"]["hits"][0]["_id"], "1", "{what}: {hits}");
            c.send(EngineRequest::new(Method::DELETE, format!("/{}", p.index))).await.unwrap();
            applied += 1;
        }
    }
    assert!(applied >= 6, "applied {applied} bodies");
}

fn sidecar(args: &[&str]) -> std::process::Output {
    let model = common::default_model_dir();
    Command::new(env!("CARGO_BIN_EXE_semantic-sidecar"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ORT_DYLIB_PATH", ort_library())
        .env("SIDECAR__ENCODER__MODELS", model)
        .env("SIDECAR__ENGINE__URLS", engine_url())
        .output()
        .unwrap()
}

#[tokio::test]
async fn index_create_then_check_and_a_mismatch_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let index = unique_index("cli-index");
    let text = std::fs::read_to_string(pipelines_dir().join("scifact.toml"))
        .unwrap()
        .replace("index = \"scifact\"", &format!("index = \"{index}\""));
    let file = tmp.path().join("p.toml");
    std::fs::write(&file, text).unwrap();
    let f = file.to_str().unwrap();

    let o = sidecar(&["index", "check", "--pipeline", f]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));

    let o = sidecar(&["index", "create", "--pipeline", f]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = sidecar(&["index", "check", "--pipeline", f]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // an index made by hand with the wrong dimension and similarity
    let c = EngineClient::new(&engine_settings(&engine_url(), &[]).engine).unwrap();
    let wrong = unique_index("cli-wrong");
    let es = on_elasticsearch();
    let body = if es {
        json!({"mappings": {"properties": {
            "title": {"type": "text"}, "text": {"type": "text"},
            "text_vector": {"type": "dense_vector", "dims": 768, "index": true, "similarity": "l2_norm"}
        }}})
    } else {
        json!({"settings": {"index.knn": true}, "mappings": {"properties": {
            "title": {"type": "text"}, "text": {"type": "text"},
            "text_vector": {"type": "knn_vector", "dimension": 768, "method": {"name": "hnsw", "engine": "lucene", "space_type": "l2"}}
        }}})
    };
    c.send(EngineRequest::new(Method::PUT, format!("/{wrong}")).json(&body)).await.unwrap();
    std::fs::write(&file, std::fs::read_to_string(&file).unwrap().replace(&index, &wrong)).unwrap();
    let o = sidecar(&["index", "check", "--pipeline", f]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    if es {
        assert!(err.contains("dims 768") && err.contains("384"), "{err}");
        assert!(err.contains("similarity \"l2_norm\""), "{err}");
    } else {
        assert!(err.contains("dimension 768") && err.contains("384"), "{err}");
        assert!(err.contains("space_type \"l2\""), "{err}");
    }
    assert!(err.contains("`content_hash` is missing") && err.contains("`passages` is missing"), "{err}");

    for i in [index, wrong] {
        c.send(EngineRequest::new(Method::DELETE, format!("/{i}"))).await.unwrap();
    }
}
