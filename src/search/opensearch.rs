//! OpenSearch's neural search on a cluster without the neural-search plugin, the I/O half (the
//! pure half is [`crate::query::os_hybrid`]): which search pipeline a search goes through (the
//! URL's or body's `search_pipeline`, else the index's `index.search.default_pipeline`), the
//! `neural_query_enricher` defaults it gives `neural` queries, and the `hybrid` query scored by
//! its `normalization-processor` or `score-ranker-processor`: one `_msearch` of the sub-queries
//! and a union count, combined into OpenSearch's answer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::{SearchError, Searcher};
use crate::engine::path::{EnginePath, QueryString};
use crate::engine::EngineRequest;
use crate::ingest::catalog::CatalogError;
use crate::query::compat;
use crate::query::os_hybrid::{self, Enricher, HybridQuery, SearchPipeline};
use crate::query::params::{filter_path, fused_params};
use crate::telemetry::{SearchStage, StageTimes};
use crate::types::name::IndexPattern;

/// The hidden index the search pipelines the sidecar keeps live in.
pub const SEARCH_PIPELINES_INDEX: &str = ".semantic-sidecar-search-pipelines";
/// The hidden index the ingest pipelines the sidecar keeps live in.
pub const INGEST_PIPELINES_INDEX: &str = ".semantic-sidecar-ingest-pipelines";
/// How long a replica trusts its copy of the search pipelines and of an index's default.
pub const SEARCH_PIPELINES_TTL: Duration = Duration::from_secs(2);
/// Most indices whose default search pipeline a replica remembers.
const MAX_DEFAULTS: usize = 1000;

/// The settings the sidecar reads of index patterns (by filter and pattern), and when.
pub(super) type Defaults = std::sync::Mutex<HashMap<String, (Instant, Value)>>;

/// The search pipeline a search goes through, as far as the sidecar is concerned.
#[derive(Debug, Default)]
pub struct PipelineUse {
    /// The name the request gave (URL or body): every `_msearch` body names it too, so the
    /// engine's part of it runs.
    pub explicit: Option<String>,
    /// The sidecar's part, when the sidecar keeps the pipeline.
    pub kept: Option<SearchPipeline>,
}

impl PipelineUse {
    /// The `neural_query_enricher` defaults, if the pipeline has one.
    pub fn enricher(&self) -> Option<&Enricher> {
        self.kept.as_ref().and_then(|k| k.enricher.as_ref())
    }
}

/// A store or endpoint error as a search error: the engine's own, else unavailable.
pub(super) fn catalog(e: CatalogError) -> SearchError {
    match e {
        CatalogError::Engine(e) => e.into(),
        other => SearchError::Unavailable(other.to_string()),
    }
}

impl Searcher {
    /// The search pipelines this sidecar keeps (cluster state).
    pub fn search_pipelines(&self) -> &crate::ingest::store::DocStore {
        &self.search_pipelines
    }

    /// The ingest pipelines this sidecar keeps (cluster state).
    pub fn ingest_pipelines(&self) -> &crate::ingest::store::DocStore {
        &self.ingest_pipelines
    }

    /// The settings of the indices `pattern` names, cut to `filter` (a `filter_path`): a
    /// replica's copy, at most [`SEARCH_PIPELINES_TTL`] old; `Null` when the engine would not say.
    async fn index_settings(&self, pattern: &IndexPattern, filter: &'static str) -> Result<Value, SearchError> {
        let key = format!("{filter} {}", pattern.parts().collect::<Vec<_>>().join(","));
        if let Some((at, v)) = self.defaults.lock().expect("defaults lock").get(&key) {
            if at.elapsed() < SEARCH_PIPELINES_TTL {
                return Ok(v.clone());
            }
        }
        let path = EnginePath::root()
            .pattern(pattern)
            .api("_settings")
            .param("filter_path", filter)
            .param("ignore_unavailable", "true")
            .param("allow_no_indices", "true")
            .build();
        let r =
            self.engine.send(EngineRequest::new(axum::http::Method::GET, path).idempotent(true).passthrough()).await?;
        let v: Value = if r.status.is_success() { r.json()? } else { Value::Null };
        let mut d = self.defaults.lock().expect("defaults lock");
        if d.len() >= MAX_DEFAULTS {
            d.clear();
        }
        d.insert(key, (Instant::now(), v.clone()));
        Ok(v)
    }

