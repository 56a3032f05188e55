#!/usr/bin/env python
"""What a delete costs the searches running beside it on the embedded store (EdgeStore).

    python scripts/dev/delete_stall.py                        # 20,000 points, delete 1 % then 6 %
    python scripts/dev/delete_stall.py --in-process           # the optimizer in the serving process instead
    python scripts/dev/delete_stall.py --points 50000 --index # past the index threshold, HNSW built first

Deleted points are vacuumed (so BM25's IDF stops counting them) by the engine's optimizer once
``VACUUM_DELETED_FRACTION`` of a collection is deleted. The optimizer holds the GIL while it works, so run
in the serving process the event loop — every request — would wait for it; the store runs it in a child
process on a copy (``store/edge_indexing.py``). ``--in-process`` measures the other way (the optimizer
called right after the delete, as this store did until session 9) in the same script.

It fills a collection with SciFact-sized random points (``scripts/bench_store.py``'s corpus), then, while
a task runs dense+sparse searches back to back on the same event loop (and a 1 ms ticker measures the
loop's gaps), deletes a small share of the documents (below the vacuum fraction) and then a larger one
(past it), each time waiting until the background pass (if any) is swapped in. It prints per phase the
delete call's time, the time until the pass was in, the searches' latency (median, max) and the longest
gap the loop saw; the baseline is the same searches with nothing in flight, in the same run. First, what
the swap of a pass costs the loop step by step (each engine call in a thread, a 1 ms ticker on the loop):
flush, copy, opening the copy, closing a shard — the calls that hold the GIL stall the loop as long as they run.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from search_service.store.edge import VACUUM_DELETED_FRACTION, EdgeStore
from search_service.store.edge_indexing import IndexPolicy
from stack_dev.machine import cpu_name

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_store import corpus, queries  # noqa: E402


async def searches_while(store: EdgeStore, qs: list, action) -> tuple[float, list[float], float]:
    """Run searches back to back until ``action()`` (a coroutine function, or None: 2 s) is done:
    (action seconds, search latencies ms, longest loop gap ms)."""
    lat: list[float] = []
    gaps: list[float] = []
    done = asyncio.Event()

    async def searcher() -> None:
        i = 0
        last = time.perf_counter()
        while not done.is_set():
            dense, sparse = qs[i % len(qs)]
            t0 = time.perf_counter()
            await store.search_both("c", dense, sparse, 100, with_payload=["doc_id", "chunk"])
            t1 = time.perf_counter()
            lat.append((t1 - t0) * 1000)
            gaps.append((t1 - last) * 1000)
            last = t1
            i += 1
            await asyncio.sleep(0)

    async def ticker() -> None:               # the loop's own responsiveness, independent of the store
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append((now - last) * 1000)
            last = now

    tasks = [asyncio.ensure_future(searcher()), asyncio.ensure_future(ticker())]
    await asyncio.sleep(0.2)
    t0 = time.perf_counter()
    if action is None:
        await asyncio.sleep(2.0)
    else:
        await action()
    took = time.perf_counter() - t0
    await asyncio.sleep(0.2)
    done.set()
    await asyncio.gather(*tasks)
    return took, lat, max(gaps)


async def swap_costs(store: EdgeStore) -> None:
    """Each step of a pass's copy-and-swap, timed, with the longest loop gap while it ran."""
    import shutil

    import qdrant_edge as qe

    coll = store._get("c")
    copy_dir = coll.path / "shard-swap-cost"
    steps = [("flush", coll.shard.flush),
             ("copy the shard directory", lambda: shutil.copytree(coll.path / coll.shard_dir, copy_dir)),
             ("open the copy (EdgeShard.load)", lambda: qe.EdgeShard.load(str(copy_dir),
                                                                          store._config(coll.dim, coll.vectors)))]
    print("| swap step | ms | longest loop gap ms |\n|---|---|---|")
    opened = None
    for name, fn in steps + [("close a shard", lambda: opened.close()),
                             ("remove a shard directory", lambda: shutil.rmtree(copy_dir))]:
        gaps: list[float] = []
        done = False

        async def tick() -> None:
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                gaps.append((now - last) * 1000)
                last = now

        task = asyncio.ensure_future(tick())
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        result = await asyncio.to_thread(fn)
        took = (time.perf_counter() - t0) * 1000
        await asyncio.sleep(0.05)
        done = True
        await task
        opened = result if name.startswith("open") else opened
        print(f"| {name} | {took:.0f} | {max(gaps):.0f} |")


