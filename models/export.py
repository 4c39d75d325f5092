#!/usr/bin/env python3
"""Export a Hugging Face / sentence-transformers checkpoint to ONNX for semantic-sidecar.

What it does, in order:
  1. reads the checkpoint (a sentence-transformers directory with modules.json, or a plain
     Hugging Face transformer directory) and works out pooling, normalisation and max length;
  2. exports the transformer with torch.onnx (opset 17 by default; dynamic batch and sequence
     axes; inputs input_ids / attention_mask / token_type_ids when the model takes them; outputs
     last_hidden_state, first_hidden_state (first transformer layer), second_last_hidden_state and,
     when the checkpoint carries trained pooler weights, pooler_output), so that every pooling
     strategy of the sidecar (cls, pooler, mean, first_last_avg, last2_avg, none) can run;
  3. writes tokenizer.json with its baked-in truncation and padding removed (the manifest governs
     both: some files ship fixed 128-token padding and truncation, which silently breaks parity);
  4. checks parity: ONNX Runtime through the `tokenizers` pipeline the Rust side uses (truncate
     to max_seq_len, pad to the longest in the batch) against the reference (sentence-transformers
     when the checkpoint is one, else the torch model with the same pooling), batched and one by
     one, and fails below --min-cosine;
  5. writes golden.json (token ids, per-strategy pooled vectors from torch, and the reference
     embedding) for the Rust tests, parity.json (the report), and model.toml (the manifest).

A second run with unchanged inputs finds export.stamp up to date and returns before importing
torch, so it takes well under a second.

Usage:
  python models/export.py --checkpoint DIR --out models/NAME [--name NAME] [--opset 17]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

EXPORT_FORMAT_VERSION = "1"

# Sentences for the parity check: short, long (beyond max_seq_len, so truncation is exercised),
# Chinese, emoji, punctuation only, empty, mixed scripts, code and numbers.
PARITY_SENTENCES = [
    "",
    "hi",
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog.",
    "Vitamin D deficiency is associated with an increased risk of respiratory infections.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "!!!",
    "?!.,;:-()[]{}",
    "🙂🚀🔥 emoji-only and emoji with words 👍",
    "😀😃😄😁",
    "北京是中华人民共和国的首都。",
    "《战国无双3》是由哪两个公司合作开发的？",
    "香港特别行政区位于中国南部，是国际金融中心之一。",
    "机器学习是人工智能的一个分支，研究计算机如何从数据中学习。",
    "混合检索结合了关键词匹配和向量相似度。",
    "Elasticsearch と OpenSearch のハイブリッド検索",
    "Привет, как дела? Это тест на кириллице.",
    "naïve café résumé Ångström façade",
    "fn main() { println!(\"hello, world\"); }",
    "SELECT id, title FROM docs WHERE score > 0.75 ORDER BY score DESC LIMIT 10;",
    "3.14159 2.71828 1.41421 6.02214076e23 42",
    "https://example.org/path?query=value&other=1#fragment",
    "UPPER CASE SENTENCE WITH SHOUTING",
    "   leading and trailing whitespace   ",
    " ".join(["Long documents must be truncated at the model's maximum sequence length,"] * 40),
    " ".join(
        [
            "Protein folding is the physical process by which a polypeptide chain acquires its",
            "native three-dimensional structure, a conformation that is usually biologically",
            "functional, in an expeditious and reproducible manner.",
        ]
        * 12
    ),
]

STRATEGIES = ("cls", "pooler", "mean", "first_last_avg", "last2_avg")

# Model types whose graphs onnxruntime.transformers' BERT fusions understand.
FUSABLE = ("bert",)


def log(msg: str) -> None:
    print(f"export: {msg}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def input_fingerprint(checkpoint: Path, args: argparse.Namespace) -> str:
    """Hash of everything the export depends on: this script, the checkpoint files, the options."""
    h = hashlib.sha256()
    h.update(EXPORT_FORMAT_VERSION.encode())
    h.update(Path(__file__).read_bytes())
    for p in sorted(checkpoint.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            h.update(str(p.relative_to(checkpoint)).encode())
            h.update(sha256_file(p).encode())
    opts = {k: v for k, v in sorted(vars(args).items()) if k not in ("out", "force")}
    h.update(json.dumps(opts, sort_keys=True, default=str).encode())
    return h.hexdigest()


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def describe_checkpoint(ckpt: Path, args: argparse.Namespace) -> dict:
    """Pooling, normalisation, max length and the transformer's folder, from the checkpoint."""
    modules = read_json(ckpt / "modules.json")
    info = {
        "sentence_transformers": modules is not None,
        "transformer_dir": ckpt,
        "pooling": None,
        "normalize": None,
        "max_seq_len": None,
    }
    if modules is not None:
        for m in modules:
            kind = m.get("type", "")
            path = ckpt / m.get("path", "")
            if kind.endswith(("models.Transformer", "transformer.Transformer")):
                info["transformer_dir"] = path
                sb = read_json(path / "sentence_bert_config.json") or read_json(ckpt / "sentence_bert_config.json")
                if sb and sb.get("max_seq_length"):
                    info["max_seq_len"] = int(sb["max_seq_length"])
            elif kind.endswith(("models.Pooling", "pooling.Pooling")):
                cfg = read_json(path / "config.json") or {}
                # sentence-transformers 6 writes `pooling_mode`; older versions one flag per mode
                if cfg.get("pooling_mode_cls_token") or cfg.get("pooling_mode") == "cls":
                    info["pooling"] = "cls"
                elif cfg.get("pooling_mode_mean_tokens") or cfg.get("pooling_mode") == "mean":
                    info["pooling"] = "mean"
                else:
                    modes = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v]
                    raise SystemExit(f"export: pooling {modes} of {path} is not supported (cls or mean)")
            elif kind.endswith(("models.Normalize", "normalize.Normalize")):
                info["normalize"] = True
            elif kind.endswith(("models.Dense", "dense.Dense")):
                raise SystemExit(f"export: a Dense module after pooling ({path}) is not supported yet")
        if info["normalize"] is None:
            info["normalize"] = False
    if args.pooling:
        info["pooling"] = args.pooling
    if args.normalize is not None:
        info["normalize"] = args.normalize
    if args.max_seq_len:
        info["max_seq_len"] = args.max_seq_len
    info["pooling"] = info["pooling"] or "mean"
    info["normalize"] = True if info["normalize"] is None else info["normalize"]
    cfg = read_json(info["transformer_dir"] / "config.json")
    if cfg is None:
        raise SystemExit(f"export: {info['transformer_dir']} has no config.json: not a Hugging Face checkpoint")
    max_pos = int(cfg.get("max_position_embeddings", 512))
    # RoBERTa-style position ids start after the padding index, so fewer positions are usable.
    usable = max_pos - (int(cfg.get("pad_token_id", 0)) + 1 if cfg.get("model_type") in ("roberta", "xlm-roberta", "camembert") else 0)
    info["max_seq_len"] = min(info["max_seq_len"] or usable, usable)
    info["hidden_size"] = int(cfg["hidden_size"])
    info["model_type"] = cfg.get("model_type", "unknown")
    return info


