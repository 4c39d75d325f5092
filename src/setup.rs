//! Shared setup of the service and the offline commands: which model folder a name means, the
//! models a pipeline needs added to `encoder.models`, and loading the encoder set off the async
//! workers.
//!
//! Owns name → model-folder resolution (a folder with `model.toml`, a configured model's name,
//! or `models/NAME`). Sits above settings, encoder and the pipeline type, below the commands and
//! benchmarks that call it; it must not parse command lines or print (callers do).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::encoder::manifest::ModelDir;
use crate::encoder::EncoderSet;
use crate::engine::EngineClient;
use crate::ingest::catalog::Catalog;
use crate::settings::Settings;
use crate::telemetry::Metrics;
use crate::types::pipeline::Pipeline;

/// Loads a model given as a folder (with model.toml) or as the name of a configured model.
pub fn resolve_model(settings: &Settings, model: &str) -> anyhow::Result<ModelDir> {
    let as_path = PathBuf::from(model);
    if as_path.join("model.toml").is_file() {
        return Ok(ModelDir::load(&as_path)?);
    }
    for dir in &settings.encoder.models {
        let m = ModelDir::load(dir)?;
        if m.manifest.name == model {
            return Ok(m);
        }
    }
    bail!("`{model}` is neither a folder with a model.toml nor the name of a model in encoder.models")
}

/// A model a pipeline or `--model` names: a folder, a configured name, or `models/NAME`.
pub fn resolve_named_model(settings: &Settings, name: &str) -> anyhow::Result<ModelDir> {
    resolve_model(settings, name).or_else(|_| resolve_model(settings, &format!("models/{name}")))
}

/// The vector shape `(dims, normalized)` of a named model, for the mapping of a pipeline whose
/// `[[fields]]` name other models than its own.
pub fn vector_shape(settings: &Settings, name: &str) -> Option<(usize, bool)> {
    resolve_named_model(settings, name).ok().map(|d| (d.manifest.output_dims(), d.manifest.normalize))
}

/// The model a pipeline names (a folder, a configured name, or `models/NAME`), added to
/// `encoder.models` so that the encoder set loads it.
pub fn add_pipeline_model(settings: &mut Settings, p: &Pipeline) -> anyhow::Result<ModelDir> {
    let mut first = None;
    for name in p.models() {
        let m = resolve_named_model(settings, name)
            .with_context(|| format!("the model `{name}` of pipeline `{}`", p.name))?;
        if !settings.encoder.models.contains(&m.dir) {
            settings.encoder.models.push(m.dir.clone());
        }
        first.get_or_insert(m);
    }
    first.ok_or_else(|| anyhow::anyhow!("pipeline `{}` names no model", p.name))
}

/// The models of the cluster's stored pipelines that this machine has (a configured model or
/// `models/NAME`), added to `encoder.models`, so that a sidecar started after a pipeline was put
/// serves it. Only for a sidecar that embeds at all (`encoder.models` not empty) and with
/// `ingest.load_stored_models`; a model it does not have leaves that pipeline unavailable here
/// (reported in `/readyz`), and an unreachable engine leaves the configuration as it is.
pub async fn add_stored_pipeline_models(settings: &mut Settings, engine: &EngineClient) {
    if settings.encoder.models.is_empty() || !settings.ingest.load_stored_models {
        return;
    }
    let catalog = Catalog::cluster(engine.clone(), Arc::new(EncoderSet::default()), settings.ingest.watch_interval);
    if let Err(e) = catalog.reload().await {
        tracing::warn!(error = %e, "could not read the cluster's pipelines; loading the configured models only");
        return;
    }
    for (s, _) in catalog.snapshot().all() {
        if let Err(e) = add_pipeline_model(settings, &s.pipeline) {
            tracing::warn!(pipeline = %s.pipeline.name, error = format!("{e:#}"), "a stored pipeline's model is not on this machine");
        }
    }
}

/// Loads `encoder.models` off the async workers, recording into `metrics`.
pub async fn load_encoders(settings: &Settings, metrics: &Metrics) -> anyhow::Result<EncoderSet> {
    let (es, em) = (settings.encoder.clone(), metrics.encoder.clone());
    Ok(tokio::task::spawn_blocking(move || EncoderSet::load(&es, &em)).await??)
}
