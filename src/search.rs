//! Search: the I/O around the pure [`crate::query`] code (it must not build request bodies or
//! fuse by itself: `query` does). Resolves the index's pipeline, encodes
//! the query text (query prefix, interactive lane), sends the legs or the engine-fused request,
//! and shapes the answer. One implementation behind `POST /search`, the ES-compatible `_search`
//! and `semantic-sidecar eval`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::Method;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use tokio::sync::OnceCell;

use crate::encoder::{EncodeOptions, EncoderError, EncoderSet, Input, Lane, Pooled, TextKind};
use crate::engine::dialect::Dialect;
use crate::engine::path::{EnginePath, QueryString};
use crate::engine::{EngineClient, EngineError, EngineRequest, EngineResponse};
use crate::error::ErrorCode;
use crate::ingest::catalog::CatalogError;
use crate::ingest::inference::Endpoints;
use crate::ingest::owner::{Owner, Owners, ReadOwner};
use crate::ingest::store::DocStore;
use crate::query::answer::{engine_hits, item_error, read_msearch, sidecar_page, union_total, Leg, LegAnswer};
use crate::query::build::{self, Capabilities};
use crate::query::compat::{self, HybridClause, Rewrite, CONFLICTING_KEYS};
use crate::query::fusion::Fusion;
use crate::query::os_hybrid::{self, Enricher};
use crate::query::params::{filter_path, fused_params, FusedParams};
use crate::query::request::{self, Mode, Plan, QueryError, Resolved, SearchRequest, Target};
use crate::query::retriever::{self, LeafKind};
use crate::query::semantic::{self, SemanticHighlight, SemanticTarget};
use crate::settings::SearchSettings;
use crate::telemetry::{SearchStage, StageTimes};
use crate::types::name::{DocId, IndexPattern};
use crate::types::pipeline::Pipeline;
use crate::types::search::EngineMethod;

mod opensearch;

pub use opensearch::{PipelineUse, INGEST_PIPELINES_INDEX, SEARCH_PIPELINES_INDEX};

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("`{0}` is neither an index with a pipeline nor a pipeline name (pipelines: {1})")]
    NoPipeline(String, String),
    /// The read reaches indices that one query vector cannot serve.
    #[error("{0}")]
    Conflict(String),
    /// The owning pipeline names a model this replica has not loaded.
    #[error("{0}")]
    Unavailable(String),
}

impl SearchError {
    pub fn code(&self) -> ErrorCode {
        match self {
            SearchError::Query(e) => e.code(),
            SearchError::Encoder(e) => e.code(),
            SearchError::Engine(e) => e.code(),
            SearchError::NoPipeline(..) => ErrorCode::NotFound,
            SearchError::Conflict(_) => ErrorCode::InvalidInput,
            SearchError::Unavailable(_) => ErrorCode::Unavailable,
        }
    }
}

/// What an ES-compatible `_search` produced.
pub enum EsAnswer {
    /// The engine's answer as it came (passthrough and nested rewrites).
    Raw(EngineResponse),
    /// A fused answer, ES-shaped.
    Json(Value),
}

/// Keys of a fused search's body that shape each hit, so both legs get them (the rest, such as
/// aggregations and `track_total_hits`, only the BM25 leg, whose answer carries them).
const HIT_KEYS: &[&str] = &[
    "timeout",
    "terminate_after",
    "version",
    "seq_no_primary_term",
    "stored_fields",
    "docvalue_fields",
    "fields",
    "explain",
    "runtime_mappings",
    "track_scores",
];

/// The body keys a retriever search the sidecar fuses takes.
const RETRIEVER_BODY_KEYS: &[&str] = &[
    "retriever",
    "size",
    "from",
    "_source",
    "highlight",
    "aggs",
    "aggregations",
    "track_total_hits",
    "timeout",
    "terminate_after",
    "version",
    "seq_no_primary_term",
    "stored_fields",
    "docvalue_fields",
    "fields",
    "explain",
    "runtime_mappings",
    "track_scores",
];

/// Most hybrid clauses nested in one `_search` body (each is a query text to encode).
const MAX_NESTED_HYBRID: usize = 16;

/// The search service. Cheap to share behind an `Arc`.
pub struct Searcher {
    engine: EngineClient,
    encoders: Arc<EncoderSet>,
    owners: Arc<Owners>,
    limits: SearchSettings,
    caps: OnceCell<Capabilities>,
    /// The `_inference` endpoints (cluster state), which `query_vector_builder` may name.
    endpoints: Endpoints,
    /// OpenSearch search pipelines already put by this process.
    made: Mutex<BTreeSet<String>>,
    /// The OpenSearch search and ingest pipelines the sidecar keeps (cluster state).
    search_pipelines: DocStore,
    ingest_pipelines: DocStore,
    /// Indices' default search pipelines, as last read.
    defaults: opensearch::Defaults,
}

fn rejected(status: u16, error_type: String, reason: String) -> EngineError {
    EngineError::Rejected { status, error_type, reason }
}

/// That an `_msearch` answered each of `expected` searches, none of them with an error (the
/// first error is refused with its status).
fn check_items<V: std::borrow::Borrow<Value>>(expected: usize, items: &[V]) -> Result<(), SearchError> {
    if items.len() != expected {
        return Err(
            EngineError::InvalidResponse(format!("_msearch answered {} of {expected} searches", items.len())).into()
        );
    }
    for item in items.iter().map(|i| i.borrow()) {
        if let Some((t, r)) = item_error(item) {
            let status = item.get("status").and_then(Value::as_u64).unwrap_or(400) as u16;
            return Err(rejected(status, t, r).into());
        }
    }
    Ok(())
}

