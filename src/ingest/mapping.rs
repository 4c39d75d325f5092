//! Index mappings for a pipeline, assembled from the templates in `mappings/` (embedded at
//! compile time, so the binary needs no files at run time), and the comparison of an existing
//! index's mapping with what a pipeline needs. Pure: JSON in, JSON or differences out.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::engine::{Dialect, EngineInfo, Version};
use crate::types::pipeline::{Analyzer, IndexType, KnnEngine, Pipeline, Similarity, VectorIndexSpec};

/// The template files, by name.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("elasticsearch.json", include_str!("../../mappings/elasticsearch.json")),
    ("opensearch.json", include_str!("../../mappings/opensearch.json")),
];

/// What a mapping needs to know about the model.
#[derive(Clone, Copy, Debug)]
pub struct ModelShape<'a> {
    pub dims: usize,
    pub normalized: bool,
    /// The manifest's `language`, for `analyzer = "auto"`.
    pub language: Option<&'a str>,
}

impl<'a> ModelShape<'a> {
    pub fn of(m: &'a crate::encoder::manifest::Manifest) -> ModelShape<'a> {
        ModelShape { dims: m.output_dims(), normalized: m.normalize, language: m.language.as_deref() }
    }
}

/// Why no mapping could be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MappingError {
    #[error("template {0}: {1}")]
    Template(String, String),
    #[error("{0}")]
    Unsupported(String),
}

fn template(dialect: Dialect) -> Result<Value, MappingError> {
    let name = match dialect {
        Dialect::Elasticsearch => "elasticsearch.json",
        Dialect::Opensearch => "opensearch.json",
    };
    let text = TEMPLATES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).unwrap_or("{}");
    serde_json::from_str(text).map_err(|e| MappingError::Template(name.into(), e.to_string()))
}

/// Replaces every string value `${name}` by `vars[name]` (any JSON value).
pub fn render(t: &Value, vars: &BTreeMap<&str, Value>) -> Result<Value, String> {
    Ok(match t {
        Value::String(s) if s.starts_with("${") && s.ends_with('}') => {
            let key = &s[2..s.len() - 1];
            vars.get(key).cloned().ok_or_else(|| format!("unknown placeholder `{s}`"))?
        }
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, v) in o {
                if !k.starts_with('_') {
                    out.insert(k.clone(), render(v, vars)?);
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| render(v, vars)).collect::<Result<_, _>>()?),
        other => other.clone(),
    })
}

fn part(t: &Value, name: &str, dialect: Dialect) -> Result<Value, MappingError> {
    t.get(name).cloned().ok_or_else(|| MappingError::Template(format!("{dialect:?}"), format!("no `{name}` part")))
}

/// Puts `value` at a dotted field path inside a `properties` object.
fn insert_path(props: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            props.insert(path.to_string(), value);
        }
        Some((head, rest)) => {
            let entry = props.entry(head.to_string()).or_insert_with(|| json!({"properties": {}}));
            if let Some(inner) = entry.get_mut("properties").and_then(Value::as_object_mut) {
                insert_path(inner, rest, value);
            }
        }
    }
}

fn es_similarity(s: Similarity) -> &'static str {
    match s {
        Similarity::Cosine | Similarity::Auto => "cosine",
        Similarity::DotProduct => "dot_product",
        Similarity::L2Norm => "l2_norm",
    }
}

fn os_space_type(s: Similarity) -> &'static str {
    match s {
        Similarity::Cosine | Similarity::Auto => "cosinesimil",
        Similarity::DotProduct => "innerproduct",
        Similarity::L2Norm => "l2",
    }
}

/// The create-index body (`settings` + `mappings`) for `pipeline` on the cluster `info`, all of
/// whose vector fields hold `model` (the pipeline's).
pub fn index_body(info: &EngineInfo, p: &Pipeline, model: ModelShape) -> Result<Value, MappingError> {
    index_body_with(info, p, model, &|_| None)
}

