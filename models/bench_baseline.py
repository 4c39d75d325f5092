#!/usr/bin/env python3
"""Python baselines for scripts/bench-encode: sentence-transformers on the same texts and
thread count, and the fp32 matmul ceiling of this CPU for the model's shapes.

Prints one JSON object per measurement (same format as `semantic-sidecar bench encode`).
"""
import argparse
import json
import resource
import time

import numpy as np


def load(path, max_n, docs):
    out = []
    with open(path, encoding="utf-8") as f:
        for line, _ in zip(f, range(max_n)):
            d = json.loads(line)
            out.append(f"{d.get('title', '')} {d['text']}".strip() if docs else d["text"])
    return out


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--docs", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--max-docs", type=int, default=500)
    ap.add_argument("--max-queries", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--intermediate", type=int, default=1536)
    ap.add_argument("--layers", type=int, default=6)
    a = ap.parse_args()

    # fp32 ceiling: the model's dense shapes as plain matmuls (a tokens x hidden activation block)
    tokens = 4096
    x = np.random.rand(tokens, a.hidden).astype(np.float32)
    w_sq = np.random.rand(a.hidden, a.hidden).astype(np.float32)
    w_up = np.random.rand(a.hidden, a.intermediate).astype(np.float32)
    w_down = np.random.rand(a.intermediate, a.hidden).astype(np.float32)
    flop_per_token = a.layers * (4 * 2 * a.hidden * a.hidden + 2 * 2 * a.hidden * a.intermediate)
    for _ in range(2):
        x @ w_sq
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(4):
            x @ w_sq
        h = x @ w_up
        h @ w_down
        dt = time.perf_counter() - t
        flops = tokens * (4 * 2 * a.hidden * a.hidden + 2 * 2 * a.hidden * a.intermediate)
        best = max(best, flops / dt)
    print(json.dumps({"measure": "fp32_ceiling", "gflops": best / 1e9, "flop_per_token": flop_per_token,
                      "tokens_per_s": best / flop_per_token}))

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(a.threads)
    model = SentenceTransformer(a.checkpoint, device="cpu")
    docs = load(a.docs, a.max_docs, True)
    queries = load(a.queries, a.max_queries, False)
    model.encode(docs[:16], batch_size=32)
    for name, texts in (("docs_sentence_transformers", docs), ("queries_sentence_transformers", queries)):
        n_tokens = sum(min(len(model.tokenizer(t)["input_ids"]), model.max_seq_length) for t in texts)
        t = time.perf_counter()
        model.encode(texts, batch_size=32, normalize_embeddings=True)
        dt = time.perf_counter() - t
        print(json.dumps({"measure": name, "model": "sentence-transformers", "texts": len(texts), "seconds": dt,
                          "tokens": n_tokens, "texts_per_s": len(texts) / dt, "tokens_per_s": n_tokens / dt,
                          "peak_rss_mb": rss_mb(), "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
