#!/usr/bin/env python3
"""The official opensearch-py client, unchanged, pointed at the sidecar instead of the cluster.

Usage: opensearch_py_client.py SIDECAR_URL INDEX
Writes 50 documents with helpers.bulk and one with client.index; the Rust test then checks
on the engine that every document carries its vector.
"""
import sys

from opensearchpy import OpenSearch, helpers

url, index = sys.argv[1], sys.argv[2]
client = OpenSearch(hosts=[url], use_ssl=False, verify_certs=False, timeout=60)
actions = [
    {"_index": index, "_id": f"py{i}", "_source": {"title": f"Document {i}", "text": f"Body text number {i} about search."}}
    for i in range(50)
]
ok, errors = helpers.bulk(client, actions, refresh=True)
assert ok == 50 and not errors, (ok, errors)
resp = client.index(index=index, id="single", body={"title": "One", "text": "indexed with client.index"}, refresh=True)
assert resp["result"] == "created", resp
print(f"opensearch-py: helpers.bulk stored {ok}, client.index -> {resp['result']}")