/// [`index_body`] for a pipeline whose `[[fields]]` may name other models: `other` gives the
/// vector shape of each of them: `(dims, normalized)`.
pub fn index_body_with(
    info: &EngineInfo,
    p: &Pipeline,
    model: ModelShape,
    other: &dyn Fn(&str) -> Option<(usize, bool)>,
) -> Result<Value, MappingError> {
    let t = Template { parts: template(info.dialect)?, dialect: info.dialect };
    let v = &p.vector_index;
    let similarity = p.similarity(model.normalized);
    let analyzer = p.analyzer.resolve(model.language);
    let index_type = index_type_name(info, v)?;
    let mut vars: BTreeMap<&str, Value> = BTreeMap::new();
    vars.insert("shards", json!(p.shards));
    vars.insert("replicas", json!(p.replicas));
    vars.insert("analyzer", json!(analyzer.engine_name()));
    vars.insert("dims", json!(model.dims));
    vars.insert("similarity", json!(es_similarity(similarity)));
    // OpenSearch keeps cosinesimil for `auto`: the same ranking as innerproduct on unit vectors,
    // with scores in [0, 1] whatever the vectors, and the default the k-NN docs lead with.
    let os_similarity = match v.similarity {
        Similarity::Auto => Similarity::Cosine,
        s => s,
    };
    vars.insert("space_type", json!(os_space_type(os_similarity)));
    vars.insert("index_type", json!(index_type));
    vars.insert("m", json!(v.m));
    vars.insert("ef_construction", json!(v.ef_construction));
    vars.insert("knn_engine", json!(if v.engine == KnnEngine::Faiss { "faiss" } else { "lucene" }));
    let text_field = t.render("text_field", &vars)?;
    let vector_part = match (info.dialect, v.index_type) {
        (Dialect::Elasticsearch, IndexType::Flat) => "vector_field_flat",
        (Dialect::Opensearch, IndexType::Int8Hnsw) => "vector_field_int8",
        _ => "vector_field",
    };
    let vector_field = t.render(vector_part, &vars)?;
    vars.insert("text_field", text_field.clone());
    vars.insert("vector_field", vector_field.clone());

    let parts = FieldParts { vars: &vars, text_field: &text_field, vector_field: &vector_field, vector_part };
    let mut props = properties(p, model, analyzer, &parts, other, &t)?;
    if let Some(h) = &p.hash_field {
        insert_path(&mut props, h, t.render("hash_field", &vars)?);
    }
    if let Some(c) = &p.chunking {
        let mut passages = t.render("passages_field", &vars)?;
        if p.semantic_text.is_some() {
            // kept out of `_source`: the best passages are read from the stored text
            passages["properties"]["text"]["store"] = json!(true);
        }
        insert_path(&mut props, &c.passages_field, passages);
    }
    let mut index_settings = t.render("index_settings", &vars)?;
    if info.dialect == Dialect::Elasticsearch && info.version >= Version::new(9, 2, 0) {
        // 9.2+ leaves vectors out of `_source` by default; the sidecar keeps them there, as on
        // 8.x and OpenSearch: clients read the vectors they wrote, and the content-hash skip
        // reuses stored vectors (without them it would embed every unchanged document again)
        if let Some(m) = index_settings.as_object_mut() {
            m.insert("mapping".into(), json!({"exclude_source_vectors": false}));
        }
    }
    let mut mappings = json!({"properties": props});
    let hidden = p.hidden_fields();
    if !hidden.is_empty() {
        mappings["_source"] = json!({"excludes": hidden});
    }
    Ok(json!({
        "settings": {"index": index_settings},
        "mappings": mappings,
    }))
}

/// The engine's name for the pipeline's `vector_index.index_type`, or why this cluster cannot
/// hold it.
fn index_type_name(info: &EngineInfo, v: &VectorIndexSpec) -> Result<&'static str, MappingError> {
    let name = match (info.dialect, v.index_type) {
        (Dialect::Elasticsearch, IndexType::Int8Hnsw) if info.version < Version::new(8, 12, 0) => {
            return Err(MappingError::Unsupported(format!(
                "int8_hnsw needs Elasticsearch 8.12+, the cluster is {}",
                info.version
            )))
        }
        (Dialect::Elasticsearch, IndexType::Flat) if info.version < Version::new(8, 13, 0) => {
            return Err(MappingError::Unsupported(format!(
                "flat (exact kNN over indexed vectors) needs Elasticsearch 8.13+, the cluster is {}",
                info.version
            )))
        }
        (Dialect::Elasticsearch, IndexType::BbqHnsw) if info.version < Version::new(8, 16, 0) => {
            return Err(MappingError::Unsupported(format!(
                "bbq_hnsw needs Elasticsearch 8.16+, the cluster is {}",
                info.version
            )))
        }
        (Dialect::Opensearch, IndexType::Flat | IndexType::BbqHnsw) => {
            return Err(MappingError::Unsupported(format!(
                "vector_index.index_type {:?} is not available on OpenSearch: use hnsw or int8_hnsw",
                v.index_type
            )))
        }
        (Dialect::Opensearch, IndexType::Int8Hnsw) if v.engine == KnnEngine::Faiss => {
            return Err(MappingError::Unsupported("int8_hnsw on OpenSearch uses the lucene engine's sq encoder".into()))
        }
        (_, IndexType::Flat) => "flat",
        (_, IndexType::Hnsw) => "hnsw",
        (_, IndexType::Int8Hnsw) => "int8_hnsw",
        (_, IndexType::BbqHnsw) => "bbq_hnsw",
    };
    if info.dialect == Dialect::Elasticsearch && v.engine == KnnEngine::Faiss {
        return Err(MappingError::Unsupported("vector_index.engine faiss is an OpenSearch option".into()));
    }
    Ok(name)
}