fn fusion_info(plan: &Plan) -> Value {
    match (plan.mode, plan.fusion) {
        (Mode::Hybrid, Resolved::Sidecar(Fusion::Rrf { rank_constant, window })) => {
            json!({"by": "sidecar", "method": "rrf", "rank_constant": rank_constant, "window": window})
        }
        (Mode::Hybrid, Resolved::Sidecar(Fusion::Linear { weight, normalization })) => {
            json!({"by": "sidecar", "method": "linear", "weight": f64::from(weight), "normalization": normalization})
        }
        (Mode::Hybrid, Resolved::Engine { .. }) => json!({"by": "engine"}),
        _ => Value::Null,
    }
}

impl Searcher {
    pub fn new(engine: EngineClient, encoders: Arc<EncoderSet>, owners: Arc<Owners>, limits: SearchSettings) -> Self {
        let endpoints = Endpoints::new(Some(engine.clone()), encoders.clone());
        Searcher {
            encoders,
            owners,
            limits,
            caps: OnceCell::new(),
            search_pipelines: DocStore::new(
                Some(engine.clone()),
                SEARCH_PIPELINES_INDEX,
                "search pipeline",
                opensearch::SEARCH_PIPELINES_TTL,
            ),
            ingest_pipelines: DocStore::new(
                Some(engine.clone()),
                INGEST_PIPELINES_INDEX,
                "ingest pipeline",
                opensearch::SEARCH_PIPELINES_TTL,
            ),
            engine,
            endpoints,
            made: Mutex::new(BTreeSet::new()),
            defaults: Default::default(),
        }
    }

    /// The `_inference` endpoints this searcher resolves model ids with.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The index name a `/search` request's `index` means: itself, unless it is no pipeline's
    /// index but a pipeline's name (then that pipeline's index).
    pub fn index_of(&self, name: &str) -> String {
        let snap = self.owners.catalog().snapshot();
        if snap.all().any(|(s, _)| s.pipeline.index == name) {
            return name.to_string();
        }
        snap.named(name).map_or_else(|| name.to_string(), |s| s.pipeline.index.clone())
    }

    /// Who owns what a read of `names` reaches ([`Owners::for_read`]).
    async fn read_owner(&self, names: &str) -> Result<ReadOwner, SearchError> {
        Ok(self.owners.for_read(&self.engine, names).await?)
    }

    /// The pipeline serving a semantic read of `name` (an index, alias, data stream, pattern or
    /// comma list its pipeline owns, or a pipeline's name) and the target to search: the names as
    /// asked, or the pipeline's index for a pipeline's name.
    async fn target_for(&self, name: &str) -> Result<(Arc<Pipeline>, Target), SearchError> {
        let snap = self.owners.catalog().snapshot();
        if !snap.all().any(|(s, _)| s.pipeline.index == name) {
            if let Some(s) = snap.served.get(name) {
                return Ok((s.pipeline.clone(), Target::of(&s.pipeline)));
            }
            if let Some((_, why)) = snap.unavailable.get(name) {
                return Err(SearchError::Unavailable(format!("pipeline `{name}` is {why}")));
            }
        }
        match self.read_owner(name).await? {
            ReadOwner::Owned(Owner::Served(p)) => {
                let mut t = Target::of(&p);
                t.index = name.to_string();
                Ok((p, t))
            }
            ReadOwner::Owned(Owner::Unavailable(_, why)) => Err(SearchError::Unavailable(why)),
            ReadOwner::Owned(Owner::Plain) => Err(SearchError::NoPipeline(name.to_string(), snap.describe())),
            ReadOwner::Conflict(why) => Err(SearchError::Conflict(why)),
        }
    }

    /// What the cluster can do, asked once (`GET /`, the licence or the plugin list).
    pub async fn capabilities(&self) -> Result<&Capabilities, EngineError> {
        self.caps
            .get_or_try_init(|| async {
                let info = self.engine.info().await?;
                let mut caps = Capabilities::of(info);
                caps.modules = self.node_modules().await;
                caps.missing_analyzers = self.missing_analyzers().await;
                match caps.info.dialect {
                    Dialect::Elasticsearch => {
                        if let Ok(v) = self.engine.get_json::<Value>("/_license").await {
                            let t = v.pointer("/license/type").and_then(Value::as_str).map(String::from);
                            let active = v.pointer("/license/status").and_then(Value::as_str) == Some("active");
                            caps.rrf_licensed = active && matches!(t.as_deref(), Some("enterprise" | "trial"));
                            caps.license = t;
                        }
                    }
                    Dialect::Opensearch => {
                        if let Ok(Value::Array(list)) = self.engine.get_json::<Value>("/_cat/plugins?format=json").await
                        {
                            caps.neural_search = list.iter().any(|p| {
                                p.get("component").and_then(Value::as_str) == Some("opensearch-neural-search")
                            });
                        }
                    }
                }
                tracing::info!(flavor = %caps.info.flavor, version = %caps.info.version, license = ?caps.license,
                    neural_search = caps.neural_search, "search capabilities detected");
                Ok(caps)
            })
            .await
    }

    /// The modules and plugins that every node has, or `None` when `_nodes/plugins` does not say.
    async fn node_modules(&self) -> Option<BTreeSet<String>> {
        let v: Value =
            self.engine.get_json("/_nodes/plugins?filter_path=nodes.*.modules.name,nodes.*.plugins.name").await.ok()?;
        let nodes = v.get("nodes")?.as_object()?;
        let mut all: Option<BTreeSet<String>> = None;
        for node in nodes.values() {
            let names: BTreeSet<String> = ["modules", "plugins"]
                .iter()
                .filter_map(|k| node.get(*k).and_then(Value::as_array))
                .flatten()
                .filter_map(|m| m.get("name").and_then(Value::as_str).map(String::from))
                .collect();
            all = Some(match all {
                None => names,
                Some(a) => a.intersection(&names).cloned().collect(),
            });
        }
        all
    }

