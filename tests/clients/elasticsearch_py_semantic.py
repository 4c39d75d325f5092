"""Elastic's semantic_text tutorial with elasticsearch-py, unchanged, through the sidecar on a
cluster with no inference service: an inference endpoint, a semantic_text mapping, bulk
ingest, the semantic query, match on the field with the semantic highlighter, the rrf
retriever over both, and cleanup. Arguments: the sidecar's URL and a fresh index name."""
import sys

from elasticsearch import Elasticsearch, helpers

url, index = sys.argv[1], sys.argv[2]
es = Elasticsearch(url, request_timeout=60)
eid = index + "-e5"
es.inference.put(inference_id=eid, task_type="text_embedding", inference_config={
    "service": "elasticsearch",
    "service_settings": {"model_id": "all-MiniLM-L6-v2", "num_allocations": 1, "num_threads": 1}})
es.indices.create(index=index, mappings={"properties": {
    "title": {"type": "text"},
    "content": {"type": "semantic_text", "inference_id": eid}}})
m = es.indices.get_mapping(index=index)[index]["mappings"]["properties"]
assert m["content"]["type"] == "semantic_text" and m["content"]["inference_id"] == eid, m
assert set(m) == {"title", "content"}, m

docs = [
    ("Stretching", "Stretch your calves and hamstrings after a run. Cooling down lowers muscle soreness the next day."),
    ("Hydration", "Drink water before, during and after exercise, more on hot days."),
    ("Sourdough", "A sourdough starter needs flour and water, fed every day, and a warm kitchen."),
    ("Tides", "The moon's gravity pulls the oceans, raising two tides a day on most coasts."),
    ("Sleep", "Adults need seven to nine hours of sleep; a regular bedtime helps."),
    ("Compilers", "A compiler turns source code into machine code in several passes."),
]
helpers.bulk(es, ({"_index": index, "_id": str(i), "title": t, "content": c} for i, (t, c) in enumerate(docs)),
             refresh=True)
assert es.get(index=index, id="0")["_source"] == {"title": docs[0][0], "content": docs[0][1]}

question = "How to avoid muscle soreness while running?"
r = es.search(index=index, query={"semantic": {"field": "content", "query": question}})
assert r["hits"]["hits"][0]["_id"] == "0", r
r = es.search(index=index, query={"match": {"content": question}}, size=2,
              highlight={"fields": {"content": {"type": "semantic", "number_of_fragments": 1}}})
top = r["hits"]["hits"][0]
assert top["_id"] == "0" and len(top["highlight"]["content"]) == 1, r
assert top["highlight"]["content"][0] in docs[0][1], top
r = es.search(index=index, retriever={"rrf": {"retrievers": [
    {"standard": {"query": {"match": {"title": "sourdough"}}}},
    {"standard": {"query": {"semantic": {"field": "content", "query": question}}}}]}}, size=3)
got = [h["_id"] for h in r["hits"]["hits"]]
assert got[:2] in (["0", "2"], ["2", "0"]) and r["hits"]["hits"][0]["_rank"] == 1, r
es.indices.delete(index=index)
es.inference.delete(inference_id=eid)
print("semantic_text tutorial: inference endpoint, mapping, bulk, semantic, match + semantic highlight, rrf: ok")
