//! Offline commands: `embed` (a file of texts to a file of vectors) and `whiten fit`.
//!
//! Edges of the program, so errors are `anyhow` with context. Both run the same encoder as the
//! service (bulk lane, waiting for queue room) inside a small tokio runtime.
//!
//! Input formats: `.txt` (one text per line) or `.jsonl` (one JSON object per line whose `--field`,
//! default `text`, holds the text, or a bare JSON string; `_id`/`id` is carried to the output).
//! Output formats: `.jsonl` (`{"index", "id"?, "embedding"}` per line) or `.npy` (float32,
//! `[n, dims]`, C order), chosen by the output's extension.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use futures_util::stream::{self, StreamExt};
use serde_json::Value;

use crate::encoder::manifest::ModelDir;
use crate::encoder::{whitening, EncodeOptions, Encoder, Input, Lane, Pooled, TextKind};
use crate::settings::Settings;
use crate::telemetry::Metrics;

/// Texts (and optional ids) read from an input file.
pub struct Corpus {
    pub texts: Vec<String>,
    pub ids: Vec<Option<Value>>,
}

/// Reads `.txt` or `.jsonl`.
pub fn read_corpus(path: &Path, field: &str) -> anyhow::Result<Corpus> {
    let reader = BufReader::new(File::open(path).with_context(|| format!("opening {}", path.display()))?);
    let jsonl = matches!(path.extension().and_then(|e| e.to_str()), Some("jsonl" | "json" | "ndjson"));
    let mut corpus = Corpus { texts: Vec::new(), ids: Vec::new() };
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: not UTF-8 text", path.display(), n + 1))?;
        if !jsonl {
            corpus.texts.push(line);
            corpus.ids.push(None);
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(&line).with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        let (text, id) = match &v {
            Value::String(s) => (s.clone(), None),
            Value::Object(o) => {
                let Some(Value::String(t)) = o.get(field) else {
                    bail!("{}:{}: no string field `{field}` (use --field)", path.display(), n + 1);
                };
                (t.clone(), o.get("_id").or_else(|| o.get("id")).cloned())
            }
            _ => bail!("{}:{}: expected an object or a string", path.display(), n + 1),
        };
        corpus.texts.push(text);
        corpus.ids.push(id);
    }
    Ok(corpus)
}

