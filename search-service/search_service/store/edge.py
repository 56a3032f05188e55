"""Embedded default store: the real Qdrant engine in-process (``qdrant-edge-py``), one EdgeShard per collection.

On disk (``data_dir``)::

    .lock                         flock held while a store has the directory open (one process at a time)
    collections/<name>/shard/     the EdgeShard (segments + WAL)
    collections/<name>/meta.json  {"name", "dim", "vectors", "meta", "shard"}: written atomically (temp + fsync
                                  + rename); "vectors": the extra dense vectors (name -> dim), absent = none

Durability: the WAL is on, so an upsert that returned survives a SIGKILL (it is in the WAL, in the page
cache); a machine crash may lose the last writes the OS had not written back. Creating a collection
builds it under ``collections/.tmp-*`` and renames it into place; deleting renames it to
``collections/.trash-*`` first; leftovers of either are removed on the next start.

Threads: EdgeShard is thread-safe (a Rust object shared across threads; it releases the GIL while it
works). Writes (upsert, delete, metadata, create/drop) run in ``asyncio.to_thread`` under a per-collection
lock. Queries are short (well under a millisecond at SciFact size), so they run inline on the event loop,
except while a write to the same collection is in flight: a query then waits for the writer inside the
engine (as long as a large upsert takes), so it goes to a thread instead of stalling the loop.

Settings (the figures behind them: ``scripts/bench_store.py`` and the README's "Vector store" section):

* Payload ``Memory.Cold`` (the engine default: on disk, read through the page cache): reading a page of
  payloads is as fast as with ``Cached`` and no resident copy of the texts is kept. Dense vectors
  ``Pinned`` (in RAM): dense and sparse queries are faster than with ``Cached``. Reading even one payload
  key per hit is a large part of a query's cost, so candidates carry none (the search layer maps point
  ids to documents itself). ``max_search_threads=1``: a collection of this size is one segment, and the
  service gets its parallelism from concurrent requests, not from splitting one query.
* The engine's optimizer (HNSW builds, vacuuming deleted points) runs by itself, off the serving process
  (:mod:`.edge_indexing`: the shard is copied, a child process optimizes the copy, the copy is swapped in
  if no write came meanwhile). ``POST /collections/{name}/optimize`` runs the same pass now and waits.
* Python-side conversion of hits (the binding builds ``uuid.UUID`` ids) and payload reads are most of a
  query's cost through this class: ask for few payload keys (or none) for candidates and ``retrieve``
  the page you return.
"""
from __future__ import annotations

import asyncio
import copy
import fcntl
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import qdrant_edge as qe

from stack_common import files as stack_files

from .base import (DENSE, SPARSE, CollectionInfo, Conflict, Filter, Hit, NotFound, Payload, Point, SparseVector,
                   Unavailable, VectorStore, batches)
from .edge_indexing import NEVER_KB, SHARD_DIR, VACUUM_DELETED_FRACTION, BackgroundIndexer, IndexPolicy
from .filters import doc_ids_filter, to_edge

log = logging.getLogger("search_service.store.edge")
T = TypeVar("T")

META_FILE = "meta.json"


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON so a reader (or a crash) sees the old file or the new one, never a torn one."""
    stack_files.write_json_atomic(path, obj, sort_keys=True, ensure_ascii=False)


def edge_config(dim: int, policy: IndexPolicy, *, build_index: bool, payload_memory: qe.Memory = qe.Memory.Cold,
                vector_memory: qe.Memory = qe.Memory.Pinned, max_search_threads: int | None = 1,
                extra: dict[str, int] | None = None) -> qe.EdgeConfig:
    """The engine configuration of a collection; ``build_index`` only in the index worker. ``extra``: the
    collection's extra dense vectors (name -> dimension), configured like ``"dense"``."""
    hnsw = qe.HnswIndexConfig(m=policy.m, ef_construct=policy.ef_construct, full_scan_threshold=10_000,
                              max_indexing_threads=policy.threads)
    dims = {DENSE: dim, **(extra or {})}
    return qe.EdgeConfig(
        vectors={name: qe.EdgeVectorParams(size=d, distance=qe.Distance.Cosine, memory=vector_memory,
                                           hnsw_config=hnsw) for name, d in dims.items()},
        sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        payload_memory=payload_memory,
        max_search_threads=max_search_threads,
        optimizers=qe.EdgeOptimizersConfig(
            deleted_threshold=VACUUM_DELETED_FRACTION, vacuum_min_vector_number=1,
            # the smallest vector's size: every named vector of a segment past the threshold gets its index
            indexing_threshold=policy.threshold_kb(min(dims.values())) if build_index else NEVER_KB),
        wal_enabled=True,
    )


