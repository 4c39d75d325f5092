#!/usr/bin/env python3
"""Recovers a PyTorch (sentence-transformers) checkpoint from a BERT-family ONNX model, so that a
model the sidecar serves from ONNX alone (bge-small-en-v1.5 and the other catalog encoders) can be
fine-tuned by models/finetune.py.

    recover.py --model models/bge-small-en-v1.5 --out .run/checkpoints/bge-small-en-v1.5

The ONNX graph of a BERT encoder exported by torch keeps most parameters under their PyTorch names
(`encoder.layer.3.attention.output.LayerNorm.weight`); the weights of the linear layers become
anonymous `onnx::MatMul_*` initializers, stored transposed, whose module path is in the name of the
MatMul node that reads them (`/encoder/layer.3/attention/self/query/MatMul`). The BERT config comes
from the shapes (vocabulary, width, layers, feed-forward width, positions) and the attention scale
(`Div` by sqrt(head width) gives the number of heads). The pooling, prefixes, lowercasing and
maximum length come from the sidecar's manifest (models/NAME/model.toml).

The result is verified, not assumed: the recovered torch model and the original ONNX graph encode
the parity sentences of models/export.py through the same tokenizer, and the recovery fails below
--min-cosine (0.9999) of the pooled, normalised vectors. The numbers go to recovered.json.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from export import PARITY_SENTENCES, cosine_rows, l2_normalize  # noqa: E402  (numpy-only helpers)


def log(msg: str) -> None:
    print(f"recover: {msg}", file=sys.stderr, flush=True)


def onnx_state(onnx_path: Path):
    """The parameters under their PyTorch names, and the BERT config they imply."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(onnx_path)).graph
    inits = {i.name: i for i in g.initializer}
    consts = {n.output[0]: n for n in g.node if n.op_type == "Constant"}
    state = {}
    for name, t in inits.items():
        if not name.startswith("onnx::") and not name.endswith("position_ids"):  # a buffer, not a weight
            state[name.removeprefix("bert.")] = numpy_helper.to_array(t).copy()
    scale = None
    for n in g.node:
        m = re.fullmatch(r"/(?:bert/)?(.+)/MatMul", n.name)
        if n.op_type == "MatMul" and m and len(n.input) == 2 and n.input[1] in inits:
            key = m.group(1).replace("/", ".") + ".weight"
            state[key] = numpy_helper.to_array(inits[n.input[1]]).T.copy()  # torch Linear: (out, in)
        if n.op_type == "Div" and n.name.endswith("/layer.0/attention/self/Div"):
            src = n.input[1]
            if src in inits:
                scale = float(numpy_helper.to_array(inits[src]))
            elif src in consts:
                scale = float(numpy_helper.to_array(consts[src].attribute[0].t))
    vocab, hidden = state["embeddings.word_embeddings.weight"].shape
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer."))
    if scale is None:
        raise SystemExit("recover: no attention scale (Div by sqrt(head width)) in layer 0: not a BERT export")
    head = round(scale * scale)
    if head <= 0 or hidden % head:
        raise SystemExit(f"recover: attention scale {scale} gives head width {head}, which does not divide {hidden}")
    config = {
        "architectures": ["BertModel"], "model_type": "bert",
        "vocab_size": int(vocab), "hidden_size": int(hidden), "num_hidden_layers": layers,
        "num_attention_heads": int(hidden // head),
        "intermediate_size": int(state["encoder.layer.0.intermediate.dense.bias"].shape[0]),
        "max_position_embeddings": int(state["embeddings.position_embeddings.weight"].shape[0]),
        "type_vocab_size": int(state["embeddings.token_type_embeddings.weight"].shape[0]),
        "hidden_act": "gelu", "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "pad_token_id": 0, "initializer_range": 0.02,
    }
    state = {k: np.ascontiguousarray(v) for k, v in state.items()}
    return state, config


def write_tokenizer(src: Path, lowercase: bool, dst: Path) -> bool:
    """tokenizer.json with the manifest's lowercasing made part of it (bge-zh: uncased vocabulary,
    `lowercase: false` in its normalizer) and no baked-in padding or truncation. Returns whether the
    written tokenizer lowercases: the wrapper transformers builds around it must be told, because
    `BertTokenizerFast(do_lower_case=False)` rewrites a lowercasing normalizer to a cased one (bge-en's
    tokenizer.json lowercases with the manifest's `lowercase = false`; cased, every capitalised word
    becomes [UNK] in training)."""
    tok = json.loads(src.read_text(encoding="utf-8"))
    norm = tok.get("normalizer")
    if lowercase:
        if norm and norm.get("type") == "BertNormalizer":
            norm["lowercase"] = True
        else:
            tok["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Lowercase"}] + ([norm] if norm else [])}
    tok["padding"] = None
    tok["truncation"] = None
    (dst / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    norm = tok.get("normalizer") or {}
    parts = norm.get("normalizers", [norm]) if norm.get("type") == "Sequence" else [norm]
    return any(n.get("type") == "Lowercase" or (n.get("type") == "BertNormalizer" and n.get("lowercase")) for n in parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="a sidecar model folder (model.onnx, model.toml)")
    ap.add_argument("--out", type=Path, required=True, help="sentence-transformers checkpoint folder to write")
    ap.add_argument("--min-cosine", type=float, default=0.9999)
    args = ap.parse_args()
    started = time.time()

    import numpy as np
    import onnxruntime as ort
    import torch
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    manifest = tomllib.loads((args.model / "model.toml").read_text(encoding="utf-8"))
    pooling = manifest.get("pooling", "cls")
    if pooling not in ("cls", "mean"):
        raise SystemExit(f"recover: pooling {pooling} of {args.model} is not supported (cls or mean)")
    state, config = onnx_state(args.model / manifest.get("onnx", "model.onnx"))
    log(f"{args.model.name}: BERT {config['num_hidden_layers']} layers x {config['hidden_size']}, "
        f"{config['num_attention_heads']} heads, vocabulary {config['vocab_size']}")

    model = BertModel(BertConfig(**config), add_pooling_layer=False)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise SystemExit(f"recover: parameters not recovered: missing {missing[:8]}, unexpected {unexpected[:8]}")
    model.eval()

    out = args.out
    tdir = out / "0_Transformer"
    tdir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tdir)
    lowercase = bool(manifest.get("lowercase", False))
    lowercases = write_tokenizer(args.model / manifest.get("tokenizer", "tokenizer.json"), lowercase, tdir)
    max_len = int(manifest.get("max_seq_len", 512))
    BertTokenizerFast(tokenizer_file=str(tdir / "tokenizer.json"), do_lower_case=lowercases,
                      model_max_length=max_len).save_pretrained(tdir)
    (tdir / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_len, "do_lower_case": False}))
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": config["hidden_size"],
        "pooling_mode_cls_token": pooling == "cls", "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}))
    modules = [
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if manifest.get("normalize", True):
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (out / "2_Normalize").mkdir(exist_ok=True)
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_len, "do_lower_case": False}))

    # parity: the recovered torch model against the original graph, one tokenizer for both
    tok = Tokenizer.from_file(str(tdir / "tokenizer.json"))
    tok.enable_truncation(max_len)
    pad = tok.token_to_id("[PAD]")
    tok.enable_padding(pad_id=0 if pad is None else pad, pad_token="[PAD]")
    texts = [manifest.get("prefixes", {}).get("passage", "") + s for s in PARITY_SENTENCES]
    enc = tok.encode_batch(texts)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    types = np.zeros_like(ids)
    sess = ort.InferenceSession(str(args.model / manifest.get("onnx", "model.onnx")), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    feeds = {i.name: feeds[i.name] for i in sess.get_inputs()}
    ref = sess.run(["last_hidden_state"], feeds)[0]
    with torch.no_grad():
        got = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                    token_type_ids=torch.from_numpy(types)).last_hidden_state.numpy()

    def pooled(h):
        if pooling == "cls":
            return l2_normalize(h[:, 0])
        m = mask[..., None].astype(np.float32)
        return l2_normalize((h * m).sum(1) / np.maximum(m.sum(1), 1e-9))

    cos = cosine_rows(pooled(ref), pooled(got))
    # and the folder as training loads it: sentence-transformers' own tokenizer, pooling and
    # normalisation against the graph fed by the tokenizers library (as the sidecar feeds it)
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(out), device="cpu")
    st_ids = st.tokenize(texts)["input_ids"].numpy()
    same_ids = st_ids.shape == ids.shape and bool((st_ids == ids).all())
    st_cos = cosine_rows(pooled(ref), l2_normalize(st.encode(texts, batch_size=len(texts), convert_to_numpy=True)))
    report = {"model": str(args.model), "config": config, "pooling": pooling, "lowercase": lowercase,
              "tokenizer_lowercases": lowercases, "sentence_transformers_same_token_ids": same_ids,
              "sentence_transformers_min_cosine": float(st_cos.min()),
              "sentences": len(texts), "min_cosine": float(min(cos.min(), st_cos.min())),
              "max_abs_diff_hidden": float(np.abs(ref - got).max()), "seconds": round(time.time() - started, 1)}
    (out / "recovered.json").write_text(json.dumps(report, indent=2) + "\n")
    if report["min_cosine"] < args.min_cosine:
        log(f"parity FAILED: min cosine {report['min_cosine']:.7f} < {args.min_cosine} (see {out}/recovered.json)")
        return 1
    if not same_ids:
        log(f"parity FAILED: sentence-transformers tokenizes the parity sentences differently from tokenizer.json (see {out}/recovered.json)")
        return 1
    log(f"{out}: torch and sentence-transformers vs ONNX on {len(texts)} sentences: min cosine {report['min_cosine']:.9f}, "
        f"max abs diff of the hidden states {report['max_abs_diff_hidden']:.2e} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
