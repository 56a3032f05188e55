"""Bulk loading through the search-service's HTTP API (the core of scripts/ingest.py, also used by
eval_beir.py and bench_search.py)."""
from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import httpx

from .beir import corpus_file, iter_jsonl


def read_documents(path: str | Path, limit: int | None = None) -> Iterator[dict]:
    """The API documents of a corpus JSONL file (or a BEIR folder's corpus.jsonl): objects with ``_id``
    or ``id``, ``text``, optional ``title`` and ``metadata`` (a dict). Documents with neither text nor
    title are skipped; ``limit`` stops after that many documents."""
    n = 0
    for d in iter_jsonl(corpus_file(path)):
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
    from tqdm import tqdm

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
