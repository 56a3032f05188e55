"""Deterministic test data for the vector-store tests: real SciFact text, computed vectors.

Dense vectors are a seeded random projection of hashed term counts (the real embedder lives in
search_service.embeddings; the store does not care where vectors come from). Sparse vectors are BM25
document weights over hashed lowercase tokens; queries send weight 1 per unique token, and the engine
applies IDF (``Modifier.Idf``).
"""
from __future__ import annotations

import functools
import json
import math
import re
import uuid
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from search_service.store import FieldCondition, Filter, Hit, Point, SparseVector

SCIFACT = Path("/work/shared/data/beir/scifact")
DIM = 64
BUCKETS = 4096
K1, B = 1.2, 0.75
_TOKEN = re.compile(r"[a-z0-9]{2,}")
NAMESPACE = uuid.UUID("5b2f3c1e-3a55-4c8e-9a43-0d8e2f6c1a70")
KINDS = ("study", "review", "trial", "note")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def term_id(token: str) -> int:
    return zlib.crc32(token.encode())          # uint32, stable across processes


@functools.lru_cache(maxsize=1)
def _projection() -> np.ndarray:
    return np.random.default_rng(1234).standard_normal((BUCKETS, DIM)).astype(np.float32)


def dense(text: str) -> list[float]:
    vec = np.zeros(DIM, dtype=np.float32)
    for tok, tf in Counter(tokens(text)).items():
        vec += tf * _projection()[term_id(tok) % BUCKETS]
    if not vec.any():
        vec[0] = 1.0
    return [float(x) for x in vec]


def bm25_doc(text: str, avgdl: float) -> SparseVector:
    counts = Counter(term_id(t) for t in tokens(text))
    dl = sum(counts.values())
    ids = sorted(counts)
    return SparseVector(ids, [counts[i] * (K1 + 1) / (counts[i] + K1 * (1 - B + B * dl / avgdl)) for i in ids])


def bm25_query(text: str) -> SparseVector:
    ids = sorted({term_id(t) for t in tokens(text)})
    return SparseVector(ids, [1.0] * len(ids))


def point_uuid(doc_id: str, chunk: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{doc_id}:{chunk}"))


@functools.lru_cache(maxsize=4)
def load_docs(n: int) -> tuple[dict, ...]:
    docs = []
    with open(SCIFACT / "corpus.jsonl") as fh:
        for line in fh:
            docs.append(json.loads(line))
            if len(docs) == n:
                break
    return tuple(docs)


@functools.lru_cache(maxsize=4)
def load_queries(n: int) -> tuple[str, ...]:
    out = []
    with open(SCIFACT / "queries.jsonl") as fh:
        for line in fh:
            out.append(json.loads(line)["text"])
            if len(out) == n:
                break
    return tuple(out)


def metadata(doc_id: str) -> dict:
    h = zlib.crc32(doc_id.encode())
    return {"year": 1990 + h % 30, "kind": KINDS[(h >> 8) % len(KINDS)], "score": (h % 1000) / 10.0,
            "reviewed": bool((h >> 4) % 2)}


def make_points(docs: tuple[dict, ...], chunks_per_doc: int = 1) -> list[Point]:
    """One point per (doc, chunk); chunk k of a doc holds every chunks_per_doc-th sentence-ish slice."""
    texts = []
    for d in docs:
        words = (d["title"] + " " + d["text"]).split()
        step = math.ceil(len(words) / chunks_per_doc)
        for c in range(chunks_per_doc):
            texts.append((d, c, " ".join(words[c * step:(c + 1) * step]) or d["title"]))
    avgdl = sum(len(tokens(t)) for _, _, t in texts) / len(texts)
    return [Point(id=point_uuid(d["_id"], c), dense=dense(t), sparse=bm25_doc(t, avgdl),
                  payload={"doc_id": d["_id"], "chunk": c, "title": d["title"], "metadata": metadata(d["_id"])})
            for d, c, t in texts]


def pass_points(points: list[Point], n: int) -> list[Point]:
    """Copies of ``points`` with new ids and ``payload.pass = n`` (for write-until-killed tests)."""
    return [Point(id=str(uuid.uuid5(NAMESPACE, f"pass{n}:{p.id}")), dense=p.dense, sparse=p.sparse,
                  payload={**p.payload, "pass": n}) for p in points]


FILTERS: dict[str, Filter] = {
    "year_range": Filter(must=(FieldCondition(key="metadata.year", range={"gte": 2000, "lt": 2012}),)),
    "kind_match": Filter(must=(FieldCondition(key="metadata.kind", match="study"),)),
    "bool_and_int_match": Filter(must=(FieldCondition(key="metadata.reviewed", match=True),),
                                 must_not=(FieldCondition(key="metadata.year", match=2001),)),
    "kind_any_not_old": Filter(must=(FieldCondition(key="metadata.kind", any=("review", "trial")),),
                               must_not=(FieldCondition(key="metadata.year", range={"lt": 1995}),)),
    "kind_except": Filter(must=(FieldCondition(key="metadata.kind", except_=("study", "note")),)),
    "nested_should": Filter(should=(
        Filter(must=(FieldCondition(key="metadata.kind", match="note"),
                     FieldCondition(key="metadata.score", range={"gt": 50.0}))),
        Filter(must=(FieldCondition(key="metadata.year", range={"gte": 2015}),)),
    )),
}


def ids(hits: list[Hit]) -> list[str]:
    return [h.id for h in hits]


def assert_same_ranking(a: list[Hit], b: list[Hit], *, tol: float = 1e-4) -> None:
    """Same ids in the same order, scores equal within ``tol``; ids whose scores tie (within tol) may
    swap places, and a tie straddling the cut-off may bring in different members of the tied group."""
    assert len(a) == len(b), (ids(a), ids(b))
    for x, y in zip(a, b):
        assert math.isclose(x.score, y.score, rel_tol=tol, abs_tol=tol), (x, y)
    last = a[-1].score if a else 0.0

    def groups(hits: list[Hit]) -> list[set[str]]:
        out: list[set[str]] = []
        prev = None
        for h in hits:
            if math.isclose(h.score, last, rel_tol=tol, abs_tol=tol):
                continue                        # the tied tail at the cut-off: membership may differ
            if prev is not None and math.isclose(h.score, prev, rel_tol=tol, abs_tol=tol):
                out[-1].add(h.id)
            else:
                out.append({h.id})
            prev = h.score
        return out

    assert groups(a) == groups(b), (ids(a), ids(b))
