//! The HTTP surface: routes, middleware order, and the server's lifecycle.
//!
//! Owns translation only: requests in, domain calls, responses out. No business logic lives
//! here; error codes become statuses in [`error`] alone.
//!
//! Routes today: `GET /healthz` (the process is up), `GET /readyz` (the engine answers `GET /`
//! with a supported flavour and version; what it lacks, e.g. rank-rrf, painless, reindex,
//! neural-search or an analyzer; the loaded models and their execution providers; the pipelines
//! served here and those that are not, with why),
//! `GET /metrics` (Prometheus text), the embedding APIs of [`embed`], the ES-compatible write
//! APIs of [`ingest`], the search APIs of [`search`], the reindex jobs of [`jobs`], the pipeline API of
//! [`pipelines`] (`/_sidecar/pipeline`), Elasticsearch's `_inference` text embeddings of
//! [`inference`], `semantic_text` mappings on clusters without inference in [`semantic`], and
//! every other engine API forwarded unchanged for official clients in [`passthrough`]. Who may call what:
//! [`auth`].
//!
//! Middleware, outermost first: canonical path ([`canonical`], before routing) → response compression → request id → tracing → engine headers (X-Opaque-Id/traceparent
//! forwarded, X-Elastic-Product added) → metrics → JSON rejections → timeout → authentication (key, scope and path indices from the API table [`apis`]) →
//! body-size limit → gzip request bodies → JSON depth limit → indices, scroll and PIT ids named
//! in the body ([`middleware::authorize_body`]) → handler. Authentication runs before the body is read.
//!
//! Shutdown: [`serve`] stops accepting on the shutdown signal and lets in-flight requests finish
//! for up to `server.shutdown_grace`.

pub mod apis;
pub mod auth;
pub mod body_names;
pub mod canonical;
pub mod embed;
pub mod error;
pub mod handles;
pub mod inference;
pub mod ingest;
pub mod jobs;
pub mod kept_pipelines;
pub mod middleware;
pub mod ml_commons;
pub mod os_ingest;
pub mod passthrough;
pub mod pipelines;
pub mod search;
pub mod semantic;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::encoder::EncoderSet;
use crate::engine::EngineClient;
use crate::ingest::catalog::Catalog;
use crate::ingest::owner::Owners;
use crate::ingest::writer::{IngestConfigError, Ingestor};
use crate::reindex::{Jobs, Reindexer};
use crate::search::Searcher;
use crate::settings::Settings;
use crate::telemetry::{EngineLabels, Metrics};
use crate::types::pipeline::Pipeline;
use auth::ApiKeys;
use middleware::SidecarRequestId;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub engine: EngineClient,
    pub metrics: Metrics,
    pub api_keys: ApiKeys,
    pub encoders: Arc<EncoderSet>,
    /// The live pipeline set (the cluster's, or a fixed one).
    pub catalog: Arc<Catalog>,
    pub ingestor: Arc<Ingestor>,
    pub searcher: Arc<Searcher>,
    pub jobs: Arc<Jobs>,
}

impl AppState {
    /// A state without models (engine-only routes work; the embedding APIs answer 404).
    pub fn new(settings: Settings, engine: EngineClient) -> Self {
        Self::with_encoders(settings, engine, Metrics::new(), EncoderSet::default())
    }

    /// A state with loaded models and no pipelines; `metrics` must be the one the encoders were
    /// loaded with.
    pub fn with_encoders(settings: Settings, engine: EngineClient, metrics: Metrics, encoders: EncoderSet) -> Self {
        let api_keys = ApiKeys::new(&settings.server.api_keys);
        let encoders = Arc::new(encoders);
        let catalog = Arc::new(Catalog::fixed(Vec::new(), encoders.clone()).expect("no pipelines"));
        let parts = Parts::of(&settings, &engine, &metrics, &encoders, catalog.clone());
        AppState {
            settings: Arc::new(settings),
            engine,
            metrics,
            api_keys,
            encoders,
            catalog,
            ingestor: parts.0,
            searcher: parts.1,
            jobs: parts.2,
        }
    }

