#!/usr/bin/env python
"""Bulk-load a corpus into the search service through its HTTP API.

    python scripts/ingest.py --corpus ../shared/data/beir/scifact --collection scifact
    python scripts/ingest.py --corpus docs.jsonl --collection mine --batch 64 --concurrency 2

The corpus is a JSONL file (or a BEIR folder holding ``corpus.jsonl``) of objects with ``_id`` or
``id``, ``text``, optional ``title`` and ``metadata``. The collection is created if missing
(``--recreate`` drops it first). Prints a progress bar and the documents/s at the end.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import httpx
from tqdm import tqdm


def corpus_file(path: str | Path) -> Path:
    p = Path(path)
    return p / "corpus.jsonl" if p.is_dir() else p


def read_corpus(path: str | Path, limit: int | None = None) -> Iterator[dict]:
    with open(corpus_file(path), encoding="utf-8") as f:
        n = 0
        for line in f:
            if not line.strip():
                continue
            d = json.loads(line)
            doc = {"id": str(d.get("_id", d.get("id"))), "text": d.get("text") or "", "title": d.get("title") or None}
            if d.get("metadata") and isinstance(d["metadata"], dict):
                doc["metadata"] = d["metadata"]
            if not doc["text"].strip() and not doc["title"]:
                continue
            yield doc
            n += 1
            if limit and n >= limit:
                return


def ensure_collection(client: httpx.Client, name: str, recreate: bool = False, **params) -> dict:
    if recreate:
        client.delete(f"/collections/{name}")
    r = client.get(f"/collections/{name}")
    if r.status_code == 404:
        r = client.post("/collections", json={"name": name, **{k: v for k, v in params.items() if v is not None}})
    r.raise_for_status()
    return r.json()


def load(url: str, collection: str, docs: list[dict], *, batch: int = 64, concurrency: int = 2,
         progress: bool = True, timeout: float = 600.0) -> tuple[int, float]:
    """Upsert ``docs`` in batches (``concurrency`` requests in flight). Returns (documents, seconds)."""
    batches = [docs[i:i + batch] for i in range(0, len(docs), batch)]
    bar = tqdm(total=len(docs), unit="doc", disable=not progress, file=sys.stderr)
    t0 = time.perf_counter()
    with httpx.Client(base_url=url, timeout=timeout) as client:
        def send(b: list[dict]) -> int:
            for attempt in range(3):
                r = client.post(f"/collections/{collection}/documents", json={"documents": b})
                if r.status_code in (429, 503) and attempt < 2:
                    time.sleep(1 + attempt)
                    continue
                if r.status_code != 200:
                    raise SystemExit(f"upsert failed: {r.status_code} {r.text[:500]}")
                break
            bar.update(len(b))
            return len(b)

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            n = sum(pool.map(send, batches))
    seconds = time.perf_counter() - t0
    bar.close()
    return n, seconds


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="JSONL file or BEIR folder with corpus.jsonl")
    ap.add_argument("--collection", required=True)
    ap.add_argument("--url", default="http://127.0.0.1:8001")
    ap.add_argument("--batch", type=int, default=64, help="documents per request")
    ap.add_argument("--concurrency", type=int, default=2, help="requests in flight")
    ap.add_argument("--limit-docs", type=int, default=None, help="load only the first N documents")
    ap.add_argument("--recreate", action="store_true", help="drop the collection first")
    ap.add_argument("--chunk-words", type=int, default=None, help="chunk size for a new collection")
    ap.add_argument("--optimize", action="store_true", help="build the collection's indexes after loading "
                                                             "(worth it for large collections)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    docs = list(read_corpus(args.corpus, args.limit_docs))
    with httpx.Client(base_url=args.url, timeout=60) as client:
        ensure_collection(client, args.collection, args.recreate, chunk_words=args.chunk_words)
    n, seconds = load(args.url, args.collection, docs, batch=args.batch, concurrency=args.concurrency,
                      progress=not args.no_progress)
    with httpx.Client(base_url=args.url, timeout=600) as client:
        if args.optimize:
            opt = client.post(f"/collections/{args.collection}/optimize").json()
            print(f"optimize: changed={opt['changed']} in {opt['took_ms'] / 1000:.1f} s")
        info = client.get(f"/collections/{args.collection}").json()
    print(f"ingested {n} documents into '{args.collection}' in {seconds:.1f} s: {n / seconds:.1f} docs/s "
          f"(collection: {info['documents']} documents, {info['chunks']} chunks)")


if __name__ == "__main__":
    main()
