//! `semantic-sidecar whiten fit`: BERT-whitening fitted on a model's raw pooled vectors, written
//! beside its manifest. Must not know about engines.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};

use super::embed::{bulk, encode_all};
use super::files::read_corpus;
use crate::encoder::{whitening, Encoder, Pooled, TextKind};
use crate::settings::Settings;
use crate::setup::resolve_model;
use crate::telemetry::Metrics;

/// `semantic-sidecar whiten fit`: fits on the model's raw pooled vectors (no whitening, no
/// normalisation), writes `whitening.json` beside the manifest and points the manifest at it.
pub fn whiten_fit(
    settings: &Settings,
    model: &str,
    input: &Path,
    field: &str,
    dims: Option<usize>,
) -> anyhow::Result<()> {
    let mut model = resolve_model(settings, model)?;
    if let Some(k) = dims {
        if k == 0 || k > model.manifest.dims {
            bail!("--dims must be between 1 and the model's dims ({})", model.manifest.dims);
        }
    }
    let corpus = read_corpus(input, field)?;
    if corpus.texts.len() < 2 {
        bail!("{} holds {} texts; whitening needs a sample (hundreds or more)", input.display(), corpus.texts.len());
    }
    if corpus.texts.len() < model.manifest.dims {
        eprintln!(
            "warning: {} texts is fewer than the {} dims: the covariance is rank-deficient, keep --dims well below the sample size",
            corpus.texts.len(),
            model.manifest.dims
        );
    }
    let dir = model.dir.clone();
    model.manifest.whitening = None;
    let encoder = Arc::new(Encoder::load_model(model, &settings.encoder, &Metrics::new().encoder)?);
    let outputs = encode_all(encoder, corpus.texts, bulk(TextKind::Passage, Some(false)), "whiten")?;
    let sample: Vec<Vec<f32>> = outputs
        .into_iter()
        .map(|o| match o {
            Pooled::Vector(v) => Ok(v),
            Pooled::Tokens(_) => bail!("pooling `none` has no sentence vectors to whiten"),
        })
        .collect::<anyhow::Result<_>>()?;
    let file = whitening::fit(&sample)?;
    let out = dir.join("whitening.json");
    std::fs::write(&out, serde_json::to_vec(&file)?).with_context(|| format!("writing {}", out.display()))?;

    let manifest_path = dir.join("model.toml");
    let mut table: toml::Table = std::fs::read_to_string(&manifest_path)?.parse()?;
    let mut w = toml::Table::new();
    w.insert("file".into(), "whitening.json".into());
    if let Some(k) = dims {
        w.insert("dims".into(), i64::try_from(k)?.into());
    }
    table.insert("whitening".into(), toml::Value::Table(w));
    let text = format!(
        "# Model manifest for semantic-sidecar; [whitening] written by `semantic-sidecar whiten fit`.\n{}",
        toml::to_string(&table)?
    );
    std::fs::write(&manifest_path, text).with_context(|| format!("writing {}", manifest_path.display()))?;
    eprintln!(
        "fitted whitening on {} vectors -> {} ({} of {} dims kept); {} now applies it",
        file.fit_count,
        out.display(),
        dims.unwrap_or(file.mean.len()),
        file.mean.len(),
        manifest_path.display()
    );
    Ok(())
}
