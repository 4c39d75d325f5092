//! The offline commands' file formats. Input: `.txt` (one text per line) or `.jsonl` (one JSON
//! object per line whose `--field`, default `text`, holds the text, or a bare JSON string;
//! `_id`/`id` is carried to the output). Output: `.jsonl` (`{"index", "id"?, "embedding"}` per
//! line) or `.npy` (float32, `[n, dims]`, C order), chosen by the output's extension.
//!
//! Owns reading and writing those files; must not encode (the commands do).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context};
use serde_json::Value;

/// Texts (and optional ids) read from an input file.
pub struct Corpus {
    pub texts: Vec<String>,
    pub ids: Vec<Option<Value>>,
}

/// Reads `.txt` or `.jsonl`.
pub fn read_corpus(path: &Path, field: &str) -> anyhow::Result<Corpus> {
    let reader = BufReader::new(File::open(path).with_context(|| format!("opening {}", path.display()))?);
    let jsonl = matches!(path.extension().and_then(|e| e.to_str()), Some("jsonl" | "json" | "ndjson"));
    let mut corpus = Corpus { texts: Vec::new(), ids: Vec::new() };
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: not UTF-8 text", path.display(), n + 1))?;
        if !jsonl {
            corpus.texts.push(line);
            corpus.ids.push(None);
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(&line).with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        let (text, id) = match &v {
            Value::String(s) => (s.clone(), None),
            Value::Object(o) => {
                let Some(Value::String(t)) = o.get(field) else {
                    bail!("{}:{}: no string field `{field}` (use --field)", path.display(), n + 1);
                };
                (t.clone(), o.get("_id").or_else(|| o.get("id")).cloned())
            }
            _ => bail!("{}:{}: expected an object or a string", path.display(), n + 1),
        };
        corpus.texts.push(text);
        corpus.ids.push(id);
    }
    Ok(corpus)
}

/// Writes a float32 `.npy` file of `rows` (all of one length).
pub fn write_npy(path: &Path, rows: &[Vec<f32>]) -> anyhow::Result<()> {
    let dims = rows.first().map_or(0, Vec::len);
    if rows.iter().any(|r| r.len() != dims) {
        bail!("rows of different lengths cannot go into one .npy array");
    }
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}", rows.len(), dims);
    // magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of 64, ending in \n
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut w = BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?);
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&u16::try_from(header.len())?.to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    for r in rows {
        for x in r {
            w.write_all(&x.to_le_bytes())?;
        }
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_files_have_a_valid_header_and_little_endian_floats() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("v.npy");
        write_npy(&p, &[vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0, "data starts 64-byte aligned");
        let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
        assert!(header.contains("'shape': (2, 3)") && header.ends_with('\n'), "{header}");
        let data: Vec<f32> =
            bytes[10 + hlen..].chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert!(write_npy(&p, &[vec![1.0], vec![1.0, 2.0]]).is_err());
    }

    #[test]
    fn corpora_are_read_from_txt_and_jsonl() {
        let tmp = tempfile::tempdir().unwrap();
        let txt = tmp.path().join("a.txt");
        std::fs::write(&txt, "one\ntwo\n").unwrap();
        assert_eq!(read_corpus(&txt, "text").unwrap().texts, vec!["one", "two"]);
        let jl = tmp.path().join("a.jsonl");
        std::fs::write(&jl, "{\"_id\": \"d1\", \"text\": \"alpha\"}\n\n\"beta\"\n").unwrap();
        let c = read_corpus(&jl, "text").unwrap();
        assert_eq!(c.texts, vec!["alpha", "beta"]);
        assert_eq!(c.ids, vec![Some(Value::from("d1")), None]);
        std::fs::write(&jl, "{\"title\": \"x\"}\n").unwrap();
        let err = read_corpus(&jl, "text").err().unwrap().to_string();
        assert!(err.contains("a.jsonl:1") && err.contains("--field"), "{err}");
    }
}
