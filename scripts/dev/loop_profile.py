#!/usr/bin/env python
"""Where a running search-service spends its CPU per request, by thread and (with py-spy) by part.

    python scripts/dev/loop_profile.py --url http://127.0.0.1:8011                    # misses, 1 connection
    python scripts/dev/loop_profile.py --url http://127.0.0.1:8011 --kind hit --concurrency 8 --py-spy

Drives ``POST /search/hybrid`` with wrk exactly as ``scripts/bench_search.py`` does (SciFact queries; "miss"
makes every request a distinct cache key, "hit" repeats 50 warmed queries) for ``--seconds``, and
reads each of the service's threads' CPU time from ``/proc`` before and after: CPU ms per request for
the event-loop thread (the main thread) and each other thread that worked (the busiest one on a miss
run is the query-embedding worker). Start the service with ``SEARCH_EMBED_QUERY_CACHE=0`` so misses run
the model.

With ``--py-spy`` (``pip install py-spy``) it also samples the event-loop thread's Python stacks during
the run and attributes each sample to the innermost frame that belongs to a known part (:data:`PARTS`):
the shares show which part of a request's Python is worth attacking. Also prints the busy fraction of the
event loop (samples taken while it was not idle) and its hottest functions.
"""
from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from stack_dev.beir import read_queries
from stack_dev.load import run_wrk
from stack_dev.procs import ROOT, pid_listening_on
from stack_dev.stats import DEFINITION

# (part, pattern on a py-spy frame "function (file:line)"); the innermost matching frame of a sample wins
PARTS = [
    ("engine: dense query", r"search_dense"),
    ("engine: sparse query", r"search_sparse"),
    ("engine: payload read", r"EdgeStore\.retrieve|ServerStore\.retrieve"),
    ("engine: hit conversion, other", r"store/(edge|server|_shared)\.py"),
    ("doc-id map", r"DocIds\."),
    ("fusion", r"search_service/fusion\.py"),
    ("search: collapse/score/page", r"search_service/search\.py"),
    ("cache (Redis)", r"search_service/cache\.py|redis/"),
    ("JSON", r"json/"),
    ("embedding hand-off", r"search_service/embeddings\.py"),
    ("metrics", r"core/metrics\.py|prometheus_client"),
    ("request validation", r"pydantic|search_service/api/"),
    ("HTTP + ASGI framework", r"starlette|fastapi|uvicorn|stack_common"),
    ("event loop, socket I/O", r"asyncio|Runner\.run|uvloop"),
]


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    out = {}
    for t in psutil.Process(pid).threads():
        try:
            name = Path(f"/proc/{pid}/task/{t.id}/comm").read_text().strip()
        except OSError:
            name = "?"
        out[t.id] = (name, t.user_time + t.system_time)
    return out


def classify(raw_file: Path, main_tid: int) -> tuple[int, collections.Counter, collections.Counter]:
    parts: collections.Counter = collections.Counter()
    leaves: collections.Counter = collections.Counter()
    total = 0
    compiled = [(name, re.compile(p)) for name, p in PARTS]
    for line in raw_file.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not frames or f"({main_tid})" not in frames[0]:
            continue
        n = int(count)
        total += n
        leaves[frames[-1]] += n
        for frame in reversed(frames[1:]):
            part = next((name for name, rx in compiled if rx.search(frame)), None)
            if part:
                parts[part] += n
                break
        else:
            parts["other"] += n
    return total, parts, leaves


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="a running search-service")
    ap.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "beir" / "scifact"))
    ap.add_argument("--collection", default="scifact")
    ap.add_argument("--kind", choices=["miss", "hit"], default="miss")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--py-spy", action="store_true", help="also sample the event loop's stacks (py-spy)")
    ap.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    args = ap.parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: bash scripts/ensure_tools.sh --bench")
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if args.py_spy and not Path(pyspy).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    pid = pid_listening_on(httpx.URL(args.url).port)
    if pid is None:
        raise SystemExit(f"no process listens at {args.url}")

    bodies = [{"query": q, "collection": args.collection, "limit": 10} for q in read_queries(args.dataset).values()]
    if args.kind == "hit":
        bodies = bodies[:50]
    run_wrk(args.url, bodies, 1, args.kind, 2, salt=int(time.time()))          # warm-up (and warm the cache)

    with tempfile.TemporaryDirectory(prefix="loop_profile-") as tmp:
        profile(args, pid, bodies, Path(tmp) / "stacks.txt", pyspy)


def profile(args: argparse.Namespace, pid: int, bodies: list[dict], raw: Path, pyspy: str) -> None:
    spy = None
    if args.py_spy:
        spy = subprocess.Popen([pyspy, "record", "-p", str(pid), "-o", str(raw), "-f", "raw", "-r", str(args.rate),
                                "-d", str(int(args.seconds) + 1), "--threads", "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    before = thread_cpu(pid)
    r = run_wrk(args.url, bodies, args.concurrency, args.kind, args.seconds, salt=int(time.time()) + 1)
    after = thread_cpu(pid)
    if spy is not None:
        spy.wait(timeout=60)

    n = max(1, r["n"])
    print(f"{args.kind}, concurrency {args.concurrency}: {r['n']} requests in {args.seconds:g} s "
          f"({r['rps']:.0f}/s), p50 {r['p50']:.1f} ms, errors {r['errors']} ({DEFINITION})")
    print("| thread | CPU ms per request | busy |")
    print("|---|---|---|")
    rows = []
    for tid, (name, t1) in after.items():
        used = t1 - before.get(tid, (name, 0.0))[1]
        if used > 0:
            label = "event loop (main)" if tid == pid else f"{name} ({tid})"
            rows.append((used, label))
    for used, label in sorted(rows, reverse=True):
        print(f"| {label} | {used / n * 1000:.2f} | {used / args.seconds:.0%} |")
    print(f"| all | {sum(u for u, _ in rows) / n * 1000:.2f} | |")

    if spy is not None and raw.exists():
        total, parts, leaves = classify(raw, pid)
        window = args.seconds * args.rate
        print(f"\nevent loop, py-spy: {total} samples while busy (~{total / window:.0%} of the run); "
              "share per part (innermost known frame):")
        print("| part | share | ~ms per request |")
        print("|---|---|---|")
        busy_ms = total / args.rate * 1000 / n
        for part, c in parts.most_common():
            print(f"| {part} | {c / total:.1%} | {busy_ms * c / total:.2f} |")
        print("hottest functions (own time):")
        for frame, c in leaves.most_common(8):
            print(f"  {c / total:5.1%}  {frame[:120]}")
    cmd = ["python", "scripts/dev/loop_profile.py", "--url", args.url, "--kind", args.kind,
           "--concurrency", str(args.concurrency), "--seconds", f"{args.seconds:g}"] + (["--py-spy"] if args.py_spy else [])
    print("command: " + " ".join(cmd))


if __name__ == "__main__":
    main()
