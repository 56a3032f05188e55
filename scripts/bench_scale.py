#!/usr/bin/env python
"""How the embedded store scales with collection size: load rate, automatic index build, query latency,
recall and memory at 5k, 50k, 200k documents (1M with --sizes).

    .venv/bin/python scripts/bench_scale.py [--sizes 5000,50000,200000] [--queries 200] [--base-docs 2000]

Documents are synthetic but shaped like the real ones: each dense vector is a real SciFact abstract's MiniLM
embedding (``--base-docs`` of them, embedded once with the project's embedder and cached under
``--cache``) mixed with half of another one plus Gaussian noise (``--noise``), renormalised; each sparse vector is the real BM25 vector of a SciFact abstract (the project's analyzer and
encoder), and the payload holds that abstract's title and text (on disk, as the service stores it). Queries are
real SciFact test queries: their embeddings perturbed the same way, their BM25 query vectors as they are.

Per size, through the store layer (``EdgeStore``, the service's settings: auto indexing with the default policy,
``--index-threads`` for the build): load rate (points/s, batches of 1,000), the time until the automatic HNSW
build is swapped in, p50/p95 of dense, sparse and hybrid (one batched call) searches for limit 100, recall@10 of
the dense search against exact (numpy) nearest neighbours, and the RSS the collection added (process RSS after
the build minus before the load; the vectors are generated in chunks and not kept). One table; the last line is
JSON, one object per size: ``{"docs", "dense_p50_ms", "recall_at_10", "rss_mb", ...}``.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import qdrant_edge as qe

from search_service.store import Point, SparseVector
from search_service.store.edge import EdgeStore
from search_service.store.edge_indexing import IndexPolicy
from stack_dev import beir
from stack_dev.machine import cpu_name
from stack_dev.stats import percentile

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "beir" / "scifact"
CHUNK = 1000


def base_data(args) -> dict:
    """Real embeddings of --base-docs abstracts and of the test queries, real BM25 vectors (cached)."""
    cache = Path(args.cache) / f"scale-base-{args.base_docs}.npz"
    corpus = beir.read_corpus(SCIFACT)
    ids = sorted(corpus)
    texts = [f"{corpus[i].get('title') or ''} {corpus[i]['text']}" for i in ids]
    qrels = beir.read_qrels(SCIFACT / "qrels" / "test.tsv")
    queries = beir.read_queries(SCIFACT)
    qtexts = [queries[q] for q in sorted(qrels, key=int) if q in queries]
    if cache.is_file():
        z = np.load(cache)
        docs_v, query_v = z["docs"], z["queries"]
    else:
        from search_service.embeddings import Embedder
        emb = Embedder.load("minilm", ROOT / "models", intra_op_threads=2)
        t0 = time.perf_counter()
        docs_v = emb.encode(texts[:args.base_docs], batch_size=32)
        query_v = emb.encode(qtexts, batch_size=32, kind="query")
        emb.close()
        print(f"embedded {len(docs_v)} abstracts + {len(query_v)} queries in {time.perf_counter() - t0:.1f} s "
              f"(cached in {cache})", flush=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, docs=docs_v, queries=query_v)
    from search_service.text import BM25Encoder
    enc = BM25Encoder()
    stats = [enc.doc_stats(t) for t in texts]
    avgdl = float(np.mean([n for _, n in stats]))
    sparse = [enc.encode_doc(tfs, n, avgdl) for tfs, n in stats]
    return {"docs_v": docs_v.astype(np.float32), "query_v": query_v.astype(np.float32),
            "sparse": sparse, "qsparse": [enc.encode_query(q) for q in qtexts], "corpus": corpus, "ids": ids}


def dense_chunk(base: np.ndarray, start: int, n: int, noise: float, seed: int) -> np.ndarray:
    """Vectors start..start+n, each a real embedding plus 0.5x another one plus Gaussian noise of norm
    ~``noise``, renormalised: a continuous spread around the real vectors (not tight clusters of near-copies,
    which no real corpus has). The same arguments give the same vectors."""
    rng = np.random.default_rng([seed, start])
    first = base[np.arange(start, start + n) % len(base)]
    other = base[rng.integers(0, len(base), n)]
    v = first + 0.5 * other + noise * rng.standard_normal((n, base.shape[1])).astype(np.float32) / np.sqrt(
        base.shape[1])
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


async def one_size(n: int, data: dict, args, tmp: Path) -> dict:
    policy = IndexPolicy(threads=args.index_threads, ef=args.ef)
    store = EdgeStore(tmp / f"n{n}", index=policy)
    rss0 = rss_mb()
    await store.create_collection("c", data["docs_v"].shape[1], {})
    ids, corpus, sparse = data["ids"], data["corpus"], data["sparse"]
    t0 = time.perf_counter()
    for start in range(0, n, CHUNK):
        k = min(CHUNK, n - start)
        vecs = dense_chunk(data["docs_v"], start, k, args.noise, 1)
        pts = []
        for j in range(k):
            i = start + j
            src = i % len(ids)
            doc = corpus[ids[src]]
            pts.append(Point(id=str(uuid.UUID(int=i + 1)), dense=vecs[j].tolist(),
                             sparse=SparseVector(sparse[src].indices, sparse[src].values),
                             payload={"doc_id": f"d{i}", "chunk": 0, "title": doc.get("title") or "",
                                      "text": doc["text"]}))
        await store.upsert("c", pts)
    load_s = time.perf_counter() - t0
    # the automatic build (only past the threshold): wait until it is swapped in
    t1 = time.perf_counter()
    while (status := await store.index_status("c"))["state"] in ("waiting", "building"):
        await asyncio.sleep(0.2)
    index_wall_s = time.perf_counter() - t1
    rss = rss_mb() - rss0
    qv = dense_chunk(data["query_v"], 0, args.queries, args.noise, 2)
    qs = [data["qsparse"][i % len(data["qsparse"])] for i in range(args.queries)]
    for i in range(min(20, args.queries)):                              # warm up
        await store.search_both("c", qv[i].tolist(), qs[i], 100)
    exact_ids = exact_top10(qv, data, n, args.noise)
    sweep = {}
    for ef in (int(x) for x in args.ef_sweep.split(",") if x) if status["state"] == "indexed" else ():
        store._params = qe.SearchParams(hnsw_ef=ef)       # what SEARCH_HNSW_EF sets, on the same index
        best_p50 = float("inf")
        for _ in range(args.rounds):
            t_ef, got_ef = [], []
            for i in range(args.queries):
                t = time.perf_counter()
                hits = await store.search_dense("c", qv[i].tolist(), 100, with_payload=False)
                t_ef.append(time.perf_counter() - t)
                got_ef.append([h.id for h in hits[:10]])
            best_p50 = min(best_p50, percentile(t_ef, 50))
        sweep[ef] = {"dense_p50_ms": round(best_p50 * 1e3, 3), "recall_at_10": recall(got_ef, exact_ids)}
    store._params = qe.SearchParams(hnsw_ef=policy.ef)
    # each query type over --rounds rounds; a type's figures come from its round with the lowest median
    # (the machine is shared: a round another process slowed says nothing about the store)
    times: dict[str, list[float]] = {}
    got: list[list[str]] = []
    for _ in range(args.rounds):
        rnd: dict[str, list[float]] = {"dense": [], "sparse": [], "hybrid": []}
        got = []
        for i in range(args.queries):
            d = qv[i].tolist()
            t = time.perf_counter()
            hits = await store.search_dense("c", d, 100, with_payload=False)
            rnd["dense"].append(time.perf_counter() - t)
            got.append([h.id for h in hits[:10]])
            t = time.perf_counter()
            await store.search_sparse("c", qs[i], 100, with_payload=False)
            rnd["sparse"].append(time.perf_counter() - t)
            t = time.perf_counter()
            await store.search_both("c", d, qs[i], 100, with_payload=False)
            rnd["hybrid"].append(time.perf_counter() - t)
        for m, t in rnd.items():
            if m not in times or percentile(t, 50) < percentile(times[m], 50):
                times[m] = t
    out = {"docs": n, "load_pts_per_s": round(n / load_s), "index_state": status["state"],
           "index_wait_s": round(index_wall_s, 1), "index_build_s": status["last_build_s"],
           "segments": status["segments"], "indexed_vectors": status["indexed_vectors"],
           **{f"{m}_p50_ms": round(percentile(t, 50) * 1e3, 3) for m, t in times.items()},
           **{f"{m}_p95_ms": round(percentile(t, 95) * 1e3, 3) for m, t in times.items()},
           "recall_at_10": recall(got, exact_ids), "rss_mb": round(rss, 1),
           "rss_mb_per_100k": round(rss * 100_000 / n, 1), "ef": policy.ef, "ef_sweep": sweep}
    await store.close()
    return out


def exact_top10(qv: np.ndarray, data: dict, n: int, noise: float) -> np.ndarray:
    """Exact top-10 document numbers per query, streaming the loaded vectors in chunks."""
    best = np.full((len(qv), 10), -np.inf, dtype=np.float32)
    best_id = np.zeros((len(qv), 10), dtype=np.int64)
    for start in range(0, n, 20_000):
        k = min(20_000, n - start)
        sims = qv @ dense_chunk_range(data["docs_v"], start, k, noise).T
        cand = np.concatenate([best, sims], axis=1)
        cand_id = np.concatenate([best_id, np.arange(start, start + k)[None, :].repeat(len(qv), 0)], axis=1)
        top = np.argpartition(-cand, 9, axis=1)[:, :10]
        best = np.take_along_axis(cand, top, 1)
        best_id = np.take_along_axis(cand_id, top, 1)
    return best_id


def recall(got: list[list[str]], exact_ids: np.ndarray) -> float:
    return round(float(np.mean([len({int(uuid.UUID(h)) - 1 for h in g} & set(e.tolist())) / 10
                                for g, e in zip(got, exact_ids)])), 4)


def dense_chunk_range(base: np.ndarray, start: int, n: int, noise: float) -> np.ndarray:
    """The documents' vectors start..start+n exactly as they were loaded (CHUNK-aligned regeneration)."""
    parts = []
    for s in range(start - start % CHUNK, start + n, CHUNK):
        parts.append(dense_chunk(base, s, CHUNK, noise, 1))
    allv = np.concatenate(parts)
    off = start % CHUNK
    return allv[off:off + n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="5000,50000,200000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--base-docs", type=int, default=2000)
    ap.add_argument("--noise", type=float, default=0.35)
    ap.add_argument("--index-threads", type=int, default=2, help="threads of the index build (the service's "
                                                                "default is 1: it leaves a core to searches)")
    ap.add_argument("--rounds", type=int, default=3, help="latency rounds; the round with the lowest median counts")
    ap.add_argument("--ef-sweep", default="64,128,256,512", help="hnsw_ef values re-measured on each built index")
    ap.add_argument("--ef", type=int, default=IndexPolicy.ef, help="hnsw_ef of the main figures (SEARCH_HNSW_EF)")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "bench-scale-cache"))
    args = ap.parse_args(argv)
    data = base_data(args)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            rows.append(asyncio.run(one_size(n, data, args, Path(tmp))))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\ncommand: .venv/bin/python scripts/bench_scale.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"cpu: {cpu_name()}, {psutil.cpu_count()} cores; limit 100, {args.queries} queries, sequential, best of "
          f"{args.rounds} rounds; "
          f"HNSW m={IndexPolicy.m} ef_construct={IndexPolicy.ef_construct} ef={args.ef}, "
          f"auto index past {IndexPolicy.threshold:,} points, build threads {args.index_threads}")
    head = (f"{'docs':>9} {'load pts/s':>10} {'index':>8} {'build s':>8} {'dense p50/p95 ms':>17} "
            f"{'sparse p50/p95':>15} {'hybrid p50/p95':>15} {'recall@10':>9} {'RSS MB':>7} {'MB/100k':>8}")
    print(head)
    for r in rows:
        print(f"{r['docs']:>9,} {r['load_pts_per_s']:>10,} {r['index_state']:>8} {str(r['index_build_s']):>8} "
              f"{r['dense_p50_ms']:>8.2f}/{r['dense_p95_ms']:<8.2f} {r['sparse_p50_ms']:>7.2f}/{r['sparse_p95_ms']:<7.2f} "
              f"{r['hybrid_p50_ms']:>7.2f}/{r['hybrid_p95_ms']:<7.2f} {r['recall_at_10']:>9.3f} {r['rss_mb']:>7.0f} "
              f"{r['rss_mb_per_100k']:>8.0f}")
    for r in rows:
        for ef, f in r["ef_sweep"].items():
            print(f"  {r['docs']:>9,} docs, hnsw_ef {ef:>4}: dense p50 {f['dense_p50_ms']:.2f} ms, "
                  f"recall@10 {f['recall_at_10']:.3f}")
    if len(rows) > 1:
        print(f"dense p50 at {rows[-1]['docs']:,} = {rows[-1]['dense_p50_ms'] / rows[0]['dense_p50_ms']:.2f}x "
              f"the {rows[0]['docs']:,} figure")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