    /// Serves exactly `pipelines`, not stored in the cluster (eval, benchmarks, tests); their
    /// models must be loaded.
    pub fn with_pipelines(self, pipelines: Vec<Pipeline>) -> Result<Self, IngestConfigError> {
        let catalog = Catalog::fixed(pipelines, self.encoders.clone())
            .map_err(|(pipeline, reason)| IngestConfigError { pipeline, reason })?;
        Ok(self.with_catalog(Arc::new(catalog)))
    }

    /// Serves the cluster's pipelines (`serve`): `files` are written to the store when absent,
    /// and the set is followed every `ingest.watch_interval`.
    pub async fn with_cluster_pipelines(self, files: Vec<Pipeline>) -> Self {
        let catalog =
            Arc::new(Catalog::cluster(self.engine.clone(), self.encoders.clone(), self.settings.ingest.watch_interval));
        catalog.start(files).await;
        self.with_catalog(catalog)
    }

    fn with_catalog(mut self, catalog: Arc<Catalog>) -> Self {
        let (ingestor, searcher, jobs) =
            Parts::of(&self.settings, &self.engine, &self.metrics, &self.encoders, catalog.clone());
        self.catalog = catalog;
        self.ingestor = ingestor;
        self.searcher = searcher;
        self.jobs = jobs;
        self
    }
}

/// The services over one pipeline catalog, sharing its owner resolver.
struct Parts;

impl Parts {
    fn of(
        settings: &Settings,
        engine: &EngineClient,
        metrics: &Metrics,
        encoders: &Arc<EncoderSet>,
        catalog: Arc<Catalog>,
    ) -> (Arc<Ingestor>, Arc<Searcher>, Arc<Jobs>) {
        let e = &settings.encoder;
        let owners = Arc::new(Owners::new(catalog));
        let ingestor =
            Arc::new(Ingestor::new(owners.clone(), encoders.clone(), e.max_input_chars, e.max_inputs_per_request));
        let searcher =
            Arc::new(Searcher::new(engine.clone(), encoders.clone(), owners.clone(), settings.search.clone()));
        let jobs = Arc::new(Jobs::new(Arc::new(
            Reindexer::new(
                engine.clone(),
                encoders.clone(),
                owners,
                e.max_input_chars,
                e.max_inputs_per_request,
                metrics.clone(),
            )
            .with_lease(settings.reindex.lease),
        )));
        (ingestor, searcher, jobs)
    }
}

/// The routes of the engines' own semantic APIs the sidecar stands in for: Elasticsearch's
/// inference and trained-model inference, ml-commons' model API, and OpenSearch's search and
/// ingest pipelines.
fn engine_feature_routes() -> Router<AppState> {
    Router::new()
        .route("/_inference", get(inference::list))
        .route("/_inference/{id}", get(inference::one).put(inference::one).post(inference::one).delete(inference::one))
        .route(
            "/_inference/{task}/{id}",
            get(inference::two).put(inference::two).post(inference::two).delete(inference::two),
        )
        .route("/_ml/trained_models/{id}/_infer", post(inference::ml_infer))
        .route("/_ml/trained_models/{id}/deployment/_infer", post(inference::ml_infer))
        .route("/_plugins/_ml/models/_search", get(ml_commons::search_models).post(ml_commons::search_models))
        .route("/_plugins/_ml/models/{id}", get(ml_commons::get_model))
        .route("/_plugins/_ml/_predict/{algorithm}/{id}", post(ml_commons::predict))
        .route("/_search/pipeline", get(kept_pipelines::search_list))
        .route(
            "/_search/pipeline/{id}",
            get(kept_pipelines::search_one).put(kept_pipelines::search_one).delete(kept_pipelines::search_one),
        )
        .route("/_ingest/pipeline", get(kept_pipelines::ingest_list))
        .route("/_ingest/pipeline/_simulate", get(kept_pipelines::simulate).post(kept_pipelines::simulate))
        .route(
            "/_ingest/pipeline/{id}",
            get(kept_pipelines::ingest_one).put(kept_pipelines::ingest_one).delete(kept_pipelines::ingest_one),
        )
        .route("/_ingest/pipeline/{id}/_simulate", get(kept_pipelines::simulate).post(kept_pipelines::simulate))
}

