#!/usr/bin/env python3
"""The official opensearch-py client, unchanged, pointed at the sidecar instead of the cluster.

Usage: opensearch_py.py SIDECAR_URL INDEX MAPPING_JSON_FILE
The same day of calls as elasticsearch_py.py: info(), indices.create/exists, helpers.bulk with
and without http_compress (gzip bodies), index, refresh, count, get, a hybrid-clause search, a
k-NN search, ml-commons' model search / get / predict and a neural query (neither plugin is on
the cluster), delete, cluster.health, get_mapping.
"""
import json
import sys
import urllib.request

from opensearchpy import OpenSearch, helpers

url, index, mapping_file = sys.argv[1], sys.argv[2], sys.argv[3]
mapping = json.load(open(mapping_file))
os_ = OpenSearch(hosts=[url], timeout=60)
gz = OpenSearch(hosts=[url], timeout=60, http_compress=True)

info = os_.info()
assert info["version"]["distribution"] == "opensearch", info
print(f"info: opensearch {info['version']['number']} via the sidecar")
assert os_.ping()

os_.indices.create(index=index, body=mapping)
assert os_.indices.exists(index=index)
assert not os_.indices.exists(index=index + "-missing")

docs = [
    {"_index": index, "_id": f"py{i}", "_source": {"title": f"Document {i}", "text": f"Body text number {i} about stem cells and search."}}
    for i in range(30)
]
ok, errors = helpers.bulk(os_, docs)
assert ok == 30 and not errors, (ok, errors)
more = [
    {"_index": index, "_id": f"gz{i}", "_source": {"title": f"Compressed {i}", "text": f"Gzipped body {i} about protein folding."}}
    for i in range(20)
]
ok, errors = helpers.bulk(gz, more)
assert ok == 20 and not errors, (ok, errors)
r = gz.index(index=index, id="single", body={"title": "One", "text": "indexed with index() and gzip"})
assert r["result"] == "created", r
os_.indices.refresh(index=index)
n = os_.count(index=index)["count"]
assert n == 51, n
print(f"bulk: 30 plain + 20 gzip + 1 index() -> count {n}")

got = os_.get(index=index, id="py3")
assert got["found"] and len(got["_source"]["text_vector"]) == 384, got
print("get: py3 has its 384-d vector")

hybrid = os_.search(index=index, body={"query": {"hybrid": {"query": "stem cells"}}, "size": 5})
hits = hybrid["hits"]["hits"]
assert len(hits) == 5 and all("_id" in h and "_score" in h for h in hits), hybrid
print("hybrid ids: " + ",".join(h["_id"] for h in hits))

req = urllib.request.Request(url + "/v1/embeddings", data=json.dumps({"input": ["protein folding"], "model": "all-MiniLM-L6-v2"}).encode(), headers={"content-type": "application/json"})
vector = json.load(urllib.request.urlopen(req))["data"][0]["embedding"]
knn = os_.search(index=index, body={"size": 3, "query": {"knn": {"text_vector": {"vector": vector, "k": 3}}}, "_source": ["title"]})
ids = [h["_id"] for h in knn["hits"]["hits"]]
assert len(ids) == 3 and all(i.startswith("gz") for i in ids), ids
print("knn ids: " + ",".join(ids))

# OpenSearch's neural search as its tutorial writes it, on a cluster without neural-search or
# ml-commons: the model id found through ml-commons, then a neural query naming it
found = os_.plugins.ml.search_models(body={"query": {"match": {"name": "all-MiniLM-L6-v2"}}, "size": 10})
model_id = found["hits"]["hits"][0]["_id"]
model = os_.plugins.ml.get_model(model_id=model_id)
assert model["model_state"] == "DEPLOYED" and model["model_config"]["embedding_dimension"] == 384, model
pred = os_.plugins.ml.predict(algorithm_name="text_embedding", model_id=model_id,
                              body={"text_docs": ["protein folding"], "return_number": True, "target_response": ["sentence_embedding"]})
assert pred["inference_results"][0]["output"][0]["shape"] == [384], pred
neural = os_.search(index=index, body={"size": 3, "_source": ["title"],
                                       "query": {"neural": {"text_vector": {"query_text": "protein folding", "model_id": model_id, "k": 3}}}})
assert [h["_id"] for h in neural["hits"]["hits"]] == ids, (neural, ids)
print(f"ml-commons search_models / get_model / predict, neural query with model {model_id}: the knn ids")

r = os_.delete(index=index, id="single", refresh=True)
assert r["result"] == "deleted", r
assert os_.count(index=index)["count"] == 50
health = os_.cluster.health()
assert health["status"] in ("green", "yellow"), health
m = os_.indices.get_mapping(index=index)
assert m[index]["mappings"]["properties"]["text_vector"]["type"] == "knn_vector", m
print(f"delete, count 50, cluster.health {health['status']}, get_mapping knn_vector: ok")

# --- the rest of an app's day: mget, msearch (one item hybrid), update that re-embeds, the
# refusals that keep vectors honest, _cat, aliases, scroll, point in time
from opensearchpy.exceptions import NotFoundError, RequestError

docs = os_.mget(index=index, body={"ids": ["py1", "gz1"]})["docs"]
assert [d["found"] for d in docs] == [True, True], docs
ms = os_.msearch(body=[{"index": index}, {"query": {"match": {"text": "protein"}}, "size": 2},
                       {"index": index}, {"query": {"hybrid": {"query": "stem cells"}}, "size": 3}])
