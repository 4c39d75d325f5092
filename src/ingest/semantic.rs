//! Elastic's `semantic_text` fields on a cluster without the inference service (it needs an
//! Enterprise licence since 8.18/9.0): a mapping that names one is served by a pipeline of the
//! sidecar (pure translation here; the HTTP floor sends the requests):
//!
//! - the field `F` becomes a `text` field (the app's text, in `_source` as written), beside a
//!   document vector `F_sidecar_vector` and nested passages `F_sidecar_chunks` (`{text, vector}`,
//!   the text stored so the best passages can be read back), both kept out of `_source` when the
//!   index is created with the field;
//! - the pipeline `semantic-text-{index}` embeds `F` (and the fields that `copy_to` it) with the
//!   model the `inference_id` names, chunked as `chunking_settings` say (in the model's tokens:
//!   Elastic counts words, a word is taken as 4/3 tokens, capped at the model's sequence length);
//! - the mapping's `_meta.semantic_sidecar.semantic_text` records what the app asked for, so
//!   `GET /{index}/_mapping` shows `semantic_text` as Elasticsearch does ([`app_view`]).

use serde_json::{json, Map, Value};

use super::mapping::META_KEY;
use crate::types::pipeline::Pipeline;

/// The key under `_meta.semantic_sidecar` that records an index's `semantic_text` fields.
pub const RECORD_KEY: &str = "semantic_text";
/// What a `semantic_text` field's definition may hold.
const FIELD_KEYS: &[&str] = &["type", "inference_id", "search_inference_id", "chunking_settings", "model_settings"];

/// One `semantic_text` field of an app's mapping.
#[derive(Clone, Debug, PartialEq)]
pub struct SemanticMapping {
    pub field: String,
    pub inference_id: Option<String>,
    pub search_inference_id: Option<String>,
    pub chunking_settings: Option<Value>,
    /// Top-level fields whose `copy_to` names this one (embedded with it, in mapping order).
    pub copied_from: Vec<String>,
}

/// The document vector written beside `field`.
pub fn vector_field(field: &str) -> String {
    format!("{field}_sidecar_vector")
}

/// The nested passages written beside `field`.
pub fn passages_field(field: &str) -> String {
    format!("{field}_sidecar_chunks")
}

/// The pipeline standing behind the `semantic_text` fields of `index`.
pub fn pipeline_name(index: &str) -> String {
    let safe: String = index.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("semantic-text-{safe}")
}

/// Whether `mappings` names a `semantic_text` field anywhere.
pub fn mentions_semantic_text(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, x)| (k == "type" && x == "semantic_text") || mentions_semantic_text(x)),
        Value::Array(a) => a.iter().any(mentions_semantic_text),
        _ => false,
    }
}

/// The `semantic_text` fields of a `mappings` object, checked: at the top level of
/// `properties` only, with the keys Elastic documents.
pub fn semantic_fields(mappings: &Value) -> Result<Vec<SemanticMapping>, String> {
    let Some(props) = mappings.get("properties").and_then(Value::as_object) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (name, def) in props {
        if def.get("type").and_then(Value::as_str) != Some("semantic_text") {
            if mentions_semantic_text(def) {
                return Err(format!(
                    "a semantic_text field inside `{name}`: the sidecar serves semantic_text fields at the top level of the mapping's properties"
                ));
            }
            continue;
        }
        let m = def.as_object().expect("a definition with a type is an object");
        if let Some(k) = m.keys().find(|k| !FIELD_KEYS.contains(&k.as_str())) {
            return Err(format!(
                "semantic_text field `{name}`: `{k}` is not served by the sidecar (known: {})",
                FIELD_KEYS.join(", ")
            ));
        }
        let text = |k: &str| -> Result<Option<String>, String> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                Some(_) => Err(format!("semantic_text field `{name}`: `{k}` must be a non-empty string")),
            }
        };
        let copied_from = props
            .iter()
            .filter(|(_, d)| match d.get("copy_to") {
                Some(Value::String(t)) => t == name,
                Some(Value::Array(a)) => a.iter().any(|t| t == name),
                _ => false,
            })
            .map(|(k, _)| k.clone())
            .collect();
        out.push(SemanticMapping {
            field: name.clone(),
            inference_id: text("inference_id")?,
            search_inference_id: text("search_inference_id")?,
            chunking_settings: m.get("chunking_settings").filter(|c| !c.is_null()).cloned(),
            copied_from,
        });
    }
    for f in &out {
        for taken in [vector_field(&f.field), passages_field(&f.field)] {
            if props.contains_key(&taken) {
                return Err(format!(
                    "`{taken}` is where the sidecar keeps the vectors of semantic_text field `{}`: rename that field",
                    f.field
                ));
            }
        }
    }
    Ok(out)
}

