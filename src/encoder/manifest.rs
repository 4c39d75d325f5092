//! The model manifest (`models/<name>/model.toml`): what the encoder needs to know about a model
//! that the ONNX graph does not say (tokenizer, pooling, normalisation, prefixes, limits).
//!
//! Parsed strictly (unknown keys are errors) and checked for internal consistency here; checked
//! against the ONNX graph by the runtime when the session is built.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::EncoderError;

/// How token vectors become one sentence vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The last layer's first token (`[CLS]`).
    Cls,
    /// BERT's pooler output (dense + tanh over `[CLS]`).
    Pooler,
    /// Masked mean of the last layer.
    Mean,
    /// Masked mean of the average of the first transformer layer and the last layer.
    FirstLastAvg,
    /// Masked mean of the average of the last two layers.
    Last2Avg,
    /// No pooling: one vector per token (bert-as-service's `NONE`).
    None,
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Pooling::Cls => "cls",
            Pooling::Pooler => "pooler",
            Pooling::Mean => "mean",
            Pooling::FirstLastAvg => "first_last_avg",
            Pooling::Last2Avg => "last2_avg",
            Pooling::None => "none",
        };
        f.write_str(s)
    }
}

/// The ONNX output names each pooling strategy may read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputNames {
    pub last_hidden_state: String,
    #[serde(default)]
    pub first_hidden_state: Option<String>,
    #[serde(default)]
    pub second_last_hidden_state: Option<String>,
    #[serde(default)]
    pub pooler_output: Option<String>,
}

/// Text prepended before tokenization (e5's `query: `, bge's instruction).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prefixes {
    #[serde(default)]
    pub query: String,
    #[serde(default)]
    pub passage: String,
}

/// A WordPiece vocabulary file used instead of `tokenizer.json` (e.g. bert-base-chinese).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VocabSpec {
    pub file: String,
    #[serde(default = "yes")]
    pub lowercase: bool,
    /// `None` follows `lowercase`, as BERT's tokenizer does.
    #[serde(default)]
    pub strip_accents: Option<bool>,
}

fn yes() -> bool {
    true
}

/// Optional BERT-whitening applied after pooling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhiteningSpec {
    /// JSON file beside the manifest with `mean` and `matrix` (written by `whiten fit`).
    pub file: String,
    /// Keep only the first `dims` whitened components (None: all).
    #[serde(default)]
    pub dims: Option<usize>,
}

/// Where the checkpoint came from (informational).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    #[serde(default)]
    pub checkpoint: String,
    #[serde(default)]
    pub model_type: String,
    #[serde(default)]
    pub opset: Option<u32>,
    #[serde(default)]
    pub quantization: Option<String>,
    /// The model whose vectors a quantized copy approximates (`models/export.py --quantize`):
    /// a pipeline may embed queries with an `int8-static` copy of its vector field's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantized_from: Option<String>,
    /// Written by models/finetune.py: what the model was fine-tuned from and on.
    #[serde(default)]
    pub finetune: Option<Finetune>,
}

/// `[source.finetune]`: the recipe's record of a fine-tuned model (informational; the full
/// report is the folder's `finetune.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finetune {
    /// The checkpoint training started from.
    pub base: String,
    /// `mnrl`, `simcse` or `tsdae`.
    pub method: String,
    /// Dataset, split and counts.
    pub data: String,
    /// The hyper-parameters, as JSON.
    pub hyperparameters: String,
    #[serde(default)]
    pub steps: u64,
    /// Loss on a fixed probe batch before and after training.
    #[serde(default)]
    pub probe_loss: String,
    #[serde(default)]
    pub report: String,
}

