#!/usr/bin/env python3
"""The official `openai` Python client against the sidecar's /v1/embeddings.

Usage: openai_client.py BASE_URL MODEL
Embeds texts through the client (its default base64 transport, and explicit floats) and
compares them with what POST /embed returns for the same texts. Exits 1 on any mismatch.
"""
import json
import math
import sys
import urllib.request

import openai

base, model = sys.argv[1], sys.argv[2]
texts = ["hybrid search with BM25 and kNN", "向量检索", "", "🙂 emoji", "a " * 400]

client = openai.OpenAI(base_url=f"{base}/v1", api_key="not-needed", max_retries=0)
default = client.embeddings.create(model=model, input=texts)  # the client asks for base64
floats = client.embeddings.create(model=model, input=texts, encoding_format="float")
single = client.embeddings.create(model=model, input=texts[0])

req = urllib.request.Request(f"{base}/embed", data=json.dumps({"inputs": texts, "truncate": True}).encode(),
                             headers={"content-type": "application/json"})
reference = json.load(urllib.request.urlopen(req))


def cos(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)) or 1e-30)


worst = 1.0
for resp in (default, floats):
    assert resp.model == model, resp.model
    assert [d.index for d in resp.data] == list(range(len(texts)))
    assert resp.usage.prompt_tokens > 0
    for d, ref in zip(resp.data, reference):
        assert len(d.embedding) == len(ref), (len(d.embedding), len(ref))
        worst = min(worst, cos(d.embedding, ref))
worst = min(worst, cos(single.data[0].embedding, reference[0]))
print(f"openai {openai.__version__}: {len(texts)} texts, min cosine to /embed {worst:.9f}")
sys.exit(0 if worst >= 0.99999 else 1)
