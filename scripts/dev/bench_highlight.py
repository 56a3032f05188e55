#!/usr/bin/env python
"""What ``highlight: true`` costs a search: the same SciFact test queries with highlight off and on, in
one in-process search-service (FastAPI's TestClient: no HTTP server, no network), cache off so every
request computes. Prints p50/p95 of the service's ``took_ms`` per setting (requests interleaved, so drift
hits both alike) and the highlight work alone (search_service.highlight over the returned pages).

The collection: the documents relevant to the queries plus others up to ``--docs`` (ingested at
``--embed-doc-tokens`` to load faster; highlight works on the text, not the embeddings).

    .venv/bin/python scripts/dev/bench_highlight.py --queries 100 --docs 1000
"""
from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

from search_service.core.settings import Settings
from search_service.highlight import Highlighter
from search_service.main import create_app
from search_service.text import Analyzer
from stack_dev import beir
from stack_dev.procs import ROOT
from stack_dev.stats import percentile as pct

SCIFACT = ROOT.parent / "shared" / "data" / "beir" / "scifact"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=SCIFACT)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2, help="passes over the queries (each: off and on)")
    ap.add_argument("--embed-doc-tokens", type=int, default=64)
    args = ap.parse_args()

    qrels = beir.read_qrels(args.dataset / "qrels" / "test.tsv")
    queries = beir.read_queries(args.dataset)
    corpus = beir.read_corpus(args.dataset)
    chosen = [q for q in sorted(qrels, key=int) if q in queries][:args.queries]
    wanted = list(dict.fromkeys(d for q in chosen for d in sorted(beir.relevant(qrels[q])) if d in corpus))
    others = sorted(set(corpus) - set(wanted))
    wanted += random.Random(3).sample(others, max(0, args.docs - len(wanted)))
    docs = [{"id": d, "title": corpus[d].get("title") or None, "text": corpus[d]["text"]} for d in wanted]

    with tempfile.TemporaryDirectory(prefix="bench-hl-") as tmp:
        s = Settings(data_dir=Path(tmp) / "data", cache_enabled=False, log_level="WARNING", log_json=False,
                     models_dir=ROOT / "models", embed_doc_tokens=args.embed_doc_tokens)
        from fastapi.testclient import TestClient
        with TestClient(create_app(s)) as c:
            logging.getLogger("httpx").setLevel(logging.WARNING)
            assert c.post("/collections", json={"name": "hl"}).status_code == 201
            t0 = time.perf_counter()
            for i in range(0, len(docs), 64):
                r = c.post("/collections/hl/documents", json={"documents": docs[i:i + 64]})
                assert r.status_code == 200, r.text
            print(f"loaded {len(docs)} documents in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            took: dict[bool, list[float]] = {False: [], True: []}
            pages = []
            for rnd in range(args.rounds + 1):          # round 0 warms up (Kiwi, caches), not counted
                for i, q in enumerate(chosen):
                    order = (False, True) if (i + rnd) % 2 == 0 else (True, False)
                    for hl in order:
                        r = c.post("/search/hybrid", json={"query": queries[q], "collection": "hl",
                                                           "limit": args.limit, "highlight": hl})
                        assert r.status_code == 200, r.text
                        body = r.json()
                        if rnd:
                            took[hl].append(body["took_ms"])
                        if rnd == 1 and not hl:
                            pages.append((queries[q], body["results"]))
    analyzer = Analyzer()
    alone = []
    for q, results in pages:
        t0 = time.perf_counter()
        h = Highlighter(analyzer, q, s.highlight_snippet_chars)
        for item in results:
            h.highlight(item["title"], item["text"])
        alone.append((time.perf_counter() - t0) * 1000)
    n = len(took[False])
    print(f"{len(chosen)} SciFact test queries x {args.rounds} rounds, {len(docs)} documents, hybrid, "
          f"limit {args.limit}, cache off; {n} requests per setting")
    for hl in (False, True):
        print(f"highlight {str(hl).lower():5}  took_ms p50 {pct(took[hl], 50):.2f}  p95 {pct(took[hl], 95):.2f}")
    print(f"highlight work alone per page ({args.limit} results): p50 {pct(alone, 50):.2f} ms, "
          f"p95 {pct(alone, 95):.2f} ms")


if __name__ == "__main__":
    main()
