"""Collections and documents: create/describe/delete collections, upsert and delete documents.

* A collection records the embedding model id and dimension it was built with; using it with another
  model is refused (409) instead of silently mixing vector spaces.
* Long texts are split into word windows (``chunk_words`` with ``chunk_overlap``); every chunk is one
  point (id ``uuid5(NS, "{collection}/{doc_id}/{chunk_no}")``) whose payload carries ``doc_id`` so hits
  collapse back to their document. Re-upserting a document replaces all of its old chunks.
* BM25 document weights need the average chunk length: the collection's metadata keeps the number of
  chunks and their total length; ``avgdl`` is the running average including the batch being written
  (earlier chunks keep the weights computed with the average of their time; IDF is the engine's).
  Each chunk keeps its length in its payload, and chunk 0 keeps the document's totals, so deletes
  and replacements update the statistics exactly.
* Every write replaces the collection's ``version`` (in the store's metadata) before and after the data
  changes, so cached search responses keyed on the old version are never served again.
"""
from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from stack_common.errors import Conflict, NotFound, ServiceError

from .core.metrics import Metrics
from .core.settings import Settings
from .store.base import CollectionInfo, FieldCondition, Filter, Point, VectorStore

NAMESPACE = uuid.UUID("5b0c7a9e-2f7d-4c43-9a0e-6d1f1c2b7e10")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,62}$")
CHUNK0 = Filter(must=(FieldCondition(key="chunk", match=0),))


