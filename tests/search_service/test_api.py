"""search-service over HTTP (the app in-process, through an ASGI transport): collections, documents, the three
search modes, filters, paging, explain, scores, metrics and bad input. Shared app + collection from
service_fixtures."""
from __future__ import annotations

import httpx
import pytest

from tests.search_service.service_fixtures import ingest


def search(client: httpx.Client, mode: str = "hybrid", **body) -> httpx.Response:
    return client.post(f"/search/{mode}", json=body)


def ok(r: httpx.Response) -> dict:
    assert r.status_code == 200, r.text
    return r.json()


# -- ops --------------------------------------------------------------------------------------------

def test_health_ready_metrics(client, loaded):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert checks["store"] == "ok" and checks["embedder"].startswith("ok") and checks["redis"] == "ok"
    ok(search(client, query="cancer", collection=loaded))
    text = client.get("/metrics").text
    for name in ("search_requests_total", "search_request_duration_seconds", "search_cache_hits_total",
                 "search_cache_misses_total", "search_cache_errors_total", "search_stage_duration_seconds",
                 "search_documents_ingested_total"):
        assert name in text
    assert 'search_requests_total{endpoint="/search/hybrid",status="200"}' in text
    for stage in ("embed", "keyword", "vector", "fuse"):
        assert f'search_stage_duration_seconds_count{{stage="{stage}"}}' in text


# -- collections and documents -----------------------------------------------------------------------

def test_collection_lifecycle(client, unique_name):
    r = client.post("/collections", json={"name": unique_name})
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["documents"] == 0 and info["dim"] == 384 and info["model_id"] and info["model_matches"]
    assert client.post("/collections", json={"name": unique_name}).status_code == 409
    assert unique_name in [c["name"] for c in client.get("/collections").json()["collections"]]
    ingest(client, unique_name, [{"id": "a", "text": "alpha beta gamma", "title": "A", "metadata": {"k": 1}},
                                 {"id": 2, "text": "delta epsilon"}])
    info = client.get(f"/collections/{unique_name}").json()
    assert info["documents"] == 2 and info["chunks"] == 2 and info["bm25"]["avgdl"] > 0
    index = info["index"]          # far below the threshold: no index (exact search), nothing scheduled
    assert index["state"] == "none" and index["points"] == 2 and index["auto"] and index["threshold"] >= 1000
    doc = client.get(f"/collections/{unique_name}/documents/a").json()
    assert doc == {"id": "a", "title": "A", "text": "alpha beta gamma", "metadata": {"k": 1}, "chunks": 1}
    assert client.get(f"/collections/{unique_name}/documents/2").json()["text"] == "delta epsilon"
    assert client.get(f"/collections/{unique_name}/documents/zzz").status_code == 404
    opt = client.post(f"/collections/{unique_name}/optimize")
    assert opt.status_code == 200 and isinstance(opt.json()["changed"], bool)
    assert client.post("/collections/nope/optimize").status_code == 404
    r = client.request("DELETE", f"/collections/{unique_name}/documents", json={"ids": ["a", "nope"]})
    assert r.json() == {"deleted": 1, "not_found": ["nope"]}
    assert client.get(f"/collections/{unique_name}").json()["documents"] == 1
    assert client.delete(f"/collections/{unique_name}").status_code == 204
    assert client.get(f"/collections/{unique_name}").status_code == 404
    assert client.delete(f"/collections/{unique_name}").status_code == 404