/// The mapping's field parts rendered once for the pipeline's own model and analyzer.
struct FieldParts<'a> {
    vars: &'a BTreeMap<&'a str, Value>,
    text_field: &'a Value,
    vector_field: &'a Value,
    /// The template part vector fields are rendered from.
    vector_part: &'a str,
}

/// A dialect's mapping template, whose named parts render with a pipeline's variables.
struct Template {
    parts: Value,
    dialect: Dialect,
}

impl Template {
    fn render(&self, name: &str, vars: &BTreeMap<&str, Value>) -> Result<Value, MappingError> {
        render(&part(&self.parts, name, self.dialect)?, vars).map_err(|e| MappingError::Template(name.into(), e))
    }
}

/// The `properties` of every `[[fields]]` entry: each source a text field (its own analyzer
/// where `field_analyzers` says so), each vector field sized for the model it holds.
fn properties(
    p: &Pipeline,
    model: ModelShape,
    analyzer: Analyzer,
    parts: &FieldParts,
    other: &dyn Fn(&str) -> Option<(usize, bool)>,
    t: &Template,
) -> Result<Map<String, Value>, MappingError> {
    let mut props = Map::new();
    for (i, f) in p.fields.iter().enumerate() {
        let field_model = p.field_model(i);
        let vector_field = if field_model == p.model {
            parts.vector_field.clone()
        } else {
            let (dims, normalized) = other(field_model).ok_or_else(|| {
                MappingError::Unsupported(format!(
                    "fields[{i}] holds model `{field_model}`, whose dims are not known here: add it to encoder.models"
                ))
            })?;
            let mut own = parts.vars.clone();
            own.insert("dims", json!(dims));
            own.insert("similarity", json!(es_similarity(p.similarity(normalized))));
            t.render(parts.vector_part, &own)?
        };
        for s in &f.source {
            let field = match p.field_analyzers.get(s).map(|a| a.resolve(model.language)) {
                Some(a) if a != analyzer => {
                    let mut own = parts.vars.clone();
                    own.insert("analyzer", json!(a.engine_name()));
                    t.render("text_field", &own)?
                }
                _ => parts.text_field.clone(),
            };
            insert_path(&mut props, s, field);
        }
        insert_path(&mut props, &f.vector, vector_field);
    }
    Ok(props)
}

/// Looks up a dotted field in a `properties` tree.
fn field<'a>(props: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = props;
    let mut parts = path.split('.').peekable();
    while let Some(p) = parts.next() {
        let f = cur.get(p)?;
        if parts.peek().is_none() {
            return Some(f);
        }
        cur = f.get("properties")?;
    }
    None
}

/// Where an index's mapping records which model wrote each vector field:
/// `_meta.semantic_sidecar.vector_models.{field}` (passages as `{passages_field}.vector`).
pub const META_KEY: &str = "semantic_sidecar";

/// The model of each vector field `p` writes (its passages' vectors as `{passages_field}.vector`).
pub fn vector_models(p: &Pipeline) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> =
        p.fields.iter().enumerate().map(|(i, f)| (f.vector.clone(), p.field_model(i).to_string())).collect();
    if let Some(c) = &p.chunking {
        out.insert(format!("{}.vector", c.passages_field), p.model.clone());
    }
    out
}

/// `body` (an index body) with `_meta` recording the models of `p`'s vector fields.
pub fn with_vector_models(mut body: Value, p: &Pipeline) -> Value {
    if let Some(m) = body.get_mut("mappings").and_then(Value::as_object_mut) {
        m.insert("_meta".into(), json!({ META_KEY: {"vector_models": vector_models(p)} }));
    }
    body
}

/// The vector models an index's mapping records (`GET /{index}/_mapping`: index → its answer), per
/// index: field → model.
pub fn recorded_models(mapping_answer: &Value) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (index, def) in mapping_answer.as_object().into_iter().flatten() {
        let models = def
            .pointer(&format!("/mappings/_meta/{META_KEY}/vector_models"))
            .and_then(Value::as_object)
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
            .unwrap_or_default();
        out.insert(index.clone(), models);
    }
    out
}

