//! The embedding APIs: TEI's `POST /embed`, OpenAI's `POST /v1/embeddings` and
//! bert-as-service's `POST /encode`. Translation only: request shapes in, [`Encoder::encode`]
//! calls, response shapes out.
//!
//! Empty strings are embedded as the reference implementation does: they tokenize to
//! `[CLS] [SEP]` and get that sequence's vector (sentence-transformers does the same).
//!
//! Every answer carries `x-truncated-tokens: n1,n2,…`: per input, the tokens cut at max_seq_len.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{invalid, ApiError};
use super::AppState;
use crate::encoder::{EncodeOptions, Encoder, Input, Lane, Pooled, TextKind};

/// A string or a list of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_inputs(self) -> Vec<Input> {
        match self {
            OneOrMany::One(s) => vec![Input::Text(s)],
            OneOrMany::Many(v) => v.into_iter().map(Input::Text).collect(),
        }
    }
}

/// The response header that reports, per input, how many tokens truncation cut.
pub const TRUNCATED_TOKENS_HEADER: &str = "x-truncated-tokens";

fn truncation_header(per_input: &[usize]) -> String {
    per_input.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

fn with_truncation(mut resp: Response, value: String) -> Response {
    if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
        resp.headers_mut().insert(TRUNCATED_TOKENS_HEADER, v);
    }
    resp
}

fn lane_for(state: &AppState, n: usize) -> Lane {
    if n <= state.settings.encoder.interactive_max_inputs {
        Lane::Interactive
    } else {
        Lane::Bulk
    }
}

fn vectors(encoder: &Encoder, outputs: Vec<Pooled>, api: &str) -> Result<Vec<Vec<f32>>, ApiError> {
    outputs
        .into_iter()
        .map(|o| match o {
            Pooled::Vector(v) => Ok(v),
            Pooled::Tokens(_) => Err(invalid(format!(
                "model `{}` has pooling `none` (token vectors): {api} returns one vector per input; use POST /encode",
                encoder.manifest().name
            ))),
        })
        .collect()
}

/// TEI `POST /embed` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    inputs: OneOrMany,
    #[serde(default)]
    normalize: Option<bool>,
    #[serde(default)]
    truncate: Option<bool>,
    #[serde(default)]
    truncation_direction: Option<String>,
    /// `query` or `passage`: applies the manifest's prefix of that name.
    #[serde(default)]
    prompt_name: Option<String>,
    /// Which loaded model (default: the first configured).
    #[serde(default)]
    model: Option<String>,
}

pub async fn embed(State(state): State<AppState>, Json(req): Json<EmbedRequest>) -> Result<Response, ApiError> {
    if let Some(d) = req.truncation_direction.as_deref() {
        if !d.eq_ignore_ascii_case("right") {
            return Err(invalid(format!("truncation_direction `{d}` is not supported (only Right)")));
        }
    }
    let kind = match req.prompt_name.as_deref() {
        None => TextKind::Raw,
        Some("query") => TextKind::Query,
        Some("passage") => TextKind::Passage,
        Some(other) => return Err(invalid(format!("prompt_name `{other}` is not one of: query, passage"))),
    };
    let encoder = state.encoders.get(req.model.as_deref())?;
    let inputs = req.inputs.into_inputs();
    let opts = EncodeOptions {
        kind,
        normalize: req.normalize,
        truncate: req.truncate.unwrap_or(state.settings.encoder.auto_truncate),
        lane: lane_for(&state, inputs.len()),
        wait_for_room: false,
        cache: false,
    };
    let out = encoder.encode(inputs, opts).await?;
    let truncated = truncation_header(&out.truncated);
    Ok(with_truncation(Json(vectors(&encoder, out.outputs, "/embed")?).into_response(), truncated))
}

/// OpenAI `input`: text, texts, or token arrays (refused: the model's tokenizer is not OpenAI's).
#[derive(Deserialize)]
#[serde(untagged)]
enum OpenAiInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<i64>),
    TokenLists(Vec<Vec<i64>>),
}

fn token_input(n: usize) -> ApiError {
    invalid(format!("token-array input ({n} tokens) is not supported: the model has its own tokenizer, send text"))
}