def test_collection_bad_input(client, unique_name):
    r = client.post("/collections", json={"name": "bad name!"})
    assert r.status_code == 422 and "name" in r.json()["error"]["message"]
    r = client.post("/collections", json={"name": unique_name, "chunk_words": 32, "chunk_overlap": 40})
    assert r.status_code == 422 and "chunk_overlap" in r.json()["error"]["message"]
    r = client.post("/collections/nope/documents", json={"documents": [{"id": "x", "text": "t"}]})
    assert r.status_code == 404
    client.post("/collections", json={"name": unique_name})
    try:
        for body, field in [({"documents": []}, "documents"),
                            ({"documents": [{"id": "x"}]}, "text"),
                            ({"documents": [{"id": "", "text": "t"}]}, "id"),
                            ({"documents": [{"id": "x", "text": "t", "metadata": [1]}]}, "metadata"),
                            ({"documents": [{"id": "x", "text": "  "}]}, "empty")]:
            r = client.post(f"/collections/{unique_name}/documents", json=body)
            assert r.status_code == 422, (body, r.text)
            assert field in r.json()["error"]["message"], r.text
        r = client.post(f"/collections/{unique_name}/documents",
                        json={"documents": [{"id": str(i), "text": "t"} for i in range(600)]})
        assert r.status_code == 413 and "512" in r.json()["error"]["message"]
    finally:
        client.delete(f"/collections/{unique_name}")


def test_collection_layout_on_the_embedded_engine(client, unique_name):
    """One shard, no replicas: reported as such; 1 may be asked for, anything else is a 400 that names the
    field and says it needs a Qdrant server (never silently ignored); out-of-range values are 422s."""
    r = client.post("/collections", json={"name": unique_name, "shard_number": 1, "replication_factor": 1,
                                          "write_consistency_factor": 1})
    assert r.status_code == 201, r.text
    try:
        layout = {"shard_number": 1, "replication_factor": 1, "write_consistency_factor": 1}
        assert r.json().items() >= layout.items()
        assert client.get(f"/collections/{unique_name}").json().items() >= layout.items()
    finally:
        client.delete(f"/collections/{unique_name}")
    other = unique_name + "-x"
    for field, value in (("shard_number", 3), ("replication_factor", 2)):
        r = client.post("/collections", json={"name": other, field: value})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert f"{field}={value} needs a Qdrant server" in err["message"] and err["param"] == field, err
        assert client.get(f"/collections/{other}").status_code == 404
    for body, field in [({"shard_number": 0}, "shard_number"), ({"shard_number": 65}, "shard_number"),
                        ({"replication_factor": 11}, "replication_factor"), ({"replication_factor": "two"},
                                                                              "replication_factor"),
                        ({"replication_factor": 2, "write_consistency_factor": 3}, "write_consistency_factor"),
                        ({"write_consistency_factor": 2}, "write_consistency_factor")]:
        r = client.post("/collections", json={"name": other, **body})
        assert r.status_code == 422 and field in r.json()["error"]["message"], (body, r.text)
    assert client.get(f"/collections/{other}").status_code == 404


def test_long_documents_are_chunked_and_replaced(client, unique_name):
    r = client.post("/collections", json={"name": unique_name, "chunk_words": 20, "chunk_overlap": 5})
    assert r.status_code == 201, r.text
    try:
        words = [f"w{i}" for i in range(100)]
        long_doc = {"id": "long", "title": "Long", "text": " ".join(words) + " zebrafish"}
        ingest(client, unique_name, [long_doc, {"id": "short", "text": "zebrafish are small fish"}])
        info = client.get(f"/collections/{unique_name}").json()
        assert info["documents"] == 2 and info["chunks"] == 8     # ceil((101-20)/15)+1 = 7 chunks + 1
        assert client.get(f"/collections/{unique_name}/documents/long").json()["text"] == long_doc["text"]
        # a word only in the last chunk finds the document; chunks collapse: each doc once
        res = ok(search(client, query="zebrafish", collection=unique_name, explain=True))
        assert sorted(h["id"] for h in res["results"]) == ["long", "short"]
        res = ok(search(client, "keyword", query="w3", collection=unique_name))
        assert [h["id"] for h in res["results"]] == ["long"]
        # re-upsert with a short text replaces every old chunk
        ingest(client, unique_name, [{"id": "long", "text": "now a short text"}])
        info = client.get(f"/collections/{unique_name}").json()
        assert info["documents"] == 2 and info["chunks"] == 2
        assert ok(search(client, "keyword", query="w3", collection=unique_name))["results"] == []
        client.request("DELETE", f"/collections/{unique_name}/documents", json={"ids": ["long", "short"]})
        info = client.get(f"/collections/{unique_name}").json()
        assert info["documents"] == 0 and info["chunks"] == 0 and info["bm25"]["avgdl"] == 0
    finally:
        client.delete(f"/collections/{unique_name}")


