//! Declarative pipeline files (`pipelines/*.toml`): which index, which model, which source
//! fields become which vector fields, passage chunking, content hashing, and how vectors are
//! indexed. Parsed strictly; every error names the file, the key and the problem.
//!
//! Plain data (a `types` file): settings check pipeline files with it at load, ingest and query
//! read it. It must not build mappings (`ingest::mapping`) or requests (`query`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::name::IndexName;
use super::search::{check_field, SearchSpec};

/// Why a pipeline file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("pipeline {file}: `{key}`: {reason}")]
pub struct PipelineError {
    pub file: PathBuf,
    pub key: String,
    pub reason: String,
}

/// Vector similarity as the engines name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Similarity {
    /// Elasticsearch: `dot_product` when the model's vectors are normalised, else `cosine`.
    /// OpenSearch: `cosinesimil`.
    Auto,
    Cosine,
    DotProduct,
    L2Norm,
}

/// How the vector field is indexed (the seed's Faiss-style choices mapped onto engine options).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexType {
    /// Exact search only (no HNSW graph: brute force over indexed vectors), like Faiss `IndexFlat`.
    Flat,
    /// HNSW over float32 vectors, like Faiss `IndexHNSWFlat`.
    Hnsw,
    /// HNSW over int8 scalar-quantised vectors, like Faiss `IndexHNSWSQ` (ES `int8_hnsw`).
    Int8Hnsw,
    /// HNSW over binary-quantised vectors (ES `bbq_hnsw`, 8.16+), like Faiss binary indexes.
    BbqHnsw,
}

/// OpenSearch k-NN engine (Elasticsearch has only its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KnnEngine {
    Lucene,
    Faiss,
}

/// The text analyzer of the BM25 (text) fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Analyzer {
    /// Picked from the model's `language` (manifest): `english` for `en`, `cjk` for `zh`, `ja`,
    /// `ko`, `standard` otherwise.
    Auto,
    /// Unicode word splitting and lowercasing, no stemming or stopwords.
    Standard,
    /// Stopwords, possessives and Porter stemming (analysis-common's `english`): about +0.02
    /// nDCG@10 for BM25 on SciFact over `standard`.
    English,
    /// CJK bigrams (analysis-common), for Chinese, Japanese and Korean text.
    Cjk,
}

impl Analyzer {
    /// The analyzer `auto` stands for with a model of this language.
    pub fn for_language(language: Option<&str>) -> Analyzer {
        match language {
            Some("en") => Analyzer::English,
            Some("zh" | "ja" | "ko") => Analyzer::Cjk,
            _ => Analyzer::Standard,
        }
    }

    /// `auto` resolved with the model's language; any other choice as it is.
    pub fn resolve(self, language: Option<&str>) -> Analyzer {
        match self {
            Analyzer::Auto => Analyzer::for_language(language),
            a => a,
        }
    }

    /// The engine's analyzer name (both engines use the same ones).
    pub fn engine_name(self) -> &'static str {
        match self {
            Analyzer::Auto | Analyzer::Standard => "standard",
            Analyzer::English => "english",
            Analyzer::Cjk => "cjk",
        }
    }
}

/// One source → vector mapping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Source fields; several are joined with a newline before embedding.
    pub source: Vec<String>,
    /// The vector field written next to them.
    pub vector: String,
    /// The model of this vector field; default: the pipeline's `model`. Two entries with the
    /// same sources and two models are how an index changes model without downtime: the new
    /// field fills while queries use the old one (`[search] vector`), then the search moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Passage chunking for long documents (by the model's own tokens).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkingSpec {
    pub max_tokens: usize,
    #[serde(default)]
    pub overlap: usize,
    /// The nested field holding `{text, vector}` passages.
    #[serde(default = "default_passages")]
    pub passages_field: String,
}

fn default_passages() -> String {
    "passages".into()
}