/// The differences between an index's mapping (`GET /{index}/_mapping`, the inner `mappings`
/// object) and what `expected` (from [`index_body`]) needs, each explained in one sentence.
pub fn compare(actual_mappings: &Value, expected_body: &Value) -> Vec<String> {
    let empty = json!({});
    let actual = actual_mappings.get("properties").unwrap_or(&empty);
    let expected = &expected_body["mappings"]["properties"];
    let mut diffs = Vec::new();
    let mut paths = Vec::new();
    collect_paths(expected, "", &mut paths);
    for (path, want) in paths {
        let Some(got) = field(actual, &path) else {
            diffs.push(format!(
                "field `{path}` is missing (the pipeline needs a {} field)",
                want["type"].as_str().unwrap_or("?")
            ));
            continue;
        };
        let (wt, gt) = (want["type"].as_str().unwrap_or("object"), got["type"].as_str().unwrap_or("object"));
        if wt != gt {
            diffs.push(format!("field `{path}` is `{gt}`, the pipeline needs `{wt}`"));
            continue;
        }
        for (key, what) in [("dims", "dims"), ("dimension", "dimension"), ("similarity", "similarity")] {
            if want.get(key).is_some() && want.get(key) != got.get(key) {
                diffs.push(format!(
                    "field `{path}` has {what} {}, the pipeline needs {}",
                    got.get(key).map_or("(default)".to_string(), Value::to_string),
                    want[key]
                ));
            }
        }
        if wt == "text" {
            // the engines leave `analyzer` out of the mapping when it is the default
            let (wa, ga) =
                (want["analyzer"].as_str().unwrap_or("standard"), got["analyzer"].as_str().unwrap_or("standard"));
            if wa != ga {
                diffs.push(format!(
                    "field `{path}` is analyzed with `{ga}`, the pipeline asks for `{wa}` (BM25 ranks with the analyzer the index was created with: reindex to change it)"
                ));
            }
        }
        for (pointer, what) in [("/method/space_type", "space_type"), ("/index_options/type", "index_options.type")] {
            let (ws, gs) = (want.pointer(pointer), got.pointer(pointer));
            if ws.is_some() && ws != gs {
                diffs.push(format!(
                    "field `{path}` has {what} {}, the pipeline needs {}",
                    gs.map_or("(default)".to_string(), Value::to_string),
                    ws.unwrap_or(&Value::Null)
                ));
            }
        }
    }
    diffs
}

