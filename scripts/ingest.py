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

import httpx

from stack_dev.ingest import ensure_collection, load, read_documents


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
    ap.add_argument("--embedding-model", default=None, help="a new collection's embedding model (minilm, "
                                                             "multilingual-e5-small; default: the service's)")
    ap.add_argument("--extra-embedding-models", default=None,
                    help="a new collection's extra models fused into hybrid search, comma-separated (e.g. minilm "
                         "on a multilingual-e5-small collection)")
    ap.add_argument("--optimize", action="store_true", help="build the collection's indexes after loading "
                                                             "(worth it for large collections)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    docs = list(read_documents(args.corpus, args.limit_docs))
    with httpx.Client(base_url=args.url, timeout=60) as client:
        ensure_collection(client, args.collection, args.recreate, chunk_words=args.chunk_words,
                          embedding_model=args.embedding_model,
                          extra_embedding_models=args.extra_embedding_models.split(",")
                          if args.extra_embedding_models else None)
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
