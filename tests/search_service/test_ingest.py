"""Ingestion: chunking, point ids, persistence across a restart, the model guard (409)."""
from __future__ import annotations

import asyncio
import uuid

import httpx

from search_service.collections import chunk_point_id
from search_service.ingest import chunk_words
from search_service.store import make_store
from tests.search_service.service_fixtures import ingest, service_env, start_service


def test_chunk_words_windows_with_overlap():
    text = " ".join(str(i) for i in range(10))
    assert chunk_words(text, 20, 5) == [text]
    assert chunk_words("  a \n b  ", 4, 1) == ["a b"]
    chunks = chunk_words(text, 4, 1)
    assert chunks == ["0 1 2 3", "3 4 5 6", "6 7 8 9"]
    chunks = chunk_words(" ".join(str(i) for i in range(11)), 4, 1)
    assert chunks[-1] == "9 10" and all(len(c.split()) <= 4 for c in chunks)


def test_point_ids_are_deterministic_uuids():
    a = chunk_point_id("col", "doc-1", 0)
    assert a == chunk_point_id("col", "doc-1", 0) and uuid.UUID(a).version == 5
    assert len({a, chunk_point_id("col", "doc-1", 1), chunk_point_id("col2", "doc-1", 0), chunk_point_id("col", "doc-2", 0)}) == 4


def test_documents_survive_restart_and_model_mismatch_is_409(tmp_path, redis_url, fixture_corpus):
    docs = fixture_corpus[0][:10]
    data = tmp_path / "data"
    env = service_env(data, redis_url, "tpersist-" + uuid.uuid4().hex[:8])
    proc = start_service(tmp_path, env, "first")
    try:
        with httpx.Client(base_url=proc.url, timeout=60) as c:
            assert c.post("/collections", json={"name": "keep"}).status_code == 201
            ingest(c, "keep", docs)
            c.request("DELETE", "/collections/keep/documents", json={"ids": [docs[0]["id"]]})
            before = c.post("/search/hybrid", json={"query": docs[3]["title"], "collection": "keep"}).json()
            info_before = c.get("/collections/keep").json()
    finally:
        proc.kill()        # no graceful shutdown: acknowledged writes must still be there

    async def add_foreign():       # a collection built with another embedding model
        store = make_store(qdrant_url=None, data_dir=data)
        try:
            await store.create_collection("foreign", 768, {"model_id": "other/model", "dim": 768,
                                                           "bm25": {"k1": 1.2, "b": 0.75, "chunks": 0, "total_len": 0},
                                                           "version": "v"})
        finally:
            await store.close()
    asyncio.run(add_foreign())

    proc = start_service(tmp_path, env, "second")
    try:
        with httpx.Client(base_url=proc.url, timeout=60) as c:
            info = c.get("/collections/keep").json()
            assert info["documents"] == len(docs) - 1 == info_before["documents"]
            assert info["bm25"] == info_before["bm25"]
            assert c.get(f"/collections/keep/documents/{docs[5]['id']}").json()["title"] == docs[5]["title"]
            assert c.get(f"/collections/keep/documents/{docs[0]['id']}").status_code == 404
            after = c.post("/search/hybrid", json={"query": docs[3]["title"], "collection": "keep"}).json()
            assert [h["id"] for h in after["results"]] == [h["id"] for h in before["results"]]
            listed = {x["name"]: x for x in c.get("/collections").json()["collections"]}
            assert listed["foreign"]["model_id"] == "other/model"
            assert c.get("/collections/foreign").json()["model_matches"] is False
            for path, body in [("/search/hybrid", {"query": "x", "collection": "foreign"}),
                               ("/search/vector", {"query": "x", "collection": "foreign"}),
                               ("/collections/foreign/documents", {"documents": [{"id": "1", "text": "x"}]})]:
                r = c.post(path, json=body)
                assert r.status_code == 409, r.text
                msg = r.json()["error"]["message"]
                assert "other/model" in msg and "768" in msg and "384" in msg
            assert c.delete("/collections/foreign").status_code == 204     # can still be dropped
    finally:
        proc.stop()
