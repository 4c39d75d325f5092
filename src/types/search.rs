//! A pipeline's `[search]` section as plain data: the BM25 fields, the fusion (RRF, linear,
//! or the engine's own) and its parameters, the live vector field and the query model.
//!
//! Pure, at the bottom of the crate: the pipeline file owns a [`SearchSpec`], the query layer
//! reads it and fusion uses [`Weight`] and [`Normalization`]; this file imports nothing of the
//! crate. It must not build engine requests or fuse hits (`query` does).

use serde::{Deserialize, Serialize};

/// A weight in `[0, 1]` (the BM25 share of a linear blend). Built with `TryFrom`, so holding one
/// means it is valid.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Weight(f64);

impl TryFrom<f64> for Weight {
    type Error = String;
    fn try_from(w: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&w) {
            Ok(Weight(w))
        } else {
            Err(format!("weight {w} must be between 0 and 1 (the BM25 share)"))
        }
    }
}

impl From<Weight> for f64 {
    fn from(w: Weight) -> f64 {
        w.0
    }
}

/// How a leg's scores are put on one scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalization {
    Minmax,
    Zscore,
    L2,
}

/// How the engine fuses, when it does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineMethod {
    /// The best the cluster offers: Elasticsearch `retriever.rrf` when licensed (8.16+), else
    /// `knn` + `query` boosts; OpenSearch `hybrid` + a normalisation search pipeline when the
    /// neural-search plugin is installed, else `bool.should`. The answer says what was used.
    #[default]
    Auto,
    /// `weight · bm25 + (1 − weight) · knn` on raw scores: Elasticsearch top-level `knn` + `query`
    /// (8.4+), OpenSearch `bool.should[match, knn]`.
    Boost,
    /// Reciprocal rank fusion in the engine: Elasticsearch `retriever.rrf` (8.16+, licence-gated),
    /// OpenSearch `hybrid` + the `score-ranker-processor` (neural-search 2.19+).
    Rrf,
    /// Normalised linear blend in the engine: OpenSearch `hybrid` + `normalization-processor`
    /// (neural-search 2.10+).
    Linear,
}

fn rank_constant_default() -> u32 {
    60
}
fn half() -> Weight {
    Weight::try_from(0.5).expect("0.5 is a weight")
}
fn minmax() -> Normalization {
    Normalization::Minmax
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RrfSpec {
    #[serde(default = "rank_constant_default")]
    pub rank_constant: u32,
    /// Ranks counted per leg; defaults to `k`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearSpec {
    /// The BM25 share, 0..=1.
    #[serde(default = "half")]
    pub weight: Weight,
    #[serde(default = "minmax")]
    pub normalization: Normalization,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSpec {
    #[serde(default)]
    pub method: EngineMethod,
    /// The BM25 share for `boost` and `linear`.
    #[serde(default = "half")]
    pub weight: Weight,
    #[serde(default = "rank_constant_default")]
    pub rank_constant: u32,
    #[serde(default = "minmax")]
    pub normalization: Normalization,
}

/// `{"rrf": {...}}`, `{"linear": {...}}` (both computed by the sidecar) or `{"engine": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FusionSpec {
    Rrf(RrfSpec),
    Linear(LinearSpec),
    Engine(EngineSpec),
}

impl Default for FusionSpec {
    fn default() -> Self {
        FusionSpec::Rrf(RrfSpec { rank_constant: rank_constant_default(), window: None })
    }
}

/// A pipeline's search defaults (`[search]` in its file).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSpec {
    /// BM25 fields, `name` or `name^boost`; default: the sources of the first `[[fields]]` entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Fusion when a request does not say (default RRF, rank constant 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fusion: Option<FusionSpec>,
    /// Rewrite a plain top-level `match` / `multi_match` on the BM25 fields in `_search` into hybrid.
    #[serde(default)]
    pub auto_hybrid: bool,
    /// The vector field the kNN leg searches, and so the model queries are embedded with
    /// (default: the first `[[fields]]` entry's). Moving it to a field filled by a new model
    /// makes that model live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<String>,
    /// The model queries are embedded with, when not the live field's own: a static int8 copy
    /// of it (`models/export.py --quantize int8-static`), whose vectors match the field's
    /// (cosine ~0.9996) at a fraction of the query's time. Checked at startup: the model's
    /// manifest must say `quantization = "int8-static"` and `quantized_from` the field's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_model: Option<String>,
}

/// `name`, `name^2`, `title.*^1.5`: what `multi_match` accepts, nothing else.
pub fn check_field(f: &str) -> Result<(), String> {
    let (name, boost) = f.split_once('^').map_or((f, None), |(n, b)| (n, Some(b)));
    let name_ok =
        !name.is_empty() && !name.starts_with('_') && name.chars().all(|c| c.is_alphanumeric() || "._-*@".contains(c));
    let boost_ok = boost.is_none_or(|b| b.parse::<f64>().is_ok_and(|x| x.is_finite() && x >= 0.0));
    if name_ok && boost_ok {
        Ok(())
    } else {
        Err(format!("`{f}` is not a field name with an optional ^boost"))
    }
}
