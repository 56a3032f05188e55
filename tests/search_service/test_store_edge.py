"""EdgeStore: the Qdrant engine in-process (qdrant-edge). Contract tests plus durability, locking, concurrency."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from search_service.store import FieldCondition, Filter, Point, VectorStore, make_store
from search_service.store.edge import EdgeStore

from .store_contract import StoreContract
from .store_data import DIM, bm25_query, dense, ids, load_docs, load_queries, make_points, pass_points

ROOT = Path(__file__).resolve().parents[2]


class TestEdgeContract(StoreContract):
    def open(self, path: Path) -> VectorStore:
        store = make_store(qdrant_url=None, data_dir=path)
        assert isinstance(store, EdgeStore)
        return store


async def test_layout_on_disk_and_leftovers_cleaned(tmp_path: Path) -> None:
    store = make_store(qdrant_url=None, data_dir=tmp_path)
    await store.create_collection("docs", DIM, {"model_id": "m"})
    await store.close()
    coll = tmp_path / "collections" / "docs"
    assert json.loads((coll / "meta.json").read_text()) == {"name": "docs", "dim": DIM, "meta": {"model_id": "m"},
                                                             "shard": "shard"}
    assert (coll / "shard" / "wal").is_dir()
    (tmp_path / "collections" / ".tmp-half-made-1").mkdir()           # an interrupted create
    (tmp_path / "collections" / ".trash-docs2-1").mkdir()             # an interrupted delete
    store = make_store(qdrant_url=None, data_dir=tmp_path)
    try:
        assert [c.name for c in await store.list_collections()] == ["docs"]
        assert sorted(p.name for p in (tmp_path / "collections").iterdir()) == ["docs"]
        await store.delete_collection("docs")
        assert list((tmp_path / "collections").iterdir()) == []
    finally:
        await store.close()


async def test_one_process_per_data_dir(tmp_path: Path) -> None:
    store = make_store(qdrant_url=None, data_dir=tmp_path)
    with pytest.raises(RuntimeError, match="in use"):
        make_store(qdrant_url=None, data_dir=tmp_path)
    await store.close()
    make_store(qdrant_url=None, data_dir=tmp_path)                    # free again after close


_WRITER = textwrap.dedent("""
    import asyncio, os, signal, sys
    sys.path.insert(0, {root!r})
    from tests.search_service.store_data import DIM, load_docs, make_points, pass_points
    from search_service.store import make_store

    async def main(data_dir, mode):
        store = make_store(qdrant_url=None, data_dir=data_dir)
        await store.create_collection("c", DIM, {{"model_id": "m"}})
        points = make_points(load_docs(600))
        for k in range(0, 600, 100):
            await store.upsert("c", points[k:k + 100])
            print(k + 100, flush=True)
        if mode == "kill-after-ack":
            os.kill(os.getpid(), signal.SIGKILL)            # right after the call returned: no close, no flush
        for n in range(1, 1000):                            # new points, 100 per call, until we are killed
            for k in range(0, 600, 100):
                await store.upsert("c", pass_points(points[k:k + 100], n))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


def _writer(tmp_path: Path, mode: str) -> subprocess.Popen:
    script = tmp_path / "writer.py"
    script.write_text(_WRITER.format(root=str(ROOT)))
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "data"), mode], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)


async def _assert_whole(store: VectorStore, points: list[Point]) -> None:
    got = await store.retrieve("c", [p.id for p in points])
    assert [h.payload for h in got] == [p.payload for p in points]
    for p in points[::25]:                                          # vectors are there too
        only = Filter(must=(FieldCondition(key="pass", match=p.payload.get("pass", 0)),)) if "pass" in p.payload \
            else Filter(must_not=(FieldCondition(key="pass", range={"gte": 1}),))
        assert ids(await store.search_dense("c", p.dense, 1, only)) == [p.id]
        assert p.id in ids(await store.search_sparse("c", bm25_query(p.payload["title"]), 600, only))