# -- search ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
def test_title_query_finds_its_document(client, loaded, fixture_corpus, mode):
    docs, _ = fixture_corpus
    for doc in docs[:40:8]:
        res = ok(search(client, mode, query=doc["title"], collection=loaded, limit=5))
        assert res["results"][0]["id"] == doc["id"], (mode, doc["title"], res["results"][:2])
        top = res["results"][0]
        assert top["title"] == doc["title"] and top["text"] and top["metadata"]["source"] == "scifact"
        assert all(0.0 <= h["score"] <= 1.0 for h in res["results"])
        assert [h["score"] for h in res["results"]] == sorted((h["score"] for h in res["results"]), reverse=True)


def test_relevant_documents_rank_high(client, loaded, fixture_corpus):
    _, queries = fixture_corpus
    found = {"hybrid": 0, "vector": 0, "keyword": 0}
    for q in queries:
        for mode in found:
            ids = [h["id"] for h in ok(search(client, mode, query=q["query"], collection=loaded))["results"]]
            found[mode] += bool(set(ids[:10]) & set(q["relevant"]))
    # a 64-document corpus: nearly every query's relevant document is in each top 10
    assert found["hybrid"] >= len(queries) - 1, found
    assert found["hybrid"] >= max(found["vector"], found["keyword"]) - 1, found


def test_korean_query(client, loaded):
    # MiniLM is an English model: for Korean the keyword side carries the signal
    res = ok(search(client, "keyword", query="김치 발효와 유산균", collection=loaded, limit=3))
    assert res["results"][0]["id"] == "ko-1", res
    for fusion in ("rrf", "minmax", "dbsf"):
        res = ok(search(client, query="김치 발효와 유산균", collection=loaded, limit=3, fusion=fusion))
        assert res["results"][0]["id"] == "ko-1", (fusion, res)
    res = ok(search(client, "vector", query="김치 발효와 유산균", collection=loaded, limit=4))
    assert {h["id"] for h in res["results"]} == {"ko-1", "ko-2", "ko-3", "ko-4"}
    res = ok(search(client, "keyword", query="인슐린", collection=loaded))
    assert [h["id"] for h in res["results"]] == ["ko-3"]


def test_score_threshold_on_normalised_scores(client, loaded, fixture_corpus):
    for fusion in ("rrf", "dbsf", "minmax", "zscore"):
        full = ok(search(client, query="blood glucose and insulin", collection=loaded, limit=100, fusion=fusion))
        scores = [h["score"] for h in full["results"]]
        assert scores and all(0.0 <= s <= 1.0 for s in scores) and full["total"] == len(scores)
        cut = scores[min(4, len(scores) - 1)]
        res = ok(search(client, query="blood glucose and insulin", collection=loaded, limit=100, fusion=fusion,
                        score_threshold=cut))
        assert res["total"] == sum(s >= cut for s in scores) and 1 <= res["total"] < len(scores)
        assert all(h["score"] >= cut for h in res["results"])
    # the seed's 0.7 no longer drops everything: a title query's own document passes it
    doc = fixture_corpus[0][7]
    res = ok(search(client, query=doc["title"], collection=loaded, score_threshold=0.7))
    assert res["results"] and res["results"][0]["id"] == doc["id"]
    res = ok(search(client, "vector", query="cancer therapy", collection=loaded, score_threshold=0.99))
    assert res["total"] == 0 and res["results"] == []


def test_limit_offset_and_total(client, loaded):
    body = {"query": "cells protein expression", "collection": loaded}
    full = ok(search(client, **body, limit=20))
    assert len(full["results"]) == 20 and full["total"] >= 20
    page = ok(search(client, **body, limit=5, offset=5))
    assert [h["id"] for h in page["results"]] == [h["id"] for h in full["results"][5:10]]
    assert page["total"] == full["total"]
    beyond = ok(search(client, **body, limit=5, offset=full["total"]))
    assert beyond["results"] == [] and beyond["total"] == full["total"]