/// The router with every route and middleware.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let max_body = usize::try_from(state.settings.server.max_body_size.bytes()).unwrap_or(usize::MAX);
    let inner = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/embed", post(embed::embed))
        .route("/v1/embeddings", post(embed::openai_embeddings))
        .route("/encode", post(embed::bert_service_encode))
        .route("/_bulk", post(ingest::bulk_all).put(ingest::bulk_all))
        .route("/{index}/_bulk", post(ingest::bulk_index).put(ingest::bulk_index))
        .route("/{index}/_doc", post(ingest::doc_auto_id))
        .route(
            "/{index}/_doc/{id}",
            post(ingest::doc_with_id)
                .put(ingest::doc_with_id)
                .get(passthrough::doc)
                .head(passthrough::doc)
                .delete(passthrough::doc),
        )
        .route("/{index}/_create/{id}", post(ingest::create_with_id).put(ingest::create_with_id))
        .route("/search", post(search::search))
        .route("/_jobs/reindex", post(jobs::start))
        .route("/_jobs/{id}", get(jobs::get).delete(jobs::cancel))
        .route("/_sidecar/pipeline", get(pipelines::list))
        .route("/_sidecar/pipeline/{name}", get(pipelines::get).put(pipelines::put).delete(pipelines::delete))
        .merge(engine_feature_routes())
        .route("/_search", get(search::search_all).post(search::search_all))
        .route("/{index}/_search", get(search::search_index).post(search::search_index))
        .route("/", get(passthrough::root).head(passthrough::root))
        .route("/{index}", any(passthrough::any))
        .route("/{index}/_update/{id}", post(ingest::update))
        .fallback(passthrough::any)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::authorize_body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::limit_depth))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::decompress))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::limit_body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::authenticate))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::timeout))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::json_rejections))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::record_metrics))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::engine_headers))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, SidecarRequestId::default()))
        // answers are gzipped when the client asks (`Accept-Encoding: gzip`, the official
        // clients' `http_compress`)
        .layer(tower_http::compression::CompressionLayer::new().gzip(true))
        .with_state(state);
    // the path is made canonical before anything routes or authorises it: a layer inside the
    // router would run after routing
    let canonical = tower::ServiceBuilder::new().layer(axum::middleware::from_fn(canonical::normalize)).service(inner);
    Router::new().fallback_service(canonical)
}

/// Serves `state` on a free port of 127.0.0.1 in the background (in-process servers of `eval`
/// and the benchmarks); returns its base URL and the switch that stops it (or drop it).
pub async fn serve_local(state: AppState) -> std::io::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, state, async move {
        let _ = rx.await;
    }));
    Ok((url, tx))
}

/// The engine's answer as it came: its status and body, as JSON.
fn engine_answer(resp: crate::engine::EngineResponse) -> Response {
    let status = StatusCode::from_u16(resp.status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut r = (status, resp.body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
    for (name, value) in &resp.headers {
        r.headers_mut().append(name, value.clone());
    }
    r
}

/// Serves `state` on `listener` until `shutdown` completes, then drains for `shutdown_grace`.
///
/// HTTP/1.1 from hyper directly, so that slow clients are bounded: a connection that has not
/// sent its request headers within `server.header_read_timeout` is closed (slowloris), at most
/// `server.max_connections` are open at once (further ones wait in the listen backlog), and a
/// body that does not arrive within `server.body_read_timeout` is a 408 ([`middleware::limit_depth`]).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let server = &state.settings.server;
    let (grace, header_timeout) = (server.shutdown_grace, server.header_read_timeout);
    let slots = Arc::new(tokio::sync::Semaphore::new(server.max_connections));
    // reindex jobs whose sidecar died are adopted by a live one (see reindex's lease notes)
    let adopter =
        state.settings.reindex.adopt_orphans.then(|| state.jobs.adopt_orphans(state.settings.reindex.lease / 2));
    let _stop_adopter = AbortOnDrop(adopter);
    let app = router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // out of file descriptors and the like: back off instead of spinning
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(
                hyper_util::rt::TokioIo::new(stream),
                hyper_util::service::TowerToHyperService::new(app.clone()),
            );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!(grace_ms = grace.as_millis() as u64, "shutdown requested, draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => tracing::warn!("shutdown grace period over, closing remaining connections"),
    }
    Ok(())
}

/// Aborts a background task when the server it belongs to stops.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.abort();
        }
    }
}

