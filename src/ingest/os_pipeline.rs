//! OpenSearch ingest pipelines with `text_chunking` and `text_embedding` processors (the
//! neural-search plugin's), run by the sidecar where the cluster has no plugin. Pure: a pipeline
//! definition is parsed into the steps the sidecar runs and the part the engine keeps under the
//! same name (its other processors); a document is chunked in place, and its texts to embed are
//! gathered and their vectors put back, in one walk order.
//!
//! As the plugin does:
//! - `text_chunking` `field_map {in: out}` (or nested `{obj: {in: out}}`) writes the list of
//!   passages of `in` to `out`: `fixed_token_length` (`token_limit` 384, `overlap_rate` 0,
//!   `tokenizer` `standard`, `max_chunk_limit` 100), `fixed_char_length` (`char_limit` 2048)
//!   or `delimiter` (`"\n\n"`, kept at each passage's end). A passage starts at its first
//!   token (the first at 0) and runs to the next passage's first token (the last to the end);
//!   at `max_chunk_limit` the rest of the text is the last passage. Words are Unicode word
//!   boundaries (UAX #29, which Lucene's standard tokenizer implements).
//! - `text_embedding` `field_map {in: out}`: a string gets its vector in `out`, a list of
//!   strings (passages) a list of `{"knn": vector}` (a nested field); a dotted `in` such as
//!   `obj.text` writes `out` into `obj`; a nested map `{obj: {in: out}}` embeds each object
//!   of `obj` (an object or a list of them). A document without the field is left alone.
//!
//! The sidecar's processors run before the engine's: a pipeline where an engine processor
//! comes first is refused at `PUT`, since its output could not reach them.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use unicode_segmentation::UnicodeSegmentation;

/// The processors the sidecar runs.
pub const SIDECAR_PROCESSORS: &[&str] = &["text_embedding", "text_chunking"];
/// Most passages one text becomes, whatever `max_chunk_limit` says.
pub const MAX_PASSAGES: usize = 10_000;

/// Where each input field's output goes: a field name, or a nested map for an object field.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Field(String),
    Nested(BTreeMap<String, Target>),
}

/// A chunking algorithm.
#[derive(Clone, Debug, PartialEq)]
pub enum Algorithm {
    FixedTokens { token_limit: usize, overlap_rate: f64 },
    FixedChars { char_limit: usize, overlap_rate: f64 },
    Delimiter { delimiter: String },
}

/// One step the sidecar runs.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Chunk { field_map: BTreeMap<String, Target>, algorithm: Algorithm, max_chunks: Option<usize>, ignore_missing: bool },
    Embed { model_id: String, field_map: BTreeMap<String, Target> },
}

/// A pipeline holding steps the sidecar runs.
#[derive(Clone, Debug, PartialEq)]
pub struct IngestPipeline {
    pub steps: Vec<Step>,
    /// The definition without the sidecar's processors, which the engine keeps.
    pub engine_part: Value,
}

impl IngestPipeline {
    /// The model ids its `text_embedding` steps name.
    pub fn model_ids(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Embed { model_id, .. } => Some(model_id.as_str()),
                Step::Chunk { .. } => None,
            })
            .collect()
    }
}

fn obj<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object().ok_or_else(|| format!("{at} must be an object"))
}

fn only(m: &Map<String, Value>, keys: &[&str], at: &str) -> Result<(), String> {
    match m.keys().find(|k| !keys.contains(&k.as_str())) {
        Some(k) => Err(format!("{at}: `{k}` is not served by the sidecar (known: {})", keys.join(", "))),
        None => Ok(()),
    }
}

fn field_map(v: Option<&Value>, at: &str) -> Result<BTreeMap<String, Target>, String> {
    let m = obj(v.ok_or_else(|| format!("{at}.field_map is required"))?, &format!("{at}.field_map"))?;
    if m.is_empty() {
        return Err(format!("{at}.field_map is empty"));
    }
    m.iter()
        .map(|(k, t)| {
            let target = match t {
                Value::String(s) if !s.is_empty() => Target::Field(s.clone()),
                Value::Object(_) => Target::Nested(field_map(Some(t), &format!("{at}.field_map.{k}"))?),
                _ => return Err(format!("{at}.field_map.{k} must be a field name or an object")),
            };
            Ok((k.clone(), target))
        })
        .collect()
}