def test_explain(client, loaded):
    res = ok(search(client, query="insulin resistance", collection=loaded, explain=True, limit=20))
    assert all("explain" in h for h in res["results"])
    both = [h for h in res["results"] if set(h["explain"]) == {"vector", "keyword"}]
    assert both, res["results"][:3]
    for h in res["results"]:
        for name, e in h["explain"].items():
            assert name in ("vector", "keyword") and e["rank"] >= 1
    plain = ok(search(client, query="insulin resistance", collection=loaded))
    assert all("explain" not in h for h in plain["results"])
    vec = ok(search(client, "vector", query="insulin resistance", collection=loaded, explain=True))
    top = vec["results"][0]
    assert top["explain"]["vector"]["rank"] == 1 and abs(top["explain"]["vector"]["score"] - top["score"]) < 1e-5


def test_fusion_options(client, loaded):
    q = {"query": "insulin resistance", "collection": loaded, "limit": 10}
    only_vec = ok(search(client, **q, alpha=1.0, fusion="minmax"))
    vec = ok(search(client, "vector", **q))
    assert [h["id"] for h in only_vec["results"]] == [h["id"] for h in vec["results"]]
    only_kw = ok(search(client, **q, weights={"vector": 0, "keyword": 1}, fusion="rrf", rrf_k=10))
    kw = ok(search(client, "keyword", **q))
    assert [h["id"] for h in only_kw["results"]] == [h["id"] for h in kw["results"]]
    r = search(client, **q, weights={"colbert": 1.0})
    assert r.status_code == 422 and "colbert" in r.json()["error"]["message"]
    r = search(client, **q, fusion="magic")
    assert r.status_code == 422 and "fusion" in r.json()["error"]["message"]


def test_filters(client, loaded, fixture_corpus):
    docs, _ = fixture_corpus
    meta = {d["id"]: d["metadata"] for d in docs}
    q = {"query": "disease treatment patients", "collection": loaded, "limit": 100}

    def ids(flt, mode="hybrid"):
        return [h["id"] for h in ok(search(client, mode, **q, filter=flt))["results"]]

    got = ids({"must": [{"key": "year", "match": {"value": 2017}}]})
    assert got and all(meta[i]["year"] == 2017 for i in got)
    got = ids({"must": [{"key": "metadata.year", "range": {"gte": 2016, "lt": 2018}}]}, "vector")
    assert got and all(2016 <= meta[i]["year"] < 2018 for i in got)
    got = ids({"must": [{"key": "tags", "match": {"any": ["g1"]}}],
               "must_not": [{"key": "year", "match": {"except": [2015, 2016]}}]}, "keyword")
    assert got and all("g1" in meta[i]["tags"] and meta[i]["year"] in (2015, 2016) for i in got)
    got = ids({"should": [{"key": "lang", "match": {"value": "ko"}},
                          {"must": [{"key": "year", "match": {"value": 2019}},
                                    {"key": "tags", "match": {"value": "even"}}]}]})
    assert got and all(meta[i]["lang"] == "ko" or (meta[i]["year"] == 2019 and "even" in meta[i]["tags"])
                       for i in got)
    assert {i for i in got if meta[i]["lang"] == "ko"}
    got = ids({"must": [{"key": "doc_id", "match": {"any": ["ko-2", "ko-4"]}}]})
    assert sorted(got) == ["ko-2", "ko-4"]