/// Elastic's chunking settings (checked, defaults filled) as the pipeline's token chunking for a
/// model of `max_seq_len` tokens: `(max_tokens, overlap)`.
pub fn token_chunking(settings: &Value, max_seq_len: usize) -> (usize, usize) {
    let cap = max_seq_len.saturating_sub(2).max(8);
    let tokens = |words: u64| ((words as usize).saturating_mul(4) / 3).clamp(8, cap);
    let n = |k: &str| settings.get(k).and_then(Value::as_u64).unwrap_or(0);
    match settings.get("strategy").and_then(Value::as_str) {
        Some("word") => {
            let max = tokens(n("max_chunk_size"));
            (max, tokens(n("overlap")).min(max / 2))
        }
        // one passage: the whole text, truncated to the model's sequence length when embedded
        Some("none") => (1 << 20, 0),
        _ => {
            let max = tokens(n("max_chunk_size"));
            (max, if n("sentence_overlap") > 0 { max / 8 } else { 0 })
        }
    }
}

/// The pipeline behind `m` on `index`: the model `model`, chunked by `chunking` (checked
/// settings), `inference_id` as the app named it.
pub fn pipeline_for(
    index: &str,
    m: &SemanticMapping,
    inference_id: &str,
    model: &str,
    chunking: &Value,
    max_seq_len: usize,
) -> Result<Pipeline, String> {
    let (max_tokens, overlap) = token_chunking(chunking, max_seq_len);
    let mut source = vec![m.field.clone()];
    source.extend(m.copied_from.iter().cloned());
    let mut st = json!({"field": m.field, "inference_id": inference_id});
    if let Some(c) = &m.chunking_settings {
        st["chunking_settings"] = c.clone();
    }
    let name = pipeline_name(index);
    let body = json!({
        "index": index,
        "model": model,
        "fields": [{"source": source, "vector": vector_field(&m.field)}],
        "chunking": {"max_tokens": max_tokens, "overlap": overlap, "passages_field": passages_field(&m.field)},
        "search": {"fields": [m.field]},
        "semantic_text": st,
    });
    Pipeline::from_json(&name, &body).map_err(|e| e.to_string())
}

/// What the mapping's `_meta` records of a `semantic_text` field: what the app asked for, and
/// the model settings Elasticsearch shows.
pub fn record(p: &Pipeline, dims: usize, similarity: &str) -> Value {
    let st = p.semantic_text.as_ref().expect("a semantic_text pipeline");
    let mut r = json!({
        "inference_id": st.inference_id,
        "model_settings": {"task_type": "text_embedding", "dimensions": dims, "similarity": similarity, "element_type": "float"},
    });
    if !st.chunking_settings.is_null() {
        r["chunking_settings"] = st.chunking_settings.clone();
    }
    r
}

/// The engine's `mappings` for an app's: each `semantic_text` field replaced by the pipeline's
/// fields (`pipeline_mappings`: the text field, the vector, the passages, and `_source`
/// excludes), the record in `_meta`.
pub fn engine_mappings(app: &Value, field: &str, pipeline_mappings: &Value, record: Value) -> Value {
    let mut out = app.as_object().cloned().unwrap_or_default();
    let mut props = out.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
    let theirs = pipeline_mappings.get("properties").and_then(Value::as_object);
    for f in [field.to_string(), vector_field(field), passages_field(field)] {
        if let Some(def) = theirs.and_then(|t| t.get(&f)) {
            props.insert(f, def.clone());
        }
    }
    out.insert("properties".into(), Value::Object(props));
    if let Some(Value::Array(hidden)) = pipeline_mappings.pointer("/_source/excludes") {
        let source = out.entry("_source").or_insert_with(|| json!({}));
        if let Some(s) = source.as_object_mut() {
            let list = s.entry("excludes").or_insert_with(|| json!([]));
            if let Some(l) = list.as_array_mut() {
                l.extend(hidden.iter().filter(|h| !l.contains(h)).cloned().collect::<Vec<_>>());
            }
        }
    }
    let meta = out.entry("_meta").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        let ours = meta.entry(META_KEY).or_insert_with(|| json!({}));
        if !ours.is_object() {
            *ours = json!({});
        }
        ours[RECORD_KEY][field] = record;
    }
    Value::Object(out)
}

