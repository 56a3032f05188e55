#!/usr/bin/env python
"""Bounded soak on loopback: a mix of search, ingestion and generation against running services.

    # against services already running (make run):
    python scripts/soak.py --requests 10000 --concurrency 32
    # or start both services itself (own data dir, own Redis key prefix, the given models dir):
    python scripts/soak.py --spawn --llm-models-dir models --llm-model smollm2-135m-instruct

It stops by itself after --requests requests or --max-seconds (hard cap), whichever comes first. It prints,
per kind: count, ok, intended 429s (with Retry-After; a 429 without it counts as an error), unexpected errors
by kind (5xx, 4xx, timeout, connection), p50/p95/p99 latency (linear interpolation, stack_dev.stats); the
RSS of each service at start and end (found by its listening port); and one JSON object on its last line.
Exit status 1 on any unexpected error.
Loopback only: URLs must point at 127.0.0.1/localhost.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urlparse

import httpx

from stack_dev.procs import ROOT, ServiceProcess, pid_listening_on, stop_all
from stack_dev.stats import DEFINITION, percentile as pct

QUERIES = ["protein folding and misfolding", "vitamin D deficiency", "gene expression in cancer cells",
           "immune response to infection", "insulin resistance and diabetes", "김치 발효", "서울 지하철 노선",
           "blood pressure treatment", "stem cell differentiation", "antibiotic resistance bacteria"]
WORDS = ("cell protein gene cancer immune response blood pressure insulin vitamin bacteria virus treatment "
         "patients clinical trial risk effect study mice tissue").split()


def rss_of_port(url: str | None) -> int | None:
    """RSS (bytes) of the process listening on the URL's port, or None."""
    if not url:
        return None
    try:
        import psutil
        pid = pid_listening_on(urlparse(url).port)
        return psutil.Process(pid).memory_info().rss if pid else None
    except Exception:  # noqa: BLE001 - RSS is informative only
        return None


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"soak runs on loopback only; got {url}")