@pytest.mark.timeout(120)
async def test_acknowledged_upsert_survives_sigkill(tmp_path: Path) -> None:
    proc = _writer(tmp_path, "kill-after-ack")
    out, _ = proc.communicate(timeout=100)
    assert proc.returncode == -signal.SIGKILL
    assert out.split()[-1] == "600"
    store = make_store(qdrant_url=None, data_dir=tmp_path / "data")
    try:
        assert await store.count("c") == 600
        assert (await store.get_collection("c")).meta == {"model_id": "m"}
        await _assert_whole(store, make_points(load_docs(600)))
    finally:
        await store.close()


@pytest.mark.timeout(120)
async def test_sigkill_during_writes_leaves_nothing_half_written(tmp_path: Path) -> None:
    proc = _writer(tmp_path, "loop")
    assert proc.stdout is not None
    acked = [int(proc.stdout.readline()) for _ in range(6)]
    await asyncio.sleep(0.5)                                         # it is writing new points now
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert acked[-1] == 600
    store = make_store(qdrant_url=None, data_dir=tmp_path / "data")
    try:
        total = await store.count("c")
        extra = total - 600
        assert extra > 0 and extra % 100 == 0                       # whole calls only (one WAL record each)
        points = make_points(load_docs(600))
        await _assert_whole(store, points)
        passes = [pass_points(points, n) for n in range(1, extra // 600 + 2)]
        written = [p for batch in passes for p in batch][:extra]
        await _assert_whole(store, written)
    finally:
        await store.close()


async def test_concurrent_writes_and_queries(tmp_path: Path) -> None:
    store = make_store(qdrant_url=None, data_dir=tmp_path)
    try:
        points = make_points(load_docs(300), chunks_per_doc=2)
        await store.create_collection("a", DIM, {})
        await store.create_collection("b", DIM, {})
        queries = load_queries(20)

        async def reader() -> int:
            n = 0
            for q in queries:
                d, s = await store.search_both("a", dense(q), bm25_query(q), 10)
                n += len(d) + len(s)
                await asyncio.sleep(0)
            return n

        writes = [store.upsert(name, points[k:k + 150]) for k in range(0, 600, 150) for name in ("a", "b")]
        await asyncio.gather(*writes, *(reader() for _ in range(4)), store.update_meta("a", {"v": 2}))
        assert await store.count("a") == await store.count("b") == 600
        assert (await store.get_collection("a")).meta == {"v": 2}
        await asyncio.gather(store.delete_by_doc_ids("a", [d["_id"] for d in load_docs(300)[:100]]),
                             *(reader() for _ in range(2)))
        assert await store.count("a") == 400
    finally:
        await store.close()


async def test_optimize_keeps_results(tmp_path: Path) -> None:
    store = make_store(qdrant_url=None, data_dir=tmp_path)
    assert isinstance(store, EdgeStore)
    try:
        await store.create_collection("c", DIM, {})
        for k in range(0, 400, 50):                                  # many small batches
            await store.upsert("c", make_points(load_docs(400))[k:k + 50])
        q = load_queries(3)[2]
        before = await store.search_both("c", dense(q), bm25_query(q), 10)
        await store.optimize("c")
        after = await store.search_both("c", dense(q), bm25_query(q), 10)
        assert [ids(x) for x in after] == [ids(x) for x in before]
    finally:
        await store.close()


async def test_collection_info_is_cached_until_the_next_write(tmp_path: Path) -> None:
    """get_collection is on every search: it is answered from memory until a write, and every kind of
    write (upsert, delete, metadata) makes the next call see the new state."""
    store = EdgeStore(tmp_path)
    try:
        points = make_points(load_docs(20))
        await store.create_collection("c", DIM, {"version": "v1"})
        await store.upsert("c", points[:10])
        first = await store.get_collection("c")
        assert await store.get_collection("c") is first and first.points_count == 10
        await store.upsert("c", points[10:])
        assert (await store.get_collection("c")).points_count == len(points)
        await store.update_meta("c", {"version": "v2"})
        assert (await store.get_collection("c")).meta == {"version": "v2"}
        await store.delete_by_doc_ids("c", [points[0].payload["doc_id"]])
        assert (await store.get_collection("c")).points_count < len(points)
    finally:
        await store.close()