/// OpenAI `POST /v1/embeddings` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiRequest {
    input: OpenAiInput,
    model: String,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
    #[serde(default)]
    #[allow(dead_code)] // accepted for compatibility, not used
    user: Option<String>,
}

pub async fn openai_embeddings(
    State(state): State<AppState>,
    Json(req): Json<OpenAiRequest>,
) -> Result<Response, ApiError> {
    let texts = match req.input {
        OpenAiInput::One(s) => vec![s],
        OpenAiInput::Many(v) => v,
        OpenAiInput::Tokens(t) => return Err(token_input(t.len())),
        OpenAiInput::TokenLists(l) => return Err(token_input(l.iter().map(Vec::len).sum())),
    };
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(invalid(format!("encoding_format `{other}` is not one of: float, base64"))),
    };
    let encoder = state.encoders.get(Some(&req.model))?;
    let m = encoder.manifest();
    let full = m.output_dims();
    let dims = match req.dimensions {
        None => full,
        Some(d) if d == full => full,
        Some(d) if m.truncatable_dims && (1..full).contains(&d) => d,
        Some(d) => {
            return Err(invalid(format!(
                "dimensions {d} is not available: model `{}` makes {full}-dim vectors{}",
                m.name,
                if m.truncatable_dims { "" } else { " and its manifest does not allow truncating them" }
            )))
        }
    };
    let inputs: Vec<Input> = texts.into_iter().map(Input::Text).collect();
    let opts = EncodeOptions {
        kind: TextKind::Raw,
        normalize: None,
        truncate: state.settings.encoder.auto_truncate,
        lane: lane_for(&state, inputs.len()),
        wait_for_room: false,
        cache: false,
    };
    let out = encoder.encode(inputs, opts).await?;
    let truncated = truncation_header(&out.truncated);
    let prompt_tokens: usize = out.tokens.iter().sum();
    let normalize = m.normalize;
    let data: Vec<Value> = vectors(&encoder, out.outputs, "/v1/embeddings")?
        .into_iter()
        .enumerate()
        .map(|(index, mut v)| {
            if dims < v.len() {
                v.truncate(dims);
                if normalize {
                    crate::encoder::pooling::l2_normalize(&mut v);
                }
            }
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": m.name,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    });
    Ok(with_truncation(Json(body).into_response(), truncated))
}

/// bert-as-service `POST /encode` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BertServiceRequest {
    #[serde(default)]
    id: Value,
    texts: Vec<Value>,
    #[serde(default)]
    is_tokenized: bool,
}

pub async fn bert_service_encode(
    State(state): State<AppState>,
    Json(req): Json<BertServiceRequest>,
) -> Result<Response, ApiError> {
    let inputs = req
        .texts
        .into_iter()
        .enumerate()
        .map(|(i, t)| match (req.is_tokenized, t) {
            (false, Value::String(s)) => Ok(Input::Text(s)),
            (true, Value::Array(words)) => words
                .into_iter()
                .map(|w| match w {
                    Value::String(s) => Ok(s),
                    other => Err(invalid(format!("texts[{i}]: every token must be a string, got {other}"))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Input::Words),
            (false, _) => Err(invalid(format!(
                "texts[{i}] must be a string (or set is_tokenized: true and send lists of tokens)"
            ))),
            (true, _) => Err(invalid(format!("texts[{i}] must be a list of tokens when is_tokenized is true"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let encoder = state.encoders.get(None)?;
    let opts = EncodeOptions {
        kind: TextKind::Raw,
        normalize: None,
        truncate: true,
        lane: lane_for(&state, inputs.len()),
        wait_for_room: false,
        cache: false,
    };
    let out = encoder.encode(inputs, opts).await?;
    let truncated = truncation_header(&out.truncated);
    let results: Vec<Value> = out
        .outputs
        .into_iter()
        .map(|o| match o {
            Pooled::Vector(v) => json!(v),
            Pooled::Tokens(t) => json!(t),
        })
        .collect();
    Ok(with_truncation(Json(json!({"id": req.id, "results": results, "status": 200})).into_response(), truncated))
}
