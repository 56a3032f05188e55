"""The embedded engine indexes a collection by itself: past the threshold, after writes pause, in a child
process, while searches keep answering and without losing a write; the index survives a restart.

Random unit vectors (the HNSW graph does not care where they come from) keep the builds to seconds; recall
is measured against exact (numpy) nearest neighbours."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from search_service.store import Point, SparseVector
from search_service.store.edge import EdgeStore
from search_service.store.edge_indexing import IndexPolicy

DIM = 64
POLICY = IndexPolicy(threshold=3000, quiet_s=0.3, m=16, ef_construct=64, ef=64)


def vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def points(vecs: np.ndarray, start: int = 0) -> list[Point]:
    return [Point(id=str(uuid.UUID(int=start + i + 1)), dense=v.tolist(),
                  sparse=SparseVector(indices=[(start + i) % 97], values=[1.0]),
                  payload={"doc_id": f"d{start + i}", "n": start + i})
            for i, v in enumerate(vecs)]


async def wait_state(store: EdgeStore, name: str, states: set[str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await store.index_status(name)
        if status["state"] in states:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"index state never reached {states}: {await store.index_status(name)}")


def recall_at_10(store_hits: list[list[str]], data: np.ndarray, queries: np.ndarray) -> float:
    exact = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    got = [{int(uuid.UUID(h)) - 1 for h in hits} for hits in store_hits]
    return float(np.mean([len(g & set(e.tolist())) / 10 for g, e in zip(got, exact)]))


async def test_builds_by_itself_while_searches_keep_answering(tmp_path: Path) -> None:
    data = vectors(8000, 1)
    queries = vectors(40, 2)
    store = EdgeStore(tmp_path, index=POLICY)
    try:
        await store.create_collection("c", DIM, {})
        assert (await store.index_status("c"))["state"] == "none"
        for k in range(0, 2000, 500):                       # below the threshold: nothing happens
            await store.upsert("c", points(data[k:k + 500], k))
        await asyncio.sleep(POLICY.quiet_s * 2)
        assert (await store.index_status("c"))["state"] == "none"
        for k in range(2000, 8000, 500):                    # a bulk load past it
            await store.upsert("c", points(data[k:k + 500], k))
        exact_hits = [[h.id for h in await store.search_dense("c", q.tolist(), 10)] for q in queries]
        assert recall_at_10(exact_hits, data, queries) == 1.0      # no index yet: exact search
        await wait_state(store, "c", {"building"})
        answered_while_building = 0
        while (await store.index_status("c"))["state"] == "building":
            q = queries[answered_while_building % len(queries)]
            hits = await store.search_dense("c", q.tolist(), 10)
            assert len(hits) == 10
            answered_while_building += 1
            await asyncio.sleep(0)
        status = await wait_state(store, "c", {"indexed"})
        # the event loop was never frozen: searches went on answering during the build
        assert answered_while_building >= 20, answered_while_building
        assert status["indexed_vectors"] >= 8000 - POLICY.threshold and status["points"] == 8000
        assert status["builds"] == 1 and status["last_build_s"] > 0
        hnsw_hits = [[h.id for h in await store.search_dense("c", q.tolist(), 10)] for q in queries]
        assert recall_at_10(hnsw_hits, data, queries) >= 0.95
        assert await store.count("c") == 8000
    finally:
        await store.close()


async def test_a_write_during_the_build_is_kept_and_the_index_rebuilt(tmp_path: Path) -> None:
    data = vectors(7000, 3)
    store = EdgeStore(tmp_path, index=POLICY)
    try:
        await store.create_collection("c", DIM, {})
        await store.upsert("c", points(data[:6000]))
        await wait_state(store, "c", {"building"})
        await store.upsert("c", points(data[6000:], 6000))      # lands in the live shard, not the copy
        status = await wait_state(store, "c", {"indexed"})
        assert await store.count("c") == 7000
        assert status["builds"] == 1                           # the first build was dropped, the second kept
        got = await store.retrieve("c", [str(uuid.UUID(int=6999 + 1))])
        assert got and got[0].payload["n"] == 6999
    finally:
        await store.close()


async def test_the_index_survives_a_restart_and_leftovers_are_removed(tmp_path: Path) -> None:
    data = vectors(4000, 4)
    store = EdgeStore(tmp_path, index=POLICY)
    await store.create_collection("c", DIM, {"k": 1})
    await store.upsert("c", points(data))
    await wait_state(store, "c", {"indexed"})
    await store.close()
    coll = tmp_path / "collections" / "c"
    meta = json.loads((coll / "meta.json").read_text())
    assert meta["shard"].startswith("shard-") and meta["meta"] == {"k": 1}
    assert sorted(p.name for p in coll.iterdir() if p.is_dir()) == [meta["shard"]]   # the old shard is gone
    (coll / "shard-halfbuilt").mkdir()                           # a build cut short by a crash
    store = EdgeStore(tmp_path, index=POLICY)
    try:
        status = await store.index_status("c")
        assert status["state"] == "indexed" and status["indexed_vectors"] >= 4000 - POLICY.threshold
        assert not (coll / "shard-halfbuilt").exists()
        assert await store.count("c") == 4000
    finally:
        await store.close()


async def test_delete_during_a_build_and_switched_off(tmp_path: Path) -> None:
    data = vectors(5000, 5)
    store = EdgeStore(tmp_path, index=POLICY)
    try:
        await store.create_collection("c", DIM, {})
        await store.upsert("c", points(data))
        await wait_state(store, "c", {"building"})
        await store.delete_collection("c")                      # stops the build, kills the worker
        assert not (tmp_path / "collections" / "c").exists()
    finally:
        await store.close()
    off = EdgeStore(tmp_path / "off", index=IndexPolicy(enabled=False, threshold=1000, quiet_s=0))
    try:
        await off.create_collection("c", DIM, {})
        await off.upsert("c", points(data[:2000]))
        await asyncio.sleep(0.5)
        assert (await off.index_status("c"))["state"] == "none"
        assert await off.optimize("c") is True                  # the explicit build still works
        assert (await off.index_status("c"))["state"] == "indexed"
    finally:
        await off.close()


def test_bad_index_settings_are_refused() -> None:
    from search_service.core.settings import Settings

    for bad in ({"index_threshold": 0}, {"hnsw_m": 2}, {"hnsw_ef": 4}, {"index_quiet_s": -1}):
        with pytest.raises(ValueError):
            Settings(**bad)


async def test_a_collection_with_two_dense_vectors_gets_both_indexed(tmp_path: Path) -> None:
    """Each point's second dense vector (an extra embedding model's) is indexed with the first: the state
    reaches indexed once (the dense count is per point, not per vector), and survives a restart."""
    data, other = vectors(6000, 11), vectors(6000, 12)
    queries = vectors(30, 13)
    store = EdgeStore(tmp_path, index=POLICY)
    try:
        await store.create_collection("c", DIM, {}, extra_vectors={"dense-b": DIM})
        for k in range(0, 6000, 1000):
            pts = points(data[k:k + 1000], k)
            for p, v in zip(pts, other[k:k + 1000]):
                p.extra = {"dense-b": v.tolist()}
            await store.upsert("c", pts)
        status = await wait_state(store, "c", {"indexed"})
        assert status["builds"] == 1 and status["points"] == 6000
        assert 6000 - POLICY.threshold <= status["indexed_vectors"] <= 6000     # points indexed, not vectors
        hits = [[h.id for h in await store.search_dense("c", q.tolist(), 10, using="dense-b")] for q in queries]
        assert recall_at_10(hits, other, queries) >= 0.95
    finally:
        await store.close()
    store = EdgeStore(tmp_path, index=POLICY)
    try:
        assert (await store.index_status("c"))["state"] == "indexed"
        await asyncio.sleep(POLICY.quiet_s * 3)
        assert (await store.index_status("c"))["builds"] == 0          # nothing left to build after a restart
    finally:
        await store.close()


async def test_deletes_are_vacuumed_off_the_serving_process_and_bm25_settles(tmp_path: Path) -> None:
    """Deleted points count in BM25's IDF until their segment is vacuumed. A delete does not run the
    optimizer in the serving process (it holds the GIL: every request would wait); once 5 % of the
    collection is deleted, a pass in the child process vacuums them (with automatic indexing off too), and
    the count of deleted points survives a restart."""
    import math

    def term0_score(hits) -> float:
        assert hits, "term 0 matches no point"
        return hits[0].score

    def idf(n_docs: int, n_term: int) -> float:                # Qdrant's Modifier.Idf
        return math.log(1 + (n_docs - n_term + 0.5) / (n_term + 0.5))

    term0 = SparseVector(indices=[0], values=[1.0])
    data = vectors(970, 3)                                       # term i % 97: 10 points per term
    policy = IndexPolicy(enabled=False, threshold=3000, quiet_s=0.3)
    store = EdgeStore(tmp_path, index=policy)
    try:
        await store.create_collection("c", DIM, {})
        await store.upsert("c", points(data))
        assert term0_score(await store.search_sparse("c", term0, 5)) == pytest.approx(idf(970, 10), rel=1e-4)
        await store.delete_by_doc_ids("c", [f"d{i}" for i in range(970) if i % 97 == 1])      # 10: 1 %
        status = await store.index_status("c")
        assert status["deleted_unvacuumed"] == 10 and status["state"] == "none"        # no pass for 1 %
        await store.delete_by_doc_ids("c", [f"d{i}" for i in range(970) if 2 <= i % 97 <= 6])  # 50 more
        assert term0_score(await store.search_sparse("c", term0, 5)) == pytest.approx(idf(970, 10), rel=1e-4)
        assert (await store.index_status("c"))["state"] in {"waiting", "building"}
        files = (await store.get_collection("c")).data_version
        done = await wait_state(store, "c", {"none", "indexed"}, timeout=60)
        assert done["builds"] == 1 and done["deleted_unvacuumed"] == 0 and done["points"] == 910
        assert (await store.get_collection("c")).data_version != files     # (the search cache keys on it)
        assert term0_score(await store.search_sparse("c", term0, 5)) == pytest.approx(idf(910, 10), rel=1e-4)

        # deleted again, and the process stops before the pass (quiet period not over): counted on disk
        await store.delete_by_doc_ids("c", [f"d{i}" for i in range(970) if 7 <= i % 97 <= 12])  # 60
    finally:
        await store.close()
    assert json.loads((tmp_path / "collections" / "c" / "meta.json").read_text())["deleted"] == 60
    store = EdgeStore(tmp_path, index=policy)
    try:
        await store.get_collection("c")                          # the first look schedules the pending pass
        done = await wait_state(store, "c", {"none", "indexed"}, timeout=60)
        assert done["builds"] == 1 and done["deleted_unvacuumed"] == 0 and done["points"] == 850
        assert term0_score(await store.search_sparse("c", term0, 5)) == pytest.approx(idf(850, 10), rel=1e-4)
        assert "deleted" not in json.loads((tmp_path / "collections" / "c" / "meta.json").read_text())
    finally:
        await store.close()