async def run(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(7)
    points = corpus(args.points, args.dim, rng)
    qs = queries(200, args.dim, rng)
    with tempfile.TemporaryDirectory() as tmp:
        policy = IndexPolicy(enabled=args.index, threshold=args.threshold, quiet_s=0.5)
        store = EdgeStore(Path(tmp), index=policy)
        await store.create_collection("c", args.dim, {})
        for i in range(0, len(points), 1000):
            await store.upsert("c", points[i:i + 1000])
        if args.index:
            await store.optimize("c")
        status = await store.index_status("c")
        print(f"CPU: {cpu_name()}")
        print(f"{args.points:,} points x {args.dim} dims + sparse + ~1.5 KB payload; index: {status['state']} "
              f"({status['indexed_vectors']:,} indexed, {status['segments']} segments); vacuum past "
              f"{VACUUM_DELETED_FRACTION:.0%} deleted")
        await swap_costs(store)
        print(f"optimizer: {'in the serving process after the delete' if args.in_process else 'child process'}")
        print("| phase | delete s | pass in after s | searches | search ms median | search ms max | "
              "longest loop gap ms |")
        print("|---|---|---|---|---|---|---|")

        async def delete(doc_ids: list[str]) -> float:
            runs = (await store.index_status("c"))["builds"]
            t0 = time.perf_counter()
            await store.delete_by_doc_ids("c", doc_ids)
            took = time.perf_counter() - t0
            if args.in_process:                           # what the store did before the child-process pass
                coll = store._get("c")
                await store._indexer.stop(coll)                # no background pass: this one instead
                await asyncio.to_thread(coll.shard.optimize)
                coll.deleted = 0
            elif (task := store._get("c").indexer) is not None and not task.done():
                await asyncio.shield(task)                    # the pass the delete scheduled, swapped in
                assert (await store.index_status("c"))["builds"] == runs + 1
            return took
        ids = [p.payload["doc_id"] for p in points]
        small = ids[:max(1, int(len(ids) * args.small))]
        large = ids[len(small):len(small) + int(len(ids) * args.large)]
        phases = [("no delete (baseline)", None),
                  (f"delete {len(small):,} docs ({args.small:.0%}: no vacuum)", lambda: delete(small)),
                  ("no delete (baseline, again)", None),
                  (f"delete {len(large):,} docs ({args.large:.0%}: vacuum)", lambda: delete(large))]
        for name, action in phases:
            box: list[float] = []

            async def act(action=action, box=box) -> None:
                box.append(await action())

            total, lat, gap = await searches_while(store, qs, act if action else None)
            call = f"{box[0]:.3f}" if box else "–"
            print(f"| {name} | {call} | {total if action else 0:.3f} | {len(lat)} | {statistics.median(lat):.2f} | "
                  f"{max(lat):.1f} | {gap:.1f} |")
        status = await store.index_status("c")
        print(f"after: index {status['state']}, {status['indexed_vectors']:,} indexed, {status['segments']} segments")
        await store.close()
    print("command: python " + " ".join(sys.argv))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--small", type=float, default=0.01, help="share deleted in the first delete")
    ap.add_argument("--large", type=float, default=0.06, help="share deleted in the second delete")
    ap.add_argument("--index", action="store_true", help="build the HNSW index first (in the child process)")
    ap.add_argument("--threshold", type=int, default=10_000, help="index threshold with --index")
    ap.add_argument("--in-process", action="store_true", help="vacuum in the serving process after the delete "
                    "(the old way) instead of the child-process pass")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