fn count(m: &Map<String, Value>, key: &str, default: usize, at: &str) -> Result<usize, String> {
    match m.get(key) {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|n| *n >= 1)
            .map(|n| n as usize)
            .ok_or_else(|| format!("{at}.{key} must be an integer of at least 1")),
    }
}

fn overlap(m: &Map<String, Value>, at: &str) -> Result<f64, String> {
    match m.get("overlap_rate") {
        None => Ok(0.0),
        Some(v) => v
            .as_f64()
            .filter(|r| (0.0..=0.5).contains(r))
            .ok_or_else(|| format!("{at}.overlap_rate must be in [0, 0.5]")),
    }
}

fn chunking(p: &Map<String, Value>, at: &str) -> Result<Step, String> {
    only(p, &["field_map", "algorithm", "ignore_missing", "description", "tag"], at)?;
    let fm = field_map(p.get("field_map"), at)?;
    let empty = json!({"fixed_token_length": {}});
    let alg = obj(p.get("algorithm").unwrap_or(&empty), &format!("{at}.algorithm"))?;
    if alg.len() > 1 {
        return Err(format!("{at}.algorithm holds one algorithm"));
    }
    let none = json!({});
    let (name, params) = alg.iter().next().map_or(("fixed_token_length", &none), |(k, v)| (k.as_str(), v));
    let aat = format!("{at}.algorithm.{name}");
    let m = obj(params, &aat)?;
    let max_chunks = match m.get("max_chunk_limit") {
        None => Some(100),
        Some(v) if v.as_i64() == Some(-1) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("{aat}.max_chunk_limit must be a positive integer or -1"))? as usize,
        ),
    };
    let algorithm = match name {
        "fixed_token_length" => {
            only(m, &["token_limit", "overlap_rate", "tokenizer", "max_chunk_limit"], &aat)?;
            if !matches!(m.get("tokenizer").map(Value::as_str), None | Some(Some("standard"))) {
                return Err(format!(
                    "{aat}.tokenizer: the sidecar splits words as the `standard` tokenizer does, and no other"
                ));
            }
            Algorithm::FixedTokens { token_limit: count(m, "token_limit", 384, &aat)?, overlap_rate: overlap(m, &aat)? }
        }
        "fixed_char_length" => {
            only(m, &["char_limit", "overlap_rate", "max_chunk_limit"], &aat)?;
            Algorithm::FixedChars { char_limit: count(m, "char_limit", 2048, &aat)?, overlap_rate: overlap(m, &aat)? }
        }
        "delimiter" => {
            only(m, &["delimiter", "max_chunk_limit"], &aat)?;
            let delimiter = match m.get("delimiter") {
                None => "\n\n".to_string(),
                Some(Value::String(d)) if !d.is_empty() => d.clone(),
                _ => return Err(format!("{aat}.delimiter must be a non-empty string")),
            };
            Algorithm::Delimiter { delimiter }
        }
        other => {
            return Err(format!(
                "{at}.algorithm: `{other}` is not one (fixed_token_length, fixed_char_length, delimiter)"
            ))
        }
    };
    let ignore_missing = p.get("ignore_missing").and_then(Value::as_bool).unwrap_or(false);
    Ok(Step::Chunk { field_map: fm, algorithm, max_chunks, ignore_missing })
}

fn embedding(p: &Map<String, Value>, at: &str) -> Result<Step, String> {
    only(p, &["model_id", "field_map", "batch_size", "description", "tag", "skip_existing"], at)?;
    let model_id = match p.get("model_id") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => return Err(format!("{at}.model_id is required: name a model of this sidecar")),
    };
    Ok(Step::Embed { model_id, field_map: field_map(p.get("field_map"), at)? })
}