fn collect_paths(props: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    let Some(obj) = props.as_object() else { return };
    for (k, v) in obj {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        if v.get("type").is_some() {
            out.push((path.clone(), v.clone()));
            if v["type"] == "nested" {
                if let Some(inner) = v.get("properties") {
                    collect_paths(inner, &path, out);
                }
            }
        } else if let Some(inner) = v.get("properties") {
            collect_paths(inner, &path, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mapping_records_which_model_writes_each_vector_field() {
        let p: Pipeline = toml::from_str(
            "name = 'p'\nindex = 'i'\nmodel = 'm1'\n[[fields]]\nsource = ['t']\nvector = 'v'\n\
             [[fields]]\nsource = ['t']\nvector = 'v2'\nmodel = 'm2'\n[chunking]\nmax_tokens = 64\n",
        )
        .unwrap();
        let want: BTreeMap<String, String> = [("v", "m1"), ("v2", "m2"), ("passages.vector", "m1")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(vector_models(&p), want);
        let body = with_vector_models(json!({"settings": {}, "mappings": {"properties": {}}}), &p);
        let answer = json!({"i-1": {"mappings": body["mappings"].clone()}, "i-0": {"mappings": {"properties": {}}}});
        let recorded = recorded_models(&answer);
        assert_eq!(recorded["i-1"], want);
        assert!(recorded["i-0"].is_empty(), "an index made before the record says nothing");
    }
    use crate::engine::dialect::detect;

    #[test]
    fn every_template_parses_and_renders_without_unknown_placeholders() {
        let vars: BTreeMap<&str, Value> = [
            "shards",
            "replicas",
            "analyzer",
            "dims",
            "similarity",
            "space_type",
            "index_type",
            "m",
            "ef_construction",
            "knn_engine",
            "text_field",
            "vector_field",
        ]
        .into_iter()
        .map(|k| (k, json!(1)))
        .collect();
        for (name, text) in TEMPLATES {
            let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            render(&v, &vars).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        // and the folder holds nothing the binary does not embed
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
        let mut files: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
        files.sort();
        let embedded: Vec<String> = TEMPLATES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(files, embedded);
    }

    #[test]
    fn elasticsearch_9_2_and_later_keep_vectors_in_source() {
        let p: Pipeline =
            toml::from_str("name='d'\nindex='d'\nmodel='m'\n[[fields]]\nsource=['text']\nvector='v'\n").unwrap();
        let shape = ModelShape { dims: 384, normalized: true, language: None };
        for (version, kept) in [("8.19.21", None), ("9.1.0", None), ("9.2.0", Some(false)), ("9.5.3", Some(false))] {
            let info = detect(format!(r#"{{"version":{{"number":"{version}"}}}}"#).as_bytes()).unwrap();
            let body = index_body(&info, &p, shape).unwrap();
            let got = body.pointer("/settings/index/mapping/exclude_source_vectors").and_then(Value::as_bool);
            assert_eq!(got, kept, "{version}");
        }
    }

    #[test]
    fn auto_analysis_follows_the_models_language_and_a_field_can_have_its_own() {
        let info = detect(br#"{"version":{"number":"2.19.1","distribution":"opensearch"}}"#).unwrap();
        let p: Pipeline = toml::from_str(
            "name='d'\nindex='d'\nmodel='m'\nfield_analyzers={title='standard'}\n[[fields]]\nsource=['title','text']\nvector='v'\n[chunking]\nmax_tokens=64\n",
        )
        .unwrap();
        let analyzers = |language: Option<&str>| {
            let b = index_body(&info, &p, ModelShape { dims: 8, normalized: true, language }).unwrap();
            let props = &b["mappings"]["properties"];
            [&props["title"], &props["text"], &props["passages"]["properties"]["text"]]
                .map(|f| f["analyzer"].as_str().unwrap().to_string())
        };
        assert_eq!(analyzers(Some("en")), ["standard", "english", "english"]);
        assert_eq!(analyzers(Some("zh")), ["standard", "cjk", "cjk"]);
        assert_eq!(analyzers(None), ["standard", "standard", "standard"]);

        let want = index_body(&info, &p, ModelShape { dims: 8, normalized: true, language: Some("en") }).unwrap();
        let mut got = want["mappings"].clone();
        got["properties"]["text"].as_object_mut().unwrap().remove("analyzer");
        let diffs = compare(&got, &want);
        assert_eq!(diffs.len(), 1, "{diffs:?}");
        assert!(diffs[0].contains("`text` is analyzed with `standard`, the pipeline asks for `english`"), "{diffs:?}");

        let bad =
            "name='d'\nindex='d'\nmodel='m'\nfield_analyzers={nope='cjk'}\n[[fields]]\nsource=['text']\nvector='v'\n";
        let p: Pipeline = toml::from_str(bad).unwrap();
        assert!(p.validate().unwrap_err().1.contains("`nope` is not a source field"));
    }

    #[test]
    fn unknown_placeholders_are_errors() {
        assert!(render(&json!({"a": "${nope}"}), &BTreeMap::new()).unwrap_err().contains("${nope}"));
    }

    #[test]
    fn the_comparison_explains_each_difference() {
        let info = detect(br#"{"version":{"number":"2.19.1","distribution":"opensearch"}}"#).unwrap();
        let p: Pipeline =
            toml::from_str("name='d'\nindex='d'\nmodel='m'\n[[fields]]\nsource=['meta.title','text']\nvector='v'\n")
                .unwrap();
        let want = index_body(&info, &p, ModelShape { dims: 384, normalized: true, language: None }).unwrap();
        assert!(compare(&want["mappings"], &want).is_empty(), "a mapping matches itself");
        let actual = json!({"properties": {
            "text": {"type": "keyword"},
            "meta": {"properties": {"title": {"type": "text"}}},
            "v": {"type": "knn_vector", "dimension": 768, "method": {"space_type": "l2"}}
        }});
        let diffs = compare(&actual, &want);
        assert_eq!(diffs.len(), 3, "{diffs:?}");
        assert!(diffs.iter().any(|d| d.contains("`text` is `keyword`")));
        assert!(diffs.iter().any(|d| d.contains("dimension 768") && d.contains("384")));
        assert!(diffs.iter().any(|d| d.contains("space_type \"l2\"") && d.contains("cosinesimil")));
        let missing = compare(&json!({"properties": {}}), &want);
        assert!(missing.iter().any(|d| d.contains("`v` is missing")));
    }
}