assert [r["status"] for r in ms["responses"]] == [200, 200], ms
assert len(ms["responses"][1]["hits"]["hits"]) == 3, ms
before = os_.get(index=index, id="py5")["_source"]["text_vector"]
r = os_.update(index=index, id="py5", body={"doc": {"text": "Completely different words on marine biology."}}, refresh=True)
assert r["result"] == "updated", r
after = os_.get(index=index, id="py5")["_source"]
assert after["title"] == "Document 5" and after["text"].startswith("Completely"), after
assert after["text_vector"] != before and len(after["text_vector"]) == 384
assert os_.update(index=index, id="py5", body={"doc": {"text": after["text"]}})["result"] == "noop"
r = os_.update(index=index, id="new1", body={"doc": {"title": "Upserted", "text": "made by doc_as_upsert"}, "doc_as_upsert": True}, refresh=True)
assert r["result"] == "created" and len(os_.get(index=index, id="new1")["_source"]["text_vector"]) == 384, r
for call in (lambda: os_.update(index=index, id="py6", body={"script": {"source": "ctx._source.text = 'x'"}}),
             lambda: os_.update_by_query(index=index, body={"script": {"source": "ctx._source.text = 'x'"}})):
    try:
        call()
        raise AssertionError("a scripted update of a pipeline index went through")
    except RequestError as e:
        assert "script" in json.dumps(e.info), e.info
try:
    os_.update(index=index, id="nope", body={"doc": {"text": "x"}})
    raise AssertionError("update of a missing document")
except NotFoundError:
    pass
os_.delete(index=index, id="new1", refresh=True)
cat = os_.cat.indices(index=index, format="json")
assert cat[0]["index"] == index and int(cat[0]["docs.count"]) == 50, cat
os_.indices.put_alias(index=index, name=index + "-alias")
assert index in os_.indices.get_alias(name=index + "-alias")
page = os_.search(index=index, scroll="1m", size=20, body={"query": {"match_all": {}}})
seen = len(page["hits"]["hits"])
while True:
    page = os_.scroll(scroll_id=page["_scroll_id"], scroll="1m")
    if not page["hits"]["hits"]:
        break
    seen += len(page["hits"]["hits"])
os_.clear_scroll(scroll_id=page["_scroll_id"])
assert seen == 50, seen
print("mget, msearch with a hybrid item, update re-embeds / noop / upsert, scripted updates refused, _cat, alias, scroll 50: ok")

# --- OpenSearch's hybrid search and ingest pipelines as its docs write them, on a cluster without
# neural-search: search_pipeline.put with a normalization-processor, a hybrid query through
# ?search_pipeline=, ingest.put_pipeline with text_embedding, index(pipeline=), ingest.simulate
sp = index + "-nlp-search"
assert os_.search_pipeline.put(id=sp, body={"description": "Post processor for hybrid search", "phase_results_processors": [
    {"normalization-processor": {"normalization": {"technique": "min_max"},
                                 "combination": {"technique": "arithmetic_mean", "parameters": {"weights": [0.3, 0.7]}}}}]})["acknowledged"]
assert os_.search_pipeline.get(id=sp)[sp]["phase_results_processors"][0]["normalization-processor"]["combination"]["parameters"]["weights"] == [0.3, 0.7]
body = {"size": 5, "_source": {"exclude": ["text_vector"]}, "query": {"hybrid": {"queries": [
    {"match": {"text": {"query": "protein folding"}}},
    {"neural": {"text_vector": {"query_text": "protein folding", "model_id": model_id, "k": 5}}}]}}}
r = os_.search(index=index, body=body, search_pipeline=sp)
hits = r["hits"]["hits"]
assert len(hits) == 5 and all("text_vector" not in h["_source"] for h in hits), r
assert hits[0]["_score"] <= 1.0 and hits[0]["_id"].startswith("gz"), r
assert r["hits"]["total"]["value"] >= 5, r
os_.search_pipeline.delete(id=sp)
ip = index + "-nlp-ingest"
assert os_.ingest.put_pipeline(id=ip, body={"description": "A text embedding pipeline", "processors": [
    {"text_embedding": {"model_id": model_id, "field_map": {"passage_text": "passage_embedding"}}}]})["acknowledged"]
sim = os_.ingest.simulate(id=ip, body={"docs": [{"_index": "testindex1", "_id": "1", "_source": {"passage_text": "hello world"}}]})
assert len(sim["docs"][0]["doc"]["_source"]["passage_embedding"]) == 384, sim
plain = index + "-nlp"
os_.indices.create(index=plain, body={"settings": {"index.knn": True}, "mappings": {"properties": {
    "passage_text": {"type": "text"},
    "passage_embedding": {"type": "knn_vector", "dimension": 384, "method": {"name": "hnsw", "engine": "lucene"}}}}})
os_.index(index=plain, id="1", body={"passage_text": "Gzipped proteins fold."}, pipeline=ip, refresh=True)
assert len(os_.get(index=plain, id="1")["_source"]["passage_embedding"]) == 384
os_.indices.delete(index=plain)
os_.ingest.delete_pipeline(id=ip)
print("search_pipeline.put/get/delete, hybrid query through it, ingest.put_pipeline text_embedding, simulate, index(pipeline=): ok")