    /// The analyzers pipelines may name (`english`, `cjk`) that `_analyze` refuses here.
    async fn missing_analyzers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for name in ["english", "cjk"] {
            let req = EngineRequest::new(Method::POST, "/_analyze")
                .json(&json!({"analyzer": name, "text": "probe"}))
                .idempotent(true);
            if let Err(EngineError::Rejected { status: 400, .. }) = self.engine.send(req).await {
                out.push(name.to_string());
            }
        }
        out
    }

    async fn encode_query(&self, model: &str, text: &str, times: &mut StageTimes) -> Result<Vec<f32>, SearchError> {
        Ok(self.encode_queries(model, vec![text.to_string()], times).await?.remove(0))
    }

    /// Query vectors of `texts`, in one batch, in order (through the query-vector cache).
    async fn encode_queries(
        &self,
        model: &str,
        texts: Vec<String>,
        times: &mut StageTimes,
    ) -> Result<Vec<Vec<f32>>, SearchError> {
        let encoder = self.encoders.get(Some(model))?;
        let opts =
            EncodeOptions { kind: TextKind::Query, lane: Lane::Interactive, cache: true, ..EncodeOptions::default() };
        let n = texts.len();
        let started = Instant::now();
        let out = encoder.encode(texts.into_iter().map(Input::Text).collect(), opts).await?;
        times.add(SearchStage::Encode, started.elapsed());
        if out.times.cache_hits < n {
            times.add(SearchStage::Tokenize, out.times.tokenize);
            times.add(SearchStage::QueueWait, out.times.queue_wait);
            times.add(SearchStage::OrtRun, out.times.run);
        }
        let vectors: Vec<Vec<f32>> = out
            .outputs
            .into_iter()
            .filter_map(|o| match o {
                Pooled::Vector(v) => Some(v),
                _ => None,
            })
            .collect();
        if vectors.len() != n {
            return Err(SearchError::Encoder(EncoderError::Inference("the model returned no sentence vector".into())));
        }
        Ok(vectors)
    }

    async fn plan(&self, req: SearchRequest, times: &mut StageTimes) -> Result<Plan, SearchError> {
        let started = Instant::now();
        let (p, target) = self.target_for(&req.index).await?;
        let plan = request::plan(req, target, &p.search, &self.limits);
        times.add(SearchStage::Parse, started.elapsed());
        Ok(plan?)
    }

    fn check_knn(&self, caps: &Capabilities, plan: &Plan) -> Result<(), QueryError> {
        if plan.mode != Mode::Bm25 && caps.info.dialect == Dialect::Elasticsearch && !caps.info.supports_top_level_knn()
        {
            return Err(QueryError::Invalid(format!(
                "Elasticsearch {} has no top-level knn search (8.4+); only mode bm25 works on it",
                caps.info.version
            )));
        }
        Ok(())
    }

    /// The query vector a plan needs (none for BM25 alone), after checking the cluster can use it.
    async fn query_vector(
        &self,
        caps: &Capabilities,
        plan: &Plan,
        times: &mut StageTimes,
    ) -> Result<Option<Vec<f32>>, SearchError> {
        self.check_knn(caps, plan)?;
        Ok(match plan.mode {
            Mode::Bm25 => None,
            _ => Some(self.encode_query(&plan.target.query_model, &plan.text, times).await?),
        })
    }

    /// Sends `req`, timing the round trip as the `engine` stage.
    async fn engine_send(&self, req: EngineRequest, times: &mut StageTimes) -> Result<EngineResponse, SearchError> {
        let started = Instant::now();
        let resp = self.engine.send(req).await;
        times.add(SearchStage::Engine, started.elapsed());
        Ok(resp?)
    }

    async fn post_json(&self, path: String, body: &Value, times: &mut StageTimes) -> Result<Value, SearchError> {
        let resp = self.engine_send(EngineRequest::new(Method::POST, path).json(body).idempotent(true), times).await?;
        Ok(times.time(SearchStage::Fusion, || resp.json())?)
    }

    /// Runs the legs a plan needs (one `_msearch` for two); `extra` joins the BM25 leg's body
    /// (its keys that shape hits, [`HIT_KEYS`], the kNN leg's too), `params` the URL's.
    async fn legs(
        &self,
        plan: &Plan,
        vector: Option<&[f32]>,
        dialect: Dialect,
        extra: Option<&Map<String, Value>>,
        params: Option<&FusedParams>,
        times: &mut StageTimes,
    ) -> Result<(Option<Leg>, Option<Leg>, Value), SearchError> {
        let join = |b: &mut Value, all: bool| {
            if let (Some(m), Some(extra)) = (b.as_object_mut(), extra) {
                for (k, v) in extra.iter().filter(|(k, _)| all || HIT_KEYS.contains(&k.as_str())) {
                    m.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        };
        let mut bodies = Vec::new();
        if plan.mode != Mode::Knn {
            let mut b = build::bm25_leg(plan, plan.k);
            join(&mut b, true);
            bodies.push(b);
        }
        if let (Some(v), true) = (vector, plan.mode != Mode::Bm25) {
            let mut b = build::knn_leg(plan, v, dialect, plan.k);
            join(&mut b, false);
            bodies.push(b);
        }
        let mut header = Map::new();
        header.insert("index".into(), json!(plan.target.index));
        let mut url = QueryString::default();
        if let Some(p) = params {
            header.extend(p.header.clone());
            p.url.iter().for_each(|(k, v)| url.push(k, v));
        }
        let items = self.msearch_legs(&header, &bodies, &url, times).await?;
        let mut first = None;
        let mut legs = Vec::new();
        for item in items {
            legs.push(item.leg.map_err(|(t, r)| rejected(400, t, r))?);
            first.get_or_insert(item.head);
        }
        let mut it = legs.into_iter();
        let bm25 = if plan.mode != Mode::Knn { it.next() } else { None };
        let knn = if plan.mode != Mode::Bm25 { it.next() } else { None };
        Ok((bm25, knn, first.unwrap_or(Value::Null)))
    }

    /// Sends one `_msearch` of `bodies`, each under `header`, with the URL's `url`.
    async fn send_msearch(
        &self,
        header: &Map<String, Value>,
        bodies: &[Value],
        url: &QueryString,
        times: &mut StageTimes,
    ) -> Result<EngineResponse, SearchError> {
        let ndjson = build::msearch_with(&Value::Object(header.clone()), bodies);
        let path = EnginePath::root().api("_msearch").query(url).build();
        let req = EngineRequest::new(Method::POST, path).ndjson(Bytes::from(ndjson)).idempotent(true);
        self.engine_send(req, times).await
    }

    /// One `_msearch` of `bodies` (see [`Searcher::send_msearch`]): the answers in order; the
    /// first failed one is the error (with its status).
    async fn msearch(
        &self,
        header: &Map<String, Value>,
        bodies: &[Value],
        url: &QueryString,
        times: &mut StageTimes,
    ) -> Result<Vec<Value>, SearchError> {
        let resp = self.send_msearch(header, bodies, url, times).await?;
        let mut body: Value = times.time(SearchStage::Fusion, || resp.json())?;
        let items = match body.get_mut("responses").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        check_items(bodies.len(), &items)?;
        Ok(items)
    }

    /// [`Searcher::msearch`] of `bodies` on `index`, with a fused search's URL parameters
    /// ([`fused_params`]) in each header and on the `_msearch` URL.
    async fn msearch_with_params(
        &self,
        index: &str,
        params: &FusedParams,
        bodies: &[Value],
        times: &mut StageTimes,
    ) -> Result<Vec<Value>, SearchError> {
        let mut header = Map::new();
        header.insert("index".into(), json!(index));
        header.extend(params.header.clone());
        let mut url = QueryString::default();
        params.url.iter().for_each(|(k, v)| url.push(k, v));
        self.msearch(&header, bodies, &url, times).await
    }

    /// One `_msearch` of the legs `bodies`, read for fusion ([`read_msearch`]: a hit's
    /// `_source` is built only when it makes the page).
    async fn msearch_legs(
        &self,
        header: &Map<String, Value>,
        bodies: &[Value],
        url: &QueryString,
        times: &mut StageTimes,
    ) -> Result<Vec<LegAnswer>, SearchError> {
        let resp = self.send_msearch(header, bodies, url, times).await?;
        let items = times
            .time(SearchStage::Fusion, || read_msearch(&resp.body))
            .map_err(|e| EngineError::InvalidResponse(format!("the engine's _msearch answer: {e}")))?;
        let heads: Vec<&Value> = items.iter().map(|i| &i.head).collect();
        check_items(bodies.len(), &heads)?;
        Ok(items)
    }

    /// Puts an OpenSearch search pipeline once per process (PUT is idempotent).
    async fn ensure_pipeline(&self, name: &str, def: &Value, times: &mut StageTimes) -> Result<(), SearchError> {
        if self.made.lock().map(|m| m.contains(name)).unwrap_or(false) {
            return Ok(());
        }
        let id = DocId::try_from(name).map_err(|e| QueryError::Invalid(format!("search pipeline name: {e}")))?;
        let path = EnginePath::root().api("_search").api("pipeline").id(&id).build();
        let req = EngineRequest::new(Method::PUT, path).json(def).idempotent(true);
        self.engine_send(req, times).await?;
        if let Ok(mut m) = self.made.lock() {
            m.insert(name.to_string());
        }
        Ok(())
    }

    /// Sends an engine-fused search; `extra` joins the body. Returns the answer and what was used.
    async fn engine_fused(
        &self,
        plan: &Plan,
        vector: &[f32],
        caps: &Capabilities,
        extra: Option<&Map<String, Value>>,
        query_string: Option<&QueryString>,
        times: &mut StageTimes,
    ) -> Result<(Value, Value), SearchError> {
        let mut eq = build::engine_query(plan, vector, caps)?;
        if let (Some(m), Some(extra)) = (eq.body.as_object_mut(), extra) {
            for (k, v) in extra {
                m.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let mut params = query_string.cloned().unwrap_or_default();
        if let Some((name, def)) = &eq.pipeline {
            self.ensure_pipeline(name, def, times).await?;
            params.push("search_pipeline", name);
        }
        let index =
            IndexPattern::try_from(plan.target.index.as_str()).map_err(|e| QueryError::Invalid(e.to_string()))?;
        let path = EnginePath::root().pattern(&index).api("_search").query(&params).build();
        let resp = self.post_json(path, &eq.body, times).await?;
        let mut info = json!({"by": "engine", "method": eq.method});
        if let Resolved::Engine { weight, rank_constant, normalization, .. } = plan.fusion {
            match eq.method {
                EngineMethod::Rrf => info["rank_constant"] = json!(rank_constant),
                EngineMethod::Linear => {
                    info["weight"] = json!(f64::from(weight));
                    info["normalization"] = json!(normalization);
                }
                _ => info["weight"] = json!(f64::from(weight)),
            }
        }
        if let Some(n) = eq.note {
            info["note"] = json!(n);
        }
        if let Some((name, _)) = eq.pipeline {
            info["search_pipeline"] = json!(name);
        }
        Ok((resp, info))
    }

    /// `POST /search`.
    pub async fn search(&self, req: SearchRequest) -> Result<Value, SearchError> {
        self.search_timed(req, &mut StageTimes::default()).await
    }

    /// `POST /search`, adding where the time went to `times`; with `explain` the answer carries
    /// them too (`timings_ms`, every stage up to serialisation).
    pub async fn search_timed(&self, req: SearchRequest, times: &mut StageTimes) -> Result<Value, SearchError> {
        let started = Instant::now();
        let plan = self.plan(req, times).await?;
        let caps = self.capabilities().await?;
        let vector = self.query_vector(caps, &plan, times).await?;
        let mut answer = self.answer(&plan, caps, vector.as_deref(), started, times).await?;
        if plan.explain {
            answer["timings_ms"] = times.to_json_ms();
            // which field and model answered: what an operator checks while a model is switched
            answer["vector"] = json!({
                "field": plan.target.knn_field(),
                "model": plan.target.model,
                "query_model": plan.target.query_model,
            });
        }
        Ok(answer)
    }

    async fn answer(
        &self,
        plan: &Plan,
        caps: &Capabilities,
        vector: Option<&[f32]>,
        started: Instant,
        times: &mut StageTimes,
    ) -> Result<Value, SearchError> {
        if let (Mode::Hybrid, Resolved::Engine { .. }, Some(v)) = (plan.mode, plan.fusion, vector) {
            let (resp, info) = self.engine_fused(plan, v, caps, None, None, times).await?;
            let legs = match plan.explain {
                true => {
                    let (b, k, _) = self.legs(plan, Some(v), caps.info.dialect, None, None, times).await?;
                    b.zip(k)
                }
                false => None,
            };
            let hits = times.time(SearchStage::Fusion, || engine_hits(plan, &resp, legs.as_ref().map(|(b, k)| (b, k))));
            return Ok(json!({
                "took": started.elapsed().as_millis() as u64,
                "timed_out": resp.get("timed_out").cloned().unwrap_or(json!(false)),
                "mode": plan.mode,
                "fusion": info,
                "hits": {
                    "total": resp.pointer("/hits/total").cloned().unwrap_or(Value::Null),
                    "max_score": resp.pointer("/hits/max_score").cloned().unwrap_or(Value::Null),
                    "hits": hits,
                },
            }));
        }
        let (bm25, knn, _) = self.legs(plan, vector, caps.info.dialect, None, None, times).await?;
        let page = times.time(SearchStage::Fusion, || sidecar_page(plan, bm25.as_ref(), knn.as_ref(), plan.k));
        Ok(json!({
            "took": started.elapsed().as_millis() as u64,
            "timed_out": false,
            "mode": plan.mode,
            "fusion": fusion_info(plan),
            "hits": {
                "total": {"value": page.total, "relation": if page.truncated { "gte" } else { "eq" }},
                "max_score": page.max_score,
                "hits": page.hits,
            },
        }))
    }

    /// Whether [`Searcher::es_search`] would rewrite `body` for `index` (a hybrid clause, the
    /// pipeline's `auto_hybrid`, a `semantic_text` index); a body it would refuse counts as rewritten, so that the
    /// refusal comes from there.
    pub async fn rewrites(&self, index: &str, body: &Value) -> Result<bool, SearchError> {
        if body.get("retriever").is_some_and(retriever::needs_fusion)
            || os_hybrid::hybrid_query(body).is_some()
            || compat::vector_builders(body).map_or(true, |b| !b.is_empty())
            || compat::neural_queries(body).map_or(true, |n| !n.is_empty())
        {
            return Ok(true);
        }
        if let ReadOwner::Owned(Owner::Served(p)) = self.read_owner(index).await? {
            if p.semantic_text.is_some() {
                return Ok(true);
            }
        }
        let auto = self.auto_hybrid(index).await?;
        Ok(!matches!(compat::analyse(body, auto.as_ref().map(|t| t.text_fields.as_slice())), Ok(Rewrite::Passthrough)))
    }

    /// The target whose text fields a plain query over `index` is rewritten into a hybrid one
    /// on: when its owner's pipeline has `auto_hybrid` (also an owner this replica cannot serve,
    /// so that the refusal names why).
    async fn auto_hybrid(&self, index: &str) -> Result<Option<Target>, SearchError> {
        Ok(match self.read_owner(index).await? {
            ReadOwner::Owned(o) => o.pipeline().filter(|p| p.search.auto_hybrid).map(|p| Target::of(p)),
            ReadOwner::Conflict(_) => None,
        })
    }

    /// `POST /{index}/_search`: passthrough, or the hybrid clause / automatic rewrite.
    pub async fn es_search(
        &self,
        pattern: &IndexPattern,
        query_string: &QueryString,
        body: Bytes,
    ) -> Result<EsAnswer, SearchError> {
        self.es_search_timed(pattern, query_string, body, &mut StageTimes::default()).await
    }

    /// [`Searcher::es_search`], adding where the time went to `times`.
    pub async fn es_search_timed(
        &self,
        pattern: &IndexPattern,
        query_string: &QueryString,
        body: Bytes,
        times: &mut StageTimes,
    ) -> Result<EsAnswer, SearchError> {
        let started = Instant::now();
        let joined = pattern.parts().collect::<Vec<_>>().join(",");
        let index = joined.as_str();
        // a body is parsed before anything is forwarded: never passed on unread
        let parsed: Option<Value> = if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            match serde_json::from_slice::<Value>(&body) {
                Ok(v @ Value::Object(_)) => Some(v),
                Ok(_) => return Err(QueryError::Invalid("the search body must be a JSON object".into()).into()),
                Err(e) => return Err(QueryError::Invalid(format!("the search body is not JSON: {e}")).into()),
            }
        };
        let mut parsed = parsed;
        let used = self.pipeline_use(pattern, query_string, parsed.as_ref()).await?;
        let semantic = match parsed.as_mut() {
            Some(v) => self.resolve_semantic(index, v, times).await?,
            None => None,
        };
        let resolved = match parsed.as_mut() {
            Some(v) => self.resolve_builders(v, used.enricher(), times).await? || semantic.is_some(),
            None => false,
        };
        // a body changed here is sent as re-serialised, any other byte for byte
        let body = match (&parsed, resolved) {
            (Some(v), true) => Bytes::from(v.to_string()),
            _ => body,
        };
        let answer = self.es_search_resolved(pattern, parsed, body, &used, query_string, started, times).await?;
        match semantic {
            Some((highlights, targets)) if !highlights.is_empty() => {
                let mut v = match answer {
                    EsAnswer::Json(v) => v,
                    EsAnswer::Raw(resp) if resp.status.is_success() => resp.json()?,
                    raw => return Ok(raw),
                };
                semantic::highlight_answer(&mut v, &highlights, &targets);
                Ok(EsAnswer::Json(v))
            }
            _ => Ok(answer),
        }
    }

    /// [`Searcher::es_search_timed`] once the body's builders and semantic queries are resolved
    /// (`body`: the bytes to forward, `parsed` as JSON).
    #[allow(clippy::too_many_arguments)]
    async fn es_search_resolved(
        &self,
        pattern: &IndexPattern,
        parsed: Option<Value>,
        body: Bytes,
        used: &PipelineUse,
        query_string: &QueryString,
        started: Instant,
        times: &mut StageTimes,
    ) -> Result<EsAnswer, SearchError> {
        let path = EnginePath::root().pattern(pattern).api("_search").query(query_string).build();
        let joined = pattern.parts().collect::<Vec<_>>().join(",");
        let index = joined.as_str();
        if let Some(Value::Object(m)) = &parsed {
            let caps = self.capabilities().await?;
            if m.contains_key("retriever") && caps.info.dialect == Dialect::Opensearch {
                return Err(QueryError::Invalid(
                    "`retriever` is Elasticsearch's API; OpenSearch has none: use the sidecar's hybrid clause ({\"query\": {\"hybrid\": {\"query\": \"...\"}}})".into(),
                )
                .into());
            }
            if m.get("retriever").is_some_and(retriever::needs_fusion) && !caps.engine_runs_retrievers() {
                let resp = self.run_retriever(index, m.clone(), query_string, started, times).await?;
                return Ok(EsAnswer::Json(resp));
            }
            if caps.sidecar_runs_neural() {
                if let Some(hq) = parsed.as_ref().and_then(os_hybrid::hybrid_query) {
                    let resp = self.run_os_hybrid(index, m.clone(), &hq?, used, query_string, started, times).await?;
                    return Ok(EsAnswer::Json(resp));
                }
            }
        }
        let rewrite = match &parsed {
            None => Rewrite::Passthrough,
            Some(v) => {
                let auto = self.auto_hybrid(index).await?;
                compat::analyse(v, auto.as_ref().map(|t| t.text_fields.as_slice()))?
            }
        };
        times.add(SearchStage::Parse, started.elapsed());
        let passthrough = |body: Bytes| {
            let req = EngineRequest::new(Method::POST, path.clone()).passthrough().idempotent(true);
            if body.is_empty() {
                req
            } else {
                req.json_bytes(body)
            }
        };
        match rewrite {
            Rewrite::Passthrough => Ok(EsAnswer::Raw(self.engine_send(passthrough(body), times).await?)),
            Rewrite::Nested { clauses } => {
                let body = self.nested_hybrid(index, parsed.unwrap_or_default(), clauses, times).await?;
                Ok(EsAnswer::Raw(self.engine_send(passthrough(Bytes::from(body.to_string())), times).await?))
            }
            Rewrite::TopLevel { clause, rest } => {
                let resp = self.top_level_hybrid(index, clause, rest, query_string, started, times).await?;
                Ok(EsAnswer::Json(resp))
            }
        }
    }

    /// Rewrites Elastic's queries on the index's `semantic_text` field (one the sidecar serves,
    /// on an Elasticsearch cluster without inference): each `semantic` or `match` clause on it a
    /// nested kNN over its passages with the text's vector, each kNN on it pointed at the
    /// passages. Returns the semantic highlights to answer and the fields, or `None` when the
    /// body has nothing of the kind.
    async fn resolve_semantic(
        &self,
        index: &str,
        body: &mut Value,
        times: &mut StageTimes,
    ) -> Result<Option<(Vec<SemanticHighlight>, Vec<SemanticTarget>)>, SearchError> {
        let caps = self.capabilities().await?;
        if caps.info.dialect != Dialect::Elasticsearch || caps.engine_serves_inference() {
            return Ok(None);
        }
        let targets: Vec<SemanticTarget> = match self.read_owner(index).await? {
            ReadOwner::Owned(Owner::Served(p)) => semantic_target(&p).into_iter().collect(),
            _ => Vec::new(),
        };
        let found = semantic::rewrite(body, &targets)?;
        if found.clauses.is_empty() && !found.changed && found.highlights.is_empty() {
            return Ok(None);
        }
        let num_candidates = (2 * largest_size(body)).clamp(100, 10_000);
        let mut highlighted = BTreeSet::new();
        for c in &found.clauses {
            let Some(t) = targets.iter().find(|t| t.field == c.field) else { continue };
            let vector = self.encode_query(&t.model, &c.text, times).await?;
            // inner hits are named per field: the first clause on a field carries its highlight
            let hl = found.highlights.iter().find(|h| h.field == c.field && highlighted.insert(c.field.clone()));
            let clause = semantic::nested_knn(c, t, &vector, None, num_candidates, hl);
            if let Some(slot) = body.pointer_mut(&c.at) {
                *slot = clause;
            }
        }
        Ok(Some((found.highlights, targets)))
    }

    /// [`Searcher::resolve_neural`] for the search-like APIs the sidecar otherwise forwards
    /// (`_count`, `_explain`, `_validate/query`): whether `body` changed.
    pub async fn resolve_neural_in(&self, body: &mut Value) -> Result<bool, SearchError> {
        self.resolve_neural(body, None, &mut StageTimes::default()).await
    }

    /// OpenSearch's `neural` queries on a cluster without the neural-search plugin: each
    /// becomes a `knn` query with the query vector of the sidecar model its `model_id` (or
    /// else the search pipeline's `neural_query_enricher`) names. Whether the body changed.
    async fn resolve_neural(
        &self,
        body: &mut Value,
        enricher: Option<&Enricher>,
        times: &mut StageTimes,
    ) -> Result<bool, SearchError> {
        let found = compat::neural_queries(body);
        if found.as_ref().is_ok_and(Vec::is_empty) {
            return Ok(false);
        }
        // Elasticsearch has no neural query, and a cluster with the plugin runs its own
        if !self.capabilities().await?.sidecar_runs_neural() {
            return Ok(false);
        }
        for n in &found? {
            let bad =
                |why: String| QueryError::Invalid(format!("the neural query at {} on `{}`: {why}", n.at, n.field));
            let id = match (n.model_id.as_deref(), enricher.and_then(|e| e.model_for(&n.field))) {
                (Some(id), _) | (None, Some(id)) => id,
                (None, None) => {
                    return Err(bad("`model_id` is required, or a neural_query_enricher default in the search pipeline (`search_pipeline` or the index's `index.search.default_pipeline`)".into()).into())
                }
            };
            let model = match self.endpoints.model_for(id).await {
                Ok(m) => m,
                Err(CatalogError::Invalid(why)) => return Err(bad(why).into()),
                Err(e) => return Err(opensearch::catalog(e)),
            };
            let vector = self.encode_query(&model, &n.text, times).await?;
            compat::set_neural_vector(body, n, &vector);
        }
        Ok(true)
    }

    /// Replaces every `query_vector_builder.text_embedding` in `body` by the `query_vector` of
    /// its `model_text`, embedded by the model its `model_id` names (an inference endpoint or a
    /// model of this sidecar); an id neither names is left to an engine with machine learning,
    /// and refused (400, naming the known ones) by one without. Returns whether it changed
    /// anything.
    async fn resolve_builders(
        &self,
        body: &mut Value,
        enricher: Option<&Enricher>,
        times: &mut StageTimes,
    ) -> Result<bool, SearchError> {
        let neural = self.resolve_neural(body, enricher, times).await?;
        let found = compat::vector_builders(body)?;
        if found.is_empty() {
            return Ok(neural);
        }
        let mut changed = neural;
        for b in found {
            let model = match self.endpoints.model_for(&b.model_id).await {
                Ok(m) => m,
                Err(CatalogError::Invalid(_)) if self.capabilities().await?.engine_serves_ml() => continue,
                Err(CatalogError::Invalid(why)) => {
                    return Err(QueryError::Invalid(format!("query_vector_builder at {}: {why}", b.at)).into())
                }
                Err(e) => return Err(opensearch::catalog(e)),
            };
            let vector = self.encode_query(&model, &b.text, times).await?;
            compat::set_query_vector(body, &b.at, &vector);
            changed = true;
        }
        Ok(changed)
    }

    /// A search whose `retriever` holds `rrf` or `linear` on a cluster that cannot run them:
    /// the leaves in one `_msearch` (with the URL's parameters, [`fused_params`]), fused by
    /// [`retriever::answer`] into Elasticsearch's shape.
    async fn run_retriever(
        &self,
        index: &str,
        mut body: Map<String, Value>,
        query_string: &QueryString,
        started: Instant,
        times: &mut StageTimes,
    ) -> Result<Value, SearchError> {
        let params = fused_params(query_string.pairs())?;
        body.extend(params.body.clone());
        if let Some(k) = body.keys().find(|k| !RETRIEVER_BODY_KEYS.contains(&k.as_str())) {
            return Err(QueryError::Invalid(format!(
                "`{k}` cannot be combined with a retriever that the sidecar fuses (known: {})",
                RETRIEVER_BODY_KEYS.join(", ")
            ))
            .into());
        }
        let count = |k: &str, d: usize| -> Result<usize, QueryError> {
            match body.get(k) {
                None | Some(Value::Null) => Ok(d),
                Some(v) => v
                    .as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| QueryError::Invalid(format!("`{k}` must be a non-negative integer"))),
            }
        };
        let (size, from) = (count("size", 10)?, count("from", 0)?);
        if from.saturating_add(size) > self.limits.max_k {
            return Err(QueryError::Limit(format!(
                "`from` + `size` ({}) is more than {}",
                from + size,
                self.limits.max_k
            ))
            .into());
        }
        let plan = retriever::plan(&body["retriever"], from, size)?;
        let (bodies, with_aggs) = retriever_bodies(&plan, &body);
        let mut items = self.msearch_with_params(index, &params, &bodies, times).await?;
        let aggs_answer = if with_aggs { items.pop() } else { None };
        let untracked = body.get("track_total_hits") == Some(&Value::Bool(false));
        Ok(times.time(SearchStage::Fusion, || {
            let mut v = retriever::answer(&plan, items, aggs_answer, from, size);
            v["took"] = json!(started.elapsed().as_millis() as u64);
            if let Some(h) = v.get_mut("hits").and_then(Value::as_object_mut) {
                if untracked {
                    h.remove("total");
                } else if params.total_as_int {
                    let n = h.get("total").and_then(|t| t.get("value")).cloned().unwrap_or(json!(0));
                    h.insert("total".into(), n);
                }
            }
            match &params.filter_path {
                Some(spec) => filter_path(v, spec),
                None => v,
            }
        }))
    }

    /// The search body with each hybrid clause nested in it (by JSON pointer) replaced by its
    /// engine-scored form; every clause is checked before anything is encoded or sent.
    async fn nested_hybrid(
        &self,
        index: &str,
        mut body: Value,
        clauses: Vec<(String, HybridClause)>,
        times: &mut StageTimes,
    ) -> Result<Value, SearchError> {
        let caps = self.capabilities().await?;
        let (p, target) = self.target_for(index).await?;
        if clauses.len() > MAX_NESTED_HYBRID {
            return Err(QueryError::Limit(format!(
                "the body has {} hybrid clauses, more than {MAX_NESTED_HYBRID}",
                clauses.len()
            ))
            .into());
        }
        let mut plans = Vec::with_capacity(clauses.len());
        for (ptr, clause) in clauses {
            let plan = request::plan(clause.to_request(index, &Map::new())?, target.clone(), &p.search, &self.limits)?;
            if !matches!(plan.fusion, Resolved::Engine { method: EngineMethod::Auto | EngineMethod::Boost, .. })
                && clause.fusion.is_some()
            {
                return Err(QueryError::Invalid(format!(
                    "the hybrid clause at {ptr} is nested, so the engine scores it (bool.should, boosts): give it no fusion or {{\"engine\": {{\"method\": \"boost\"}}}}; rrf and linear need the clause as the whole query"
                ))
                .into());
            }
            plans.push((ptr, plan));
        }
        // all their texts in one encoder batch (one pipeline, so one model)
        let texts: Vec<String> = plans.iter().map(|(_, p)| p.text.clone()).collect();
        let vectors = self.encode_queries(&target.query_model, texts, times).await?;
        for ((ptr, plan), vector) in plans.iter().zip(&vectors) {
            let replacement = build::nested_hybrid(plan, vector, caps)?;
            if let Some(slot) = body.pointer_mut(ptr) {
                *slot = replacement;
            }
        }
        Ok(body)
    }

    /// A search whose whole query is a hybrid clause (or rewritten into one): the engine fuses
    /// where the plan says so, else the sidecar fuses the two legs into an `_search` answer,
    /// honouring every URL parameter ([`fused_params`]).
    async fn top_level_hybrid(
        &self,
        index: &str,
        clause: HybridClause,
        mut rest: Map<String, Value>,
        query_string: &QueryString,
        started: Instant,
        times: &mut StageTimes,
    ) -> Result<Value, SearchError> {
        if let Some(k) = CONFLICTING_KEYS.iter().find(|k| rest.contains_key(**k)) {
            return Err(QueryError::Invalid(format!(
                "`{k}` cannot be combined with a hybrid query (the hits are ordered by the fused score)"
            ))
            .into());
        }
        let params = fused_params(query_string.pairs())?;
        // the URL wins over the body, as on the engines
        rest.extend(params.body.clone());
        let plan = self.plan(clause.to_request(index, &rest)?, times).await?;
        for k in ["size", "from", "_source", "highlight"] {
            rest.remove(k);
        }
        let caps = self.capabilities().await?;
        let vector = self.query_vector(caps, &plan, times).await?;
        if let (Mode::Hybrid, Resolved::Engine { .. }, Some(v)) = (plan.mode, plan.fusion, vector.as_deref()) {
            let (mut resp, _) = self.engine_fused(&plan, v, caps, Some(&rest), Some(query_string), times).await?;
            let hits = times.time(SearchStage::Fusion, || engine_hits(&plan, &resp, None));
            if let Some(h) = resp.pointer_mut("/hits/hits") {
                *h = Value::Array(hits);
            }
            return Ok(resp);
        }
        let (bm25, knn, first) =
            self.legs(&plan, vector.as_deref(), caps.info.dialect, Some(&rest), Some(&params), times).await?;
        Ok(times.time(SearchStage::Fusion, || {
            let page = sidecar_page(&plan, bm25.as_ref(), knn.as_ref(), plan.k);
            let total = union_total(&page, bm25.as_ref(), knn.as_ref());
            let mut resp = first;
            if let Some(m) = resp.as_object_mut() {
                m.remove("status");
                m.insert("took".into(), json!(started.elapsed().as_millis() as u64));
            }
            if let Some(h) = resp.get_mut("hits").and_then(Value::as_object_mut) {
                h.insert("max_score".into(), json!(page.max_score));
                h.insert("hits".into(), Value::Array(page.hits));
                match total {
                    Some(t) if params.total_as_int => h.insert("total".into(), t.get("value").cloned().unwrap_or(t)),
                    Some(t) => h.insert("total".into(), t),
                    None => h.remove("total"),
                };
            }
            match &params.filter_path {
                Some(spec) => filter_path(resp, spec),
                None => resp,
            }
        }))
    }
}

/// The `semantic_text` field a pipeline stands behind, as its queries see it.
fn semantic_target(p: &Pipeline) -> Option<SemanticTarget> {
    let st = p.semantic_text.as_ref()?;
    Some(SemanticTarget {
        field: st.field.clone(),
        passages: p.chunking.as_ref()?.passages_field.clone(),
        model: p.query_model().to_string(),
    })
}

/// The largest `size`, `from + size` or `rank_window_size` a body names (at least 10): the
/// candidates a semantic query's kNN needs.
fn largest_size(body: &Value) -> usize {
    fn walk(v: &Value, most: &mut u64) {
        match v {
            Value::Object(m) => {
                let n = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0);
                *most = (*most).max(n("size").saturating_add(n("from"))).max(n("rank_window_size"));
                m.values().for_each(|x| walk(x, most));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, most)),
            _ => {}
        }
    }
    let mut most = 10;
    walk(body, &mut most);
    most.min(10_000) as usize
}

