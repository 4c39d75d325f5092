//! `semantic-sidecar serve`: binds the listener, loads the models and pipelines, logs what the
//! process serves and with which keys, and runs `http::serve` until SIGINT or SIGTERM. Owns the
//! process side of the service (signals, the URL file); routes and handlers live in `http`.

use std::path::Path;

use anyhow::Context;

use crate::encoder::EncoderSet;
use crate::engine::EngineClient;
use crate::http::{self, AppState};
use crate::settings::Settings;
use crate::telemetry::Metrics;

pub fn run(settings: Settings, url_file: Option<&Path>) -> anyhow::Result<()> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async move {
        let engine = EngineClient::new(&settings.engine).context("building the engine client")?;
        let addr = settings.server.listen_addr();
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        let url = format!("http://{local}");
        if let Some(path) = url_file {
            write_atomically(path, &format!("{url}\n")).with_context(|| format!("writing {}", path.display()))?;
        }
        let urls: Vec<&str> = engine.urls().iter().map(|u| u.as_str()).collect();
        tracing::info!(%url, engine = ?urls, version = env!("CARGO_PKG_VERSION"), "listening");
        let keys = &settings.server.api_keys;
        if keys.is_empty() && local.ip().is_loopback() {
            tracing::warn!(%url, "no server.api_keys: serving on loopback only, every caller is admin; set keys to listen elsewhere");
        } else if keys.is_empty() {
            tracing::warn!(%url, "no server.api_keys and server.allow_anonymous = true: anyone who reaches this address is admin");
        } else {
            let names: Vec<String> =
                keys.iter().enumerate().map(|(i, k)| format!("{} ({})", k.name(i), k.scope().as_str())).collect();
            tracing::info!(keys = ?names, "API keys required");
        }
        match engine.probe().await {
            Ok(info) => tracing::info!(flavor = %info.flavor, version = %info.version, "engine reachable"),
            Err(e) => tracing::warn!(error = %e, "engine not reachable yet; /readyz reports 503 until it is"),
        }
        let mut settings = settings;
        crate::setup::add_stored_pipeline_models(&mut settings, &engine).await;
        let metrics = Metrics::new();
        let encoder_settings = settings.encoder.clone();
        let encoder_metrics = metrics.encoder.clone();
        let encoders = tokio::task::spawn_blocking(move || EncoderSet::load(&encoder_settings, &encoder_metrics))
            .await
            .context("loading models")?
            .context("loading models")?;
        let pipelines = settings
            .ingest
            .pipelines
            .iter()
            .map(|f| crate::types::pipeline::Pipeline::load(f))
            .collect::<Result<Vec<_>, _>>()?;
        let state = AppState::with_encoders(settings, engine, metrics, encoders).with_cluster_pipelines(pipelines).await;
        http::serve(listener, state, shutdown_signal()).await.context("serving")?;
        if let Some(path) = url_file {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}