def has_trained_pooler(transformer_dir: Path) -> bool:
    """True when the weights file holds pooler weights (else transformers would initialise them randomly)."""
    st = transformer_dir / "model.safetensors"
    if st.is_file():
        from safetensors import safe_open

        with safe_open(str(st), framework="pt") as f:
            return any(k.endswith("pooler.dense.weight") for k in f.keys())
    binf = transformer_dir / "pytorch_model.bin"
    if binf.is_file():
        import torch

        return any(k.endswith("pooler.dense.weight") for k in torch.load(str(binf), map_location="cpu", weights_only=True))
    return False


def prepare_tokenizer(transformer_dir: Path, out: Path) -> Path:
    """Write out/tokenizer.json without baked-in truncation/padding, plus the vocab files."""
    from tokenizers import Tokenizer

    src = transformer_dir / "tokenizer.json"
    if src.is_file():
        tok = Tokenizer.from_file(str(src))
    else:
        # vocab.txt-only checkpoints (e.g. bert-base-chinese): let transformers build the fast tokenizer.
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(transformer_dir), use_fast=True)
        tok = hf.backend_tokenizer
    tok.no_truncation()
    tok.no_padding()
    dst = out / "tokenizer.json"
    tok.save(str(dst))
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (transformer_dir / name).is_file():
            shutil.copyfile(transformer_dir / name, out / name)
    return dst


def pool(strategy: str, outputs: dict, mask):
    """Reference pooling in numpy; mirrors what the Rust encoder must compute."""
    import numpy as np

    m = mask[..., None].astype(np.float32)

    def masked_mean(h):
        return (h * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)

    if strategy == "cls":
        return outputs["last_hidden_state"][:, 0, :]
    if strategy == "pooler":
        return outputs["pooler_output"]
    if strategy == "mean":
        return masked_mean(outputs["last_hidden_state"])
    if strategy == "first_last_avg":
        return masked_mean((outputs["first_hidden_state"] + outputs["last_hidden_state"]) / 2.0)
    if strategy == "last2_avg":
        return masked_mean((outputs["second_last_hidden_state"] + outputs["last_hidden_state"]) / 2.0)
    raise ValueError(strategy)


def l2_normalize(x):
    import numpy as np

    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)


def cosine_rows(a, b):
    import numpy as np

    return (l2_normalize(a) * l2_normalize(b)).sum(axis=-1).astype(np.float64)