/// `model.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub onnx: String,
    /// `tokenizer.json`; exactly one of `tokenizer` and `[vocab]`.
    #[serde(default)]
    pub tokenizer: Option<String>,
    #[serde(default)]
    pub vocab: Option<VocabSpec>,
    /// Hidden size of the model (the pooled vector's length before whitening).
    pub dims: usize,
    pub max_seq_len: usize,
    pub pooling: Pooling,
    pub normalize: bool,
    /// ONNX input names, in the order the model takes them.
    pub inputs: Vec<String>,
    pub outputs: OutputNames,
    #[serde(default)]
    pub prefixes: Prefixes,
    /// Lowercase text before tokenization whatever `tokenizer.json` says: the bge-zh files say
    /// `lowercase: false` over an uncased vocabulary, so `Hello` would be `[UNK]`. A BERT
    /// normaliser is switched to lowercasing (which, as in BERT's uncased tokenizer, also strips
    /// accents unless the file sets `strip_accents`); any other normaliser gets a lowercase step
    /// in front.
    #[serde(default)]
    pub lowercase: bool,
    /// The language the model was trained for (ISO 639-1: `en`, `zh`, …), which picks the default
    /// BM25 analyzer of a pipeline using it (`english`, `cjk`); `multi` or unset: `standard`.
    #[serde(default)]
    pub language: Option<String>,
    /// Whether leading components alone are meaningful (Matryoshka training), allowing the
    /// OpenAI API's `dimensions` to truncate.
    #[serde(default)]
    pub truncatable_dims: bool,
    #[serde(default)]
    pub whitening: Option<WhiteningSpec>,
    #[serde(default)]
    pub source: Source,
}

