"""The official Python clients, unchanged, with a scoped key of the sidecar's.

Usage: scoped_keys.py SIDECAR_URL INDEX FLAVOR (elasticsearch | opensearch); PYTHONPATH picks the
elasticsearch-py major. The key `app` / `app-key` reads INDEX (30 documents). Each credential form
the clients offer is tried: elasticsearch-py api_key=(id, key), api_key="key", basic_auth=(user,
password); opensearch-py http_auth=(user, password). With each: count, helpers.scan (scroll ids
go back to the sidecar, which checks they were handed to this key, and clears them), and on
Elasticsearch a point in time opened, searched and closed. A wrong key gets 401.
"""
import sys

url, index, flavor = sys.argv[1], sys.argv[2], sys.argv[3]

if flavor == "elasticsearch":
    from elasticsearch import Elasticsearch as Client, helpers

    forms = [{"api_key": ("app", "app-key")}, {"api_key": "app-key"}, {"basic_auth": ("app", "app-key")}]
    wrong = {"api_key": ("app", "wrong-key")}
else:
    from opensearchpy import OpenSearch as Client, helpers

    forms = [{"http_auth": ("app", "app-key")}]
    wrong = {"http_auth": ("app", "wrong-key")}

for kw in forms:
    c = Client(url, **kw)
    n = c.count(index=index)["count"]
    assert n == 30, (kw, n)
    docs = list(helpers.scan(c, index=index, size=7, query={"query": {"match_all": {}}}))
    assert len(docs) == 30, (kw, len(docs))
    if flavor == "elasticsearch":
        pit = c.open_point_in_time(index=index, keep_alive="1m")["id"]
        assert pit.startswith("ss1."), pit
        r = c.search(pit={"id": pit, "keep_alive": "1m"}, size=100, query={"match_all": {}})
        assert len(r["hits"]["hits"]) == 30, r
        c.close_point_in_time(id=r["pit_id"])
    print(f"{sorted(kw)}: count, scan ({len(docs)} documents) ok")

try:
    Client(url, **wrong).count(index=index)
    raise SystemExit("a wrong key was accepted")
except Exception as e:  # the client's AuthenticationException
    assert "401" in str(e) or "Authentication" in type(e).__name__, repr(e)
print("a wrong key: 401")