/// Vector index options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorIndexSpec {
    #[serde(default = "default_similarity")]
    pub similarity: Similarity,
    #[serde(default = "default_index_type")]
    pub index_type: IndexType,
    #[serde(default = "default_m")]
    pub m: u32,
    #[serde(default = "default_ef")]
    pub ef_construction: u32,
    /// OpenSearch only.
    #[serde(default = "default_engine")]
    pub engine: KnnEngine,
}

fn default_similarity() -> Similarity {
    Similarity::Auto
}
fn default_index_type() -> IndexType {
    IndexType::Hnsw
}
fn default_m() -> u32 {
    16
}
fn default_ef() -> u32 {
    100
}
fn default_engine() -> KnnEngine {
    KnnEngine::Lucene
}

impl Default for VectorIndexSpec {
    fn default() -> Self {
        VectorIndexSpec {
            similarity: default_similarity(),
            index_type: default_index_type(),
            m: default_m(),
            ef_construction: default_ef(),
            engine: default_engine(),
        }
    }
}

/// A pipeline file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    pub name: String,
    /// Target index or alias.
    pub index: String,
    /// A model name from `encoder.models`.
    pub model: String,
    /// The analyzer of every text field (source fields and passages' text) unless
    /// `field_analyzers` names another for a field.
    #[serde(default = "default_analyzer")]
    pub analyzer: Analyzer,
    /// Per-field analyzers, e.g. `{ title = "standard" }`; keys are source fields.
    #[serde(default)]
    pub field_analyzers: BTreeMap<String, Analyzer>,
    pub fields: Vec<FieldSpec>,
    #[serde(default)]
    pub chunking: Option<ChunkingSpec>,
    /// Field storing a hash of the embedded text, to skip re-embedding unchanged documents.
    #[serde(default)]
    pub hash_field: Option<String>,
    /// An engine ingest pipeline to pass through (`?pipeline=`).
    #[serde(default)]
    pub engine_pipeline: Option<String>,
    #[serde(default)]
    pub vector_index: VectorIndexSpec,
    #[serde(default = "one")]
    pub shards: u32,
    #[serde(default)]
    pub replicas: u32,
    /// Search defaults: BM25 fields, fusion, automatic hybrid rewriting in `_search`.
    #[serde(default)]
    pub search: SearchSpec,
    /// Whether clients may send values for the fields the sidecar computes (vectors, passages,
    /// the content hash). Off: such a write is refused, so every stored vector is the model's
    /// vector of the stored text.
    #[serde(default)]
    pub accept_client_vectors: bool,
    /// Set when the pipeline stands behind a `semantic_text` field an app mapped through
    /// Elastic's API: its `semantic`, `match` and `knn` queries are served on the passages, and
    /// the vectors and passages stay out of `_source` (the app reads back what it wrote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic_text: Option<SemanticTextSpec>,
}

/// The `semantic_text` field a pipeline stands behind, as the app mapped it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticTextSpec {
    /// The field's name (the first source of the pipeline's one `[[fields]]` entry).
    pub field: String,
    /// The inference id the mapping named (an endpoint or a model of the sidecar).
    pub inference_id: String,
    /// Elastic's `chunking_settings`, as given (the pipeline's `[chunking]` is derived from them).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub chunking_settings: serde_json::Value,
}

impl Pipeline {
    /// The fields the sidecar writes itself: each vector field, the passages field, the hash.
    pub fn computed_fields(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.fields.iter().map(|f| f.vector.as_str()).collect();
        out.extend(self.chunking.as_ref().map(|c| c.passages_field.as_str()));
        out.extend(self.hash_field.as_deref());
        out
    }
}

fn default_analyzer() -> Analyzer {
    Analyzer::Auto
}
fn one() -> u32 {
    1
}

fn check_field_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.starts_with('_') || name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        return Err(format!("`{name}` is not a usable field name (empty, leading _ or ., or empty path segment)"));
    }
    Ok(())
}