class Soak:
    def __init__(self, args) -> None:
        self.args = args
        self.lat: dict[str, list[float]] = defaultdict(list)
        self.outcomes: dict[str, Counter] = defaultdict(Counter)
        self.examples: dict[str, str] = {}
        self.rng = random.Random(args.seed)
        self.doc_seq = 0

    def pick(self) -> str:
        kinds, weights = zip(*self.args.mix.items())
        return self.rng.choices(kinds, weights)[0]

    async def one(self, kind: str, search: httpx.AsyncClient, llm: httpx.AsyncClient) -> None:
        a = self.args
        t0 = time.perf_counter()
        try:
            if kind == "search":
                r = await search.post("/search/hybrid", json={"query": self.rng.choice(QUERIES),
                                                              "collection": a.collection, "limit": 10})
            elif kind == "ingest":
                self.doc_seq += 1
                docs = [{"id": f"soak-{uuid.uuid4().hex[:12]}",
                         "text": " ".join(self.rng.choices(WORDS, k=40)), "metadata": {"soak": True}}
                        for _ in range(a.ingest_batch)]
                r = await search.post(f"/collections/{a.collection}/documents", json={"documents": docs})
            else:
                body = {"prompt": self.rng.choice(QUERIES), "max_new_tokens": a.max_new_tokens, "seed": 1}
                if a.llm_model:
                    body["model"] = a.llm_model
                r = await llm.post("/generate", json=body)
        except httpx.TimeoutException as exc:
            self._record(kind, "timeout", time.perf_counter() - t0, repr(exc))
            return
        except httpx.HTTPError as exc:
            self._record(kind, "connection", time.perf_counter() - t0, repr(exc))
            return
        dt = time.perf_counter() - t0
        if r.status_code == 200:
            self._record(kind, "ok", dt)
        elif r.status_code == 429:
            ok = r.headers.get("retry-after", "").strip().isdigit()
            self._record(kind, "429" if ok else "429_without_retry_after", dt, r.text[:200])
        elif r.status_code >= 500:
            self._record(kind, f"{r.status_code}", dt, r.text[:300])
        else:
            self._record(kind, f"{r.status_code}", dt, r.text[:300])

    def _record(self, kind: str, outcome: str, dt: float, example: str | None = None) -> None:
        self.outcomes[kind][outcome] += 1
        if outcome == "ok":
            self.lat[kind].append(dt)
        elif outcome == "429":
            self.lat[kind + "_429"].append(dt)
        if example and outcome not in ("ok", "429"):
            self.examples.setdefault(f"{kind}:{outcome}", example)

    async def prepare(self, search: httpx.AsyncClient) -> None:
        r = await search.post("/collections", json={"name": self.args.collection})
        if r.status_code not in (201, 409):
            raise SystemExit(f"cannot create collection {self.args.collection}: {r.status_code} {r.text}")
        docs = [{"id": f"seed-{i}", "text": f"{q}. " + " ".join(random.Random(i).choices(WORDS, k=60))}
                for i, q in enumerate(QUERIES * 3)]
        r = await search.post(f"/collections/{self.args.collection}/documents", json={"documents": docs})
        if r.status_code != 200:
            raise SystemExit(f"cannot seed the collection: {r.status_code} {r.text}")

    async def run(self) -> dict:
        a = self.args
        limits = httpx.Limits(max_connections=a.concurrency * 2, max_keepalive_connections=a.concurrency * 2)
        timeout = httpx.Timeout(a.request_timeout)
        async with httpx.AsyncClient(base_url=a.search_url, timeout=timeout, limits=limits) as search, \
                httpx.AsyncClient(base_url=a.llm_url, timeout=timeout, limits=limits) as llm:
            if "search" in a.mix or "ingest" in a.mix:
                await self.prepare(search)
            rss_start = {"search": rss_of_port(a.search_url), "llm": rss_of_port(a.llm_url)}
            remaining = [a.requests]
            deadline = time.monotonic() + a.max_seconds
            t0 = time.perf_counter()

            async def worker() -> None:
                while remaining[0] > 0 and time.monotonic() < deadline:
                    remaining[0] -= 1
                    await self.one(self.pick(), search, llm)

            await asyncio.gather(*(worker() for _ in range(a.concurrency)))
            wall = time.perf_counter() - t0
            rss_end = {"search": rss_of_port(a.search_url), "llm": rss_of_port(a.llm_url)}
        done = sum(sum(c.values()) for c in self.outcomes.values())
        unexpected = {f"{k}:{o}": n for k, c in self.outcomes.items() for o, n in c.items() if o not in ("ok", "429")}
        per_kind = {}
        for kind, c in sorted(self.outcomes.items()):
            lat = self.lat[kind]
            per_kind[kind] = {"requests": sum(c.values()), "ok": c["ok"], "intended_429": c["429"],
                              "errors": {o: n for o, n in c.items() if o not in ("ok", "429")},
                              "p50_ms": round(pct(lat, 50) * 1000, 2), "p95_ms": round(pct(lat, 95) * 1000, 2),
                              "p99_ms": round(pct(lat, 99) * 1000, 2)}
            if self.lat[kind + "_429"]:
                per_kind[kind]["p99_429_ms"] = round(pct(self.lat[kind + "_429"], 99) * 1000, 2)
        return {"requests": done, "wall_s": round(wall, 2), "rps": round(done / wall, 1) if wall else 0,
                "concurrency": a.concurrency, "stopped_by": "time cap" if done < a.requests else "request count",
                "unexpected_errors": sum(unexpected.values()), "unexpected_by_kind": unexpected,
                "intended_429": sum(c["429"] for c in self.outcomes.values()), "per_kind": per_kind,
                "rss_start_mb": {k: round(v / 2**20, 1) if v else None for k, v in rss_start.items()},
                "rss_end_mb": {k: round(v / 2**20, 1) if v else None for k, v in rss_end.items()},
                "error_examples": self.examples}


