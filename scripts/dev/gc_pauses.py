#!/usr/bin/env python
"""Probe: how long Python's full garbage collections take inside the running search-service, and how
many sequential searches they make slow. Used to decide on ``stack_common/heap.py``.

    python scripts/dev/gc_pauses.py --data-dir /tmp/bench/full-data            # as the service runs
    python scripts/dev/gc_pauses.py --data-dir /tmp/bench/full-data --no-freeze  # without the fix

Starts uvicorn in a child process (this file with ``--serve``) whose ``gc.callbacks`` print every
collection over 10 ms to its log; the parent sends ``--requests`` sequential cache-miss searches and
prints those over 50 ms, then the logged collections. ``--no-freeze`` undoes the start-up freeze.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def serve(port: int, freeze: bool) -> None:
    import gc

    started: dict[str, float] = {}

    def timing(phase: str, info: dict) -> None:
        if phase == "start":
            started["t"] = time.perf_counter()
        elif (ms := (time.perf_counter() - started["t"]) * 1000) > 10:
            print(f"GC gen{info['generation']} {ms:.1f} ms", file=sys.stderr, flush=True)

    gc.callbacks.append(timing)
    if not freeze:
        import stack_common.heap as heap
        heap.freeze_startup_objects = lambda: 0      # noqa: E731 (the probe's "before")
        import search_service.main as m
        m.freeze_startup_objects = heap.freeze_startup_objects
    import uvicorn
    uvicorn.run("search_service.main:create_app", factory=True, port=port, log_level="warning")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True, help="a data directory with the collection loaded")
    ap.add_argument("--collection", default="scifact")
    ap.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "beir" / "scifact"))
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--no-freeze", action="store_true")
    ap.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve is not None:
        serve(args.serve, not args.no_freeze)
        return

    import httpx

    from stack_dev.beir import read_queries
    from stack_dev.procs import free_port, stop_process, wait_ready

    port = free_port()
    log = Path(tempfile.gettempdir()) / "gc_pauses_service.log"
    env = {**os.environ, "SEARCH_DATA_DIR": args.data_dir, "SEARCH_CACHE_PREFIX": "gcprobe",
           "SEARCH_LOG_LEVEL": "WARNING", "SEARCH_EMBED_QUERY_CACHE": "0", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, __file__, "--data-dir", args.data_dir, "--serve", str(port)]
    proc = subprocess.Popen(cmd + (["--no-freeze"] if args.no_freeze else []), env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, "/readyz", proc, timeout=180, name="search-service (gc probe)", log_path=log)
        queries = list(read_queries(args.dataset).values())
        salt = time.time()
        slow = []
        with httpx.Client(base_url=url, timeout=60) as c:
            for i in range(args.requests):
                body = {"collection": args.collection, "limit": 10, "query": queries[i % len(queries)],
                        "score_threshold": (salt % 1000 + i) * 1e-12}
                t0 = time.perf_counter()
                r = c.post("/search/hybrid", json=body)
                ms = (time.perf_counter() - t0) * 1000
                if ms > 50 and i > 0:                      # the first request warms up
                    slow.append((i, round(ms, 1), r.json().get("took_ms")))
    finally:
        stop_process(proc)
    gcs = [line.strip() for line in open(log) if line.startswith("GC ")]
    print(f"freeze: {not args.no_freeze}; {args.requests} sequential cache misses; over 50 ms: {len(slow)} {slow}")
    print(f"collections over 10 ms in the service (start-up included): {gcs}")
    print("command: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