@pytest.mark.parametrize("flt, where", [
    ({"must": [{"key": "year", "match": {"value": 1.5}}]}, "filter.must[0].match.value"),
    ({"must": [{"key": "year"}]}, "filter.must[0]"),
    ({"must": [{"key": "year", "range": {"gte": "x"}}]}, "filter.must[0].range.gte"),
    ({"must": [{"key": "year", "range": {"above": 1}}]}, "filter.must[0].range"),
    ({"must": [{"key": "year", "match": {"any": []}}]}, "filter.must[0].match.any"),
    ({"must": "year"}, "filter.must"),
    ({"maybe": []}, "filter"),
    ({"must": [{"key": "bad key!", "match": {"value": 1}}]}, "filter.must[0].key"),
    ({"must": [{"must": [{"must": [{"must": [{"must": [{"key": "a", "match": {"value": 1}}]}]}]}]}]}, "deeper"),
])
def test_malformed_filter_is_422(client, loaded, flt, where):
    r = search(client, query="x", collection=loaded, filter=flt)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["type"] == "validation_error" and where in err["message"], err


@pytest.mark.parametrize("body, field", [
    ({"query": ""}, "query"),
    ({"query": "   "}, "query"),
    ({"query": "x" * 2001}, "query"),
    ({"limit": 0}, "limit"),
    ({"limit": 101}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"offset": -1}, "offset"),
    ({"offset": 5000}, "offset"),
    ({"score_threshold": 1.5}, "score_threshold"),
    ({"alpha": -0.1}, "alpha"),
    ({"explain": "maybe"}, "explain"),
    ({"query": 42}, "query"),
    ({"unknown_field": 1}, "unknown_field"),
    ({"collection": None}, "collection"),
])
def test_bad_search_input_is_422(client, loaded, body, field):
    r = search(client, **{"query": "insulin", "collection": loaded, **body})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["type"] == "validation_error" and field in err["message"], err


def test_unknown_collection_and_bad_bodies(client):
    for mode in ("hybrid", "vector", "keyword"):
        r = search(client, mode, query="x", collection="does-not-exist")
        assert r.status_code == 404 and "does-not-exist" in r.json()["error"]["message"]
    r = client.post("/search/hybrid", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = client.post("/search/hybrid", content=b"x" * 2_100_000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"
    r = client.post("/collections/x/documents", json={"documents": [{"id": "1", "text": "y" * 2_100_000}]})
    assert r.status_code == 413


def test_openai_embeddings_api_with_the_official_client(client, embedder):
    """POST /v1/embeddings through the official openai client (its http client: this in-process app): the
    vectors are the stack's own model's, in float and base64, with usage; what it cannot do is refused."""
    import base64

    import numpy as np
    import openai

    oai = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0)
    model = oai.models.list().data[0].id
    assert model == embedder.model_id
    texts = ["Vitamin D and bone density", "김치는 발효 음식이다.", "hybrid search over documents"]
    r = oai.embeddings.create(model=model, input=texts)
    want = embedder.encode(texts)
    got = np.array([d.embedding for d in sorted(r.data, key=lambda d: d.index)], dtype=np.float32)
    assert got.shape == (3, embedder.dim) and np.all(np.sum(got * want, axis=1) > 0.999)
    assert r.usage.prompt_tokens == r.usage.total_tokens == sum(embedder.token_count(t) for t in texts)
    # (the client asks for base64 itself unless told otherwise, and decodes it: the call above was base64)
    one = oai.embeddings.create(model="all-MiniLM-L6-v2", input=texts[0], encoding_format="float")
    raw = client.post("/v1/embeddings", json={"model": model, "input": texts[0], "encoding_format": "base64"}).json()
    vec = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    alone = embedder.encode(texts[:1])[0]      # int8 activations: a text's vector depends on its batch mates
    assert np.allclose(vec, one.data[0].embedding, atol=1e-6) and float(vec @ alone) > 0.999
    with pytest.raises(openai.NotFoundError, match="not served here"):
        oai.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError, match="cannot shorten"):
        oai.embeddings.create(model=model, input="x", dimensions=64)
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: surely_not"):
        oai.embeddings.create(model=model, input="x", extra_body={"surely_not": 1})
    for bad in ([], [""], ["x"] * 257):
        r = client.post("/v1/embeddings", json={"model": model, "input": bad})
        assert r.status_code == 422 and "input" in r.json()["error"]["message"], bad
