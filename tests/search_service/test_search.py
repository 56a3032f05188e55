"""The search use case on both store paths, and its pluggable parts.

* The qdrant-client path (``qdrant_url=":memory:"``, qdrant-client's local mode) serves the same API and
  returns the same top documents as the embedded engine for the same corpus and queries (both apps
  in-process).
* Units: filter language → store Filter; chunk collapsing; the retriever/reranker protocols.
"""
from __future__ import annotations

import pytest
from stack_common.errors import InvalidRequest

from search_service.collections import DocIds, chunk_point_id
from search_service.search import collapse
from search_service.store.filters import FilterError, parse_filter
from search_service.store.base import FieldCondition, Filter, Hit
from tests.search_service.service_fixtures import app_settings, ingest, serve_in_process


@pytest.fixture(scope="module")
def memory_service(tmp_path_factory, redis_url, fixture_corpus):
    tmp = tmp_path_factory.mktemp("search-mem")
    settings = app_settings(tmp / "data", redis_url, "tmem-" + tmp.name, qdrant_url=":memory:")
    with serve_in_process(settings) as c:
        c.post("/collections", json={"name": "fixture"})
        ingest(c, "fixture", fixture_corpus[0])
        yield c


def test_qdrant_client_path_serves_the_same_api_and_results(memory_service, client, loaded, fixture_corpus):
    docs, queries = fixture_corpus
    info = memory_service.get("/collections/fixture").json()
    assert info["documents"] == len(docs) and info["model_matches"]
    assert memory_service.get("/readyz").json()["checks"]["store"] == "ok"
    for q in queries[:6] + [{"query": "김치 발효"}]:
        for mode in ("keyword", "vector", "hybrid"):
            body = {"query": q["query"], "collection": "fixture", "limit": 10}
            a = memory_service.post(f"/search/{mode}", json=body).json()
            b = client.post(f"/search/{mode}", json={**body, "collection": loaded}).json()
            ids_a, ids_b = [h["id"] for h in a["results"]], [h["id"] for h in b["results"]]
            # same engine maths on both paths; allow a swap of near-tied neighbours only
            assert ids_a[:3] == ids_b[:3] and set(ids_a) == set(ids_b), (mode, q["query"], ids_a, ids_b)
    flt = {"must": [{"key": "lang", "match": {"value": "ko"}}]}
    r = memory_service.post("/search/hybrid", json={"query": "문자", "collection": "fixture", "filter": flt})
    assert r.status_code == 200 and {h["id"] for h in r.json()["results"]} <= {"ko-1", "ko-2", "ko-3", "ko-4"}
    assert memory_service.post("/search/hybrid", json={"query": "x", "collection": "nope"}).status_code == 404


def test_parse_filter_builds_store_filters():
    f = parse_filter({"must": [{"key": "year", "range": {"gte": 2000}}, {"key": "id", "match": {"value": "d1"}}],
                      "should": {"key": "metadata.lang", "match": {"any": ["en", "ko"]}},
                      "must_not": [{"should": [{"key": "title", "match": {"except": ["x"]}}]}]})
    assert f == Filter(
        must=(FieldCondition(key="metadata.year", range={"gte": 2000.0}), FieldCondition(key="doc_id", match="d1")),
        should=(FieldCondition(key="metadata.lang", any=("en", "ko")),),
        must_not=(Filter(should=(FieldCondition(key="title", except_=("x",)),)),))
    assert parse_filter(None) is None and parse_filter({}) is None
    with pytest.raises(FilterError, match="more than 3 conditions"):
        parse_filter({"must": [{"key": "a", "match": {"value": i}} for i in range(4)]}, max_conditions=3)
    with pytest.raises(FilterError, match="nested deeper than 2"):
        parse_filter({"must": [{"must": [{"must": [{"key": "a", "match": {"value": 1}}]}]}]}, max_depth=2)
    with pytest.raises(FilterError, match=r"filter.should\[0\].match.value: expected a string, integer or boolean"):
        parse_filter({"should": [{"key": "a", "match": {"value": None}}]})


def test_collapse_keeps_best_chunk_per_document():
    hits = [Hit("p1", 0.9, {"doc_id": "a", "chunk": 2}), Hit("p2", 0.8, {"doc_id": "b", "chunk": 0}),
            Hit("p3", 0.7, {"doc_id": "a", "chunk": 0}), Hit("p4", 0.6, {"doc_id": "c", "chunk": 1})]
    assert collapse(hits) == [("a", 0.9, "p1"), ("b", 0.8, "p2"), ("c", 0.6, "p4")]


def test_collapse_takes_documents_from_the_id_map_first():
    hits = [Hit("p1", 0.9, {}), Hit("p2", 0.8, {}), Hit("p3", 0.7, {"doc_id": "c"}), Hit("p4", 0.6, {})]
    assert collapse(hits, {"p1": "a", "p2": "a", "p4": "d"}) == [("a", 0.9, "p1"), ("c", 0.7, "p3"), ("d", 0.6, "p4")]


