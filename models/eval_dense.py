#!/usr/bin/env python3
"""Dense-retrieval nDCG@10 from vectors written by `semantic-sidecar embed` (.npy) and BEIR qrels.

Exact (brute-force) cosine search, so it measures the encoder alone, not an index. Used to compare
model variants (fp32 vs int8) until the sidecar's own `eval` (hybrid search issue) exists.

Usage: eval_dense.py --corpus corpus.jsonl --corpus-vectors c.npy --queries queries.jsonl
                     --query-vectors q.npy --qrels qrels/train.tsv
The .jsonl files give the ids in the order the vectors were written.
"""
import argparse
import json
import math

import numpy as np


def ids(path):
    return [json.loads(line)["_id"] for line in open(path, encoding="utf-8") if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    for a in ("--corpus", "--corpus-vectors", "--queries", "--query-vectors", "--qrels"):
        ap.add_argument(a, required=True)
    ap.add_argument("--k", type=int, default=10)
    a = ap.parse_args()
    doc_ids, query_ids = ids(a.corpus), ids(a.queries)
    docs, queries = np.load(a.corpus_vectors), np.load(a.query_vectors)
    assert len(doc_ids) == len(docs) and len(query_ids) == len(queries)
    qrels = {}
    with open(a.qrels) as f:
        next(f)
        for line in f:
            q, d, s = line.split("\t")
            qrels.setdefault(q, {})[d] = int(s)
    docs = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    pos = {q: i for i, q in enumerate(query_ids)}
    scores = []
    for q, rel in qrels.items():
        v = queries[pos[q]]
        sims = docs @ (v / np.linalg.norm(v))
        top = np.argsort(-sims)[: a.k]
        dcg = sum(rel.get(doc_ids[j], 0) / math.log2(r + 2) for r, j in enumerate(top))
        ideal = sum(g / math.log2(r + 2) for r, g in enumerate(sorted(rel.values(), reverse=True)[: a.k]))
        scores.append(dcg / ideal if ideal else 0.0)
    print(json.dumps({"queries": len(scores), f"ndcg@{a.k}": float(np.mean(scores))}))


if __name__ == "__main__":
    main()
