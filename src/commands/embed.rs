//! `semantic-sidecar embed`: a file of texts to a file of vectors, with the same encoder as the
//! service (bulk lane, waiting for queue room) inside a small tokio runtime; formats in
//! [`super::files`]. Must not know about engines.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use futures_util::stream::{self, StreamExt};

use super::files::{read_corpus, write_npy};
use super::runtime;
use crate::encoder::{EncodeOptions, Encoder, Input, Lane, Pooled, TextKind};
use crate::settings::Settings;
use crate::setup::resolve_model;
use crate::telemetry::Metrics;

/// Encodes every text, in order, with a progress bar; chunks stay in flight so the session
/// threads never wait for the next batch.
pub(super) fn encode_all(
    encoder: Arc<Encoder>,
    texts: Vec<String>,
    opts: EncodeOptions,
    label: &str,
) -> anyhow::Result<Vec<Pooled>> {
    let bar = indicatif::ProgressBar::new(texts.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} texts, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(label.to_string());
    let chunk = 256;
    let chunks: Vec<Vec<Input>> = texts.chunks(chunk).map(|c| c.iter().cloned().map(Input::Text).collect()).collect();
    let out = runtime()?.block_on(async {
        let results: Vec<anyhow::Result<Vec<Pooled>>> = stream::iter(chunks)
            .map(|inputs| {
                let enc = encoder.clone();
                let bar = bar.clone();
                async move {
                    let n = inputs.len() as u64;
                    let r = enc.encode(inputs, opts).await.map(|e| e.outputs).map_err(anyhow::Error::from);
                    bar.inc(n);
                    r
                }
            })
            .buffered(4)
            .collect()
            .await;
        results.into_iter().collect::<anyhow::Result<Vec<Vec<Pooled>>>>()
    })?;
    bar.finish();
    Ok(out.into_iter().flatten().collect())
}

pub(super) fn bulk(kind: TextKind, normalize: Option<bool>) -> EncodeOptions {
    EncodeOptions { kind, normalize, truncate: true, lane: Lane::Bulk, wait_for_room: true, cache: false }
}

/// `semantic-sidecar embed`.
pub fn embed(
    settings: &Settings,
    model: &str,
    input: &Path,
    output: &Path,
    field: &str,
    kind: TextKind,
) -> anyhow::Result<()> {
    let model = resolve_model(settings, model)?;
    let name = model.manifest.name.clone();
    let corpus = read_corpus(input, field)?;
    let n = corpus.texts.len();
    let encoder = Arc::new(Encoder::load_model(model, &settings.encoder, &Metrics::new().encoder)?);
    let started = std::time::Instant::now();
    let outputs = encode_all(encoder, corpus.texts, bulk(kind, None), &name)?;
    let secs = started.elapsed().as_secs_f64();
    match output.extension().and_then(|e| e.to_str()) {
        Some("npy") => {
            let rows = outputs
                .into_iter()
                .map(|o| match o {
                    Pooled::Vector(v) => Ok(v),
                    Pooled::Tokens(_) => bail!("pooling `none` makes token vectors: write .jsonl, not .npy"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            write_npy(output, &rows)?;
        }
        Some("jsonl" | "ndjson") => {
            let mut w = BufWriter::new(File::create(output).with_context(|| format!("creating {}", output.display()))?);
            for (index, (o, id)) in outputs.into_iter().zip(corpus.ids).enumerate() {
                let embedding = match o {
                    Pooled::Vector(v) => serde_json::json!(v),
                    Pooled::Tokens(t) => serde_json::json!(t),
                };
                let mut line = serde_json::json!({"index": index, "embedding": embedding});
                if let Some(id) = id {
                    line["id"] = id;
                }
                serde_json::to_writer(&mut w, &line)?;
                w.write_all(b"\n")?;
            }
            w.flush()?;
        }
        _ => bail!("the output must end in .jsonl or .npy: {}", output.display()),
    }
    eprintln!(
        "embedded {n} texts with {name} in {secs:.1}s ({:.1} texts/s) -> {}",
        n as f64 / secs.max(1e-9),
        output.display()
    );
    Ok(())
}