/// Writes a float32 `.npy` file of `rows` (all of one length).
pub fn write_npy(path: &Path, rows: &[Vec<f32>]) -> anyhow::Result<()> {
    let dims = rows.first().map_or(0, Vec::len);
    if rows.iter().any(|r| r.len() != dims) {
        bail!("rows of different lengths cannot go into one .npy array");
    }
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}", rows.len(), dims);
    // magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of 64, ending in \n
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut w = BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?);
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&u16::try_from(header.len())?.to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    for r in rows {
        for x in r {
            w.write_all(&x.to_le_bytes())?;
        }
    }
    w.flush()?;
    Ok(())
}

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
pub fn add_pipeline_model(settings: &mut Settings, p: &crate::ingest::pipeline::Pipeline) -> anyhow::Result<ModelDir> {
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

/// Loads `encoder.models` off the async workers, recording into `metrics`.
pub async fn load_encoders(settings: &Settings, metrics: &Metrics) -> anyhow::Result<crate::encoder::EncoderSet> {
    let (es, em) = (settings.encoder.clone(), metrics.encoder.clone());
    Ok(tokio::task::spawn_blocking(move || crate::encoder::EncoderSet::load(&es, &em)).await??)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// Encodes every text, in order, with a progress bar; chunks stay in flight so the session
/// threads never wait for the next batch.
fn encode_all(
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

fn bulk(kind: TextKind, normalize: Option<bool>) -> EncodeOptions {
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

/// The create-index body for a pipeline on the configured engine, with the model's shape from
/// its manifest (the model need not be loaded).
async fn pipeline_body(
    settings: &Settings,
    pipeline: &Path,
) -> anyhow::Result<(crate::ingest::pipeline::Pipeline, crate::engine::EngineClient, Value)> {
    use crate::ingest::{mapping, pipeline::Pipeline};
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

/// `semantic-sidecar reindex`: one job in this process, with a progress bar; Ctrl-C cancels it
/// at a checkpoint (resume with `--resume`). Returns the process exit code: 0 done, 1 failed,
/// 130 cancelled.
pub fn reindex(
    mut settings: Settings,
    req: crate::reindex::JobRequest,
    pipeline_file: Option<&Path>,
    quiet: bool,
) -> anyhow::Result<u8> {
    use crate::ingest::pipeline::Pipeline;
    use crate::reindex::{Reindexer, Status};
    let mut pipelines: Vec<Pipeline> =
        settings.ingest.pipelines.iter().map(|f| Pipeline::load(f)).collect::<Result<_, _>>()?;
    let mut req = req;
    if let Some(f) = pipeline_file.filter(|f| f.is_file()) {
        let p = Pipeline::load(f)?;
        req.pipeline = p.name.clone();
        pipelines.retain(|x| x.name != p.name);
        pipelines.push(p);
    }
    for p in &pipelines {
        add_pipeline_model(&mut settings, p)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let engine = crate::engine::EngineClient::new(&settings.engine)?;
        let metrics = Metrics::new();
        let encoders = Arc::new(load_encoders(&settings, &metrics).await?);
        let e = &settings.encoder;
        let reindexer = Arc::new(
            Reindexer::new(
                engine,
                encoders,
                pipelines.into_iter().map(Arc::new).collect(),
                e.max_input_chars,
                e.max_inputs_per_request,
                metrics,
            )
            .with_lease(settings.reindex.lease),
        );
        let state = reindexer.prepare(req).await?;
        eprintln!(
            "job {}: {} → {} ({} documents{}), resume with --resume {}",
            state.id,
            state.spec.source,
            state.spec.target,
            state.source_count,
            state.spec.alias.as_ref().map(|a| format!(", alias {a} moves at the end")).unwrap_or_default(),
            state.id
        );
        let control = reindexer.control(&state);
        let bar = if quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(state.source_count) };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} docs {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let run = {
            let (r, c) = (reindexer.clone(), control.clone());
            tokio::spawn(async move { r.run(state, c).await })
        };
        let ctrl_c = {
            let c = control.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("cancelling at the next checkpoint…");
                    c.cancel();
                }
            })
        };
        while !run.is_finished() {
            let (_, p) = control.snapshot();
            bar.set_position(p["read"].as_u64().unwrap_or(0));
            bar.set_message(format!(
                "{:.0} docs/s, eta {}, {} failed, bulk {}",
                p["docs_per_s"].as_f64().unwrap_or(0.0),
                p["eta_s"].as_f64().map(|s| format!("{s:.0}s")).unwrap_or_else(|| "?".into()),
                p["failed"],
                p["bulk_size"]
            ));
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        ctrl_c.abort();
        let done = run.await?;
        bar.finish_and_clear();
        let p = done.progress(None, 0);
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"job": done.id, "status": done.status, "counts": p, "bulk": done.bulk, "alias_swapped": done.alias_swapped, "error": done.error, "running_ms": done.running_ms}))?);
        Ok(match done.status {
            Status::Done => 0,
            Status::Cancelled => 130,
            _ => 1,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_files_have_a_valid_header_and_little_endian_floats() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("v.npy");
        write_npy(&p, &[vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0, "data starts 64-byte aligned");
        let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
        assert!(header.contains("'shape': (2, 3)") && header.ends_with('\n'), "{header}");
        let data: Vec<f32> =
            bytes[10 + hlen..].chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert!(write_npy(&p, &[vec![1.0], vec![1.0, 2.0]]).is_err());
    }

    #[test]
    fn corpora_are_read_from_txt_and_jsonl() {
        let tmp = tempfile::tempdir().unwrap();
        let txt = tmp.path().join("a.txt");
        std::fs::write(&txt, "one\ntwo\n").unwrap();
        assert_eq!(read_corpus(&txt, "text").unwrap().texts, vec!["one", "two"]);
        let jl = tmp.path().join("a.jsonl");
        std::fs::write(&jl, "{\"_id\": \"d1\", \"text\": \"alpha\"}\n\n\"beta\"\n").unwrap();
        let c = read_corpus(&jl, "text").unwrap();
        assert_eq!(c.texts, vec!["alpha", "beta"]);
        assert_eq!(c.ids, vec![Some(Value::from("d1")), None]);
        std::fs::write(&jl, "{\"title\": \"x\"}\n").unwrap();
        let err = read_corpus(&jl, "text").err().unwrap().to_string();
        assert!(err.contains("a.jsonl:1") && err.contains("--field"), "{err}");
    }
}