/// One index's `mappings` as the app mapped them: each recorded `semantic_text` field shown as
/// Elasticsearch does, the sidecar's fields, `_source` excludes and `_meta` record left out.
/// Mappings without a record come back as they are.
pub fn app_view(mappings: &Value) -> Value {
    let Some(fields) = mappings.pointer(&format!("/_meta/{META_KEY}/{RECORD_KEY}")).and_then(Value::as_object).cloned()
    else {
        return mappings.clone();
    };
    let mut out = mappings.as_object().cloned().unwrap_or_default();
    let mut hidden = Vec::new();
    if let Some(props) = out.get_mut("properties").and_then(Value::as_object_mut) {
        for (field, rec) in &fields {
            let mut def = Map::new();
            def.insert("type".into(), json!("semantic_text"));
            if let Some(r) = rec.as_object() {
                def.extend(r.clone());
            }
            props.insert(field.clone(), Value::Object(def));
            for h in [vector_field(field), passages_field(field)] {
                props.remove(&h);
                hidden.push(h);
            }
        }
    }
    let source_empty = match out.get_mut("_source").and_then(Value::as_object_mut) {
        Some(s) => {
            if let Some(Value::Array(l)) = s.get_mut("excludes") {
                l.retain(|x| !x.as_str().is_some_and(|x| hidden.iter().any(|h| h == x)));
                if l.is_empty() {
                    s.remove("excludes");
                }
            }
            s.is_empty()
        }
        None => false,
    };
    if source_empty {
        out.remove("_source");
    }
    let meta_empty = match out.get_mut("_meta").and_then(Value::as_object_mut) {
        Some(m) => {
            m.remove(META_KEY);
            m.is_empty()
        }
        None => false,
    };
    if meta_empty {
        out.remove("_meta");
    }
    Value::Object(out)
}

