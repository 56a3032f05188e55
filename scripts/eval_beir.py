#!/usr/bin/env python
"""Evaluate the running search service over HTTP on a BEIR dataset.

    python scripts/eval_beir.py --dataset ../shared/data/beir/scifact --qrels ../shared/data/beir/scifact/qrels/test.tsv
    python scripts/eval_beir.py --dataset DIR --qrels FILE --url http://127.0.0.1:8001 --collection scifact --ingest

Prints a table (nDCG@10, Recall@100, P@5, Recall@10, F1@10, hit@1, MRR@10) per mode (keyword, vector,
hybrid) and, on its last line, the hybrid figures as one JSON object. Works with any qrels file in BEIR format
(``query-id<TAB>corpus-id<TAB>score`` with a header line); graded relevance is used as the nDCG gain
(linear gain, as trec_eval/BEIR). Only queries that have at least one relevant document in the qrels are
evaluated. The metrics are stack_dev.beir's (one definition for every script).
F1@10 = harmonic mean of P@10 and Recall@10, per query, averaged. hit@1 = share of queries whose first
hit is relevant; MRR@10 = mean of 1 / rank of the first relevant hit (0 past rank 10).

    # the project's Korean set (scripts/data/korean_eval/SOURCE.md): one relevant passage per question
    python scripts/eval_beir.py --dataset scripts/data/korean_eval --qrels scripts/data/korean_eval/qrels/test.tsv \
        --url http://127.0.0.1:8121 --collection ko --ingest
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from stack_dev import ingest as ingest_mod
from stack_dev.beir import hit_at, mrr_at, ndcg_at, precision_at, read_qrels, read_queries, recall_at
from stack_dev.machine import cpu_name

MODES = ("keyword", "vector", "hybrid")


def metrics(ranked: list[str], rels: dict[str, int]) -> dict[str, float]:
    p10, r10 = precision_at(ranked, rels, 10), recall_at(ranked, rels, 10)
    return {
        "ndcg@10": ndcg_at(ranked, rels, 10),
        "recall@100": recall_at(ranked, rels, 100),
        "p@5": precision_at(ranked, rels, 5),
        "recall@10": r10,
        "f1@10": (2 * p10 * r10 / (p10 + r10)) if p10 + r10 else 0.0,
        "hit@1": hit_at(ranked, rels, 1),
        "mrr@10": mrr_at(ranked, rels, 10),
    }


def evaluate(url: str, collection: str, queries: dict[str, str], qrels: dict[str, dict[str, int]], mode: str,
             extra: dict, concurrency: int = 4) -> tuple[dict[str, float], float]:
    qids = [q for q in qrels if q in queries and any(r > 0 for r in qrels[q].values())]
    with httpx.Client(base_url=url, timeout=120) as client:
        def run(qid: str) -> dict[str, float]:
            r = client.post(f"/search/{mode}", json={"query": queries[qid], "collection": collection, "limit": 100,
                                                     **extra})
            if r.status_code != 200:
                raise SystemExit(f"search failed for query {qid}: {r.status_code} {r.text[:300]}")
            return metrics([h["id"] for h in r.json()["results"]], qrels[qid])

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            per_query = list(pool.map(run, qids))
        seconds = time.perf_counter() - t0
    keys = per_query[0].keys() if per_query else []
    return {k: sum(m[k] for m in per_query) / len(per_query) for k in keys} | {"queries": len(per_query)}, seconds


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="BEIR folder (queries.jsonl, corpus.jsonl)")
    ap.add_argument("--qrels", required=True, help="qrels TSV (query-id, corpus-id, score)")
    ap.add_argument("--url", default="http://127.0.0.1:8001")
    ap.add_argument("--collection", default=None, help="default: the dataset folder's name")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--fusion", default=None, help="hybrid fusion (default: the service's)")
    ap.add_argument("--alpha", type=float, default=None)
    ap.add_argument("--weights", default=None, help='hybrid weights by retriever, JSON (e.g. \'{"keyword": 0.55, '
                    '"vector": 0.45, "vector:minilm": 0}\' to leave an extra model out)')
    ap.add_argument("--rrf-k", type=int, default=None)
    ap.add_argument("--ingest", action="store_true", help="load the corpus first if the collection is missing")
    ap.add_argument("--embedding-model", default=None,
                    help="with --ingest: the new collection's embedding model (default: the service's)")
    ap.add_argument("--extra-embedding-models", default=None,
                    help="with --ingest: the new collection's extra models fused into hybrid, comma-separated")
    ap.add_argument("--limit-docs", type=int, default=None, help="with --ingest: load only N documents")
    ap.add_argument("--limit-queries", type=int, default=None, help="evaluate only the first N queries")
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args(argv)

    collection = args.collection or Path(args.dataset).resolve().name
    with httpx.Client(base_url=args.url, timeout=60) as client:
        exists = client.get(f"/collections/{collection}").status_code == 200
        if not exists:
            if not args.ingest:
                raise SystemExit(f"collection '{collection}' not found at {args.url}; load it with "
                                 f"scripts/ingest.py or pass --ingest")
            ingest_mod.ensure_collection(client, collection, embedding_model=args.embedding_model,
                                         extra_embedding_models=args.extra_embedding_models.split(",")
                                         if args.extra_embedding_models else None)
    if not exists:
        docs = list(ingest_mod.read_documents(args.dataset, args.limit_docs))
        n, s = ingest_mod.load(args.url, collection, docs)
        print(f"ingested {n} documents in {s:.1f} s ({n / s:.1f} docs/s)", file=sys.stderr)

    queries = read_queries(args.dataset)
    qrels = read_qrels(args.qrels)
    if args.limit_queries:
        qrels = dict(list(qrels.items())[:args.limit_queries])
    extra = {k: v for k, v in {"fusion": args.fusion, "alpha": args.alpha, "rrf_k": args.rrf_k,
                               "weights": json.loads(args.weights) if args.weights else None}.items()
             if v is not None}
    rows = {}
    cols = ["ndcg@10", "recall@100", "p@5", "recall@10", "f1@10", "hit@1", "mrr@10"]
    for mode in args.modes.split(","):
        res, seconds = evaluate(args.url, collection, queries, qrels, mode, extra if mode == "hybrid" else {},
                                args.concurrency)
        res["ms/query"] = 1000 * seconds / max(1, res["queries"])
        rows[mode] = res
    with httpx.Client(base_url=args.url, timeout=60) as client:
        info = client.get(f"/collections/{collection}").json()
        model = "+".join([info.get("embedding_model") or "?"] +
                         [e["embedding_model"] for e in info.get("extra_embedding_models") or ()])
    print(f"CPU: {cpu_name()}")
    print(f"collection={collection} embedding_model={model} qrels={args.qrels} queries={next(iter(rows.values()))['queries']} "
          f"hybrid options={extra or 'service defaults'}")
    print(f"| mode | {' | '.join(cols)} | ms/query (wall, {args.concurrency} in flight) |")
    print("|---" * (len(cols) + 2) + "|")
    for mode, res in rows.items():
        print(f"| {mode} | " + " | ".join(f"{res[c]:.4f}" for c in cols) + f" | {res['ms/query']:.1f} |")
    print("command: python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    if "hybrid" in rows:
        print(json.dumps({"mode": "hybrid", **{c: round(rows["hybrid"][c], 4) for c in cols},
                          "queries": rows["hybrid"]["queries"], **extra}))


if __name__ == "__main__":
    main()