    /// `index.default_pipeline` and `index.final_pipeline` of the index a write to `name`
    /// lands in.
    pub async fn write_pipelines(&self, name: &str) -> Result<(Option<String>, Option<String>), SearchError> {
        let pattern =
            IndexPattern::try_from(name).map_err(|e| crate::query::request::QueryError::Invalid(e.to_string()))?;
        let v =
            self.index_settings(&pattern, "*.settings.index.default_pipeline,*.settings.index.final_pipeline").await?;
        let first = v.as_object().and_then(|m| m.values().next().cloned()).unwrap_or(Value::Null);
        let get = |k: &str| first.pointer(&format!("/settings/index/{k}")).and_then(Value::as_str).map(String::from);
        Ok((get("default_pipeline"), get("final_pipeline")))
    }

    /// The pipeline `body` goes through on `pattern`, when the sidecar has to know it: an
    /// OpenSearch cluster without neural-search, and a body with a `hybrid` query or a `neural`
    /// query that names no model. Otherwise the default (nothing).
    pub(super) async fn pipeline_use(
        &self,
        pattern: &IndexPattern,
        query_string: &QueryString,
        body: Option<&Value>,
    ) -> Result<PipelineUse, SearchError> {
        let Some(body) = body else { return Ok(PipelineUse::default()) };
        if !self.capabilities().await?.sidecar_runs_neural() {
            return Ok(PipelineUse::default());
        }
        let unnamed = compat::neural_queries(body).is_ok_and(|n| n.iter().any(|q| q.model_id.is_none()));
        if os_hybrid::hybrid_query(body).is_none() && !unnamed {
            return Ok(PipelineUse::default());
        }
        let explicit = match (query_string.get("search_pipeline"), body.get("search_pipeline")) {
            (Some(n), _) => Some(n.to_string()),
            (None, Some(Value::String(n))) => Some(n.clone()),
            (None, Some(other)) => {
                return Err(crate::query::request::QueryError::Invalid(format!(
                    "`search_pipeline` must be a pipeline name, not `{other}`"
                ))
                .into())
            }
            (None, None) => None,
        };
        let name = match &explicit {
            Some(n) => Some(n.clone()),
            None => self.default_search_pipeline(pattern).await?,
        };
        let kept = match name.as_deref() {
            None | Some("_none") => None,
            Some(n) => match self.search_pipelines.get(n).await.map_err(catalog)? {
                Some(def) => os_hybrid::parse_pipeline(&def)?,
                None => None,
            },
        };
        Ok(PipelineUse { explicit, kept })
    }

    /// `index.search.default_pipeline` of the indices `pattern` names, when they all have the
    /// same one.
    async fn default_search_pipeline(&self, pattern: &IndexPattern) -> Result<Option<String>, SearchError> {
        if pattern.parts().next().is_none() {
            return Ok(None);
        }
        let v = self.index_settings(pattern, "*.settings.index.search.default_pipeline").await?;
        let names: Vec<Option<&str>> = v
            .as_object()
            .map(|m| {
                m.values()
                    .map(|i| i.pointer("/settings/index/search/default_pipeline").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        let first = names.first().copied().flatten();
        Ok(names.iter().all(|n| *n == first).then(|| first.map(String::from)).flatten())
    }

    /// OpenSearch's `hybrid` query, scored by the sidecar as the pipeline in `used` says (its
    /// processor's defaults when it has none): the sub-queries and the union count in one
    /// `_msearch`, with the URL's parameters ([`fused_params`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run_os_hybrid(
        &self,
        index: &str,
        mut body: Map<String, Value>,
        hq: &HybridQuery,
        used: &PipelineUse,
        query_string: &QueryString,
        started: Instant,
        times: &mut StageTimes,
    ) -> Result<Value, SearchError> {
        let params = fused_params(query_string.pairs().filter(|(k, _)| *k != "search_pipeline"))?;
        body.extend(params.body.clone());
        body.remove("search_pipeline");
        let scoring = used.kept.as_ref().and_then(|p| p.scoring.clone()).unwrap_or_default();
        scoring.check(hq.queries.len())?;
        let plan = os_hybrid::plan(&body, hq, used.explicit.as_deref(), self.limits.max_k)?;
        let mut bodies = plan.legs.clone();
        bodies.extend(plan.union.clone());
        let mut items = self.msearch_with_params(index, &params, &bodies, times).await?;
        let union = if plan.union.is_some() { items.pop() } else { None };
        Ok(times.time(SearchStage::Fusion, || {
            let mut v = os_hybrid::answer(&plan, &items, union.as_ref(), &scoring);
            v["took"] = json!(started.elapsed().as_millis() as u64);
            if params.total_as_int {
                if let Some(h) = v.get_mut("hits").and_then(Value::as_object_mut) {
                    if let Some(n) = h.get("total").and_then(|t| t.get("value")).cloned() {
                        h.insert("total".into(), n);
                    }
                }
            }
            match &params.filter_path {
                Some(spec) => filter_path(v, spec),
                None => v,
            }
        }))
    }
}