_ID_STRS: dict[uuid.UUID, str] = {}


def _id_str(point_id: uuid.UUID) -> str:
    """``str(UUID)`` is a large part of converting a hit; hot ids repeat, so cache them."""
    text = _ID_STRS.get(point_id)
    if text is None:
        if len(_ID_STRS) >= 200_000:
            _ID_STRS.clear()
        text = _ID_STRS[point_id] = str(point_id)
    return text


@dataclass
class _Collection:
    name: str
    path: Path
    dim: int
    meta: dict[str, Any]
    shard: qe.EdgeShard
    vectors: dict[str, int] = field(default_factory=dict)   # extra dense vectors (name -> dim)
    shard_dir: str = SHARD_DIR  # the shard directory in use (under ``path``; meta.json names it)
    lock: threading.Lock = field(default_factory=threading.Lock)
    writers: int = 0            # writes in flight (touched only on the event-loop thread)
    info: CollectionInfo | None = None   # get_collection's answer until the next write (this process
                                         # owns the data directory, so no one else can change it)
    seq: int = 0                # bumped by every write (an index build is kept only if it did not move)
    last_write: float = 0.0     # monotonic time of the last write
    indexer: asyncio.Task | None = None
    child: asyncio.subprocess.Process | None = None
    index_state: str = "none"   # none | waiting | building | indexed | failed: <why>
    index_runs: int = 0
    index_last_s: float | None = None
    readers: int = 0            # reads running in threads (an old shard is closed only when none is)
    checked: bool = False       # the index need was checked once since the store opened it
    deleted: int = 0            # points deleted since the last optimizer pass (meta.json "deleted")