async def test_doc_ids_reads_each_unknown_point_once_and_stays_bounded(tmp_path):
    """Candidates come back without payloads; DocIds resolves their documents from the real engine,
    in one retrieve per search for the ids it has not seen, and keeps at most max_entries."""
    from search_service.store.base import Point, SparseVector
    from search_service.store.edge import EdgeStore

    class CountingStore(EdgeStore):
        calls: list[list[str]] = []

        async def retrieve(self, name, ids, *, with_payload=True):
            self.calls.append(list(ids))
            return await super().retrieve(name, ids, with_payload=with_payload)

    store = CountingStore(tmp_path)
    try:
        await store.create_collection("c", 4, {})
        pts = [Point(id=chunk_point_id("c", f"doc{i // 2}", i % 2), dense=[1.0, float(i), 0.0, 0.5],
                     sparse=SparseVector([i], [1.0]), payload={"doc_id": f"doc{i // 2}", "chunk": i % 2})
               for i in range(3000)]
        await store.upsert("c", pts)
        hits = await store.search_dense("c", [1.0, 2.0, 0.0, 0.5], 100, with_payload=False)
        assert hits and all(h.payload == {} for h in hits)
        ids = DocIds(store, max_entries=1000)
        doc_of = await ids.lookup("c", [hits, hits[:10]])
        assert len(store.calls) == 1 and len(store.calls[0]) == len(hits)        # one call, no duplicates
        assert all(doc_of[h.id] == f"doc{pts.index(next(p for p in pts if p.id == h.id)) // 2}" for h in hits[:5])
        await ids.lookup("c", [hits])
        assert len(store.calls) == 1                                            # all known now
        for start in range(0, 3000, 500):                                       # 3,000 distinct ids
            await ids.lookup("c", [[Hit(p.id, 0.0, {}) for p in pts[start:start + 500]]])
        assert len(ids._maps["c"]) <= 1000
        assert (await ids.lookup("c", [[Hit(pts[-1].id, 0.0, {})]]))[pts[-1].id] == "doc1499"
        ids.forget("c")
        assert "c" not in ids._maps
    finally:
        await store.close()


async def test_a_third_retriever_and_a_reranker_plug_into_the_real_search(tmp_path, embedders):
    """The pluggable parts, exercised: a third retriever is fused by name (weights, explain) without
    touching the fusion code, and a reranker reorders the fused page — on the real engine, embedder and
    BM25 encoder."""
    from search_service.collections import CollectionCatalog
    from search_service.core.metrics import Metrics
    from search_service.core.settings import Settings
    from search_service.ingest import Document, Ingestor
    from search_service.search import KeywordRetriever, SearchQuery, SearchService, VectorRetriever
    from search_service.store.edge import EdgeStore
    from search_service.text import Analyzer, BM25Encoder

    class Pinned:
        """Always proposes one document (its chunk 0), e.g. an editor's pick."""
        name = "pinned"

        def __init__(self, doc_id: str) -> None:
            self.doc_id = doc_id

        async def retrieve(self, ctx):
            return [Hit(chunk_point_id(ctx.collection, self.doc_id, 0), 1.0, {})]

    class Reverse:
        name = "reverse"

        async def rerank(self, ctx, candidates):
            return list(reversed(candidates))

    settings, metrics = Settings(data_dir=tmp_path, cache_enabled=False), Metrics()
    store = EdgeStore(tmp_path)
    try:
        catalog = CollectionCatalog(store, embedders, Analyzer(), BM25Encoder, settings)
        await catalog.create("c")
        texts = ["kimchi is fermented cabbage", "the subway of seoul", "insulin and diabetes",
                 "fermented soybean paste", "hangul, the korean alphabet", "bone density and vitamin d"]
        await Ingestor(catalog, settings, metrics).upsert("c", [Document(id=f"d{i}", text=t) for i, t in enumerate(texts)])
        base = [VectorRetriever(store, metrics), KeywordRetriever(catalog, metrics)]
        q = SearchQuery(query="fermented food", collection="c", limit=6, explain=True)
        plain = await SearchService(catalog, None, settings, metrics, base).search(q)
        assert [r["id"] for r in plain["results"]][:2] in (["d0", "d3"], ["d3", "d0"])
        assert all("pinned" not in r["explain"] for r in plain["results"])

        three = SearchService(catalog, None, settings, metrics, base + [Pinned("d2")])
        # rrf: a one-item list carries no score spread for the score-based fusions to use
        weighted = await three.search(SearchQuery(query="fermented food", collection="c", limit=6, explain=True,
                                                  fusion="rrf", weights=(("pinned", 10.0),)))
        assert weighted["results"][0]["id"] == "d2"                       # fused by name, weight honoured
        assert weighted["results"][0]["explain"]["pinned"] == {"rank": 1, "score": 1.0}
        with pytest.raises(InvalidRequest, match="unknown retrievers"):   # a typo in weights is refused
            await three.search(SearchQuery(query="fermented food", collection="c", alpha=None,
                                           weights=(("pinnned", 1.0),)))

        reranked = await SearchService(catalog, None, settings, metrics, base, reranker=Reverse()).search(q)
        assert [r["id"] for r in reranked["results"]] == [r["id"] for r in plain["results"]][::-1]
    finally:
        await store.close()