/// An answer of the index, mapping or template APIs (`{index: {mappings: …}}`,
/// `{index_templates: [{index_template: {template: {mappings: …}}}]}`, a simulated template…)
/// with every `mappings` object in it shown as the app mapped it ([`app_view`]).
pub fn app_view_of_answer(answer: &mut Value) {
    match answer {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if k == "mappings" && v.is_object() {
                    *v = app_view(v);
                } else {
                    app_view_of_answer(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(app_view_of_answer),
        _ => {}
    }
}

/// Whether an index's `mappings` (as the engine holds them) record a `semantic_text` field.
pub fn records_semantic_text(mappings: &Value) -> bool {
    mappings
        .pointer(&format!("/_meta/{META_KEY}/{RECORD_KEY}"))
        .and_then(Value::as_object)
        .is_some_and(|m| !m.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tutorial() -> Value {
        json!({"properties": {
            "content": {"type": "text", "copy_to": "semantic_text"},
            "semantic_text": {"type": "semantic_text", "inference_id": "my-e5-model"},
            "title": {"type": "keyword"}
        }})
    }

    #[test]
    fn fields_are_found_with_what_copies_into_them_and_odd_shapes_are_named() {
        let f = semantic_fields(&tutorial()).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].field, "semantic_text");
        assert_eq!(f[0].inference_id.as_deref(), Some("my-e5-model"));
        assert_eq!(f[0].copied_from, ["content"]);
        assert!(semantic_fields(&json!({"properties": {"a": {"type": "text"}}})).unwrap().is_empty());
        let inside = json!({"properties": {"o": {"properties": {"s": {"type": "semantic_text"}}}}});
        assert!(semantic_fields(&inside).unwrap_err().contains("top level"));
        let extra = json!({"properties": {"s": {"type": "semantic_text", "index_options": {}}}});
        assert!(semantic_fields(&extra).unwrap_err().contains("index_options"));
        let clash = json!({"properties": {"s": {"type": "semantic_text"}, "s_sidecar_vector": {"type": "keyword"}}});
        assert!(semantic_fields(&clash).unwrap_err().contains("rename"));
        assert!(mentions_semantic_text(&tutorial()) && !mentions_semantic_text(&json!({"type": "text"})));
    }

    #[test]
    fn elastic_word_counts_become_model_tokens_within_the_sequence_length() {
        let sentence = json!({"strategy": "sentence", "max_chunk_size": 250, "sentence_overlap": 1});
        assert_eq!(token_chunking(&sentence, 512), (333, 41));
        assert_eq!(token_chunking(&sentence, 256), (254, 31));
        let word = json!({"strategy": "word", "max_chunk_size": 60, "overlap": 20});
        assert_eq!(token_chunking(&word, 512), (80, 26));
        assert_eq!(token_chunking(&json!({"strategy": "none"}), 512).1, 0);
    }

    #[test]
    fn the_engine_mapping_and_the_app_view_round_trip() {
        let m = &semantic_fields(&tutorial()).unwrap()[0];
        let chunking = json!({"strategy": "sentence", "max_chunk_size": 250, "sentence_overlap": 1});
        let p = pipeline_for("my-index", m, "my-e5-model", "all-MiniLM-L6-v2", &chunking, 256).unwrap();
        assert_eq!(p.name, "semantic-text-my-index");
        assert_eq!(p.fields[0].source, ["semantic_text", "content"]);
        assert_eq!(p.hidden_fields(), ["semantic_text_sidecar_vector", "semantic_text_sidecar_chunks"]);
        let theirs = json!({
            "properties": {
                "semantic_text": {"type": "text", "analyzer": "english"},
                "content": {"type": "text", "analyzer": "english"},
                "semantic_text_sidecar_vector": {"type": "dense_vector", "dims": 384},
                "semantic_text_sidecar_chunks": {"type": "nested"}
            },
            "_source": {"excludes": ["semantic_text_sidecar_vector", "semantic_text_sidecar_chunks"]}
        });
        let mut app = tutorial();
        app["_meta"] = json!({"team": "search"});
        let engine = engine_mappings(&app, "semantic_text", &theirs, record(&p, 384, "dot_product"));
        // the app's own definition of a copied field is kept
        assert_eq!(engine["properties"]["content"], json!({"type": "text", "copy_to": "semantic_text"}));
        assert_eq!(engine["properties"]["semantic_text"]["type"], "text");
        assert_eq!(engine["_source"]["excludes"].as_array().unwrap().len(), 2);
        assert_eq!(engine["_meta"]["team"], "search");
        let view = app_view(&engine);
        assert_eq!(
            view["properties"]["semantic_text"],
            json!({"type": "semantic_text", "inference_id": "my-e5-model",
                   "model_settings": {"task_type": "text_embedding", "dimensions": 384, "similarity": "dot_product", "element_type": "float"}})
        );
        assert_eq!(view["properties"].as_object().unwrap().len(), 3);
        assert!(view.get("_source").is_none());
        assert_eq!(view["_meta"], json!({"team": "search"}));
        let plain = json!({"properties": {"a": {"type": "text"}}});
        assert_eq!(app_view(&plain), plain);
        assert!(records_semantic_text(&engine) && !records_semantic_text(&plain));
        // every shape of answer: indices, index and component templates, a simulated index
        let mut answers = json!([
            {"my-index": {"mappings": engine.clone()}},
            {"index_templates": [{"name": "t", "index_template": {"index_patterns": ["a*"], "template": {"mappings": engine.clone()}}}]},
            {"component_templates": [{"name": "c", "component_template": {"template": {"mappings": engine.clone()}}}]},
            {"template": {"mappings": engine.clone(), "settings": {}}, "overlapping": []}
        ]);
        app_view_of_answer(&mut answers);
        let shown: Vec<&Value> = vec![
            &answers[0]["my-index"]["mappings"],
            &answers[1]["index_templates"][0]["index_template"]["template"]["mappings"],
            &answers[2]["component_templates"][0]["component_template"]["template"]["mappings"],
            &answers[3]["template"]["mappings"],
        ];
        assert!(shown.iter().all(|m| **m == view), "{answers:#}");
    }
}
