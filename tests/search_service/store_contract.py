"""Behaviour every VectorStore must have; test_store_edge.py and test_store_server.py run it on their store.

A subclass sets ``open(path)`` (a store persisted under ``path``) and gets these tests as ``Test*`` methods.
"""
from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from search_service.store import Conflict, FieldCondition, Filter, NotFound, SparseVector, VectorStore
from search_service.store.base import Distribution
from stack_common.errors import ServiceError
from stack_common.http_errors import http_status

from .store_data import DIM, FILTERS, bm25_query, dense, ids, load_docs, load_queries, make_points


class StoreContract:
    def open(self, path: Path) -> VectorStore:
        raise NotImplementedError

    @pytest_asyncio.fixture
    async def store(self, tmp_path: Path):
        store = self.open(tmp_path)
        yield store
        await store.close()

    async def test_collection_lifecycle(self, store: VectorStore, unique_name: str) -> None:
        info = await store.create_collection(unique_name, DIM, {"model_id": "m1", "dim": DIM, "bm25": {"avgdl": 12.5}})
        assert (info.name, info.dim, info.points_count) == (unique_name, DIM, 0)
        assert info.meta == {"model_id": "m1", "dim": DIM, "bm25": {"avgdl": 12.5}}
        with pytest.raises(Conflict):
            await store.create_collection(unique_name, DIM, {})
        other = unique_name + "-b"
        await store.create_collection(other, 8, {"model_id": "m2"})
        listed = {c.name: c for c in await store.list_collections()}
        assert {unique_name, other} <= set(listed)
        assert listed[other].dim == 8 and listed[other].meta == {"model_id": "m2"}
        got = await store.get_collection(unique_name)
        assert (got.dim, got.meta["model_id"]) == (DIM, "m1")
        await store.delete_collection(unique_name)
        with pytest.raises(NotFound):
            await store.get_collection(unique_name)
        with pytest.raises(NotFound):
            await store.delete_collection(unique_name)
        assert unique_name not in {c.name for c in await store.list_collections()}
        again = await store.create_collection(unique_name, 16, {})       # the name is free again
        assert (again.dim, again.points_count) == (16, 0)

    async def test_missing_collection_is_not_found(self, store: VectorStore) -> None:
        name = "missing-" + uuid.uuid4().hex[:6]
        pts = make_points(load_docs(2))
        calls = [store.get_collection(name), store.delete_collection(name), store.update_meta(name, {}),
                 store.upsert(name, pts), store.delete_by_doc_ids(name, ["x"]), store.count(name),
                 store.search_dense(name, [1.0] * DIM, 5), store.search_sparse(name, SparseVector([1], [1.0]), 5),
                 store.search_both(name, [1.0] * DIM, SparseVector([1], [1.0]), 5),
                 store.retrieve(name, [pts[0].id])]
        for call in calls:
            with pytest.raises(NotFound, match=name):
                await call

    async def test_bad_input_is_a_clear_400(self, store: VectorStore, unique_name: str) -> None:
        for bad in ("", "../etc", "a/b", "x" * 65, "-lead"):
            with pytest.raises(ServiceError, match="invalid collection name") as err:
                await store.create_collection(bad, DIM, {})
            assert http_status(err.value) == 400
        with pytest.raises(ServiceError, match="dimension"):
            await store.create_collection(unique_name, 0, {})
        await store.create_collection(unique_name, DIM, {})
        pts = make_points(load_docs(3))
        pts[1].dense = pts[1].dense[:-1]
        with pytest.raises(ServiceError, match=f"expects {DIM}"):
            await store.upsert(unique_name, pts)
        assert await store.count(unique_name) == 0                      # validated before anything is written
        with pytest.raises(ServiceError, match="expects"):
            await store.search_dense(unique_name, [0.1] * (DIM + 1), 5)
        with pytest.raises(ServiceError, match="UUID"):
            await store.retrieve(unique_name, ["not-a-uuid"])
        with pytest.raises(ServiceError, match="limit"):
            await store.search_sparse(unique_name, SparseVector([1], [1.0]), 0)
        for bad_filter in (Filter(must=(FieldCondition(key="metadata.year", match=1, range={"gt": 1}),)),
                           Filter(must=(FieldCondition(key="metadata.year", range={"after": 1}),)),
                           Filter(must=(FieldCondition(key="k", any=("a", 1)),)),
                           Filter(must=(FieldCondition(key="", match="a"),)),
                           Filter(must=("metadata.year",))):
            with pytest.raises(ServiceError) as err:
                await store.count(unique_name, bad_filter)
            assert http_status(err.value) == 400 and "filter" in err.value.message

    async def test_one_shard_without_replicas_only(self, store: VectorStore, unique_name: str) -> None:
        """A single process has one shard and no replicas: it says so, and refuses any other layout with a
        400 naming the field instead of ignoring it (a Qdrant server store is ``distributed``)."""
        assert store.distributed is False
        for field, value in (("shard_number", 3), ("replication_factor", 2)):
            layout = Distribution(**{field: value})
            with pytest.raises(ServiceError, match=f"{field}={value} needs a Qdrant server") as err:
                await store.create_collection(unique_name, DIM, {}, layout)
            assert http_status(err.value) == 400 and err.value.details == {"param": field}
        with pytest.raises(ServiceError, match="must not exceed replication_factor"):
            await store.create_collection(unique_name, DIM, {}, Distribution(write_consistency_factor=2))
        with pytest.raises(ServiceError, match="shard_number"):
            await store.create_collection(unique_name, DIM, {}, Distribution(shard_number=0))
        assert unique_name not in {c.name for c in await store.list_collections()}     # nothing created
        info = await store.create_collection(unique_name, DIM, {}, Distribution(1, 1, 1))
        assert info.distribution == Distribution() == (await store.get_collection(unique_name)).distribution

    async def test_points_crud(self, store: VectorStore, unique_name: str) -> None:
        docs = load_docs(30)
        points = make_points(docs, chunks_per_doc=3)
        await store.create_collection(unique_name, DIM, {})
        await store.upsert(unique_name, points)
        assert await store.count(unique_name) == 90
        assert (await store.get_collection(unique_name)).points_count == 90
        await store.upsert(unique_name, points[:10])                    # upsert replaces, never duplicates
        assert await store.count(unique_name) == 90
        # count with filter
        by_kind = sum(p.payload["metadata"]["kind"] == "study" for p in points)
        assert await store.count(unique_name, FILTERS["kind_match"]) == by_kind
        # delete_by_doc_ids removes every chunk of those documents, nothing else
        gone = [docs[0]["_id"], docs[5]["_id"], "no-such-doc"]
        await store.delete_by_doc_ids(unique_name, gone)
        assert await store.count(unique_name) == 84
        doc_filter = Filter(must=(FieldCondition(key="doc_id", any=tuple(gone)),))
        assert await store.count(unique_name, doc_filter) == 0
        for q in load_queries(5):
            d, s = await store.search_both(unique_name, dense(q), bm25_query(q), 20)
            assert not {h.payload["doc_id"] for h in d + s} & set(gone)
        # retrieve: order given, missing (deleted, unknown) skipped, payload complete, score 0
        want = [points[50].id, points[0].id, str(uuid.uuid4()), points[7].id, points[50].id.upper()]
        got = await store.retrieve(unique_name, want)
        assert ids(got) == [points[50].id, points[7].id, points[50].id]
        assert got[0].payload == points[50].payload and got[0].score == 0.0
        assert await store.retrieve(unique_name, []) == []
        # retrieve with chosen payload keys, or none (the search path's doc-id lookups)
        only = await store.retrieve(unique_name, [points[7].id, points[50].id], with_payload=["doc_id"])
        assert [h.payload for h in only] == [{"doc_id": points[7].payload["doc_id"]},
                                             {"doc_id": points[50].payload["doc_id"]}]
        assert [h.payload for h in await store.retrieve(unique_name, [points[7].id], with_payload=False)] == [{}]

    async def test_search_shapes(self, store: VectorStore, unique_name: str) -> None:
        points = make_points(load_docs(40))
        await store.create_collection(unique_name, DIM, {})
        await store.upsert(unique_name, points)
        target = points[17]
        top = await store.search_dense(unique_name, target.dense, 5)
        assert top[0].id == target.id and top[0].score == pytest.approx(1.0, abs=1e-4)
        assert [h.score for h in top] == sorted((h.score for h in top), reverse=True)
        assert top[0].payload["doc_id"] == target.payload["doc_id"]
        title_query = bm25_query(target.payload["title"])
        sparse = await store.search_sparse(unique_name, title_query, 3)
        assert sparse[0].payload["doc_id"] == target.payload["doc_id"]
        assert await store.search_sparse(unique_name, SparseVector([], []), 5) == []
        assert await store.search_sparse(unique_name, SparseVector([123], [1.0]), 5) == []   # unknown term
        assert len(await store.search_dense(unique_name, target.dense, 100)) == 40
        # with_payload: none, or only some keys (ids and scores unchanged)
        bare = await store.search_dense(unique_name, target.dense, 5, with_payload=False)
        assert ids(bare) == ids(top) and all(h.payload == {} for h in bare)
        d, s = await store.search_both(unique_name, target.dense, title_query, 3, with_payload=["doc_id", "chunk"])
        assert ids(s) == ids(sparse) and ids(d) == ids(top[:3])
        assert d[0].payload == {"doc_id": target.payload["doc_id"], "chunk": 0}
        with pytest.raises(ServiceError, match="with_payload"):
            await store.search_sparse(unique_name, title_query, 3, with_payload=[])

    async def test_metadata_and_points_survive_reopen(self, tmp_path: Path, unique_name: str) -> None:
        store = self.open(tmp_path)
        points = make_points(load_docs(25))
        q = load_queries(1)[0]
        try:
            await store.create_collection(unique_name, DIM, {"model_id": "m1", "dim": DIM, "old": True})
            await store.upsert(unique_name, points)
            await store.update_meta(unique_name, {"model_id": "m1", "dim": DIM, "bm25": {"n": 25}})
            assert (await store.get_collection(unique_name)).meta == {"model_id": "m1", "dim": DIM, "bm25": {"n": 25}}
            before = await store.search_both(unique_name, dense(q), bm25_query(q), 10)
        finally:
            await store.close()
        store = self.open(tmp_path)
        try:
            info = await store.get_collection(unique_name)
            assert info.meta == {"model_id": "m1", "dim": DIM, "bm25": {"n": 25}}      # replaced, not merged
            assert (info.dim, info.points_count) == (DIM, 25)
            after = await store.search_both(unique_name, dense(q), bm25_query(q), 10)
            assert [ids(x) for x in after] == [ids(x) for x in before]
        finally:
            await store.close()

    async def test_extra_dense_vectors(self, tmp_path: Path, unique_name: str) -> None:
        """A collection with a second named dense vector (another embedding model's): every point carries it,
        search_dense(using=) searches it alone, bad names and shapes are 400s, and it survives a reopen."""
        rng = np.random.default_rng(7)
        points = make_points(load_docs(30))
        other = {p.id: (v / np.linalg.norm(v)).tolist() for p, v in zip(points, rng.normal(size=(len(points), 12)))}
        for p in points:
            p.extra = {"dense-other": other[p.id]}
        store = self.open(tmp_path)
        try:
            with pytest.raises(ServiceError, match="vector name"):
                await store.create_collection(unique_name, DIM, {}, extra_vectors={"bm25": 8})
            info = await store.create_collection(unique_name, DIM, {}, extra_vectors={"dense-other": 12})
            assert info.vectors == {"dense-other": 12}
            bare = make_points(load_docs(1))
            with pytest.raises(ServiceError, match="extra vectors"):           # the extra vector is required
                await store.upsert(unique_name, bare)
            bare[0].extra = {"dense-other": [0.1] * 5}
            with pytest.raises(ServiceError, match="dense-other"):
                await store.upsert(unique_name, bare)
            await store.upsert(unique_name, points)
            target = points[11]
            by_main = await store.search_dense(unique_name, target.dense, 5)
            by_other = await store.search_dense(unique_name, other[target.id], 5, using="dense-other")
            assert by_main[0].id == by_other[0].id == target.id
            assert by_other[0].score == pytest.approx(1.0, abs=1e-4)
            # the two vector spaces rank differently: the other space's order is its own cosine order
            expect = sorted(other, key=lambda i: -float(np.dot(other[i], other[target.id])))[:5]
            assert ids(by_other) == expect and ids(by_main) != expect
            with pytest.raises(ServiceError, match="no dense vector"):
                await store.search_dense(unique_name, other[target.id], 5, using="dense-missing")
            with pytest.raises(ServiceError, match="12"):
                await store.search_dense(unique_name, target.dense, 5, using="dense-other")
        finally:
            await store.close()
        store = self.open(tmp_path)
        try:
            info = await store.get_collection(unique_name)
            assert info.vectors == {"dense-other": 12} and info.points_count == 30
            again = await store.search_dense(unique_name, other[target.id], 5, using="dense-other")
            assert ids(again) == ids(by_other)
        finally:
            await store.close()
