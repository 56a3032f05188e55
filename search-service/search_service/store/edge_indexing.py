"""The embedded store's optimizer passes (HNSW builds, vacuuming deleted points), off the serving process.

The engine's ``optimize()`` holds the GIL for its whole run (tens of seconds to build an index at tens of
thousands of points; ~0.7 s to vacuum 6 % of 20,000 points: ``python scripts/dev/delete_stall.py``): run in
the serving process it would freeze every request. So that process never runs it (its optimizer's indexing
threshold is :data:`NEVER_KB`). Once a collection holds ``threshold`` points no index covers, or
:data:`VACUUM_DELETED_FRACTION` of its points were deleted since the last pass, and no write came for
``quiet_s``:

1. the shard is flushed and copied, under the collection's write lock (a consistent copy);
2. a child process (``python -m search_service.store.index_worker``, niced, ``threads`` indexing threads)
   runs the optimizer on the copy: vacuum, merge, and HNSW where the threshold is reached;
3. the optimized copy replaces the shard — if no write came meanwhile; otherwise the copy is dropped and the
   pass starts again once writes pause.

Deleted points keep counting in the sparse index's IDF statistics until their segment is vacuumed (the
Qdrant server behaves the same), so BM25 scores after a large delete settle once the pass has run (a few
seconds); the count of deleted points is kept in ``meta.json`` so a restart does not forget it.

Searches keep answering from the current shard throughout; writes wait only while the copy is made.
``meta.json`` names the shard directory in use (written by the store's ``save_meta``), so a crash at any
point leaves the old shard or the new one, never a mix; the store removes the other at its next start.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import qdrant_edge as qe

if TYPE_CHECKING:
    from .edge import _Collection

log = logging.getLogger("search_service.store.edge")

NEVER_KB = 1 << 40       # an indexing threshold (KB) no segment reaches: the serving process never builds an index
SHARD_DIR = "shard"
# The optimizer vacuums a segment once this fraction of it is deleted; a pass is scheduled once this fraction
# of the collection is: BM25 IDF drifts by at most ~5 % of the points, and small deletes cost no pass.
VACUUM_DELETED_FRACTION = 0.05


@dataclass(frozen=True)
class IndexPolicy:
    """When and how a collection's dense vectors get their HNSW index (built in a child process).

    ``threshold``: points without an index that start a build (Qdrant's server default is ~20k too);
    ``m`` / ``ef_construct``: the graph; ``ef``: candidates a search visits (recall vs speed);
    ``quiet_s``: seconds without writes before a build starts (a bulk load finishes first);
    ``threads``: indexing threads of the child (1 leaves the other core to searches)."""
    enabled: bool = True
    threshold: int = 20_000
    m: int = 16
    ef_construct: int = 100
    ef: int = 256
    quiet_s: float = 2.0
    threads: int = 1

    def threshold_kb(self, dim: int) -> int:
        """The engine counts its indexing threshold in KB of vectors (float32)."""
        return max(1, self.threshold * dim * 4 // 1024)


class BackgroundIndexer:
    """Schedules, runs and swaps in the optimizer passes of one store's collections. The per-collection
    state (task, child process, state string, pass count, deleted points) lives on the store's ``_Collection``.

    ``load(path, coll)`` opens a shard directory with the collection's serving configuration;
    ``save_meta(coll)`` durably records ``coll.shard_dir`` as the shard in use (called under ``coll.lock``)."""

    def __init__(self, policy: IndexPolicy, *, load: Callable[[str, _Collection], qe.EdgeShard],
                 save_meta: Callable[[_Collection], None]) -> None:
        self.policy = policy
        self._load = load
        self._save_meta = save_meta
        self.closed = False

    def counts(self, coll: _Collection) -> tuple[int, int, int]:
        """(points, points whose dense vectors are in an HNSW index, segments) of the shard. The engine's
        ``indexed_vectors_count`` counts every named vector a segment indexes: the sparse BM25 vectors always
        (an inverted index), the dense ones once their segment has HNSW (a segment indexes all its named
        vectors at once) — so the indexed points are the excess over the point count (every point has one
        sparse vector) divided by the dense vectors each point has."""
        info = coll.shard.info()
        dense = max(0, info.indexed_vectors_count - info.points_count) // (1 + len(coll.vectors))
        return info.points_count, dense, info.segments_count

    def state(self, coll: _Collection) -> str:
        points, indexed, _ = self.counts(coll)
        return "indexed" if indexed and points - indexed < self.policy.threshold else "none"

    def schedule(self, coll: _Collection) -> None:
        """After a write: start a background pass when enough points lack an index (unless automatic
        indexing is off) or enough were deleted (always: BM25's IDF depends on it). One at a time."""
        if self.closed or (coll.indexer is not None and not coll.indexer.done()):
            return
        points, indexed, _ = self.counts(coll)
        index = self.policy.enabled and points - indexed >= self.policy.threshold
        vacuum = coll.deleted > 0 and coll.deleted >= VACUUM_DELETED_FRACTION * (points + coll.deleted)
        if index or vacuum:
            coll.index_state = "waiting"
            coll.indexer = asyncio.ensure_future(self._loop(coll, wait=True, index=self.policy.enabled))

    async def build_now(self, coll: _Collection) -> bool:
        """A full pass (index included) without waiting for writes to pause, and wait for it; True if the
        shard changed."""
        await self.stop(coll)
        coll.indexer = asyncio.ensure_future(self._loop(coll, wait=False, index=True))
        return await asyncio.shield(coll.indexer)

    async def stop(self, coll: _Collection) -> None:
        task, coll.indexer = coll.indexer, None
        if task is None or task.done():
            return
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):   # noqa: BLE001 - the build is being abandoned
            pass

    def status(self, coll: _Collection, counts: tuple[int, int, int]) -> dict[str, Any]:
        points, indexed, segments = counts
        p = self.policy
        return {"state": coll.index_state, "points": points, "indexed_vectors": indexed, "segments": segments,
                "deleted_unvacuumed": coll.deleted,
                "builds": coll.index_runs, "last_build_s": coll.index_last_s, "auto": p.enabled,
                "threshold": p.threshold, "m": p.m, "ef_construct": p.ef_construct, "ef": p.ef}

    async def _loop(self, coll: _Collection, *, wait: bool, index: bool) -> bool:
        """Run passes until one is swapped in (writes during a pass send it back to waiting). ``index``:
        the child may build HNSW (else it only vacuums and merges)."""
        try:
            while True:
                if wait:
                    coll.index_state = "waiting"
                    while (left := coll.last_write + self.policy.quiet_s - time.monotonic()) > 0:
                        await asyncio.sleep(left)
                wait = True
                coll.index_state = "building"
                t0 = time.perf_counter()
                swapped = await self._build(coll, index)
                if swapped is not None:
                    coll.index_runs += 1
                    coll.index_last_s = round(time.perf_counter() - t0, 3)
                    coll.index_state = self.state(coll)
                    log.info("collection %s: optimized in %.1f s (index %s)", coll.name, coll.index_last_s,
                             coll.index_state, extra={"collection": coll.name, "changed": swapped})
                    return swapped
                log.info("collection %s: written to during the optimizer pass; again once writes pause",
                         coll.name)
        except asyncio.CancelledError:
            coll.index_state = self.state(coll) if not self.closed else coll.index_state
            raise
        except Exception as exc:
            coll.index_state = f"failed: {exc}"
            log.exception("collection %s: index build failed", coll.name)
            raise

    async def _build(self, coll: _Collection, index: bool) -> bool | None:
        """One pass: copy → child optimizes the copy → swap if no write came. None: a write came (copy
        dropped). True/False: swapped in; whether the optimizer changed anything."""
        new_dir = f"{SHARD_DIR}-{uuid.uuid4().hex[:12]}"
        target = coll.path / new_dir

        def copy() -> int:
            with coll.lock:                      # no write can land while the files are copied
                coll.shard.flush()
                shutil.copytree(coll.path / coll.shard_dir, target)
                return coll.seq

        try:
            seq = await asyncio.to_thread(copy)
            policy = {**dataclasses.asdict(self.policy), "dim": coll.dim, "vectors": coll.vectors,
                      "build_index": index}
            coll.child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "search_service.store.index_worker", str(target), json.dumps(policy),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await coll.child.communicate()
            if coll.child.returncode != 0:
                raise RuntimeError(f"index worker exited with {coll.child.returncode}: "
                                   f"{err.decode(errors='replace')[-500:]}")
            changed = bool(json.loads(out.decode().strip().splitlines()[-1])["changed"])
            new = await asyncio.to_thread(self._load, str(target), coll)
        except BaseException:
            if coll.child is not None and coll.child.returncode is None:
                coll.child.kill()
                await coll.child.wait()
            await asyncio.to_thread(shutil.rmtree, target, True)
            raise
        finally:
            coll.child = None

        def swap() -> tuple[qe.EdgeShard, str] | None:
            with coll.lock:
                if coll.seq != seq:
                    return None
                old, old_dir = coll.shard, coll.shard_dir
                coll.shard, coll.shard_dir = new, new_dir
                coll.deleted = 0                 # the optimizer has vacuumed what it vacuums
                self._save_meta(coll)            # the new shard is the one now
                coll.info = None
                return old, old_dir

        swapped = await asyncio.to_thread(swap)
        if swapped is None:
            await asyncio.to_thread(lambda: (new.close(), shutil.rmtree(target, ignore_errors=True)))
            return None
        old, old_dir = swapped
        while coll.readers:                      # reads in threads may still hold the old shard
            await asyncio.sleep(0.01)
        await asyncio.to_thread(lambda: (old.close(), shutil.rmtree(coll.path / old_dir, ignore_errors=True)))
        return changed
