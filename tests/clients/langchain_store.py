"""LangChain's ElasticsearchStore, unchanged, through the sidecar on a cluster without the
licence or machine learning its strategies need. Arguments: the sidecar's URL, two fresh index
names (the second one a pipeline index, made here through the pipeline API), the model's name.

1. DenseVectorStrategy(hybrid=True) with embeddings computed by the app (here the sidecar's
   /embed): LangChain maps the index itself and its searches are an `rrf` retriever (a
   Platinum feature), fused by the sidecar.
2. DenseVectorStrategy(model_id=...) on a sidecar pipeline index: LangChain writes only the text
   (the pipeline embeds it), checks that the model is deployed (`_ml/trained_models/.../_infer`)
   and searches with `query_vector_builder`; with hybrid=True too."""
import json
import sys
import urllib.request

from langchain_core.embeddings import Embeddings
from langchain_elasticsearch import DenseVectorStrategy, ElasticsearchStore

url, plain, piped, model = sys.argv[1:5]


def post(path, body, method="POST"):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method=method,
                                 headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req))


class SidecarEmbeddings(Embeddings):
    def embed_documents(self, texts):
        return post("/embed", {"inputs": texts, "prompt_name": "passage"})

    def embed_query(self, text):
        return post("/embed", {"inputs": [text], "prompt_name": "query"})[0]


texts = [
    "Stretch your calves and hamstrings after a run; cooling down lowers muscle soreness.",
    "A sourdough starter needs flour and water, fed every day.",
    "The moon's gravity raises two tides a day on most coasts.",
    "A compiler turns source code into machine code in several passes.",
    "Adults need seven to nine hours of sleep; a regular bedtime helps.",
]
metadatas = [{"topic": t} for t in ["running", "baking", "ocean", "code", "sleep"]]
question = "how do I avoid sore muscles after running"

store = ElasticsearchStore(index_name=plain, es_url=url, embedding=SidecarEmbeddings(),
                           strategy=DenseVectorStrategy(hybrid=True))
store.add_texts(texts, metadatas=metadatas, refresh_indices=True)
hits = store.similarity_search(question, k=2)
assert hits[0].metadata["topic"] == "running", hits
only = store.similarity_search("tides and the moon", k=3, filter=[{"term": {"metadata.topic.keyword": "ocean"}}])
assert [d.metadata["topic"] for d in only] == ["ocean"], only
print("DenseVectorStrategy(hybrid=True): rrf retriever with a filter: ok")

post(f"/_sidecar/pipeline/{piped}", {"index": piped, "model": model,
                                      "fields": [{"source": ["text"], "vector": "vector"}]}, method="PUT")
for hybrid in (False, True):
    store = ElasticsearchStore(index_name=piped, es_url=url,
                               strategy=DenseVectorStrategy(model_id=model, hybrid=hybrid))
    if not hybrid:
        store.add_texts(texts, metadatas=metadatas, refresh_indices=True)
    hits = store.similarity_search(question, k=2)
    assert hits[0].metadata["topic"] == "running", (hybrid, hits)
stored = store.client.search(index=piped, size=10, source_includes=["vector"])["hits"]["hits"]
assert len(stored) == 5 and all(len(h["_source"]["vector"]) == 384 for h in stored), "the pipeline embedded every text"
print("DenseVectorStrategy(model_id=...): model check, pipeline-embedded texts, query_vector_builder, hybrid: ok")
for index in (plain, piped):
    store.client.indices.delete(index=index)
