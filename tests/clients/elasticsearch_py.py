#!/usr/bin/env python3
"""The official elasticsearch-py client, unchanged, pointed at the sidecar instead of the cluster.

Usage: elasticsearch_py.py SIDECAR_URL INDEX MAPPING_JSON_FILE
Run with the client whose major matches the server (8.x against Elasticsearch 8, 9.x against 9;
scripts/setup installs both). Every call an app makes on a day: info(), indices.create/exists,
helpers.bulk with and without http_compress (gzip bodies), index, refresh, count, get, a search
with the sidecar's hybrid clause, a search with knn=, delete, cluster.health, get_mapping.
The Rust test (tests/clients.rs) then checks on the engine that every document has its vector.
"""
import json
import sys
import urllib.request

from elasticsearch import Elasticsearch, helpers

url, index, mapping_file = sys.argv[1], sys.argv[2], sys.argv[3]
mapping = json.load(open(mapping_file))
es = Elasticsearch(url, request_timeout=60)
gz = Elasticsearch(url, request_timeout=60, http_compress=True)

info = es.info()
assert info["version"]["number"] and info["tagline"] == "You Know, for Search", info
print(f"info: {info['version']['number']} via the sidecar (client {__import__('elasticsearch').__versionstr__})")
assert es.ping()

es.indices.create(index=index, settings=mapping["settings"], mappings=mapping["mappings"])
assert es.indices.exists(index=index)
assert not es.indices.exists(index=index + "-missing")

docs = [
    {"_index": index, "_id": f"py{i}", "_source": {"title": f"Document {i}", "text": f"Body text number {i} about stem cells and search."}}
    for i in range(30)
]
ok, errors = helpers.bulk(es, docs)
assert ok == 30 and not errors, (ok, errors)
more = [
    {"_index": index, "_id": f"gz{i}", "_source": {"title": f"Compressed {i}", "text": f"Gzipped body {i} about protein folding."}}
    for i in range(20)
]
ok, errors = helpers.bulk(gz, more)
assert ok == 20 and not errors, (ok, errors)
r = gz.index(index=index, id="single", document={"title": "One", "text": "indexed with index() and gzip"})
assert r["result"] == "created", r
es.indices.refresh(index=index)
n = es.count(index=index)["count"]
assert n == 51, n
print(f"bulk: 30 plain + 20 gzip + 1 index() -> count {n}")

got = es.get(index=index, id="py3")
assert got["found"] and len(got["_source"]["text_vector"]) == 384, got
print("get: py3 has its 384-d vector")

hybrid = es.search(index=index, query={"hybrid": {"query": "stem cells"}}, size=5)
hits = hybrid["hits"]["hits"]
assert len(hits) == 5 and all("_id" in h and "_score" in h for h in hits), hybrid
print("hybrid ids: " + ",".join(h["_id"] for h in hits))

req = urllib.request.Request(url + "/v1/embeddings", data=json.dumps({"input": ["protein folding"], "model": "all-MiniLM-L6-v2"}).encode(), headers={"content-type": "application/json"})
vector = json.load(urllib.request.urlopen(req))["data"][0]["embedding"]
knn = es.search(index=index, knn={"field": "text_vector", "query_vector": vector, "k": 3, "num_candidates": 20}, source=["title"])
ids = [h["_id"] for h in knn["hits"]["hits"]]
assert len(ids) == 3 and all(i.startswith("gz") for i in ids), ids
print("knn ids: " + ",".join(ids))

r = es.delete(index=index, id="single", refresh=True)
assert r["result"] == "deleted", r
assert es.count(index=index)["count"] == 50
health = es.cluster.health()
assert health["status"] in ("green", "yellow"), health
m = es.indices.get_mapping(index=index)
assert m[index]["mappings"]["properties"]["text_vector"]["type"] == "dense_vector", m
print(f"delete, count 50, cluster.health {health['status']}, get_mapping dense_vector: ok")