/// The `_msearch` bodies of a retriever plan: each leaf with the request's hit keys (and its
/// highlight on the standard leaves), then, when the request aggregates, one more body that
/// aggregates over the union of the standard leaves; the flag says whether that body is there.
fn retriever_bodies(plan: &retriever::RetrieverPlan, body: &Map<String, Value>) -> (Vec<Value>, bool) {
    let mut bodies: Vec<Value> = plan
        .leaves
        .iter()
        .map(|leaf| {
            let mut b = leaf.body.clone();
            for (k, v) in body {
                let shared = HIT_KEYS.contains(&k.as_str()) || k == "_source" || k == "track_total_hits";
                if shared || (k == "highlight" && leaf.kind == LeafKind::Standard) {
                    b[k.as_str()] = v.clone();
                }
            }
            b
        })
        .collect();
    let aggs = body.get("aggs").or_else(|| body.get("aggregations"));
    let with_aggs = match aggs.and_then(|a| retriever::aggs_body(plan, a)) {
        Some(mut a) => {
            for k in ["track_total_hits", "timeout", "runtime_mappings"] {
                if let Some(v) = body.get(k) {
                    a[k] = v.clone();
                }
            }
            bodies.push(a);
            true
        }
        None => false,
    };
    (bodies, with_aggs)
}