def encode_batch(tokenizer, texts, max_seq_len):
    import numpy as np

    tokenizer.enable_truncation(max_seq_len)
    pad_id = tokenizer.token_to_id("[PAD]")
    if pad_id is None:
        pad_id = tokenizer.token_to_id("<pad>") or 0
    tokenizer.enable_padding(pad_id=pad_id)
    encs = tokenizer.encode_batch(list(texts))
    ids = np.array([e.ids for e in encs], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
    types = np.array([e.type_ids for e in encs], dtype=np.int64)
    return ids, mask, types, encs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, help="Hugging Face / sentence-transformers checkpoint directory")
    ap.add_argument("--quantize", choices=("int8", "int8-static"),
                    help="instead of exporting, quantize the exported model in --from into --out: int8 = dynamic "
                         "(MatMul weights per channel, activation scales per batch, so a vector depends on its "
                         "batch-mates); int8-static = activation scales calibrated once on --calibration texts "
                         "(deterministic: the query path's fast model)")
    ap.add_argument("--calibration", type=Path, help="JSON lines with a `text` field (BEIR queries.jsonl), for "
                    "--quantize int8-static")
    ap.add_argument("--calibration-qrels", type=Path, help="only the queries judged in this BEIR qrels TSV (a train "
                    "split, so that the queries an evaluation scores stay unseen)")
    ap.add_argument("--calibration-size", type=int, default=256, help="calibration texts (default 256)")
    ap.add_argument("--from", dest="from_dir", type=Path, help="an exported model folder (with --quantize)")
    ap.add_argument("--out", required=True, type=Path, help="output directory (models/NAME)")
    ap.add_argument("--name", help="model name in the manifest (default: the output folder's name)")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--min-cosine", type=float, default=0.9999)
    ap.add_argument("--pooling", choices=STRATEGIES, help="override the checkpoint's pooling")
    ap.add_argument("--normalize", dest="normalize", action="store_true", default=None)
    ap.add_argument("--no-normalize", dest="normalize", action="store_false")
    ap.add_argument("--max-seq-len", type=int, help="override the checkpoint's max sequence length")
    ap.add_argument("--query-prefix", default="", help="text prepended to queries (e.g. 'query: ' for e5)")
    ap.add_argument("--passage-prefix", default="", help="text prepended to passages (e.g. 'passage: ' for e5)")
    ap.add_argument("--language", help="ISO 639-1 code the model is for (en, zh, ...; 'multi'): picks a pipeline's default BM25 analyzer")
    ap.add_argument("--source", default="", help="where the checkpoint came from, recorded in the manifest")
    ap.add_argument("--tokenizer", choices=("json", "vocab"), default="json",
                    help="the manifest names tokenizer.json (json) or only the WordPiece vocab.txt (vocab), "
                         "which the sidecar turns into a BERT tokenizer itself; vocab also checks the ids "
                         "against Python's BertTokenizer")
    ap.add_argument("--force", action="store_true", help="export even when export.stamp is up to date")
    ap.add_argument("--no-fuse", action="store_true", help="skip onnxruntime's transformer fusions (attention etc.)")
    args = ap.parse_args()
    if args.quantize:
        if not args.from_dir:
            ap.error("--quantize needs --from (an exported model folder)")
        return quantize_static(args) if args.quantize == "int8-static" else quantize(args)
    if not args.checkpoint:
        ap.error("--checkpoint is required")

    ckpt = args.checkpoint.resolve()
    if not ckpt.is_dir():
        log(f"checkpoint {ckpt} is not a directory")
        return 2
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or out.resolve().name

    started = time.time()
    fingerprint = input_fingerprint(ckpt, args)
    stamp = out / "export.stamp"
    needed = ("model.onnx", "tokenizer.json", "model.toml", "golden.json", "parity.json")
    if not args.force and stamp.is_file() and stamp.read_text().strip() == fingerprint and all((out / n).is_file() for n in needed):
        report = read_json(out / "parity.json") or {}
        log(f"{out}/model.onnx is up to date (min cosine {report.get('min_cosine')}); {time.time() - started:.2f}s")
        return 0
    stamp.unlink(missing_ok=True)

    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import AutoModel

    info = describe_checkpoint(ckpt, args)
    tdir = info["transformer_dir"]
    log(f"checkpoint {ckpt}: {info['model_type']}, hidden {info['hidden_size']}, pooling {info['pooling']}, "
        f"normalize {info['normalize']}, max_seq_len {info['max_seq_len']}")

    pooler = has_trained_pooler(tdir)
    model = AutoModel.from_pretrained(str(tdir), attn_implementation="eager", add_pooling_layer=pooler) if info["model_type"] == "bert" \
        else AutoModel.from_pretrained(str(tdir), attn_implementation="eager")
    model.eval()
    pooler = pooler and getattr(model, "pooler", None) is not None
    if info["pooling"] == "pooler" and not pooler:
        log("pooling 'pooler' needs trained pooler weights, and this checkpoint has none")
        return 2
    if info["hidden_size"] and getattr(model.config, "num_hidden_layers", 2) < 2:
        log("the model has fewer than two layers: last2_avg and first_last_avg are meaningless")
        return 2

    import inspect

    takes_types = "token_type_ids" in inspect.signature(model.forward).parameters
    input_names = ["input_ids", "attention_mask"] + (["token_type_ids"] if takes_types else [])
    output_names = ["last_hidden_state", "first_hidden_state", "second_last_hidden_state"] + (["pooler_output"] if pooler else [])

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kw = {"input_ids": input_ids, "attention_mask": attention_mask, "output_hidden_states": True, "return_dict": True}
            if token_type_ids is not None:
                kw["token_type_ids"] = token_type_ids
            o = self.inner(**kw)
            hs = o.hidden_states
            res = (o.last_hidden_state, hs[1], hs[-2])
            return res + ((o.pooler_output,) if pooler else ())

    tokenizer_path = prepare_tokenizer(tdir, out)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    ids, mask, types, _ = encode_batch(tokenizer, ["export sample one", "a second, longer export sample sentence"], info["max_seq_len"])
    sample = (torch.from_numpy(ids), torch.from_numpy(mask)) + ((torch.from_numpy(types),) if takes_types else ())
    dyn = {n: {0: "batch", 1: "sequence"} for n in input_names}
    for n in output_names:
        dyn[n] = {0: "batch"} if n == "pooler_output" else {0: "batch", 1: "sequence"}
    onnx_path = out / "model.onnx"
    for stale in (onnx_path, out / "model.onnx.data"):
        stale.unlink(missing_ok=True)
    wrapper = Wrapper(model).eval()
    with torch.no_grad():
        try:
            torch.onnx.export(wrapper, sample, str(onnx_path), input_names=input_names, output_names=output_names,
                              dynamic_axes=dyn, opset_version=args.opset, do_constant_folding=True, dynamo=False)
        except TypeError:  # torch versions without the dynamo switch
            torch.onnx.export(wrapper, sample, str(onnx_path), input_names=input_names, output_names=output_names,
                              dynamic_axes=dyn, opset_version=args.opset, do_constant_folding=True)
    log(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB), opset {args.opset}, inputs {input_names}, outputs {output_names}")
    if not args.no_fuse and info["model_type"] in FUSABLE:
        # ONNX Runtime's own graph optimisations do not fuse attention in a TorchScript export of
        # BERT; its transformer optimizer does (Attention, EmbedLayerNormalization,
        # SkipLayerNormalization, BiasGelu): about 7% faster on 2 cores, checked by the parity below.
        from onnxruntime.transformers.optimizer import optimize_model

        fused = optimize_model(str(onnx_path), model_type="bert", num_heads=int(model.config.num_attention_heads),
                               hidden_size=info["hidden_size"], opt_level=1)
        fused.save_model_to_file(str(onnx_path))
        stats = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
        log(f"fused for ONNX Runtime: {stats}")

    # --- parity -----------------------------------------------------------------------------------
    texts = PARITY_SENTENCES
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])

    def run_ort(batch):
        b_ids, b_mask, b_types, _ = encode_batch(tokenizer, batch, info["max_seq_len"])
        feed = {"input_ids": b_ids, "attention_mask": b_mask}
        if takes_types:
            feed["token_type_ids"] = b_types
        outs = dict(zip(output_names, sess.run(output_names, feed)))
        return outs, b_mask

    def finish(v):
        return l2_normalize(v) if info["normalize"] else v

    outs, b_mask = run_ort(texts)
    ort_batched = finish(pool(info["pooling"], outs, b_mask))
    ort_single = np.stack([finish(pool(info["pooling"], *run_ort([t])))[0] for t in texts])

    # torch reference outputs (same token ids as the Rust side), for per-strategy golden vectors
    ids, mask, types, encs = encode_batch(tokenizer, texts, info["max_seq_len"])
    with torch.no_grad():
        t_out = wrapper(torch.from_numpy(ids), torch.from_numpy(mask), *((torch.from_numpy(types),) if takes_types else ()))
    t_out = {n: t.numpy() for n, t in zip(output_names, t_out)}
    golden_pooled = {s: pool(s, t_out, mask) for s in STRATEGIES if s != "pooler" or pooler}

    reference_ids = [[i for i, m in zip(e.ids, e.attention_mask) if m] for e in encs]
    vocab_lowercase = None
    if args.tokenizer == "vocab":
        if not (tdir / "vocab.txt").is_file():
            log(f"--tokenizer vocab needs {tdir}/vocab.txt")
            return 2
        from transformers import BertTokenizer

        tcfg = read_json(tdir / "tokenizer_config.json") or {}
        vocab_lowercase = bool(tcfg.get("do_lower_case", True))
        slow = BertTokenizer(str(tdir / "vocab.txt"), do_lower_case=vocab_lowercase,
                             tokenize_chinese_chars=tcfg.get("tokenize_chinese_chars", True),
                             strip_accents=tcfg.get("strip_accents"))
        slow_ids = [slow(t, truncation=True, max_length=info["max_seq_len"])["input_ids"] for t in texts]
        bad = [t for t, a, b in zip(texts, slow_ids, reference_ids) if a != b]
        if bad:
            log(f"the fast tokenizer disagrees with BertTokenizer on {len(bad)} sentences, e.g. {bad[0]!r}")
            return 1
        reference_ids = slow_ids
        log(f"vocab.txt tokenization matches Python's BertTokenizer on {len(texts)} sentences")

    if info["sentence_transformers"]:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(ckpt), device="cpu")
        if st.max_seq_length != info["max_seq_len"]:
            st.max_seq_length = info["max_seq_len"]
        reference = st.encode(texts, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)
        reference_kind = f"sentence-transformers {__import__('sentence_transformers').__version__}"
    else:
        reference = finish(golden_pooled[info["pooling"]])
        reference_kind = f"torch {torch.__version__} + {info['pooling']} pooling"

    cos_b = cosine_rows(ort_batched, reference)
    cos_s = cosine_rows(ort_single, reference)
    min_cos = float(min(cos_b.min(), cos_s.min()))
    report = {
        "model": name,
        "reference": reference_kind,
        "onnxruntime": ort.__version__,
        "sentences": len(texts),
        "min_cosine": min_cos,
        "mean_cosine": float((cos_b.mean() + cos_s.mean()) / 2),
        "min_cosine_batched": float(cos_b.min()),
        "min_cosine_single": float(cos_s.min()),
        "max_abs_diff": float(np.abs(ort_batched - reference).max()),
        "threshold": args.min_cosine,
        "per_sentence": [
            {"text": t[:60], "tokens": int(sum(e.attention_mask)), "truncated": bool(e.overflowing), "cos_batched": float(cb), "cos_single": float(cs)}
            for t, e, cb, cs in zip(texts, encs, cos_b, cos_s)
        ],
    }
    (out / "parity.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log(f"parity vs {reference_kind} on {len(texts)} sentences: min cosine {min_cos:.9f} "
        f"(batched {cos_b.min():.9f}, one by one {cos_s.min():.9f}), max abs diff {report['max_abs_diff']:.2e}")
    if not (min_cos >= args.min_cosine) or math.isnan(min_cos):
        log(f"FAILED: min cosine {min_cos:.9f} is below {args.min_cosine}; see {out}/parity.json")
        return 1

    golden = {
        "model": name,
        "max_seq_len": info["max_seq_len"],
        "pooling": info["pooling"],
        "normalize": info["normalize"],
        "reference": reference_kind,
        "note": "pooled vectors are raw (not normalised), from the torch model on the token ids below; "
                "'embedding' is the reference pipeline's final output, 'onnxruntime' the same through "
                "Python onnxruntime on the exported graph",
        "sentences": [
            {
                "text": t,
                "input_ids": reference_ids[k],
                "pooled": {s: [round(float(x), 7) for x in golden_pooled[s][k]] for s in golden_pooled},
                "embedding": [round(float(x), 7) for x in reference[k]],
                "onnxruntime": [round(float(x), 7) for x in ort_batched[k]],
            }
            for k, (t, e) in enumerate(zip(texts, encs))
        ],
    }
    (out / "golden.json").write_text(json.dumps(golden, ensure_ascii=False) + "\n", encoding="utf-8")

    outputs_toml = "\n".join(f'{n} = "{n}"' for n in output_names)
    if args.tokenizer == "vocab":
        tokenizer_line = ""
        vocab_toml = f'\n[vocab]\nfile = "vocab.txt"\nlowercase = {str(vocab_lowercase).lower()}\n'
    else:
        tokenizer_line = 'tokenizer = "tokenizer.json"\n'
        vocab_toml = ""
    manifest = f"""# Model manifest for semantic-sidecar. Generated by models/export.py; re-run scripts/setup to refresh.
# The encoder checks it against model.onnx at startup (input/output names, hidden size).
name = "{name}"
onnx = "model.onnx"
{tokenizer_line}dims = {info['hidden_size']}
max_seq_len = {info['max_seq_len']}
# one of: cls, pooler, mean, first_last_avg, last2_avg, none
pooling = "{info['pooling']}"
normalize = {str(bool(info['normalize'])).lower()}
{f'language = "{args.language}"' + chr(10) if args.language else ''}inputs = {json.dumps(input_names)}

# ONNX output names for the tensors each pooling strategy reads.
[outputs]
{outputs_toml}

{vocab_toml}
[prefixes]
query = {json.dumps(args.query_prefix, ensure_ascii=False)}
passage = {json.dumps(args.passage_prefix, ensure_ascii=False)}

[source]
checkpoint = {json.dumps(args.source or ckpt.name, ensure_ascii=False)}
model_type = "{info['model_type']}"
opset = {args.opset}
"""
    while "\n\n\n" in manifest:
        manifest = manifest.replace("\n\n\n", "\n\n")
    (out / "model.toml").write_text(manifest, encoding="utf-8")
    stamp.write_text(fingerprint + "\n")
    log(f"wrote {out}/model.toml, golden.json, parity.json in {time.time() - started:.1f}s")
    return 0


