//! Tokenization with the `tokenizers` crate, configured from the manifest, never from whatever
//! truncation or padding a `tokenizer.json` carries (some ship fixed 128-token padding).
//!
//! Truncation keeps the first `max_seq_len` tokens, special tokens included, as Hugging Face
//! does; the number of tokens cut is reported per input. Padding is not done here: the batcher
//! pads each batch to its longest member.
//!
//! A model may ship only a WordPiece `vocab.txt` (bert-base-chinese, roberta-wwm-ext): the BERT
//! pipeline is then built from it (BERT normaliser with per-character CJK splitting, BERT
//! pre-tokenizer, WordPiece, `[CLS] … [SEP]`).

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::{BertNormalizer, Lowercase, NormalizerWrapper, Sequence};
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{EncodeInput, InputSequence, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::manifest::ModelDir;
use super::EncoderError;

/// One tokenized input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<i64>,
    pub type_ids: Vec<i64>,
    /// Tokens cut by truncation (0 when the input fit).
    pub truncated: usize,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The manifest's `lowercase`: a BERT normaliser is told to lowercase (and so, unless the file
/// sets `strip_accents`, to strip accents, as BERT's uncased tokenizer does); any other normaliser
/// gets a lowercase step in front. Offsets stay those of the original text.
fn force_lowercase(tok: &mut Tokenizer) -> Result<(), EncoderError> {
    let lowered = match tok.get_normalizer().cloned() {
        Some(NormalizerWrapper::BertNormalizer(mut n)) => {
            n.lowercase = true;
            NormalizerWrapper::BertNormalizer(n)
        }
        Some(other) => NormalizerWrapper::Sequence(Sequence::new(vec![NormalizerWrapper::Lowercase(Lowercase), other])),
        None => NormalizerWrapper::Lowercase(Lowercase),
    };
    tok.with_normalizer(Some(lowered)).map_err(|e| tok_err("lowercase", e))?;
    Ok(())
}

/// A tokenizer with the manifest's truncation.
pub struct TextTokenizer {
    inner: Tokenizer,
    /// The same pipeline without truncation, to count what truncation cut (the overflow pieces
    /// of `tokenizers` do not cover the whole remainder).
    untruncated: Tokenizer,
    max_len: usize,
    pad_id: i64,
}

fn tok_err(what: &str, e: impl std::fmt::Display) -> EncoderError {
    EncoderError::Tokenizer(format!("{what}: {e}"))
}

impl TextTokenizer {
    /// Loads the tokenizer the manifest names.
    pub fn load(model: &ModelDir) -> Result<Self, EncoderError> {
        let m = &model.manifest;
        let mut inner = match (&m.tokenizer, &m.vocab) {
            (Some(file), _) => Tokenizer::from_file(model.path(file)).map_err(|e| tok_err(file, e))?,
            (None, Some(v)) => bert_from_vocab(&model.path(&v.file).to_string_lossy(), v.lowercase, v.strip_accents)?,
            (None, None) => return Err(EncoderError::Tokenizer("the manifest names no tokenizer".into())),
        };
        if m.lowercase {
            force_lowercase(&mut inner)?;
        }
        inner
            .with_truncation(Some(TruncationParams {
                max_length: m.max_seq_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| tok_err("truncation", e))?;
        inner.with_padding(None);
        let mut untruncated = inner.clone();
        untruncated.with_truncation(None).map_err(|e| tok_err("truncation", e))?;
        let pad_id = ["[PAD]", "<pad>", "<PAD>"].iter().find_map(|t| inner.token_to_id(t)).unwrap_or(0);
        Ok(TextTokenizer { inner, untruncated, max_len: m.max_seq_len, pad_id: i64::from(pad_id) })
    }

    /// The id used to pad batches.
    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    /// Tokenizes one text.
    pub fn encode(&self, text: &str) -> Result<Encoded, EncoderError> {
        self.encode_input(EncodeInput::Single(InputSequence::from(text)))
    }

    /// Tokenizes text the caller already split into words (bert-as-service's `is_tokenized`).
    pub fn encode_words(&self, words: &[String]) -> Result<Encoded, EncoderError> {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        self.encode_input(EncodeInput::Single(InputSequence::from(words)))
    }

    /// Cuts `text` into passages of at most `max_tokens` model tokens (special tokens not
    /// counted), consecutive passages sharing `overlap` tokens. Passages are slices of the
    /// original text (token offsets), so nothing is lowercased or re-spaced. Empty text: none.
    pub fn chunk(&self, text: &str, max_tokens: usize, overlap: usize) -> Result<Vec<String>, EncoderError> {
        let enc = self.untruncated.encode(text, false).map_err(|e| tok_err("encode", e))?;
        let offsets = enc.get_offsets();
        if offsets.is_empty() {
            return Ok(Vec::new());
        }
        let step = max_tokens.saturating_sub(overlap).max(1);
        let mut out = Vec::new();
        let mut start = 0;
        loop {
            let end = (start + max_tokens).min(offsets.len());
            let (a, b) = (offsets[start].0, offsets[end - 1].1);
            if let Some(slice) = text.get(a..b) {
                out.push(slice.to_string());
            }
            if end == offsets.len() {
                break;
            }
            start += step;
        }
        Ok(out)
    }

    fn encode_input(&self, input: EncodeInput<'_>) -> Result<Encoded, EncoderError> {
        let enc = self.inner.encode(input.clone(), true).map_err(|e| tok_err("encode", e))?;
        // Only an input that reached the limit can have been cut: count it in full then.
        let truncated = if enc.get_ids().len() >= self.max_len && !enc.get_overflowing().is_empty() {
            let full = self.untruncated.encode(input, true).map_err(|e| tok_err("encode", e))?;
            full.get_ids().len().saturating_sub(enc.get_ids().len())
        } else {
            0
        };
        Ok(Encoded {
            ids: enc.get_ids().iter().map(|&i| i64::from(i)).collect(),
            type_ids: enc.get_type_ids().iter().map(|&i| i64::from(i)).collect(),
            truncated,
        })
    }
}

fn bert_from_vocab(path: &str, lowercase: bool, strip_accents: Option<bool>) -> Result<Tokenizer, EncoderError> {
    let wordpiece = WordPiece::from_file(path).unk_token("[UNK]".into()).build().map_err(|e| tok_err(path, e))?;
    let mut tk = Tokenizer::new(wordpiece);
    let id = |t: &str| tk.token_to_id(t).ok_or_else(|| EncoderError::Tokenizer(format!("{path} has no {t} token")));
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    tk.with_normalizer(Some(BertNormalizer::new(true, true, strip_accents, lowercase)))
        .map_err(|e| tok_err(path, e))?;
    tk.with_pre_tokenizer(Some(BertPreTokenizer));
    tk.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), sep), ("[CLS]".into(), cls))));
    Ok(tk)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::encoder::manifest::{Manifest, ModelDir, OutputNames, Pooling, VocabSpec};

    fn vocab_model(dir: &std::path::Path, max_seq_len: usize) -> ModelDir {
        let mut f = std::fs::File::create(dir.join("vocab.txt")).unwrap();
        for t in
            ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "中", "文", "检", "索", "hello", "world", "##s", ",", "!"]
        {
            writeln!(f, "{t}").unwrap();
        }
        std::fs::write(dir.join("model.onnx"), b"").unwrap();
        let manifest = Manifest {
            name: "tiny".into(),
            onnx: "model.onnx".into(),
            tokenizer: None,
            vocab: Some(VocabSpec { file: "vocab.txt".into(), lowercase: true, strip_accents: None }),
            dims: 8,
            max_seq_len,
            pooling: Pooling::Mean,
            normalize: true,
            inputs: vec!["input_ids".into(), "attention_mask".into(), "token_type_ids".into()],
            outputs: OutputNames { last_hidden_state: "last_hidden_state".into(), ..Default::default() },
            prefixes: Default::default(),
            lowercase: false,
            language: None,
            truncatable_dims: false,
            whitening: None,
            source: Default::default(),
        };
        ModelDir { dir: dir.to_path_buf(), manifest }
    }

    #[test]
    fn a_vocab_only_model_splits_chinese_per_character_and_lowercases() {
        let tmp = tempfile::tempdir().unwrap();
        let tk = TextTokenizer::load(&vocab_model(tmp.path(), 16)).unwrap();
        let e = tk.encode("中文检索 Hello, Worlds!").unwrap();
        // [CLS] 中 文 检 索 hello , world ##s ! [SEP]
        assert_eq!(e.ids, vec![2, 5, 6, 7, 8, 9, 12, 10, 11, 13, 3]);
        assert_eq!(e.type_ids, vec![0; 11]);
        assert_eq!(e.truncated, 0);
        assert_eq!(tk.pad_id(), 0);
        let unknown = tk.encode("日本").unwrap();
        assert_eq!(unknown.ids, vec![2, 1, 1, 3], "unknown characters map to [UNK] one by one");
    }

    /// A tokenizer.json whose BERT normaliser does not lowercase over an uncased vocabulary (the
    /// bge-zh files): without the manifest's `lowercase`, `Hello` is `[UNK]`; with it, `hello`.
    #[test]
    fn the_manifest_lowercases_a_cased_tokenizer_json_over_an_uncased_vocabulary() {
        let tmp = tempfile::tempdir().unwrap();
        let mut md = vocab_model(tmp.path(), 16);
        let mut raw = TextTokenizer::load(&md).unwrap().inner;
        raw.with_normalizer(Some(BertNormalizer::new(true, true, None, false))).unwrap();
        raw.save(tmp.path().join("tokenizer.json"), false).unwrap();
        md.manifest.vocab = None;
        md.manifest.tokenizer = Some("tokenizer.json".into());

        let cased = TextTokenizer::load(&md).unwrap();
        assert_eq!(cased.encode("中文 Hello").unwrap().ids, vec![2, 5, 6, 1, 3], "Hello is [UNK] as the file says");
        md.manifest.lowercase = true;
        let lowered = TextTokenizer::load(&md).unwrap();
        assert_eq!(lowered.encode("中文 Hello").unwrap().ids, vec![2, 5, 6, 9, 3]);
        assert_eq!(lowered.encode("中文 HELLO").unwrap().ids, lowered.encode("中文 hello").unwrap().ids);
        let chunks = lowered.chunk("Hello World", 1, 0).unwrap();
        assert_eq!(chunks, vec!["Hello", "World"], "chunks keep the original casing");
    }

    #[test]
    fn chunks_are_overlapping_slices_of_the_original_text() {
        let tmp = tempfile::tempdir().unwrap();
        let tk = TextTokenizer::load(&vocab_model(tmp.path(), 16)).unwrap();
        // 8 tokens: 中 文 检 索 Hello , Worlds(2 tokens)
        let chunks = tk.chunk("中文检索 Hello, Worlds", 4, 2).unwrap();
        assert_eq!(chunks, vec!["中文检索", "检索 Hello,", "Hello, Worlds"]);
        assert_eq!(tk.chunk("中文", 4, 1).unwrap(), vec!["中文"]);
        assert!(tk.chunk("", 4, 1).unwrap().is_empty());
    }

    #[test]
    fn truncation_keeps_special_tokens_and_counts_what_it_cut() {
        let tmp = tempfile::tempdir().unwrap();
        let tk = TextTokenizer::load(&vocab_model(tmp.path(), 6)).unwrap();
        let e = tk.encode("中 文 检 索 hello world hello world").unwrap();
        assert_eq!(e.ids.len(), 6);
        assert_eq!((e.ids[0], e.ids[5]), (2, 3), "[CLS] … [SEP] survive truncation");
        assert_eq!(e.ids[1..5], [5, 6, 7, 8]);
        assert_eq!(e.truncated, 4, "8 content tokens, 4 kept");
        let words = tk.encode_words(&["hello".into(), "worlds".into()]).unwrap();
        assert_eq!(words.ids, vec![2, 9, 10, 11, 3]);
    }
}