def spawn(args, tmp: Path) -> list[ServiceProcess]:
    search_env = {"SEARCH_DATA_DIR": str(tmp / "data"), "SEARCH_REDIS_URL": args.redis_url,
                  "SEARCH_CACHE_PREFIX": "soak-" + uuid.uuid4().hex[:8], "SEARCH_LOG_LEVEL": "WARNING"}
    llm_env = {"LLM_MODELS_DIR": str(args.llm_models_dir), "LLM_DEVICE": "cpu", "LLM_LOG_LEVEL": "WARNING",
               "LLM_MAX_QUEUE": str(args.llm_max_queue), "LLM_MAX_BATCH_SIZE": str(args.llm_max_batch)}
    if args.llm_model:
        llm_env["LLM_DEFAULT_MODEL"] = args.llm_model
    procs = []
    if "search" in args.mix or "ingest" in args.mix:
        procs.append(ServiceProcess("search_service.main:create_app", env=search_env, log_path=tmp / "search.log",
                                    ready_path="/readyz"))
        args.search_url = procs[-1].url
    if "generate" in args.mix:
        procs.append(ServiceProcess("llm_service.main:create_app", env=llm_env, log_path=tmp / "llm.log",
                                    ready_path="/readyz"))
        args.llm_url = procs[-1].url
    try:
        for p in procs:          # both start at once, then wait for each
            p.spawn()
        for p in procs:
            p.wait_ready(timeout=300)
    except BaseException:
        stop_all(procs)
        raise
    return procs


def parse_mix(text: str) -> dict[str, float]:
    out = {}
    for part in text.split(","):
        kind, _, w = part.partition("=")
        if kind.strip() not in ("search", "ingest", "generate"):
            raise argparse.ArgumentTypeError(f"unknown kind {kind!r} (search, ingest, generate)")
        if float(w) > 0:
            out[kind.strip()] = float(w)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--search-url", default="http://127.0.0.1:8001")
    p.add_argument("--llm-url", default="http://127.0.0.1:8002")
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--max-seconds", type=float, default=900, help="hard time cap (the soak stops by itself)")
    p.add_argument("--mix", type=parse_mix, default=parse_mix("search=80,ingest=10,generate=10"),
                   help="weights per kind, e.g. search=80,ingest=10,generate=10")
    p.add_argument("--collection", default="soak")
    p.add_argument("--ingest-batch", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--llm-model", default=None, help="model name sent with /generate (default: the service's)")
    p.add_argument("--request-timeout", type=float, default=60)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--spawn", action="store_true", help="start both services on free loopback ports")
    p.add_argument("--llm-models-dir", type=Path, default=ROOT / "models")
    p.add_argument("--llm-max-queue", type=int, default=64)
    p.add_argument("--llm-max-batch", type=int, default=8)
    p.add_argument("--redis-url", default=os.environ.get("SEARCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = p.parse_args(argv)

    procs = []
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        try:
            if args.spawn:
                procs = spawn(args, Path(tmp))
            check_loopback(args.search_url)
            check_loopback(args.llm_url)
            result = asyncio.run(Soak(args).run())
        finally:
            stop_all(procs)
    print(f"command: {' '.join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]))}")
    print(f"{result['requests']} requests in {result['wall_s']} s ({result['rps']} req/s) at concurrency "
          f"{result['concurrency']}; stopped by {result['stopped_by']}")
    print(f"{'kind':<10}{'requests':>9}{'ok':>8}{'429':>7}{'errors':>8}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}"
          f"   ({DEFINITION})")
    for kind, k in result["per_kind"].items():
        print(f"{kind:<10}{k['requests']:>9}{k['ok']:>8}{k['intended_429']:>7}{sum(k['errors'].values()):>8}"
              f"{k['p50_ms']:>10}{k['p95_ms']:>10}{k['p99_ms']:>10}")
    print(f"RSS MB start {result['rss_start_mb']} end {result['rss_end_mb']}")
    if result["unexpected_errors"]:
        print(f"UNEXPECTED ERRORS: {result['unexpected_by_kind']}; examples: {result['error_examples']}")
    print(json.dumps(result, ensure_ascii=False))
    return 1 if result["unexpected_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