def quantize(args: argparse.Namespace) -> int:
    """Dynamic int8 quantization of an exported model, with its own manifest and a quality report.

    The int8 vectors do not meet the fp32 parity bar; the report gives their cosine to the fp32
    vectors on the parity sentences (quality on a retrieval task is measured with `eval`).
    """
    import tomllib

    src, out = args.from_dir, args.out
    manifest = tomllib.loads((src / "model.toml").read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(sha256_file(src / manifest["onnx"]).encode())
    h.update((src / "model.toml").read_bytes())
    fingerprint = h.hexdigest()
    stamp = out / "export.stamp"
    if stamp.is_file() and stamp.read_text().strip() == fingerprint and (out / "model.onnx").is_file():
        report = read_json(out / "parity.json") or {}
        log(f"{out}/model.onnx is up to date (int8; min cosine to fp32 {report.get('min_cosine_to_fp32')})")
        return 0
    stamp.unlink(missing_ok=True)

    import numpy as np
    import onnxruntime as ort
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from tokenizers import Tokenizer

    started = time.time()
    quantize_dynamic(str(src / manifest["onnx"]), str(out / "model.onnx"), weight_type=QuantType.QInt8,
                     per_channel=True, reduce_range=False, op_types_to_quantize=["MatMul", "Attention"],
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / f).is_file():
            shutil.copyfile(src / f, out / f)
    tokenizer = Tokenizer.from_file(str(src / "tokenizer.json"))
    texts = PARITY_SENTENCES
    inputs = manifest["inputs"]

    def run(path, batch):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        vecs = []
        for i in range(0, len(texts), batch):
            ids, mask, types, _ = encode_batch(tokenizer, texts[i:i + batch], manifest["max_seq_len"])
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            outs = dict(zip(manifest["outputs"].keys(), sess.run(list(manifest["outputs"].values()), {k: feed[k] for k in inputs})))
            v = pool(manifest["pooling"], outs, mask)
            vecs.append(l2_normalize(v) if manifest["normalize"] else v)
        return np.concatenate(vecs)

    # Dynamic quantization scales activations per tensor, i.e. over the whole batch: an int8
    # vector depends on its batch-mates. Golden vectors are therefore taken one text at a time.
    fp32, int8 = run(src / manifest["onnx"], 1), run(out / "model.onnx", 1)
    int8_batched = run(out / "model.onnx", len(texts))
    batch_dependence = cosine_rows(int8_batched, int8)
    cos = cosine_rows(int8, fp32)
    name = manifest["name"] + "-int8"
    report = {
        "model": name,
        "quantization": "onnxruntime quantize_dynamic, QInt8 weights, per channel, MatMul and Attention",
        "sentences": len(texts),
        "min_cosine_to_fp32": float(cos.min()),
        "mean_cosine_to_fp32": float(cos.mean()),
        "min_cosine_batch_of_all_vs_one_by_one": float(batch_dependence.min()),
        "size_mb": {"fp32": (src / manifest["onnx"]).stat().st_size / 1e6, "int8": (out / "model.onnx").stat().st_size / 1e6},
    }
    (out / "parity.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    ids, mask, _, encs = encode_batch(tokenizer, texts, manifest["max_seq_len"])
    golden = {
        "model": name,
        "note": "'onnxruntime' is the int8 graph through Python onnxruntime one text at a time (int8 vectors "
                "depend on their batch-mates); 'fp32' the unquantized model's vectors",
        "sentences": [
            {"text": t, "input_ids": [i for i, m in zip(e.ids, e.attention_mask) if m],
             "onnxruntime": [round(float(x), 7) for x in int8[k]], "fp32": [round(float(x), 7) for x in fp32[k]]}
            for k, (t, e) in enumerate(zip(texts, encs))
        ],
    }
    (out / "golden.json").write_text(json.dumps(golden, ensure_ascii=False) + "\n", encoding="utf-8")
    text = (src / "model.toml").read_text(encoding="utf-8")
    text = text.replace(f'name = "{manifest["name"]}"', f'name = "{name}"', 1)
    text = text.replace("[source]\n", f'[source]\nquantization = "int8"\nquantized_from = "{manifest["name"]}"\n', 1)
    (out / "model.toml").write_text(text, encoding="utf-8")
    stamp.write_text(fingerprint + "\n")
    log(f"int8 {out}/model.onnx ({report['size_mb']['int8']:.1f} MB vs {report['size_mb']['fp32']:.1f} MB): cosine to fp32 "
        f"min {report['min_cosine_to_fp32']:.4f}, mean {report['mean_cosine_to_fp32']:.4f} on {len(texts)} sentences; "
        f"batched vs one by one min {report['min_cosine_batch_of_all_vs_one_by_one']:.4f} "
        f"in {time.time() - started:.1f}s")
    return 0


def calibration_texts(args: argparse.Namespace, prefix: str) -> list[str]:
    """The first --calibration-size texts of --calibration (only the ids of --calibration-qrels when
    given), in file order, with the model's query prefix."""
    if not args.calibration or not args.calibration.is_file():
        raise SystemExit(f"--quantize int8-static needs --calibration FILE.jsonl (got {args.calibration})")
    keep = None
    if args.calibration_qrels:
        keep = set()
        for line in args.calibration_qrels.read_text(encoding="utf-8").splitlines()[1:]:
            if line.strip():
                keep.add(line.split("\t")[0])
    texts = []
    with open(args.calibration, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            if keep is not None and str(row.get("_id")) not in keep:
                continue
            texts.append(prefix + row["text"])
            if len(texts) >= args.calibration_size:
                break
    if len(texts) < 16:
        raise SystemExit(f"only {len(texts)} calibration texts in {args.calibration}: at least 16 are needed")
    return texts


def quantize_static(args: argparse.Namespace) -> int:
    """Static int8 quantization for the query path, with its own manifest and a quality report.

    Weights int8 per channel, activations uint8 with scales calibrated once (MinMax over the
    calibration queries, one at a time) and fixed in the graph as QDQ pairs, on every MatMul with
    a weight matrix (attention's activation x activation products stay fp32). Fixed scales make a
    text's vector independent of its batch-mates, which dynamic int8 is not; the gate fails when the
    batched vectors differ from the one-by-one vectors (cosine below 0.99999). Cosine to the fp32
    model is reported (on the parity sentences and on held-back calibration-file queries), not
    gated: retrieval quality is measured with `eval --query-model`.
    """
    import tomllib

    src, out = args.from_dir, args.out
    manifest = tomllib.loads((src / "model.toml").read_text(encoding="utf-8"))
    prefix = manifest.get("prefixes", {}).get("query", "")
    texts = calibration_texts(args, prefix)
    out.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(sha256_file(src / manifest["onnx"]).encode())
    h.update((src / "model.toml").read_bytes())
    h.update("\n".join(texts).encode())
    fingerprint = h.hexdigest()
    stamp = out / "export.stamp"
    if stamp.is_file() and stamp.read_text().strip() == fingerprint and (out / "model.onnx").is_file():
        report = read_json(out / "parity.json") or {}
        log(f"{out}/model.onnx is up to date (int8-static; min cosine to fp32 {report.get('min_cosine_to_fp32')})")
        return 0
    stamp.unlink(missing_ok=True)

    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static as ort_quantize_static)
    from tokenizers import Tokenizer

    started = time.time()
    tokenizer = Tokenizer.from_file(str(src / "tokenizer.json"))
    inputs = manifest["inputs"]
    max_len = manifest["max_seq_len"]
    lowercase = bool(manifest.get("lowercase", False))

    def feed(batch):
        ids, mask, types, _ = encode_batch(tokenizer, [t.lower() if lowercase else t for t in batch], max_len)
        f = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {k: f[k] for k in inputs}, mask

    class Reader(CalibrationDataReader):
        def __init__(self, texts):
            self.items = iter(texts)

        def get_next(self):
            t = next(self.items, None)
            return None if t is None else feed([t])[0]

    graph = onnx.load(str(src / manifest["onnx"]))
    weights = {i.name for i in graph.graph.initializer}
    matmuls = [n.name for n in graph.graph.node if n.op_type == "MatMul" and len(n.input) == 2 and n.input[1] in weights]
    if not matmuls:
        raise SystemExit(f"{src / manifest['onnx']} has no MatMul with a weight matrix to quantize")
    # calibrate on all but the last 32 texts, which measure the cosine to fp32 on unseen queries
    calib, unseen = texts[:-32], texts[-32:]
    tmp = out / "model.calibrating.onnx"
    ort_quantize_static(str(src / manifest["onnx"]), str(tmp), Reader(calib), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        nodes_to_quantize=matmuls, op_types_to_quantize=["MatMul"],
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    tmp.replace(out / "model.onnx")
    for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / f).is_file():
            shutil.copyfile(src / f, out / f)

    def run(path, batch, texts):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        vecs = []
        for i in range(0, len(texts), batch):
            f, mask = feed(texts[i:i + batch])
            outs = dict(zip(manifest["outputs"].keys(), sess.run(list(manifest["outputs"].values()), f)))
            v = pool(manifest["pooling"], outs, mask)
            vecs.append(l2_normalize(v) if manifest["normalize"] else v)
        return np.concatenate(vecs)

    def ms_per_text(path, texts):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feeds = [feed([t])[0] for t in texts]
        names = list(manifest["outputs"].values())
        for f in feeds[:4]:
            sess.run(names, f)
        t0 = time.perf_counter()
        for f in feeds:
            sess.run(names, f)
        return (time.perf_counter() - t0) * 1000 / len(feeds)

    q = out / "model.onnx"
    sentences = [prefix + t for t in PARITY_SENTENCES]
    one, batched = run(q, 1, sentences), run(q, len(sentences), sentences)
    batch_dependence = cosine_rows(batched, one)
    fp32 = run(src / manifest["onnx"], 1, sentences)
    cos = cosine_rows(one, fp32)
    cos_unseen = cosine_rows(run(q, 1, unseen), run(src / manifest["onnx"], 1, unseen))
    speed = {"fp32": ms_per_text(src / manifest["onnx"], unseen), "int8_static": ms_per_text(q, unseen)}
    name = args.name or out.resolve().name
    report = {
        "model": name,
        "quantized_from": manifest["name"],
        "quantization": "onnxruntime quantize_static, QDQ, uint8 activations (MinMax over the calibration queries), "
                        "int8 weights per channel, MatMuls with a weight matrix",
        "calibration": {"file": str(args.calibration), "qrels": str(args.calibration_qrels or ""),
                        "texts": len(calib), "held_back": len(unseen)},
        "quantized_matmuls": len(matmuls),
        "sentences": len(sentences),
        "min_cosine_to_fp32": float(cos.min()),
        "mean_cosine_to_fp32": float(cos.mean()),
        "min_cosine_to_fp32_unseen_queries": float(cos_unseen.min()),
        "mean_cosine_to_fp32_unseen_queries": float(cos_unseen.mean()),
        "min_cosine_batch_of_all_vs_one_by_one": float(batch_dependence.min()),
        "ms_per_query_one_thread": speed,
        "size_mb": {"fp32": (src / manifest["onnx"]).stat().st_size / 1e6, "int8_static": q.stat().st_size / 1e6},
    }
    (out / "parity.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if not batch_dependence.min() >= 0.99999:
        log(f"static int8 vectors depend on their batch-mates (min cosine {batch_dependence.min():.6f} < 0.99999)")
        return 1
    ids, mask, _, encs = encode_batch(tokenizer, [t.lower() if lowercase else t for t in sentences], max_len)
    golden = {
        "model": name,
        "note": "'onnxruntime' is the static int8 graph through Python onnxruntime one text at a time (query "
                "prefix included in 'text'); 'fp32' the unquantized model's vectors of the same texts",
        "sentences": [
            {"text": t, "input_ids": [i for i, m in zip(e.ids, e.attention_mask) if m],
             "onnxruntime": [round(float(x), 7) for x in one[k]], "fp32": [round(float(x), 7) for x in fp32[k]]}
            for k, (t, e) in enumerate(zip(sentences, encs))
        ],
    }
    (out / "golden.json").write_text(json.dumps(golden, ensure_ascii=False) + "\n", encoding="utf-8")
    text = (src / "model.toml").read_text(encoding="utf-8")
    text = text.replace(f'name = "{manifest["name"]}"', f'name = "{name}"', 1)
    text = text.replace("[source]\n", f'[source]\nquantization = "int8-static"\nquantized_from = "{manifest["name"]}"\n', 1)
    (out / "model.toml").write_text(text, encoding="utf-8")
    stamp.write_text(fingerprint + "\n")
    log(f"int8-static {q} ({report['size_mb']['int8_static']:.1f} MB): cosine to fp32 min {cos.min():.4f} "
        f"(unseen queries min {cos_unseen.min():.4f}, mean {cos_unseen.mean():.4f}); batched vs one by one min "
        f"{batch_dependence.min():.6f}; one thread {speed['fp32']:.2f} -> {speed['int8_static']:.2f} ms per query; "
        f"{time.time() - started:.1f}s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.exit(main())