class EdgeStore(VectorStore):
    """The Qdrant engine in-process. Opens (``EdgeShard.load``) every collection under ``data_dir``."""

    def __init__(self, data_dir: Path, *, payload_memory: qe.Memory = qe.Memory.Cold,
                 vector_memory: qe.Memory = qe.Memory.Pinned, max_search_threads: int | None = 1,
                 index: IndexPolicy | None = None) -> None:
        self._index = index or IndexPolicy()
        self._indexer = BackgroundIndexer(self._index, save_meta=self._save_doc,
                                          load=lambda path, coll: qe.EdgeShard.load(path, self._config(coll.dim,
                                                                                                        coll.vectors)))
        self._root = Path(data_dir) / "collections"
        self._root.mkdir(parents=True, exist_ok=True)
        self._payload_memory = payload_memory
        self._vector_memory = vector_memory
        self._max_search_threads = max_search_threads
        self._lock_fh = open(Path(data_dir) / ".lock", "a+")
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_fh.close()
            raise RuntimeError(f"{data_dir} is in use by another store (another process or worker); "
                               "the embedded engine allows one process per data directory — "
                               "run one worker or use a Qdrant server (SEARCH_QDRANT_URL)") from None
        self._params = qe.SearchParams(hnsw_ef=self._index.ef)
        self._catalog = threading.Lock()     # guards create/delete of collections
        self._collections: dict[str, _Collection] = {}
        self._closed = False
        try:
            for entry in sorted(self._root.iterdir()):
                if entry.name.startswith((".tmp-", ".trash-")):
                    shutil.rmtree(entry, ignore_errors=True)     # an interrupted create or delete
                elif (entry / META_FILE).is_file():
                    self._collections[entry.name] = self._open(entry)
                else:
                    log.warning("ignoring %s: no %s", entry, META_FILE)
        except BaseException:
            for coll in self._collections.values():
                coll.shard.close()
            self._lock_fh.close()                                # releases the flock
            raise
        log.info("embedded Qdrant engine: %d collection(s) loaded from %s", len(self._collections), self._root)

    # -- engine configuration ---------------------------------------------------------------------

    def _config(self, dim: int, extra: dict[str, int]) -> qe.EdgeConfig:
        return edge_config(dim, self._index, build_index=False, payload_memory=self._payload_memory,
                           vector_memory=self._vector_memory, max_search_threads=self._max_search_threads,
                           extra=extra)

    def _open(self, path: Path) -> _Collection:
        doc = json.loads((path / META_FILE).read_text())
        shard_dir = doc.get("shard", SHARD_DIR)
        for entry in path.iterdir():        # a build that did not finish, or a replaced shard not yet removed
            if entry.is_dir() and entry.name.startswith(SHARD_DIR) and entry.name != shard_dir:
                shutil.rmtree(entry, ignore_errors=True)
        extra = doc.get("vectors") or {}
        shard = qe.EdgeShard.load(str(path / shard_dir), self._config(doc["dim"], extra))
        coll = _Collection(name=doc["name"], path=path, dim=doc["dim"], meta=doc["meta"], shard=shard,
                           shard_dir=shard_dir, vectors=extra, deleted=int(doc.get("deleted", 0)))
        coll.index_state = self._indexer.state(coll)
        return coll

    def _meta_doc(self, coll: _Collection, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        doc = {"name": coll.name, "dim": coll.dim, "meta": coll.meta if meta is None else meta,
               "shard": coll.shard_dir}
        if coll.deleted:
            doc["deleted"] = coll.deleted
        return {**doc, "vectors": coll.vectors} if coll.vectors else doc

    def _save_doc(self, coll: _Collection, meta: dict[str, Any] | None = None) -> None:
        """meta.json as ``coll`` stands (shard in use, deleted count), with ``meta`` if given; durable."""
        write_json_atomic(coll.path / META_FILE, self._meta_doc(coll, meta))

    # -- plumbing -----------------------------------------------------------------------------------

    def _get(self, name: str) -> _Collection:
        if self._closed:
            raise Unavailable("the embedded vector store is closed")
        coll = self._collections.get(name)
        if coll is None:
            raise NotFound(f"collection {name!r} does not exist")
        return coll

    async def _write(self, coll: _Collection, fn: Callable[[], T], *, changes: bool = True) -> T:
        def locked() -> T:
            with coll.lock:
                if changes:
                    coll.seq += 1
                return fn()
        coll.writers += 1
        coll.info = None
        try:
            return await asyncio.to_thread(locked)
        finally:
            coll.writers -= 1
            coll.info = None
            if changes:
                coll.last_write = time.monotonic()

    async def _read(self, coll: _Collection, fn: Callable[[], T]) -> T:
        try:
            if not coll.writers:
                return fn()
            coll.readers += 1
            try:
                return await asyncio.to_thread(fn)
            finally:
                coll.readers -= 1
        except Exception:
            if self._collections.get(coll.name) is not coll:   # dropped while we were reading
                raise NotFound(f"collection {coll.name!r} does not exist") from None
            raise

    def _info(self, coll: _Collection) -> CollectionInfo:
        return CollectionInfo(name=coll.name, dim=coll.dim, points_count=coll.shard.count(qe.CountRequest(exact=True)),
                              meta=copy.deepcopy(coll.meta), vectors=dict(coll.vectors),
                              data_version=coll.shard_dir)

    # -- collections --------------------------------------------------------------------------------

    async def _dimension(self, name: str) -> int:
        return self._get(name).dim

    async def _extra_dims(self, name: str) -> dict[str, int]:
        return self._get(name).vectors

    async def _create_collection(self, name: str, dim: int, meta: dict[str, Any],
                                 extra: dict[str, int]) -> CollectionInfo:
        if self._closed:
            raise Unavailable("the embedded vector store is closed")

        def create() -> _Collection:
            with self._catalog:
                if name in self._collections:
                    raise Conflict(f"collection {name!r} already exists")
                if (self._root / name).exists():
                    raise Conflict(f"collection {name!r}: {self._root / name} exists but is not a collection "
                                   "(no meta.json); move it away")
                tmp = self._root / f".tmp-{name}-{uuid.uuid4().hex}"
                tmp.mkdir()
                try:
                    qe.EdgeShard.create(str(tmp / SHARD_DIR), self._config(dim, extra)).close()
                    doc = {"name": name, "dim": dim, "meta": meta, "shard": SHARD_DIR}
                    write_json_atomic(tmp / META_FILE, {**doc, "vectors": extra} if extra else doc)
                    final = self._root / name
                    os.rename(tmp, final)
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
                stack_files.fsync_dir(self._root)
                coll = self._collections[name] = self._open(final)
                return coll

        coll = await asyncio.to_thread(create)
        return self._info(coll)

    async def _delete_collection(self, name: str) -> None:
        coll = self._get(name)
        await self._indexer.stop(coll)

        def drop() -> None:
            with self._catalog:
                if self._collections.get(name) is not coll:
                    raise NotFound(f"collection {name!r} does not exist")
                del self._collections[name]
            coll.shard.close()
            trash = self._root / f".trash-{name}-{uuid.uuid4().hex}"
            os.rename(coll.path, trash)
            stack_files.fsync_dir(self._root)
            shutil.rmtree(trash, ignore_errors=True)

        await self._write(coll, drop)

    async def _list_collections(self) -> list[CollectionInfo]:
        return [await self._read(c, lambda c=c: self._info(c)) for c in list(self._collections.values())]

    async def _get_collection(self, name: str) -> CollectionInfo:
        """Cached until the collection's next write (an exact count and a copy of the metadata would
        otherwise be paid on every search). The returned object is shared: treat it as read-only."""
        coll = self._get(name)
        if not coll.checked:             # a collection loaded at start-up past the threshold gets its build
            coll.checked = True
            self._indexer.schedule(coll)
        info = coll.info
        if info is None:
            inline = not coll.writers        # then _read runs on this thread: no write can interleave
            info = await self._read(coll, lambda: self._info(coll))
            if inline:
                coll.info = info
        return info

    async def _update_meta(self, name: str, meta: dict[str, Any]) -> None:
        coll = self._get(name)

        def save() -> None:
            self._save_doc(coll, meta)
            coll.meta = meta

        await self._write(coll, save, changes=False)

    # -- points -------------------------------------------------------------------------------------

    async def _upsert(self, name: str, points: list[Point]) -> None:
        """Applied in batches of ``UPSERT_BATCH`` points, one WAL record each (each point all-or-nothing)."""
        coll = self._get(name)

        def apply() -> None:
            for batch in batches(points):
                coll.shard.update(qe.UpdateOperation.upsert_points([
                    qe.Point(p.id, {DENSE: p.dense, **p.extra,
                                    SPARSE: qe.SparseVector(p.sparse.indices, p.sparse.values)}, p.payload)
                    for p in batch]))

        await self._write(coll, apply)
        self._indexer.schedule(coll)

    async def _delete_by_doc_ids(self, name: str, doc_ids: list[str]) -> None:
        coll = self._get(name)
        flt = to_edge(doc_ids_filter(doc_ids))

        def delete() -> None:
            before = coll.shard.info().points_count
            coll.shard.update(qe.UpdateOperation.delete_points_by_filter(flt))
            gone = before - coll.shard.info().points_count
            if gone:                    # counted (and kept across restarts) until a pass vacuums them
                coll.deleted += gone
                self._save_doc(coll)

        await self._write(coll, delete)
        self._indexer.schedule(coll)    # a pass once VACUUM_DELETED_FRACTION is deleted (BM25 IDF)

    async def _count(self, name: str, filter: Filter | None) -> int:
        coll = self._get(name)
        request = qe.CountRequest(exact=True, filter=to_edge(filter))
        return await self._read(coll, lambda: coll.shard.count(request))

    async def _optimize(self, name: str) -> bool:
        """Run the optimizer now (in the child process, see the module notes: vacuum, merge, and the index
        past the threshold) and wait for it; True if the shard changed."""
        return await self._indexer.build_now(self._get(name))

    # -- search -------------------------------------------------------------------------------------

    def _query(self, vector: list[float] | qe.SparseVector, using: str, limit: int, filter: qe.Filter | None,
               with_payload: Payload) -> qe.QueryRequest:
        return qe.QueryRequest(limit=limit, query=qe.Query.Nearest(vector, using=using), filter=filter,
                               with_payload=with_payload, with_vector=False, params=self._params)

    def _dense(self, vector: list[float], limit: int, flt: qe.Filter | None,
               with_payload: Payload, using: str = DENSE) -> qe.QueryRequest:
        return self._query(vector, using, limit, flt, with_payload)

    def _sparse(self, vector: SparseVector, limit: int, flt: qe.Filter | None,
                with_payload: Payload) -> qe.QueryRequest:
        return self._query(qe.SparseVector(vector.indices, vector.values), SPARSE, limit, flt, with_payload)

    @staticmethod
    def _hits(points: list[qe.ScoredPoint]) -> list[Hit]:
        # the binding's payload dicts are fresh: no copy needed
        return [Hit(_id_str(p.id), float(p.score), p.payload or {}) for p in points]

    async def _search_dense(self, name: str, vector: list[float], limit: int, filter: Filter | None,
                            with_payload: Payload, using: str = DENSE) -> list[Hit]:
        coll = self._get(name)
        request = self._dense(vector, limit, to_edge(filter), with_payload, using)
        return self._hits(await self._read(coll, lambda: coll.shard.query(request)))

    async def _search_sparse(self, name: str, vector: SparseVector, limit: int, filter: Filter | None,
                             with_payload: Payload) -> list[Hit]:
        coll = self._get(name)
        request = self._sparse(vector, limit, to_edge(filter), with_payload)
        return self._hits(await self._read(coll, lambda: coll.shard.query(request)))

    async def _search_both(self, name: str, dense: list[float], sparse: SparseVector, limit: int,
                           filter: Filter | None, with_payload: Payload) -> tuple[list[Hit], list[Hit]]:
        """Both searches as one planned ``query_batch`` (one pass over the segments)."""
        coll = self._get(name)
        flt = to_edge(filter)
        batch = qe.QueryBatchRequest([self._dense(dense, limit, flt, with_payload),
                                      self._sparse(sparse, limit, flt, with_payload)])
        d, s = await self._read(coll, lambda: coll.shard.query_batch(batch))
        return self._hits(d), self._hits(s)

    async def _retrieve(self, name: str, ids: list[str], with_payload: Payload) -> list[Hit]:
        coll = self._get(name)
        records = await self._read(coll, lambda: coll.shard.retrieve(ids, with_payload, False))
        return [Hit(_id_str(r.id), 0.0, dict(r.payload or {})) for r in records]

    # -- indexing (edge_indexing.BackgroundIndexer) ------------------------------------------------

    async def _index_status(self, name: str) -> dict[str, Any]:
        coll = self._get(name)
        counts = await self._read(coll, lambda: self._indexer.counts(coll))
        return self._indexer.status(coll, counts)

    # -- lifecycle ----------------------------------------------------------------------------------

    async def ready(self) -> bool:
        return not self._closed

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = self._indexer.closed = True
        for coll in list(self._collections.values()):
            await self._indexer.stop(coll)

        def close_all() -> None:
            with self._catalog:
                for coll in self._collections.values():
                    with coll.lock:
                        coll.shard.close()
                self._collections.clear()
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()

        await asyncio.to_thread(close_all)
