//! `semantic-sidecar pipeline put|get|list|delete`: the cluster's pipelines, through a running
//! sidecar (`--sidecar URL`, with `--api-key` or `SIDECAR_API_KEY`: its admin API) or directly
//! against the configured cluster (the same checks, with the pipeline's models loaded here).
//! Owns the terminal side only; the checks are `ingest::admin`'s.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde_json::Value;

use super::runtime;
use crate::engine::EngineClient;
use crate::ingest::admin::Admin;
use crate::ingest::catalog::Catalog;
use crate::ingest::owner::Owners;
use crate::settings::Settings;
use crate::setup::{add_pipeline_model, load_encoders};
use crate::telemetry::Metrics;
use crate::types::pipeline::Pipeline;

/// What to do.
pub enum Op {
    Put { file: std::path::PathBuf, version: Option<(u64, u64)> },
    Get { name: String },
    List,
    Delete { name: String, version: Option<(u64, u64)> },
}

/// Where to do it: a sidecar's API, or the cluster itself.
pub struct Via {
    pub sidecar: Option<String>,
    pub api_key: Option<String>,
}

/// A pipeline file as the API's JSON body: TOML (`.toml`) or JSON (anything else).
fn read_file(file: &Path) -> anyhow::Result<(String, Value)> {
    if file.extension().is_some_and(|e| e == "toml") {
        let p = Pipeline::load(file)?;
        return Ok((p.name.clone(), serde_json::to_value(&p)?));
    }
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let Some(name) = v.get("name").and_then(Value::as_str).map(String::from) else {
        bail!("{}: the pipeline has no `name`", file.display())
    };
    // the same checks as the API, before anything is sent
    Pipeline::from_json(&name, &v)?;
    Ok((name, v))
}

/// Runs one operation and prints its JSON answer.
pub fn run(settings: Settings, op: Op, via: Via) -> anyhow::Result<()> {
    let out = runtime()?.block_on(async move {
        match via.sidecar {
            Some(url) => through_sidecar(&url, via.api_key.as_deref(), op).await,
            None => direct(settings, op).await,
        }
    })?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn version_query(version: Option<(u64, u64)>) -> String {
    version.map(|(s, t)| format!("?if_seq_no={s}&if_primary_term={t}")).unwrap_or_default()
}

async fn through_sidecar(url: &str, key: Option<&str>, op: Op) -> anyhow::Result<Value> {
    let base = url.trim_end_matches('/');
    let enc = |n: &str| percent_encoding::utf8_percent_encode(n, percent_encoding::NON_ALPHANUMERIC).to_string();
    let client = reqwest::Client::new();
    let req = match &op {
        Op::Put { file, version } => {
            let (name, body) = read_file(file)?;
            client.put(format!("{base}/_sidecar/pipeline/{}{}", enc(&name), version_query(*version))).json(&body)
        }
        Op::Get { name } => client.get(format!("{base}/_sidecar/pipeline/{}", enc(name))),
        Op::List => client.get(format!("{base}/_sidecar/pipeline")),
        Op::Delete { name, version } => {
            client.delete(format!("{base}/_sidecar/pipeline/{}{}", enc(name), version_query(*version)))
        }
    };
    let req = match key {
        Some(k) => req.header("x-api-key", k),
        None => req,
    };
    let resp = req.send().await.with_context(|| format!("calling the sidecar at {base}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let reason =
            body.pointer("/error/reason").and_then(Value::as_str).map(String::from).unwrap_or(body.to_string());
        bail!("{status}: {reason}");
    }
    Ok(body)
}

async fn direct(mut settings: Settings, op: Op) -> anyhow::Result<Value> {
    let engine = EngineClient::new(&settings.engine)?;
    let put = match &op {
        Op::Put { file, .. } => {
            let (name, body) = read_file(file)?;
            add_pipeline_model(&mut settings, &Pipeline::from_json(&name, &body)?)?;
            Some((name, body))
        }
        _ => None,
    };
    let encoders = Arc::new(match put {
        Some(_) => load_encoders(&settings, &Metrics::new()).await?,
        None => crate::encoder::EncoderSet::default(),
    });
    let catalog = Arc::new(Catalog::cluster(engine.clone(), encoders.clone(), settings.ingest.watch_interval));
    catalog.bootstrap(&[]).await?;
    let owners = Owners::new(catalog.clone());
    let admin = Admin { owners: &owners, encoders: &encoders, engine: &engine };
    // without the models loaded here, "served" says nothing about any sidecar
    let view = |mut v: Value| {
        if let Some(m) = v.as_object_mut() {
            m.remove("served");
            m.remove("reason");
        }
        v
    };
    Ok(match op {
        Op::Put { version, .. } => {
            let (name, body) = put.expect("read above");
            let out = admin.put(&name, &body, version).await?;
            serde_json::json!({"acknowledged": true, "result": if out.created { "created" } else { "updated" }, "name": name,
                "_seq_no": out.stored.seq_no, "_primary_term": out.stored.primary_term, "index": out.stored.pipeline.index,
                "index_created": out.index_created, "fields_added": out.fields_added})
        }
        Op::Get { name } => {
            let Some(s) = catalog.fetch(&name).await? else { bail!("no pipeline `{name}`") };
            serde_json::json!({ name: view(admin.view(&s, None).await?) })
        }
        Op::List => {
            let mut out = serde_json::Map::new();
            for (s, _) in catalog.snapshot().all() {
                out.insert(s.pipeline.name.clone(), view(admin.view(s, None).await?));
            }
            serde_json::json!({"pipelines": out, "invalid": catalog.snapshot().invalid})
        }
        Op::Delete { name, version } => {
            catalog.delete(&name, version).await?;
            serde_json::json!({"acknowledged": true, "name": name})
        }
    })
}