def point_id(collection: str, doc_id: str, chunk_no: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{collection}/{doc_id}/{chunk_no}"))


def chunk_words(text: str, size: int, overlap: int) -> list[str]:
    """Split on whitespace into windows of ``size`` words sharing ``overlap`` words; one chunk if short."""
    words = text.split()
    if len(words) <= size:
        return [" ".join(words)]
    step = size - overlap
    out = []
    for start in range(0, len(words), step):
        out.append(" ".join(words[start:start + size]))
        if start + size >= len(words):
            break
    return out


def new_version() -> str:
    return uuid.uuid4().hex[:16]


@dataclass
class Document:
    id: str
    text: str
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class UpsertResult:
    upserted: int
    chunks: int
    replaced: int
    took_ms: float


@dataclass
class DeleteResult:
    deleted: int
    not_found: list[str]


class Ingestor:
    def __init__(self, store: VectorStore, embedder, analyzer, encoder_cls, settings: Settings,
                 metrics: Metrics) -> None:
        self.store = store
        self.embedder = embedder
        self.analyzer = analyzer
        self.encoder_cls = encoder_cls
        self.settings = settings
        self.metrics = metrics
        self._encoders: dict[tuple[float, float], Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # -- helpers --------------------------------------------------------------------------------
    def encoder(self, k1: float, b: float):
        key = (float(k1), float(b))
        enc = self._encoders.get(key)
        if enc is None:
            enc = self._encoders[key] = self.encoder_cls(self.analyzer, k1=key[0], b=key[1])
        return enc

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    def check_model(self, info: CollectionInfo) -> None:
        model_id, dim = info.meta.get("model_id"), info.dim
        if model_id != self.embedder.model_id or dim != self.embedder.dim:
            raise Conflict(
                f"collection '{info.name}' was built with embedding model '{model_id}' (dim {dim}) but this "
                f"service runs '{self.embedder.model_id}' (dim {self.embedder.dim}); re-create the collection "
                "or run the matching model",
                details={"collection_model_id": model_id, "collection_dim": dim,
                         "service_model_id": self.embedder.model_id, "service_dim": self.embedder.dim})

    async def collection(self, name: str, *, check_model: bool = True) -> CollectionInfo:
        info = await self.store.get_collection(name)
        if check_model:
            self.check_model(info)
        return info

    # -- collections ----------------------------------------------------------------------------
    async def create_collection(self, name: str, *, chunk_words: int | None = None,
                                chunk_overlap: int | None = None, bm25_k1: float | None = None,
                                bm25_b: float | None = None) -> dict[str, Any]:
        if not _NAME.match(name):
            raise ServiceError(f"collection name {name!r} is invalid: use 1-63 letters, digits, '_' or '-', "
                               "starting with a letter or digit", status_code=422, error_type="validation_error")
        s = self.settings
        cw = chunk_words or s.chunk_words
        co = s.chunk_overlap if chunk_overlap is None else chunk_overlap
        if co >= cw:
            raise ServiceError(f"chunk_overlap ({co}) must be smaller than chunk_words ({cw})",
                               status_code=422, error_type="validation_error")
        meta = {
            "model_id": self.embedder.model_id, "dim": self.embedder.dim,
            "chunk_words": cw, "chunk_overlap": co, "embed_doc_tokens": s.embed_doc_tokens,
            "bm25": {"k1": bm25_k1 or s.bm25_k1, "b": s.bm25_b if bm25_b is None else bm25_b,
                     "chunks": 0, "total_len": 0},
            "version": new_version(), "created_at": time.time(),
        }
        info = await self.store.create_collection(name, self.embedder.dim, meta)
        return await self.describe(info.name)

    async def describe(self, name: str) -> dict[str, Any]:
        info = await self.store.get_collection(name)
        documents = await self.store.count(name, CHUNK0)
        meta = info.meta
        bm25 = meta.get("bm25", {})
        chunks = bm25.get("chunks", 0)
        return {
            "name": info.name, "documents": documents, "chunks": info.points_count,
            "model_id": meta.get("model_id"), "dim": info.dim,
            "model_matches": meta.get("model_id") == self.embedder.model_id and info.dim == self.embedder.dim,
            "chunk_words": meta.get("chunk_words"), "chunk_overlap": meta.get("chunk_overlap"),
            "bm25": {"k1": bm25.get("k1"), "b": bm25.get("b"),
                     "avgdl": (bm25.get("total_len", 0) / chunks) if chunks else 0.0},
            "version": meta.get("version"), "created_at": meta.get("created_at"),
        }

    async def list_collections(self) -> list[dict[str, Any]]:
        infos = await self.store.list_collections()
        return [{"name": i.name, "chunks": i.points_count, "model_id": i.meta.get("model_id"), "dim": i.dim}
                for i in sorted(infos, key=lambda i: i.name)]

    async def delete_collection(self, name: str) -> None:
        async with self._lock(name):
            await self.store.delete_collection(name)
        self._locks.pop(name, None)

    async def optimize(self, name: str) -> dict[str, Any]:
        """Build indexes / merge segments now (after a bulk load of a large collection). The dense index
        may change approximate results slightly, so the cache version is bumped too."""
        async with self._lock(name):
            info = await self.store.get_collection(name)
            t0 = time.perf_counter()
            changed = await self.store.optimize(name)
            if changed:
                await self.store.update_meta(name, {**info.meta, "version": new_version()})
        return {"changed": bool(changed), "took_ms": (time.perf_counter() - t0) * 1000}

    # -- documents ------------------------------------------------------------------------------
    def _validate(self, docs: list[Document]) -> list[Document]:
        s = self.settings
        if not docs:
            raise ServiceError("documents: expected at least one document", status_code=422,
                               error_type="validation_error")
        if len(docs) > s.max_batch_docs:
            raise ServiceError(f"documents: {len(docs)} documents in one request exceeds the limit of "
                               f"{s.max_batch_docs}; send smaller batches", status_code=413,
                               error_type="payload_too_large")
        for i, d in enumerate(docs):
            if len(d.text) > s.max_text_chars:
                raise ServiceError(f"documents[{i}].text: {len(d.text)} characters exceeds the limit of "
                                   f"{s.max_text_chars}", status_code=413, error_type="payload_too_large")
            if not (d.text.strip() or (d.title or "").strip()):
                raise ServiceError(f"documents[{i}]: text and title are both empty", status_code=422,
                                   error_type="validation_error")
        latest: dict[str, Document] = {}
        for d in docs:           # the same id twice in a batch: the last one wins
            latest.pop(d.id, None)
            latest[d.id] = d
        return list(latest.values())

    def _prepare(self, name: str, docs: list[Document], meta: dict[str, Any]):
        """CPU work outside the event loop: chunk, tokenize, embed."""
        cw, co = int(meta.get("chunk_words", self.settings.chunk_words)), int(meta.get("chunk_overlap", 0))
        bm = meta.get("bm25", {})
        enc = self.encoder(bm.get("k1", self.settings.bm25_k1), bm.get("b", self.settings.bm25_b))
        rows = []   # (doc, chunk_no, n_chunks, chunk_text, tfs, length)
        texts = []
        for d in docs:
            chunks = chunk_words(d.text, cw, co) if d.text.strip() else [""]
            for no, chunk in enumerate(chunks):
                indexed = f"{d.title}\n{chunk}" if d.title else chunk
                tfs, length = enc.doc_stats(indexed)
                rows.append((d, no, len(chunks), chunk, tfs, length))
                texts.append(indexed)
        vectors = self.embedder.encode(texts, batch_size=self.settings.embed_batch_size,
                                       max_tokens=int(meta.get("embed_doc_tokens", self.settings.embed_doc_tokens)))
        return enc, rows, vectors

    async def upsert(self, name: str, docs: list[Document]) -> UpsertResult:
        t0 = time.perf_counter()
        docs = self._validate(docs)
        info = await self.collection(name)
        enc, rows, vectors = await asyncio.to_thread(self._prepare, name, docs, info.meta)
        async with self._lock(name):
            info = await self.collection(name)
            meta = dict(info.meta)
            old = await self._chunk_zero(name, [d.id for d in docs])
            bm = dict(meta.get("bm25", {}))
            n = int(bm.get("chunks", 0)) - sum(p.get("n_chunks", 1) for p in old.values())
            total = int(bm.get("total_len", 0)) - sum(p.get("doc_len", 0) for p in old.values())
            n += len(rows)
            total += sum(r[5] for r in rows)
            n, total = max(n, 0), max(total, 0)
            avgdl = (total / n) if n else 1.0
            doc_len: dict[str, int] = {}
            for d, _, _, _, _, length in rows:
                doc_len[d.id] = doc_len.get(d.id, 0) + length
            points = []
            for (d, no, n_chunks, chunk, tfs, length), vec in zip(rows, vectors):
                payload: dict[str, Any] = {"doc_id": d.id, "chunk": no, "chunk_len": length,
                                           "title": d.title, "text": chunk, "metadata": d.metadata or {}}
                if no == 0:
                    payload["n_chunks"] = n_chunks
                    payload["doc_len"] = doc_len[d.id]
                    if n_chunks > 1:
                        payload["full_text"] = d.text
                points.append(Point(id=point_id(name, d.id, no), dense=[float(x) for x in vec],
                                    sparse=enc.encode_doc(tfs, length, avgdl), payload=payload))
            # version first (a crash mid-write must not leave old cache entries valid), then data, then stats
            await self.store.update_meta(name, {**meta, "version": new_version()})
            if old:
                await self.store.delete_by_doc_ids(name, list(old))
            await self.store.upsert(name, points)
            bm.update(chunks=n, total_len=total)
            await self.store.update_meta(name, {**meta, "bm25": bm, "version": new_version()})
        self.metrics.documents_ingested.inc(len(docs))
        self.metrics.chunks_ingested.inc(len(points))
        return UpsertResult(upserted=len(docs), chunks=len(points), replaced=len(old),
                            took_ms=(time.perf_counter() - t0) * 1000)

    async def _chunk_zero(self, name: str, doc_ids: list[str]) -> dict[str, dict[str, Any]]:
        hits = await self.store.retrieve(name, [point_id(name, d, 0) for d in doc_ids])
        return {h.payload["doc_id"]: h.payload for h in hits}

    async def delete(self, name: str, doc_ids: list[str]) -> DeleteResult:
        if not doc_ids:
            raise ServiceError("ids: expected at least one document id", status_code=422,
                               error_type="validation_error")
        if len(doc_ids) > self.settings.max_batch_docs * 10:
            raise ServiceError(f"ids: more than {self.settings.max_batch_docs * 10} ids in one request",
                               status_code=413, error_type="payload_too_large")
        doc_ids = list(dict.fromkeys(doc_ids))
        async with self._lock(name):
            info = await self.collection(name, check_model=False)
            meta = dict(info.meta)
            old = await self._chunk_zero(name, doc_ids)
            if old:
                bm = dict(meta.get("bm25", {}))
                bm["chunks"] = max(0, int(bm.get("chunks", 0)) - sum(p.get("n_chunks", 1) for p in old.values()))
                bm["total_len"] = max(0, int(bm.get("total_len", 0)) - sum(p.get("doc_len", 0) for p in old.values()))
                await self.store.update_meta(name, {**meta, "version": new_version()})
                await self.store.delete_by_doc_ids(name, list(old))
                await self.store.update_meta(name, {**meta, "bm25": bm, "version": new_version()})
        self.metrics.documents_deleted.inc(len(old))
        return DeleteResult(deleted=len(old), not_found=[d for d in doc_ids if d not in old])

    async def get_document(self, name: str, doc_id: str) -> dict[str, Any]:
        await self.store.get_collection(name)
        hits = await self.store.retrieve(name, [point_id(name, doc_id, 0)])
        if not hits:
            raise NotFound(f"document '{doc_id}' not found in collection '{name}'")
        p = hits[0].payload
        return {"id": p["doc_id"], "title": p.get("title"), "text": p.get("full_text", p.get("text", "")),
                "metadata": p.get("metadata") or {}, "chunks": p.get("n_chunks", 1)}