/// Parses an ingest pipeline definition: `None` when it holds no processor the sidecar runs.
pub fn parse_pipeline(def: &Value) -> Result<Option<IngestPipeline>, String> {
    let m = obj(def, "the ingest pipeline")?;
    let Some(list) = m.get("processors") else { return Ok(None) };
    let list = list.as_array().ok_or("processors must be an array")?;
    let (mut steps, mut kept) = (Vec::new(), Vec::new());
    for (i, p) in list.iter().enumerate() {
        let at = format!("processors[{i}]");
        let Some((name, body)) = p.as_object().filter(|o| o.len() == 1).and_then(|o| o.iter().next()) else {
            return Err(format!("{at} must be an object with one processor"));
        };
        let at = format!("{at}.{name}");
        match name.as_str() {
            "sparse_encoding" | "text_image_embedding" => {
                return Err(format!(
                    "{at}: no {} model is served by this sidecar (text_embedding with a dense text model only)",
                    if name == "sparse_encoding" { "sparse" } else { "image" }
                ))
            }
            "text_embedding" | "text_chunking" if !kept.is_empty() => {
                return Err(format!(
                    "{at}: the sidecar runs text_chunking and text_embedding before the engine runs the pipeline's other processors, so they must come first"
                ))
            }
            "text_embedding" => steps.push(embedding(obj(body, &at)?, &at)?),
            "text_chunking" => steps.push(chunking(obj(body, &at)?, &at)?),
            _ => kept.push(p.clone()),
        }
    }
    if steps.is_empty() {
        return Ok(None);
    }
    let mut engine_part = m.clone();
    engine_part.insert("processors".into(), Value::Array(kept));
    Ok(Some(IngestPipeline { steps, engine_part: Value::Object(engine_part) }))
}

/// The byte ranges of `text`'s words.
fn words(text: &str) -> Vec<(usize, usize)> {
    text.unicode_word_indices().map(|(i, w)| (i, i + w.len())).collect()
}

/// Whether another passage may start: `max` passages at most, the last taking the rest.
fn room(done: usize, max: Option<usize>) -> bool {
    max.is_none_or(|m| done + 1 < m)
}

/// `text` split by `algorithm`, `max` passages at most.
pub fn chunk(text: &str, algorithm: &Algorithm, max: Option<usize>) -> Vec<String> {
    let max = Some(max.map_or(MAX_PASSAGES, |m| m.min(MAX_PASSAGES)));
    let mut out = Vec::new();
    match algorithm {
        Algorithm::FixedTokens { token_limit, overlap_rate } => {
            let tokens = words(text);
            let step = token_limit - (*token_limit as f64 * overlap_rate).floor() as usize;
            let mut i = 0;
            while i < tokens.len() {
                let start = if i == 0 { 0 } else { tokens[i].0 };
                if !room(out.len(), max) || i + token_limit >= tokens.len() {
                    out.push(text[start..].to_string());
                    break;
                }
                out.push(text[start..tokens[i + token_limit].0].to_string());
                i += step.max(1);
            }
        }
        Algorithm::FixedChars { char_limit, overlap_rate } => {
            let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
            let chars = bounds.len() - 1;
            let step = char_limit - (*char_limit as f64 * overlap_rate).floor() as usize;
            let mut i = 0;
            while i < chars {
                if !room(out.len(), max) || i + char_limit >= chars {
                    out.push(text[bounds[i]..].to_string());
                    break;
                }
                out.push(text[bounds[i]..bounds[i + char_limit]].to_string());
                i += step.max(1);
            }
        }
        Algorithm::Delimiter { delimiter } => {
            let mut start = 0;
            while let Some(pos) = text[start..].find(delimiter.as_str()) {
                if !room(out.len(), max) {
                    break;
                }
                let end = start + pos + delimiter.len();
                out.push(text[start..end].to_string());
                start = end;
            }
            if start < text.len() {
                out.push(text[start..].to_string());
            }
        }
    }
    out
}

/// The value at a dotted path in `m`, and the object holding its last segment.
fn parent_mut<'a>(m: &'a mut Map<String, Value>, path: &str) -> Option<(&'a mut Map<String, Value>, String)> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop()?.to_string();
    let mut cur = m;
    for p in parts {
        cur = cur.get_mut(p)?.as_object_mut()?;
    }
    Some((cur, last))
}

/// Each object a nested map applies to: the object at `key`, or each object of a list there.
fn nested_objects<'a>(m: &'a mut Map<String, Value>, key: &str) -> Vec<&'a mut Map<String, Value>> {
    match m.get_mut(key) {
        Some(Value::Object(o)) => vec![o],
        Some(Value::Array(a)) => a.iter_mut().filter_map(Value::as_object_mut).collect(),
        _ => vec![],
    }
}

