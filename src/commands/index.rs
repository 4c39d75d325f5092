//! `semantic-sidecar index create|check`: a pipeline's index and its mapping on the configured
//! engine. The bodies come from `ingest::mapping`; this file only sends and explains them.

use std::path::Path;

use anyhow::{bail, Context};
use serde_json::Value;

use super::runtime;
use crate::settings::Settings;
use crate::setup::{resolve_model, vector_shape};

/// The create-index body for a pipeline on the configured engine, with the model's shape from
/// its manifest (the model need not be loaded).
async fn pipeline_body(
    settings: &Settings,
    pipeline: &Path,
) -> anyhow::Result<(crate::types::pipeline::Pipeline, crate::engine::EngineClient, Value)> {
    use crate::ingest::mapping;
    use crate::types::pipeline::Pipeline;
    let p = Pipeline::load(pipeline)?;
    let model = resolve_model(settings, &p.model)
        .with_context(|| format!("the pipeline's model `{}` (add its folder to encoder.models)", p.model))?;
    let shape = mapping::ModelShape::of(&model.manifest);
    let engine = crate::engine::EngineClient::new(&settings.engine)?;
    let info = engine.info().await?;
    let body = mapping::index_body_with(&info, &p, shape, &|m| vector_shape(settings, m))?;
    Ok((p, engine, body))
}

/// `semantic-sidecar index create`: creates the pipeline's index (or prints the body with `dry_run`).
pub fn index_create(settings: &Settings, pipeline: &Path, dry_run: bool) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let (p, engine, body) = pipeline_body(settings, pipeline).await?;
        if dry_run {
            println!("{}", serde_json::to_string_pretty(&body)?);
            return Ok(());
        }
        let path = crate::engine::path::EnginePath::at_index(&p.index)?.build();
        let req = crate::engine::EngineRequest::new(reqwest::Method::PUT, path).json(&body);
        engine.send(req).await.with_context(|| format!("creating index `{}`", p.index))?;
        eprintln!("created index `{}` for pipeline `{}`", p.index, p.name);
        Ok(())
    })
}

/// `semantic-sidecar index check`: explains how the existing index differs from what the pipeline
/// needs; an error (exit 1) when it does.
pub fn index_check(settings: &Settings, pipeline: &Path) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let (p, engine, body) = pipeline_body(settings, pipeline).await?;
        let path = crate::engine::path::EnginePath::at_index(&p.index)?.api("_mapping").build();
        let got: Value = match engine.get_json(&path).await {
            Ok(v) => v,
            Err(crate::engine::EngineError::Rejected { status: 404, .. }) => {
                bail!(
                    "index `{}` does not exist (semantic-sidecar index create --pipeline {})",
                    p.index,
                    pipeline.display()
                )
            }
            Err(e) => return Err(e.into()),
        };
        // An alias resolves to its index: take the first (and normally only) entry.
        let mappings =
            got.as_object().and_then(|o| o.values().next()).map(|v| v["mappings"].clone()).unwrap_or_default();
        let diffs = crate::ingest::mapping::compare(&mappings, &body);
        if diffs.is_empty() {
            eprintln!("index `{}` has every field pipeline `{}` needs", p.index, p.name);
            return Ok(());
        }
        for d in &diffs {
            eprintln!("- {d}");
        }
        bail!("index `{}` does not fit pipeline `{}`: {} difference(s)", p.index, p.name, diffs.len())
    })
}
