"""Short version of scripts/soak.py: both services spawned as real processes (tiny LLM, real Redis, embedded
Qdrant), 300 mixed requests (search, ingestion, generation) at concurrency 16. The llm-service runs with a
tiny queue (2) and batch (2) so generation overflows it: those requests must get 429 WITH Retry-After (a 429
without it counts as an unexpected error), and nothing else may fail. The long soak is the script."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REDIS_URL, TINY_NAME
from stack_dev.procs import ROOT


def test_short_soak(tiny_model_dir, redis_url):
    cmd = [sys.executable, str(ROOT / "scripts" / "soak.py"), "--spawn", "--requests", "300", "--concurrency", "16",
           "--max-seconds", "240", "--mix", "search=65,ingest=10,generate=25", "--max-new-tokens", "48",
           "--llm-models-dir", str(tiny_model_dir), "--llm-model", TINY_NAME, "--llm-max-queue", "2",
           "--llm-max-batch", "2", "--redis-url", REDIS_URL]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=ROOT)
    out = res.stdout.strip().splitlines()
    assert out, res.stderr[-3000:]
    result = json.loads(out[-1])
    assert result["requests"] == 300 and result["stopped_by"] == "request count", result
    assert result["unexpected_errors"] == 0, (result["unexpected_by_kind"], result["error_examples"])
    assert res.returncode == 0
    gen = result["per_kind"]["generate"]
    assert gen["intended_429"] > 0 and gen["ok"] > 0           # backpressure: full queue -> 429 + Retry-After
    assert result["per_kind"]["search"]["ok"] == result["per_kind"]["search"]["requests"]
    assert result["per_kind"]["ingest"]["ok"] == result["per_kind"]["ingest"]["requests"]
    assert all(v for v in result["rss_start_mb"].values())       # RSS of both services was found and reported