async fn healthz() -> Response {
    (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
}

/// Ready when one of the engine URLs answers `GET /` with a supported flavour and version (each
/// probed once, at the same time, no retries: a probe must not hang on a dead engine longer than
/// `engine.connect_timeout`); `engine.nodes` says which URL answered and `degraded` whether any
/// did not.
async fn readyz(State(state): State<AppState>, Extension(caller): Extension<auth::Caller>) -> Response {
    let probes = state.engine.probe_each().await;
    // a probe without a key learns whether each node is up, not where the engine is
    let nodes: Vec<serde_json::Value> = probes
        .iter()
        .enumerate()
        .map(|(n, (url, r))| {
            let url = if caller.probe { format!("node-{n}") } else { url.clone() };
            match r {
                Ok(_) => json!({"url": url, "up": true}),
                Err(_) if caller.probe => json!({"url": url, "up": false, "error": {"type": "engine_unavailable"}}),
                Err(e) => json!({"url": url, "up": false, "error": {"type": e.code(), "reason": e.to_string()}}),
            }
        })
        .collect();
    let up = probes.iter().find_map(|(_, r)| r.as_ref().ok().cloned());
    let checked = match up {
        Some(info) => Ok(info),
        None => Err(probes.into_iter().find_map(|(_, r)| r.err())),
    };
    match checked {
        Ok(info) => {
            state.metrics.engine_up.set(1);
            state.metrics.engine_info.clear();
            state
                .metrics
                .engine_info
                .get_or_create(&EngineLabels { flavor: info.flavor.to_string(), version: info.version.to_string() })
                .set(1);
            // what the cluster lacks (detected once, cached with the search capabilities)
            let (license, missing) = match state.searcher.capabilities().await {
                Ok(c) => (json!(c.license), json!(c.missing())),
                Err(e) => (json!(null), json!([format!("capabilities unknown: {e}")])),
            };
            let degraded = nodes.iter().any(|n| n["up"] == false);
            let body = json!({
                "status": "ready",
                "engine": {
                    "flavor": info.flavor,
                    "version": info.version.to_string(),
                    "dialect": info.dialect,
                    "cluster_name": info.cluster_name,
                    "license": license,
                    "missing": missing,
                    "degraded": degraded,
                    "nodes": nodes,
                },
                "models": state.encoders.infos(),
                "pipelines": pipelines_state(&state, caller.probe),
            });
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(e) => {
            state.metrics.engine_up.set(0);
            let error = match e {
                Some(e) => {
                    tracing::warn!(error = %e, "readiness probe failed");
                    let reason = if caller.probe { "the engine is unreachable".to_string() } else { e.to_string() };
                    json!({"type": e.code(), "reason": reason})
                }
                None => {
                    json!({"type": crate::error::ErrorCode::EngineUnavailable, "reason": "no engine URL is configured"})
                }
            };
            let body = json!({
                "status": "not_ready",
                "engine": {"error": error, "nodes": nodes},
                "models": state.encoders.infos(),
            });
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

/// The pipelines this replica serves and those it cannot (a model it has not loaded: their
/// writes and semantic reads are refused here), stored ones that are not valid, and pipeline files
/// that disagree with the cluster. A probe without a key gets the counts only.
fn pipelines_state(state: &AppState, probe: bool) -> serde_json::Value {
    let snap = state.catalog.snapshot();
    if probe {
        return json!({"served": snap.served.len(), "unavailable": snap.unavailable.len()});
    }
    let unavailable: serde_json::Map<String, serde_json::Value> =
        snap.unavailable.iter().map(|(k, (_, why))| (k.clone(), json!(why))).collect();
    json!({
        "stored_in_cluster": state.catalog.is_stored(),
        "served": snap.served.keys().collect::<Vec<_>>(),
        "unavailable": unavailable,
        "invalid": snap.invalid,
        "files": state.catalog.file_notes(),
    })
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.render(),
    )
        .into_response()
}