/// Runs a `text_chunking` step on one document.
pub fn chunk_doc(
    doc: &mut Map<String, Value>,
    field_map: &BTreeMap<String, Target>,
    algorithm: &Algorithm,
    max: Option<usize>,
    ignore_missing: bool,
) {
    for (input, target) in field_map {
        match target {
            Target::Nested(inner) => {
                for o in nested_objects(doc, input) {
                    chunk_doc(o, inner, algorithm, max, ignore_missing);
                }
            }
            Target::Field(out) => {
                let Some((parent, last)) = parent_mut(doc, input) else { continue };
                let passages: Option<Vec<Value>> = match parent.get(&last) {
                    Some(Value::String(s)) => Some(chunk(s, algorithm, max).into_iter().map(Value::from).collect()),
                    Some(Value::Array(a)) => Some(
                        a.iter()
                            .filter_map(Value::as_str)
                            .flat_map(|s| chunk(s, algorithm, max))
                            .map(Value::from)
                            .collect(),
                    ),
                    None | Some(Value::Null) if !ignore_missing => Some(vec![]),
                    _ => None,
                };
                if let Some(p) = passages {
                    parent.insert(out.clone(), Value::Array(p));
                }
            }
        }
    }
}

/// What [`embed_walk`] does at each text: gather it, or put its vector.
pub enum Walk<'a> {
    Gather(&'a mut Vec<String>),
    Put(&'a mut dyn Iterator<Item = Vec<f32>>),
}

fn vector(v: Vec<f32>) -> Value {
    Value::Array(v.into_iter().map(|x| json!(x)).collect())
}

/// Walks a `text_embedding` step's fields of one document: first with [`Walk::Gather`] to
/// collect the texts, then, with the same document, with [`Walk::Put`] to write their vectors
/// in the same order.
pub fn embed_walk(doc: &mut Map<String, Value>, field_map: &BTreeMap<String, Target>, walk: &mut Walk<'_>) {
    for (input, target) in field_map {
        match target {
            Target::Nested(inner) => {
                for o in nested_objects(doc, input) {
                    embed_walk(o, inner, walk);
                }
            }
            Target::Field(out) => {
                let Some((parent, last)) = parent_mut(doc, input) else { continue };
                let texts: Vec<String> = match parent.get(&last) {
                    Some(Value::String(s)) if !s.trim().is_empty() => vec![s.clone()],
                    Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(String::from).collect(),
                    _ => continue,
                };
                let list = matches!(parent.get(&last), Some(Value::Array(_)));
                match walk {
                    Walk::Gather(all) => all.extend(texts),
                    Walk::Put(vectors) => {
                        let vs: Vec<Vec<f32>> = vectors.by_ref().take(texts.len()).collect();
                        let value = if list {
                            Value::Array(vs.into_iter().map(|v| json!({"knn": vector(v)})).collect())
                        } else {
                            vs.into_iter().next().map_or(Value::Null, vector)
                        };
                        parent.insert(out.clone(), value);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_pipelines_parse_and_what_cannot_be_served_is_named() {
        let p = parse_pipeline(&json!({"description": "A text chunking and embedding ingest pipeline", "processors": [
            {"text_chunking": {"algorithm": {"fixed_token_length": {"token_limit": 10, "overlap_rate": 0.2, "tokenizer": "standard"}},
                "field_map": {"passage_text": "passage_chunk"}}},
            {"text_embedding": {"model_id": "m", "field_map": {"passage_chunk": "passage_chunk_embedding"}}},
            {"set": {"field": "x", "value": 1}}]}))
        .unwrap()
        .unwrap();
        assert_eq!(p.steps.len(), 2);
        assert_eq!(p.engine_part["processors"], json!([{"set": {"field": "x", "value": 1}}]));
        assert_eq!(p.model_ids(), ["m"]);
        assert_eq!(parse_pipeline(&json!({"processors": [{"set": {"field": "x", "value": 1}}]})).unwrap(), None);
        for (def, want) in [
            (
                json!({"processors": [{"sparse_encoding": {"model_id": "m", "field_map": {"a": "b"}}}]}),
                "no sparse model",
            ),
            (
                json!({"processors": [{"set": {}}, {"text_embedding": {"model_id": "m", "field_map": {"a": "b"}}}]}),
                "must come first",
            ),
            (json!({"processors": [{"text_embedding": {"field_map": {"a": "b"}}}]}), "model_id"),
            (
                json!({"processors": [{"text_embedding": {"model_id": "m", "field_map": {"a": "b"}, "if": "x"}}]}),
                "`if`",
            ),
            (
                json!({"processors": [{"text_chunking": {"field_map": {"a": "b"}, "algorithm": {"fixed_token_length": {"overlap_rate": 0.9}}}}]}),
                "overlap_rate",
            ),
            (
                json!({"processors": [{"text_chunking": {"field_map": {"a": "b"}, "algorithm": {"fixed_token_length": {"tokenizer": "whitespace"}}}}]}),
                "standard",
            ),
        ] {
            let e = parse_pipeline(&def).unwrap_err();
            assert!(e.contains(want), "{def}: {e}");
        }
    }

    #[test]
    fn fixed_token_chunks_follow_the_plugins_offsets() {
        let text = "This is an example document to be chunked. The document contains a single paragraph, two sentences and 24 tokens by standard tokenizer in OpenSearch.";
        let c = chunk(text, &Algorithm::FixedTokens { token_limit: 10, overlap_rate: 0.2 }, Some(100));
        // the documented output of this example
        assert_eq!(
            c,
            [
                "This is an example document to be chunked. The document ",
                "The document contains a single paragraph, two sentences and 24 ",
                "and 24 tokens by standard tokenizer in OpenSearch."
            ]
        );
        let capped = chunk(text, &Algorithm::FixedTokens { token_limit: 5, overlap_rate: 0.0 }, Some(2));
        assert_eq!(capped.len(), 2);
        assert!(capped[1].ends_with("OpenSearch."), "the last passage takes the rest: {capped:?}");
    }

    #[test]
    fn delimiter_and_char_chunks() {
        let d = chunk("a\n\nb\n\nc", &Algorithm::Delimiter { delimiter: "\n\n".into() }, Some(100));
        assert_eq!(d, ["a\n\n", "b\n\n", "c"]);
        let d = chunk("a.b.c.d", &Algorithm::Delimiter { delimiter: ".".into() }, Some(2));
        assert_eq!(d, ["a.", "b.c.d"]);
        let c = chunk("abcdefgh", &Algorithm::FixedChars { char_limit: 3, overlap_rate: 0.0 }, None);
        assert_eq!(c, ["abc", "def", "gh"]);
        let c = chunk("héllo wörld", &Algorithm::FixedChars { char_limit: 4, overlap_rate: 0.25 }, None);
        assert_eq!(c, ["héll", "lo w", "wörl", "ld"], "step 3: one character of overlap");
    }

    #[test]
    fn documents_are_chunked_and_embedded_where_the_field_map_says() {
        let steps = parse_pipeline(&json!({"processors": [
            {"text_chunking": {"field_map": {"body": "chunks"}, "algorithm": {"delimiter": {"delimiter": ". "}}}},
            {"text_embedding": {"model_id": "m", "field_map": {"title": "title_v", "chunks": "chunks_v",
                "obj.text": "text_v", "notes": {"text": "v"}}}}]}))
        .unwrap()
        .unwrap()
        .steps;
        let mut doc = json!({"title": "T", "body": "One. Two", "obj": {"text": "inner"},
            "notes": [{"text": "n1"}, {"other": 1}]})
        .as_object()
        .unwrap()
        .clone();
        let Step::Chunk { field_map, algorithm, max_chunks, ignore_missing } = &steps[0] else { panic!() };
        chunk_doc(&mut doc, field_map, algorithm, *max_chunks, *ignore_missing);
        assert_eq!(doc["chunks"], json!(["One. ", "Two"]));
        let Step::Embed { field_map, .. } = &steps[1] else { panic!() };
        let mut texts = Vec::new();
        embed_walk(&mut doc, field_map, &mut Walk::Gather(&mut texts));
        assert_eq!(texts, ["One. ", "Two", "n1", "inner", "T"]);
        let mut vs = (0..texts.len()).map(|i| vec![i as f32]);
        embed_walk(&mut doc, field_map, &mut Walk::Put(&mut vs));
        assert_eq!(doc["chunks_v"], json!([{"knn": [0.0]}, {"knn": [1.0]}]));
        assert_eq!(doc["notes"][0]["v"], json!([2.0]));
        assert!(doc["notes"][1].get("v").is_none());
        assert_eq!(doc["obj"]["text_v"], json!([3.0]));
        assert_eq!(doc["title_v"], json!([4.0]));
        let mut missing = json!({"x": 1}).as_object().unwrap().clone();
        chunk_doc(
            &mut missing,
            &BTreeMap::from([("body".to_string(), Target::Field("c".into()))]),
            &Algorithm::Delimiter { delimiter: ".".into() },
            None,
            false,
        );
        assert_eq!(missing["c"], json!([]), "ignore_missing false: an empty list");
    }
}
