#!/usr/bin/env python3
"""The official opensearch-py client, unchanged, searching through the sidecar.

Usage: opensearch_py_search.py SIDECAR_URL INDEX
A plain match_all query and a query with the sidecar's hybrid clause, both with client.search();
prints the hybrid hits' ids so the Rust test can compare them with POST /search.
"""
import sys

from opensearchpy import OpenSearch

url, index = sys.argv[1], sys.argv[2]
client = OpenSearch(hosts=[url], use_ssl=False, verify_certs=False, timeout=60)

plain = client.search(index=index, body={"query": {"match_all": {}}, "size": 3})
assert plain["hits"]["total"]["value"] > 0 and len(plain["hits"]["hits"]) == 3, plain
print(f"plain: {plain['hits']['total']['value']} documents, 3 returned")

hybrid = client.search(index=index, body={"query": {"hybrid": {"query": "stem cells"}}, "size": 5})
hits = hybrid["hits"]["hits"]
assert len(hits) == 5 and all("_score" in h and "_id" in h for h in hits), hybrid
print("hybrid ids: " + ",".join(h["_id"] for h in hits))
