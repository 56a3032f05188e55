"""Documents in, documents out: upsert (chunk, embed, BM25-weight, write), delete and read documents.

* Long texts are split into word windows (``chunk_words`` with ``chunk_overlap``); every chunk is one
  point (:func:`collections.chunk_point_id`) whose payload carries ``doc_id`` so hits collapse back to
  their document. Re-upserting a document replaces all of its old chunks.
* BM25 document weights need the average chunk length: the collection's metadata keeps the number of
  chunks and their total length; ``avgdl`` is the running average including the batch being written
  (earlier chunks keep the weights computed with the average of their time; IDF is the engine's).
  Each chunk keeps its length in its payload, and chunk 0 keeps the document's totals, so deletes
  and replacements update the statistics exactly.
* Every write replaces the collection's ``version`` before and after the data changes, so cached search
  responses keyed on the old version are never served again.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from stack_common.errors import InvalidRequest, NotFound, TooLarge

from .collections import CollectionCatalog, chunk_point_id
from .core.metrics import Metrics
from .core.settings import Settings
from .store.base import DENSE, Point


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
    def __init__(self, catalog: CollectionCatalog, settings: Settings, metrics: Metrics) -> None:
        self.catalog = catalog
        self.store = catalog.store
        self.settings = settings
        self.metrics = metrics

    def _validate(self, docs: list[Document]) -> list[Document]:
        s = self.settings
        if not docs:
            raise InvalidRequest("documents: expected at least one document")
        if len(docs) > s.max_batch_docs:
            raise TooLarge(f"documents: {len(docs)} documents in one request exceeds the limit of "
                           f"{s.max_batch_docs}; send smaller batches")
        for i, d in enumerate(docs):
            if len(d.text) > s.max_text_chars:
                raise TooLarge(f"documents[{i}].text: {len(d.text)} characters exceeds the limit of "
                               f"{s.max_text_chars}")
            if not (d.text.strip() or (d.title or "").strip()):
                raise InvalidRequest(f"documents[{i}]: text and title are both empty")
        latest: dict[str, Document] = {}
        for d in docs:           # the same id twice in a batch: the last one wins
            latest.pop(d.id, None)
            latest[d.id] = d
        return list(latest.values())

    def _prepare(self, docs: list[Document], info):
        """CPU work outside the event loop: chunk, tokenize, embed (with the collection's model)."""
        meta = info.meta
        dense = self.catalog.dense(info)          # the collection's model, then its extra ones
        cw, co = int(meta.get("chunk_words", self.settings.chunk_words)), int(meta.get("chunk_overlap", 0))
        enc = self.catalog.encoder(meta)
        rows = []   # (doc, chunk_no, n_chunks, chunk_text, tfs, length)
        texts = []
        for d in docs:
            chunks = chunk_words(d.text, cw, co) if d.text.strip() else [""]
            for no, chunk in enumerate(chunks):
                indexed = f"{d.title}\n{chunk}" if d.title else chunk
                tfs, length = enc.doc_stats(indexed)
                rows.append((d, no, len(chunks), chunk, tfs, length))
                texts.append(indexed)
        max_tokens = int(meta.get("embed_doc_tokens", self.settings.embed_doc_tokens))
        vectors = {using: emb.encode(texts, batch_size=self.settings.embed_batch_size, max_tokens=max_tokens)
                   for emb, using in dense.values()}
        return enc, rows, vectors

    async def upsert(self, name: str, docs: list[Document]) -> UpsertResult:
        t0 = time.perf_counter()
        docs = self._validate(docs)
        info = await self.catalog.get(name)
        enc, rows, vectors = await asyncio.to_thread(self._prepare, docs, info)
        async with self.catalog.lock(name):
            info = await self.catalog.get(name)
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
            main, extra = vectors[DENSE], {k: v for k, v in vectors.items() if k != DENSE}
            for i, (d, no, n_chunks, chunk, tfs, length) in enumerate(rows):
                payload: dict[str, Any] = {"doc_id": d.id, "chunk": no, "chunk_len": length,
                                           "title": d.title, "text": chunk, "metadata": d.metadata or {}}
                if no == 0:
                    payload["n_chunks"] = n_chunks
                    payload["doc_len"] = doc_len[d.id]
                    if n_chunks > 1:
                        payload["full_text"] = d.text
                points.append(Point(id=chunk_point_id(name, d.id, no), dense=main[i].tolist(),
                                    sparse=enc.encode_doc(tfs, length, avgdl), payload=payload,
                                    extra={k: v[i].tolist() for k, v in extra.items()}))
            # version first (a crash mid-write must not leave old cache entries valid), then data, then stats
            await self.catalog.write_meta(name, meta)
            if old:
                await self.store.delete_by_doc_ids(name, list(old))
            await self.store.upsert(name, points)
            bm.update(chunks=n, total_len=total)
            await self.catalog.write_meta(name, meta, bm25=bm)
        self.metrics.documents_ingested.inc(len(docs))
        self.metrics.chunks_ingested.inc(len(points))
        return UpsertResult(upserted=len(docs), chunks=len(points), replaced=len(old),
                            took_ms=(time.perf_counter() - t0) * 1000)

    async def _chunk_zero(self, name: str, doc_ids: list[str]) -> dict[str, dict[str, Any]]:
        hits = await self.store.retrieve(name, [chunk_point_id(name, d, 0) for d in doc_ids])
        return {h.payload["doc_id"]: h.payload for h in hits}

    async def delete(self, name: str, doc_ids: list[str]) -> DeleteResult:
        if not doc_ids:
            raise InvalidRequest("ids: expected at least one document id")
        if len(doc_ids) > self.settings.max_batch_docs * 10:
            raise TooLarge(f"ids: more than {self.settings.max_batch_docs * 10} ids in one request")
        doc_ids = list(dict.fromkeys(doc_ids))
        async with self.catalog.lock(name):
            info = await self.catalog.get(name, check_model=False)
            meta = dict(info.meta)
            old = await self._chunk_zero(name, doc_ids)
            if old:
                bm = dict(meta.get("bm25", {}))
                bm["chunks"] = max(0, int(bm.get("chunks", 0)) - sum(p.get("n_chunks", 1) for p in old.values()))
                bm["total_len"] = max(0, int(bm.get("total_len", 0)) - sum(p.get("doc_len", 0) for p in old.values()))
                await self.catalog.write_meta(name, meta)
                await self.store.delete_by_doc_ids(name, list(old))
                await self.catalog.write_meta(name, meta, bm25=bm)
        self.metrics.documents_deleted.inc(len(old))
        return DeleteResult(deleted=len(old), not_found=[d for d in doc_ids if d not in old])

    async def get_document(self, name: str, doc_id: str) -> dict[str, Any]:
        await self.store.get_collection(name)
        hits = await self.store.retrieve(name, [chunk_point_id(name, doc_id, 0)])
        if not hits:
            raise NotFound(f"document '{doc_id}' not found in collection '{name}'")
        p = hits[0].payload
        return {"id": p["doc_id"], "title": p.get("title"), "text": p.get("full_text", p.get("text", "")),
                "metadata": p.get("metadata") or {}, "chunks": p.get("n_chunks", 1)}