/// A manifest and the folder it was read from.
#[derive(Clone, Debug)]
pub struct ModelDir {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl ModelDir {
    /// Reads and checks `dir/model.toml`.
    pub fn load(dir: &Path) -> Result<ModelDir, EncoderError> {
        let path = dir.join("model.toml");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| EncoderError::Manifest { path: path.clone(), reason: e.to_string() })?;
        let manifest: Manifest =
            toml::from_str(&text).map_err(|e| EncoderError::Manifest { path: path.clone(), reason: e.to_string() })?;
        manifest.validate().map_err(|reason| EncoderError::Manifest { path: path.clone(), reason })?;
        for file in manifest.files() {
            if !dir.join(&file).is_file() {
                return Err(EncoderError::Manifest {
                    path,
                    reason: format!("{file} is missing from {} (run scripts/setup to export the model)", dir.display()),
                });
            }
        }
        Ok(ModelDir { dir: dir.to_path_buf(), manifest })
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

impl Manifest {
    /// Internal consistency; returns the reason of the first problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(format!("name `{}` must be non-empty ASCII letters, digits, '-', '_' or '.'", self.name));
        }
        match (&self.tokenizer, &self.vocab) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => return Err("set exactly one of `tokenizer` (tokenizer.json) and `[vocab]` (vocab.txt)".into()),
        }
        if self.dims == 0 {
            return Err("dims must be positive".into());
        }
        if !(2..=8192).contains(&self.max_seq_len) {
            return Err(format!("max_seq_len {} must be between 2 and 8192", self.max_seq_len));
        }
        for needed in ["input_ids", "attention_mask"] {
            if !self.inputs.iter().any(|i| i == needed) {
                return Err(format!("inputs must include `{needed}`"));
            }
        }
        if let Some(other) =
            self.inputs.iter().find(|i| !["input_ids", "attention_mask", "token_type_ids"].contains(&i.as_str()))
        {
            return Err(format!("input `{other}` is not one the encoder can feed"));
        }
        let missing = |what: &str| format!("pooling `{}` needs outputs.{what}", self.pooling);
        match self.pooling {
            Pooling::Pooler if self.outputs.pooler_output.is_none() => return Err(missing("pooler_output")),
            Pooling::FirstLastAvg if self.outputs.first_hidden_state.is_none() => {
                return Err(missing("first_hidden_state"))
            }
            Pooling::Last2Avg if self.outputs.second_last_hidden_state.is_none() => {
                return Err(missing("second_last_hidden_state"))
            }
            _ => {}
        }
        if let Some(l) = &self.language {
            if l.is_empty() || l.len() > 8 || !l.chars().all(|c| c.is_ascii_lowercase()) {
                return Err(format!(
                    "language `{l}` must be a lowercase ISO 639-1 code such as `en` or `zh`, or `multi`"
                ));
            }
        }
        if let Some(w) = &self.whitening {
            if self.pooling == Pooling::None {
                return Err("whitening applies to pooled vectors; pooling `none` has none".into());
            }
            if w.dims.is_some_and(|k| k == 0 || k > self.dims) {
                return Err(format!("whitening.dims must be between 1 and dims ({})", self.dims));
            }
        }
        Ok(())
    }

    /// Files the manifest names, relative to its folder.
    pub fn files(&self) -> Vec<String> {
        let mut f = vec![self.onnx.clone()];
        f.extend(self.tokenizer.clone());
        f.extend(self.vocab.as_ref().map(|v| v.file.clone()));
        f.extend(self.whitening.as_ref().map(|w| w.file.clone()));
        f
    }

    /// Length of the vectors the encoder returns (after whitening's reduction, if any).
    pub fn output_dims(&self) -> usize {
        self.whitening.as_ref().and_then(|w| w.dims).unwrap_or(self.dims)
    }

    /// The ONNX outputs the pooling strategy reads.
    pub fn required_outputs(&self) -> Vec<String> {
        let o = &self.outputs;
        let mut v = Vec::new();
        match self.pooling {
            Pooling::Pooler => v.extend(o.pooler_output.clone()),
            Pooling::FirstLastAvg => {
                v.push(o.last_hidden_state.clone());
                v.extend(o.first_hidden_state.clone());
            }
            Pooling::Last2Avg => {
                v.push(o.last_hidden_state.clone());
                v.extend(o.second_last_hidden_state.clone());
            }
            Pooling::Cls | Pooling::Mean | Pooling::None => v.push(o.last_hidden_state.clone()),
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINILM: &str = include_str!("../../models/all-MiniLM-L6-v2/model.toml");

    fn base() -> Manifest {
        toml::from_str(MINILM).unwrap()
    }

    #[test]
    fn the_committed_default_manifest_parses_and_validates() {
        let m = base();
        m.validate().unwrap();
        assert_eq!(m.dims, 384);
        assert_eq!(m.pooling, Pooling::Mean);
        assert_eq!(m.required_outputs(), vec!["last_hidden_state".to_string()]);
        assert_eq!(m.output_dims(), 384);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let text = format!("{MINILM}\npooling_mode = \"mean\"\n");
        let err = toml::from_str::<Manifest>(&text).unwrap_err().to_string();
        assert!(err.contains("pooling_mode"), "{err}");
    }

    #[test]
    fn inconsistent_manifests_name_the_problem() {
        let mut m = base();
        m.outputs.pooler_output = None;
        m.pooling = Pooling::Pooler;
        assert!(m.validate().unwrap_err().contains("pooler_output"));

        let mut m = base();
        m.vocab = Some(VocabSpec { file: "vocab.txt".into(), lowercase: true, strip_accents: None });
        assert!(m.validate().unwrap_err().contains("exactly one"));

        let mut m = base();
        m.inputs = vec!["input_ids".into()];
        assert!(m.validate().unwrap_err().contains("attention_mask"));

        let mut m = base();
        m.whitening = Some(WhiteningSpec { file: "w.json".into(), dims: Some(999) });
        assert!(m.validate().unwrap_err().contains("whitening.dims"));

        let mut m = base();
        m.max_seq_len = 1;
        assert!(m.validate().unwrap_err().contains("max_seq_len"));
    }

    #[test]
    fn each_pooling_reads_the_outputs_it_needs() {
        let mut m = base();
        m.pooling = Pooling::FirstLastAvg;
        assert_eq!(m.required_outputs(), vec!["last_hidden_state", "first_hidden_state"]);
        m.pooling = Pooling::Last2Avg;
        assert_eq!(m.required_outputs(), vec!["last_hidden_state", "second_last_hidden_state"]);
        m.pooling = Pooling::Pooler;
        assert_eq!(m.required_outputs(), vec!["pooler_output"]);
    }
}