impl Pipeline {
    /// Reads and validates one pipeline file.
    pub fn load(path: &Path) -> Result<Pipeline, PipelineError> {
        let err = |key: &str, reason: String| PipelineError { file: path.to_path_buf(), key: key.into(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| err("(file)", e.to_string()))?;
        let p: Pipeline = toml::from_str(&text).map_err(|e| {
            let key = e.span().map(|s| text[s].lines().next().unwrap_or("").trim().to_string()).unwrap_or_default();
            err(if key.is_empty() { "(toml)" } else { &key }, e.message().to_string())
        })?;
        p.validate().map_err(|(key, reason)| err(&key, reason))?;
        Ok(p)
    }

    /// A pipeline sent as JSON (the pipeline API, the store): the same keys and checks as a
    /// file; `name` comes from the caller (the path) and, when the body has one, must match.
    pub fn from_json(name: &str, body: &serde_json::Value) -> Result<Pipeline, PipelineError> {
        let err = |key: &str, reason: String| PipelineError { file: PathBuf::from(name), key: key.into(), reason };
        let mut body = body.clone();
        let Some(map) = body.as_object_mut() else {
            return Err(err("(body)", "a pipeline is a JSON object".into()));
        };
        match map.get("name") {
            None => {
                map.insert("name".into(), serde_json::Value::from(name));
            }
            Some(serde_json::Value::String(n)) if n == name => {}
            Some(other) => {
                return Err(err("name", format!("{other} differs from the pipeline's name `{name}` in the path")))
            }
        }
        let p: Pipeline = serde_path_to_error::deserialize(&body).map_err(|e| {
            let key = e.path().to_string();
            err(if key == "." { "(body)" } else { &key }, e.inner().to_string())
        })?;
        p.validate().map_err(|(key, reason)| err(&key, reason))?;
        Ok(p)
    }

    /// Loads every `*.toml` in a folder, sorted by file name.
    pub fn load_dir(dir: &Path) -> Result<Vec<Pipeline>, PipelineError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| PipelineError { file: dir.to_path_buf(), key: "(folder)".into(), reason: e.to_string() })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        files.iter().map(|f| Pipeline::load(f)).collect()
    }

    /// Checks what types cannot; returns (key, reason) of the first problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.check_names()?;
        let vectors = self.check_fields()?;
        self.check_search()?;
        self.check_analyzers()?;
        self.check_chunking(&vectors)?;
        self.check_layout()?;
        self.check_semantic_text()?;
        for (i, f) in self.search.fields.iter().enumerate() {
            check_field(f).map_err(|e| (format!("search.fields[{i}]"), e))?;
        }
        if self.shards == 0 {
            return Err(("shards".into(), "must be at least 1".into()));
        }
        Ok(())
    }

    /// `name`, `index`, `model` and that `[[fields]]` is not empty.
    fn check_names(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, r: String| Err((k.to_string(), r));
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)) {
            return bad("name", format!("`{}` must be ASCII letters, digits, - or _", self.name));
        }
        if let Err(e) = IndexName::try_from(self.index.as_str()) {
            return bad("index", e.to_string());
        }
        if self.model.is_empty() {
            return bad("model", "name the model (from encoder.models) whose vectors this index holds".into());
        }
        if self.fields.is_empty() {
            return bad("fields", "at least one [[fields]] entry is required".into());
        }
        Ok(())
    }

    /// Every `[[fields]]` entry; returns the vector fields they write.
    fn check_fields(&self) -> Result<std::collections::BTreeSet<String>, (String, String)> {
        let bad = |k: &str, r: String| Err((k.to_string(), r));
        let mut vectors = std::collections::BTreeSet::new();
        for (i, f) in self.fields.iter().enumerate() {
            if f.source.is_empty() {
                return bad(&format!("fields[{i}].source"), "list at least one source field".into());
            }
            for s in &f.source {
                if let Err(r) = check_field_name(s) {
                    return bad(&format!("fields[{i}].source"), r);
                }
            }
            if let Err(r) = check_field_name(&f.vector) {
                return bad(&format!("fields[{i}].vector"), r);
            }
            if f.source.contains(&f.vector) {
                return bad(&format!("fields[{i}].vector"), format!("`{}` is also a source field", f.vector));
            }
            if !vectors.insert(f.vector.clone()) {
                return bad(&format!("fields[{i}].vector"), format!("`{}` is written by two entries", f.vector));
            }
            if f.model.as_deref().is_some_and(str::is_empty) {
                return bad(
                    &format!("fields[{i}].model"),
                    "name a model, or leave the key out for the pipeline's".into(),
                );
            }
        }
        Ok(vectors)
    }

    /// `[search]`: the live vector field and the query model.
    fn check_search(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, r: String| Err((k.to_string(), r));
        if let Some(v) = &self.search.vector {
            let Some(i) = self.fields.iter().position(|f| &f.vector == v) else {
                return bad("search.vector", format!("`{v}` is not the vector of a [[fields]] entry"));
            };
            if self.chunking.is_some() && self.field_model(i) != self.model {
                return bad(
                    "search.vector",
                    format!(
                        "`{v}` holds model `{}` but the passages of [chunking] are embedded with `{}`, which the kNN leg searches: \
                         change the model of a chunked pipeline with a new index (reindex --alias)",
                        self.field_model(i),
                        self.model
                    ),
                );
            }
        }
        if self.search.query_model.as_deref().is_some_and(str::is_empty) {
            return bad(
                "search.query_model",
                "name a static int8 copy of the live field's model, or leave the key out".into(),
            );
        }
        Ok(())
    }

    /// `field_analyzers` name source fields.
    fn check_analyzers(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, r: String| Err((k.to_string(), r));
        for field in self.field_analyzers.keys() {
            if !self.fields.iter().any(|f| f.source.contains(field)) {
                return bad(
                    &format!("field_analyzers.{field}"),
                    format!("`{field}` is not a source field of [[fields]]"),
                );
            }
        }
        Ok(())
    }

    /// `[chunking]`, given the vector fields the entries write.
    fn check_chunking(&self, vectors: &std::collections::BTreeSet<String>) -> Result<(), (String, String)> {
        let bad = |k: &str, r: String| Err((k.to_string(), r));
        if let Some(c) = &self.chunking {
            if c.max_tokens < 8 {
                return bad("chunking.max_tokens", "must be at least 8".into());
            }
            if c.overlap >= c.max_tokens {
                return bad(
                    "chunking.overlap",
                    format!("{} must be smaller than max_tokens ({})", c.overlap, c.max_tokens),
                );
            }
            if let Err(r) = check_field_name(&c.passages_field) {
                return bad("chunking.passages_field", r);
            }
            if vectors.contains(&c.passages_field) {
                return bad("chunking.passages_field", format!("`{}` is also a vector field", c.passages_field));
            }
        }
        Ok(())
    }

    /// `hash_field` and the HNSW parameters of `[vector_index]`.
    fn check_layout(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, r: String| Err((k.to_string(), r));
        if let Some(h) = &self.hash_field {
            if let Err(r) = check_field_name(h) {
                return bad("hash_field", r);
            }
        }
        let v = &self.vector_index;
        if !(2..=512).contains(&v.m) {
            return bad("vector_index.m", format!("{} must be between 2 and 512", v.m));
        }
        if !(2..=4096).contains(&v.ef_construction) {
            return bad("vector_index.ef_construction", format!("{} must be between 2 and 4096", v.ef_construction));
        }
        Ok(())
    }

    /// `semantic_text`: one `[[fields]]` entry whose first source is the field, and `[chunking]`.
    fn check_semantic_text(&self) -> Result<(), (String, String)> {
        let Some(st) = &self.semantic_text else { return Ok(()) };
        if self.fields.len() != 1 || self.fields[0].source.first() != Some(&st.field) {
            return Err((
                "semantic_text.field".into(),
                format!("`{}` must be the first source of the pipeline's one [[fields]] entry", st.field),
            ));
        }
        if self.chunking.is_none() {
            return Err(("semantic_text".into(), "a semantic_text pipeline needs [chunking]".into()));
        }
        Ok(())
    }

    /// The fields a `semantic_text` pipeline keeps out of `_source`: the vector and the passages.
    pub fn hidden_fields(&self) -> Vec<&str> {
        match (&self.semantic_text, &self.chunking) {
            (Some(_), Some(c)) => vec![self.fields[0].vector.as_str(), c.passages_field.as_str()],
            _ => Vec::new(),
        }
    }

    /// The model of `fields[i]`.
    pub fn field_model(&self, i: usize) -> &str {
        self.fields.get(i).and_then(|f| f.model.as_deref()).unwrap_or(&self.model)
    }

    /// Every model the pipeline embeds with (documents and queries), its `model` first, each once.
    pub fn models(&self) -> Vec<&str> {
        let mut out = vec![self.model.as_str()];
        for m in (0..self.fields.len()).map(|i| self.field_model(i)).chain([self.query_model()]) {
            if !out.contains(&m) {
                out.push(m);
            }
        }
        out
    }

    /// The model queries are embedded with: `[search] query_model`, else the live field's.
    pub fn query_model(&self) -> &str {
        self.search.query_model.as_deref().unwrap_or_else(|| self.field_model(self.live_field()))
    }

    /// The `[[fields]]` entry queries search (`[search] vector`, default the first).
    pub fn live_field(&self) -> usize {
        self.search.vector.as_ref().and_then(|v| self.fields.iter().position(|f| &f.vector == v)).unwrap_or(0)
    }

    /// The similarity to map, resolving `auto` from the model's normalisation.
    pub fn similarity(&self, normalized: bool) -> Similarity {
        match self.vector_index.similarity {
            Similarity::Auto if normalized => Similarity::DotProduct,
            Similarity::Auto => Similarity::Cosine,
            s => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const GOOD: &str = r#"
name = "docs"
index = "docs-v1"
model = "all-MiniLM-L6-v2"

[[fields]]
source = ["title", "text"]
vector = "text_vector"
"#;

    #[test]
    fn a_minimal_pipeline_gets_defaults() {
        let tmp = tempfile::tempdir().unwrap();
        let p = Pipeline::load(&write(tmp.path(), "p.toml", GOOD)).unwrap();
        assert_eq!(p.vector_index, VectorIndexSpec::default());
        assert_eq!(p.analyzer, Analyzer::Auto);
        assert_eq!(p.analyzer.resolve(Some("en")), Analyzer::English);
        assert_eq!(p.analyzer.resolve(Some("zh")), Analyzer::Cjk);
        assert_eq!(p.analyzer.resolve(None), Analyzer::Standard);
        assert_eq!(Analyzer::Standard.resolve(Some("zh")), Analyzer::Standard, "a chosen analyzer stays");
        assert_eq!(p.similarity(true), Similarity::DotProduct);
        assert_eq!(p.similarity(false), Similarity::Cosine);
    }

    const NEW_FIELD: &str =
        "\n[[fields]]\nsource = [\"title\", \"text\"]\nvector = \"v2\"\nmodel = \"bge-small-en-v1.5\"\n";

    #[test]
    fn a_second_vector_field_carries_its_own_model_and_search_picks_the_live_one() {
        let tmp = tempfile::tempdir().unwrap();
        let p = Pipeline::load(&write(tmp.path(), "p.toml", &format!("{GOOD}{NEW_FIELD}"))).unwrap();
        assert_eq!(p.models(), ["all-MiniLM-L6-v2", "bge-small-en-v1.5"]);
        assert_eq!((p.field_model(0), p.field_model(1)), ("all-MiniLM-L6-v2", "bge-small-en-v1.5"));
        assert_eq!(p.live_field(), 0, "queries stay on the first field until [search] vector moves");
        let p =
            Pipeline::load(&write(tmp.path(), "p.toml", &format!("{GOOD}{NEW_FIELD}\n[search]\nvector = \"v2\"\n")))
                .unwrap();
        assert_eq!(p.live_field(), 1);
        assert_eq!(p.query_model(), "bge-small-en-v1.5", "queries follow the live field's model");
        let p = Pipeline::load(&write(
            tmp.path(),
            "p.toml",
            &format!("{GOOD}\n[search]\nquery_model = \"all-MiniLM-L6-v2-int8-static\"\n"),
        ))
        .unwrap();
        assert_eq!(p.query_model(), "all-MiniLM-L6-v2-int8-static");
        assert_eq!(p.models(), ["all-MiniLM-L6-v2", "all-MiniLM-L6-v2-int8-static"], "the query model is loaded too");
    }

    #[test]
    fn json_pipelines_get_the_same_checks_and_name_the_key() {
        let good =
            serde_json::json!({"index": "docs-v1", "model": "m", "fields": [{"source": ["text"], "vector": "v"}]});
        let p = Pipeline::from_json("docs", &good).unwrap();
        assert_eq!((p.name.as_str(), p.shards, p.vector_index.m), ("docs", 1, 16), "defaults as in a file");
        let back = Pipeline::from_json("docs", &serde_json::to_value(&p).unwrap()).unwrap();
        assert_eq!(back, p, "what is stored reads back the same");
        let cases = [
            (
                serde_json::json!({"index": "docs", "model": "m", "fields": [{"source": ["t"], "vector": "t"}]}),
                "fields[0].vector",
            ),
            (serde_json::json!({"index": "docs", "modell": "m", "fields": []}), "modell"),
            (
                serde_json::json!({"index": "docs", "model": "m", "fields": [{"source": ["t"], "vector": "v"}], "vector_index": {"m": "x"}}),
                "vector_index.m",
            ),
            (serde_json::json!({"name": "other", "index": "docs", "model": "m", "fields": []}), "`name`"),
            (serde_json::json!(["not", "an", "object"]), "JSON object"),
        ];
        for (body, needle) in cases {
            let e = Pipeline::from_json("docs", &body).unwrap_err().to_string();
            assert!(e.starts_with("pipeline docs: ") && e.contains(needle), "`{e}` should name `{needle}`");
        }
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_problem() {
        let tmp = tempfile::tempdir().unwrap();
        let cases = [
            (GOOD.replace("model = ", "modell = "), "modell"),
            (GOOD.replace("docs-v1", "Docs"), "index"),
            (GOOD.replace("vector = \"text_vector\"", "vector = \"title\""), "fields[0].vector"),
            (format!("{GOOD}\n[chunking]\nmax_tokens = 100\noverlap = 100\n"), "chunking.overlap"),
            (format!("{GOOD}\n[vector_index]\nindex_type = \"ivf\"\n"), "ivf"),
            (format!("{GOOD}\n[vector_index]\nm = 1\n"), "vector_index.m"),
            (GOOD.replace("source = [\"title\", \"text\"]", "source = []"), "fields[0].source"),
            (format!("{GOOD}\n[search]\nvector = \"nope\"\n"), "search.vector"),
            (format!("{GOOD}{NEW_FIELD}\n[chunking]\nmax_tokens = 100\n\n[search]\nvector = \"v2\"\n"), "new index"),
            (format!("{GOOD}[[fields]]\nsource = [\"text\"]\nvector = \"v2\"\nmodel = \"\"\n"), "fields[1].model"),
            (format!("{GOOD}\n[search]\nquery_model = \"\"\n"), "search.query_model"),
        ];
        for (text, needle) in cases {
            let path = write(tmp.path(), "bad.toml", &text);
            let e = Pipeline::load(&path).unwrap_err().to_string();
            assert!(e.contains("bad.toml") && e.contains(needle), "`{e}` should name bad.toml and `{needle}`");
        }
    }
}
