//! `semantic-sidecar reindex`: one reindex job (`crate::reindex`) in this process, with a
//! progress bar and Ctrl-C as a cancel at the next checkpoint. Owns the terminal side only.

use std::path::Path;
use std::sync::Arc;

use crate::ingest::catalog::Catalog;
use crate::ingest::owner::Owners;
use crate::settings::Settings;
use crate::setup::{add_pipeline_model, load_encoders};
use crate::telemetry::Metrics;

/// `semantic-sidecar reindex`: one job in this process, with a progress bar; Ctrl-C cancels it
/// at a checkpoint (resume with `--resume`). Returns the process exit code: 0 done, 1 failed,
/// 130 cancelled.
pub fn reindex(
    mut settings: Settings,
    req: crate::reindex::JobRequest,
    pipeline_file: Option<&Path>,
    quiet: bool,
) -> anyhow::Result<u8> {
    use crate::reindex::Status;
    let mut req = req;
    let files = pipelines_for(&mut settings, &mut req, pipeline_file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let reindexer = Arc::new(reindexer(&mut settings, &files).await?);
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
        let bar = progress_bar(quiet, state.source_count);
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

/// A reindexer over the cluster's pipelines (the files written there when absent), with their
/// models loaded.
async fn reindexer(
    settings: &mut Settings,
    files: &[crate::types::pipeline::Pipeline],
) -> anyhow::Result<crate::reindex::Reindexer> {
    let engine = crate::engine::EngineClient::new(&settings.engine)?;
    crate::setup::add_stored_pipeline_models(settings, &engine).await;
    let metrics = Metrics::new();
    let encoders = Arc::new(load_encoders(settings, &metrics).await?);
    let catalog = Arc::new(Catalog::cluster(engine.clone(), encoders.clone(), settings.ingest.watch_interval));
    catalog.bootstrap(files).await.map_err(|e| anyhow::anyhow!("reading the cluster's pipelines: {e}"))?;
    for note in catalog.file_notes() {
        eprintln!("note: {note}");
    }
    let e = &settings.encoder;
    Ok(crate::reindex::Reindexer::new(
        engine,
        encoders,
        Arc::new(Owners::new(catalog)),
        e.max_input_chars,
        e.max_inputs_per_request,
        metrics,
    )
    .with_lease(settings.reindex.lease))
}

/// The pipeline files of `ingest.pipelines` (a bootstrap of the cluster's store); with
/// `pipeline_file` (when it is a file) the job carries that definition (stored at the end owning
/// the alias). Each one's model is added to the encoder settings.
fn pipelines_for(
    settings: &mut Settings,
    req: &mut crate::reindex::JobRequest,
    pipeline_file: Option<&Path>,
) -> anyhow::Result<Vec<crate::types::pipeline::Pipeline>> {
    use crate::types::pipeline::Pipeline;
    let pipelines: Vec<Pipeline> =
        settings.ingest.pipelines.iter().map(|f| Pipeline::load(f)).collect::<Result<_, _>>()?;
    if let Some(f) = pipeline_file.filter(|f| f.is_file()) {
        let p = Pipeline::load(f)?;
        req.pipeline = p.name.clone();
        req.definition = Some(serde_json::to_value(&p)?);
        add_pipeline_model(settings, &p)?;
    }
    for p in &pipelines {
        add_pipeline_model(settings, p)?;
    }
    Ok(pipelines)
}

/// The documents-read bar on stderr (hidden with `--quiet`).
fn progress_bar(quiet: bool, documents: u64) -> indicatif::ProgressBar {
    let bar = if quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(documents) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} docs {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
