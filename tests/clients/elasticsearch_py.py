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

# --- the rest of an app's day: mget, msearch (one item hybrid), update that re-embeds, the
# refusals that keep vectors honest, _cat, aliases, scroll, point in time
docs = es.mget(index=index, ids=["py1", "gz1"])["docs"]
assert [d["found"] for d in docs] == [True, True], docs
ms = es.msearch(searches=[{"index": index}, {"query": {"match": {"text": "protein"}}, "size": 2},
                          {"index": index}, {"query": {"hybrid": {"query": "stem cells"}}, "size": 3}])
assert [r["status"] for r in ms["responses"]] == [200, 200], ms
assert len(ms["responses"][1]["hits"]["hits"]) == 3, ms
before = es.get(index=index, id="py5")["_source"]["text_vector"]
r = es.update(index=index, id="py5", doc={"text": "Completely different words on marine biology."}, refresh=True)
assert r["result"] == "updated", r
after = es.get(index=index, id="py5")["_source"]
assert after["title"] == "Document 5" and after["text"].startswith("Completely"), after
assert after["text_vector"] != before and len(after["text_vector"]) == 384
assert es.update(index=index, id="py5", doc={"text": after["text"]})["result"] == "noop"
r = es.update(index=index, id="new1", doc={"title": "Upserted", "text": "made by doc_as_upsert"}, doc_as_upsert=True, refresh=True)
assert r["result"] == "created" and len(es.get(index=index, id="new1")["_source"]["text_vector"]) == 384, r
from elasticsearch import BadRequestError, NotFoundError
for call in (lambda: es.update(index=index, id="py6", script={"source": "ctx._source.text = 'x'"}),
             lambda: es.update_by_query(index=index, script={"source": "ctx._source.text = 'x'"})):
    try:
        call()
        raise AssertionError("a scripted update of a pipeline index went through")
    except BadRequestError as e:
        assert "script" in json.dumps(e.body), e.body
try:
    es.update(index=index, id="nope", doc={"text": "x"})
    raise AssertionError("update of a missing document")
except NotFoundError:
    pass
es.delete(index=index, id="new1", refresh=True)
cat = es.cat.indices(index=index, format="json")
assert cat[0]["index"] == index and int(cat[0]["docs.count"]) == 50, cat
es.indices.put_alias(index=index, name=index + "-alias")
assert index in es.indices.get_alias(name=index + "-alias")
page = es.search(index=index, scroll="1m", size=20, query={"match_all": {}})
seen = len(page["hits"]["hits"])
while True:
    page = es.scroll(scroll_id=page["_scroll_id"], scroll="1m")
    if not page["hits"]["hits"]:
        break
    seen += len(page["hits"]["hits"])
es.clear_scroll(scroll_id=page["_scroll_id"])
assert seen == 50, seen
pit = es.open_point_in_time(index=index, keep_alive="1m")["id"]
r = es.search(pit={"id": pit, "keep_alive": "1m"}, size=100, query={"match_all": {}})
assert len(r["hits"]["hits"]) == 50, r["hits"]["total"]
es.close_point_in_time(id=pit)
print("mget, msearch with a hybrid item, update re-embeds / noop / upsert, scripted updates refused, _cat, alias, scroll 50, pit 50: ok")

# --- Elastic's semantic APIs as its documentation writes them, on a cluster whose licence has
# none of them: query_vector_builder, the rrf and linear retrievers, the inference API
te = {"text_embedding": {"model_id": "all-MiniLM-L6-v2", "model_text": "stem cells"}}
r = es.search(index=index, knn={"field": "text_vector", "k": 3, "num_candidates": 20, "query_vector_builder": te})
assert len(r["hits"]["hits"]) == 3, r
lexical = {"standard": {"query": {"match": {"text": "stem cells"}}}}
semantic = {"knn": {"field": "text_vector", "k": 10, "num_candidates": 20, "query_vector_builder": te}}
r = es.search(index=index, retriever={"rrf": {"retrievers": [lexical, semantic], "rank_window_size": 10}}, size=5)
hits = r["hits"]["hits"]
assert len(hits) == 5 and [h["_rank"] for h in hits] == [1, 2, 3, 4, 5], r
r = es.search(index=index, retriever={"linear": {"retrievers": [
    {"retriever": lexical, "weight": 0.5, "normalizer": "minmax"},
    {"retriever": semantic, "weight": 0.5, "normalizer": "minmax"}], "rank_window_size": 10}},
    size=3, aggs={"n": {"filter": {"match": {"text": "stem"}}}})
assert len(r["hits"]["hits"]) == 3 and r["aggregations"]["n"]["doc_count"] > 0, r
eid = index + "-embeddings"
es.inference.put(inference_id=eid, task_type="text_embedding", inference_config={
    "service": "elasticsearch", "service_settings": {"model_id": "all-MiniLM-L6-v2", "num_allocations": 1, "num_threads": 1}})
got = es.inference.get(inference_id=eid)
assert got["endpoints"][0]["service_settings"]["dimensions"] == 384, got
r = es.inference.inference(inference_id=eid, task_type="text_embedding", input=["stem cells", "protein folding"])
assert [len(e["embedding"]) for e in r["text_embedding"]] == [384, 384], r
r = es.search(index=index, knn={"field": "text_vector", "k": 3, "num_candidates": 20,
              "query_vector_builder": {"text_embedding": {"model_id": eid, "model_text": "protein folding"}}})
assert all(h["_id"].startswith("gz") for h in r["hits"]["hits"]), r
es.inference.delete(inference_id=eid)
print("query_vector_builder, retriever rrf (_rank) and linear (aggregations), inference put/get/inference/delete: ok")
