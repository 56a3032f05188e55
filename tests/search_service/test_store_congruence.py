"""Congruence: the embedded engine (EdgeStore) and the qdrant-client path (ServerStore, local mode) are fed
the same SciFact documents and queries and must return the same top-10 ids (and scores)."""
from __future__ import annotations

import asyncio
import math
import time
from collections import Counter

import pytest
import pytest_asyncio
from search_service.store import make_store
from search_service.store.base import VectorStore

from .store_data import (DIM, FILTERS, assert_same_ranking, bm25_query, dense, ids, load_docs, load_queries,
                         make_points, metadata)

N_DOCS = 400
N_QUERIES = 40
FILTER_CASES = [None, *FILTERS]


@pytest_asyncio.fixture(scope="module")
async def stores(tmp_path_factory: pytest.TempPathFactory):
    edge = make_store(qdrant_url=None, data_dir=tmp_path_factory.mktemp("edge"))
    server = make_store(qdrant_url=":memory:", data_dir=tmp_path_factory.mktemp("unused"))
    points = make_points(load_docs(N_DOCS))
    for store in (edge, server):
        await store.create_collection("scifact", DIM, {"model_id": "test-projection", "dim": DIM})
        await store.upsert("scifact", points)
    yield edge, server
    for store in (edge, server):
        await store.close()


def _filter(case):
    return None if case is None else FILTERS[case]


@pytest.mark.parametrize("case", FILTER_CASES)
async def test_dense_top10_same(stores: tuple[VectorStore, VectorStore], case) -> None:
    edge, server = stores
    for q in load_queries(N_QUERIES):
        a = await edge.search_dense("scifact", dense(q), 10, _filter(case))
        b = await server.search_dense("scifact", dense(q), 10, _filter(case))
        assert len(a) == 10
        assert_same_ranking(a, b)


@pytest.mark.parametrize("case", FILTER_CASES)
async def test_sparse_top10_same(stores: tuple[VectorStore, VectorStore], case) -> None:
    edge, server = stores
    nonempty = 0
    for q in load_queries(N_QUERIES):
        a = await edge.search_sparse("scifact", bm25_query(q), 10, _filter(case))
        b = await server.search_sparse("scifact", bm25_query(q), 10, _filter(case))
        nonempty += bool(a)
        assert_same_ranking(a, b)
    assert nonempty >= N_QUERIES // 2


async def test_filters_hold_and_counts_agree(stores: tuple[VectorStore, VectorStore]) -> None:
    edge, server = stores
    docs = load_docs(N_DOCS)
    expected = {
        "year_range": sum(2000 <= metadata(d["_id"])["year"] < 2012 for d in docs),
        "kind_match": sum(metadata(d["_id"])["kind"] == "study" for d in docs),
        "kind_except": sum(metadata(d["_id"])["kind"] not in ("study", "note") for d in docs),
        "bool_and_int_match": sum(metadata(d["_id"])["reviewed"] and metadata(d["_id"])["year"] != 2001
                                  for d in docs),
    }
    for case, n in expected.items():
        assert 0 < n < N_DOCS
        assert await edge.count("scifact", FILTERS[case]) == n
        assert await server.count("scifact", FILTERS[case]) == n
    for case in FILTERS:
        assert await edge.count("scifact", FILTERS[case]) == await server.count("scifact", FILTERS[case])
    q = load_queries(1)[0]
    for hit in await edge.search_dense("scifact", dense(q), 50, FILTERS["nested_should"]):
        m = hit.payload["metadata"]
        assert (m["kind"] == "note" and m["score"] > 50) or m["year"] >= 2015


async def test_search_both_matches_single_searches(stores: tuple[VectorStore, VectorStore]) -> None:
    for store in stores:
        for q in load_queries(10):
            d, s = await store.search_both("scifact", dense(q), bm25_query(q), 10, FILTERS["year_range"])
            assert ids(d) == ids(await store.search_dense("scifact", dense(q), 10, FILTERS["year_range"]))
            assert ids(s) == ids(await store.search_sparse("scifact", bm25_query(q), 10, FILTERS["year_range"]))


async def test_sparse_scores_are_bm25_with_engine_idf(stores: tuple[VectorStore, VectorStore]) -> None:
    """The service sends saturated tf weights; the engine must multiply by IDF = ln(1 + (N-n+0.5)/(n+0.5))."""
    points = make_points(load_docs(N_DOCS))
    df = Counter(i for p in points for i in p.sparse.indices)
    weights = {p.id: dict(zip(p.sparse.indices, p.sparse.values)) for p in points}
    n = len(points)
    for q in load_queries(5):
        query = bm25_query(q)
        for store in stores:
            for hit in await store.search_sparse("scifact", query, 5):
                expected = sum(math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) * weights[hit.id][t]
                               for t in query.indices if t in weights[hit.id])
                assert hit.score == pytest.approx(expected, rel=1e-3)


async def test_retrieve_and_payload_same(stores: tuple[VectorStore, VectorStore]) -> None:
    edge, server = stores
    wanted = [p.id for p in make_points(load_docs(N_DOCS))[::37]][::-1]
    a, b = await edge.retrieve("scifact", wanted), await server.retrieve("scifact", wanted)
    assert ids(a) == ids(b) == wanted
    assert [h.payload for h in a] == [h.payload for h in b]


async def test_still_congruent_after_deletes(tmp_path_factory: pytest.TempPathFactory) -> None:
    edge = make_store(qdrant_url=None, data_dir=tmp_path_factory.mktemp("edge-del"))
    server = make_store(qdrant_url=":memory:", data_dir=tmp_path_factory.mktemp("unused"))
    docs = load_docs(120)
    points = make_points(docs, chunks_per_doc=2)
    gone = [d["_id"] for d in docs[::3]]
    try:
        for store in (edge, server):
            await store.create_collection("c", DIM, {})
            await store.upsert("c", points)
            await store.delete_by_doc_ids("c", gone)
            assert await store.count("c") == len(points) - 2 * len(gone)
        # the embedded engine vacuums (BM25's IDF stops counting the deleted points) in a background pass
        deadline = time.monotonic() + 60
        while (await edge.index_status("c"))["deleted_unvacuumed"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert (await edge.index_status("c"))["deleted_unvacuumed"] == 0
        for q in load_queries(15):
            assert_same_ranking(await edge.search_dense("c", dense(q), 10),
                                await server.search_dense("c", dense(q), 10))
            a = await edge.search_sparse("c", bm25_query(q), 10)
            assert_same_ranking(a, await server.search_sparse("c", bm25_query(q), 10))
            assert not {h.payload["doc_id"] for h in a} & set(gone)
    finally:
        await edge.close()
        await server.close()

