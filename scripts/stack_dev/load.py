"""The wrk load driver of scripts/bench_search.py and scripts/dev/loop_profile.py: ``POST /search/hybrid``
from wrk (C, one thread, one event loop, far less CPU taken from the service than a Python client) with
scripts/bench/search_load.lua. Percentiles come from wrk's latency histogram through
:func:`stack_dev.stats.percentile`, the same definition as the scripts' own measurements."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile

from .procs import ROOT
from .stats import percentile

WRK_SCRIPT = ROOT / "scripts" / "bench" / "search_load.lua"


def run_wrk(url: str, bodies: list[dict], concurrency: int, mode: str, seconds: float, salt: int) -> dict:
    """``bodies`` (request JSON) cycled by wrk for ``seconds`` at ``concurrency`` connections; ``mode``
    "miss" makes every request a distinct cache key, "hit" sends them as they are. Returns n, rps,
    p50/p95/p99 (ms), errors and cached (responses that said ``"cached": true``)."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for b in bodies:
            f.write(json.dumps(b, ensure_ascii=False, separators=(",", ":")) + "\n")
        path = f.name
    try:
        out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "30s",
                              "-s", str(WRK_SCRIPT), url, "--", path, mode, str(salt)],
                             check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(path)
    r = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    values = [us / 1000 for us, _ in r["hist_us"]]
    counts = [n for _, n in r["hist_us"]]
    p50, p95, p99 = (percentile(values, p, counts) for p in (50, 95, 99))
    return {"n": r["requests"], "rps": r["requests"] / r["seconds"], "p50": p50, "p95": p95,
            "p99": p99, "errors": r["non_2xx"] + r["socket_errors"], "cached": r["cached"]}
