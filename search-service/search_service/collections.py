"""Collection state, with one owner: the :class:`CollectionCatalog` used by ingestion, search and the routes.

* A collection records the embedding model it was built with (``embedding_model``, one of
  :data:`search_service.embedding_models.MODELS`, chosen at creation; its id, dimension, scripts and
  prefixes). Ingestion and search use that model; a collection whose model is not loaded in this process
  answers 503, one whose recorded id differs from the loaded model's (another build) 409 — never a silent
  mix of vector spaces.
* It may fuse more embedding models into its hybrid search (``extra_embedding_models``, e.g. MiniLM beside
  multilingual-e5-small for English): each one is a named dense vector of every point (:func:`vector_name`),
  recorded in the metadata like the main model, encoded at ingestion, searched as retriever
  ``vector:<model>`` and checked the same way (503 / 409). :meth:`CollectionCatalog.dense` lists them all.
* Its metadata (in the store, durable) holds the chunking and BM25 parameters, the BM25 length
  statistics, and a ``version`` that every write replaces, so cached search responses keyed on the old
  version are never served again.
* Every chunk is one point with id ``uuid5(NS, "{collection}/{doc_id}/{chunk_no}")``
  (:func:`chunk_point_id`) whose payload carries ``doc_id``; :class:`DocIds` maps point ids back to
  documents so search candidates can come back without payloads.
"""
from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from typing import Any

from stack_common.errors import Conflict, InvalidRequest, Unavailable

from .core.settings import Settings
from .embedding_models import MODELS, model_key
from .embeddings import Embedder, Embedders
from .store.base import (COLLECTION_NAME_RULE, DENSE, CollectionInfo, Distribution, FieldCondition, Filter, Hit,
                         VectorStore, valid_collection_name)

NAMESPACE = uuid.UUID("5b0c7a9e-2f7d-4c43-9a0e-6d1f1c2b7e10")
CHUNK0 = Filter(must=(FieldCondition(key="chunk", match=0),))   # one point per document


def chunk_point_id(collection: str, doc_id: str, chunk_no: int) -> str:
    """The point id of a document's chunk: the same (collection, document, chunk) always gets the same id."""
    return str(uuid.uuid5(NAMESPACE, f"{collection}/{doc_id}/{chunk_no}"))


def vector_name(model: str) -> str:
    """The store's name of an extra embedding model's dense vector."""
    return f"{DENSE}-{model}"


def retriever_name(model: str) -> str:
    """The hybrid search's name of an extra embedding model's retriever (in ``weights`` and ``explain``)."""
    return f"vector:{model}"


def new_version() -> str:
    return uuid.uuid4().hex[:16]


class DocIds:
    """Point id → document id, so candidates can come back without payloads.

    A point id is derived from (collection, document id, chunk number) (:func:`chunk_point_id`), so an
    entry can never go stale: a re-created collection or re-ingested document gets the same id for the
    same document. Unknown ids are read from the store (``doc_id`` key only) in one call. Each
    collection's map keeps at most ``max_entries`` (the oldest tenth is dropped past it)."""

    def __init__(self, store: VectorStore, max_entries: int = 200_000) -> None:
        self.store = store
        self.max_entries = max(1000, int(max_entries))
        self._maps: dict[str, dict[str, str]] = {}

    async def lookup(self, collection: str, hit_lists: list[list[Hit]]) -> dict[str, str]:
        known = self._maps.setdefault(collection, {})
        missing: list[str] = []
        for hits in hit_lists:
            for h in hits:
                if h.id not in known:
                    doc_id = h.payload.get("doc_id") if h.payload else None
                    if doc_id is not None:
                        known[h.id] = doc_id
                    else:
                        missing.append(h.id)
        if missing:
            for rec in await self.store.retrieve(collection, list(dict.fromkeys(missing)), with_payload=["doc_id"]):
                known[rec.id] = rec.payload.get("doc_id", rec.id)
            if len(known) > self.max_entries:
                for key in list(itertools.islice(iter(known), len(known) - self.max_entries * 9 // 10)):
                    del known[key]
        return known

    def forget(self, collection: str) -> None:
        self._maps.pop(collection, None)


class CollectionCatalog:
    """Lookup (with the model check), create/describe/list/delete/optimize, the BM25 encoder of a
    collection, the per-collection write lock and the point → document map."""

    def __init__(self, store: VectorStore, embedders: Embedders, analyzer, encoder_cls, settings: Settings) -> None:
        self.store = store
        self.embedders = embedders
        self.analyzer = analyzer
        self.encoder_cls = encoder_cls
        self.settings = settings
        self.doc_ids = DocIds(store, settings.doc_id_map_size)
        self._encoders: dict[tuple[float, float], Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # -- per-collection parts -----------------------------------------------------------------------
    def encoder(self, meta: dict[str, Any]):
        """The BM25 encoder with the collection's k1 and b (one per distinct pair, shared)."""
        bm = meta.get("bm25", {})
        key = (float(bm.get("k1", self.settings.bm25_k1)), float(bm.get("b", self.settings.bm25_b)))
        enc = self._encoders.get(key)
        if enc is None:
            enc = self._encoders[key] = self.encoder_cls(self.analyzer, k1=key[0], b=key[1])
        return enc

    def lock(self, name: str) -> asyncio.Lock:
        """Serialises the writes to one collection (statistics and version are read-modify-write)."""
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    def dense(self, info: CollectionInfo) -> dict[str, tuple[Embedder, str]]:
        """Every dense retriever of the collection: retriever name -> (its embedder, the store's vector name);
        ``"vector"`` is the collection's model, then each extra model in the order recorded. Each is checked:
        503 if this process does not load the model, 409 if the loaded model is not the build the collection
        was made with."""
        out = {"vector": (self._checked(info, info.meta, info.dim), DENSE)}
        for extra in info.meta.get("extra_embedding_models") or ():
            out[retriever_name(extra["embedding_model"])] = (
                self._checked(info, extra, info.vectors.get(extra["vector"])), extra["vector"])
        return out

    def _checked(self, info: CollectionInfo, meta: dict[str, Any], dim: int | None) -> Embedder:
        """The loaded embedder of the model ``meta`` records (the collection's own, or one extra entry)."""
        key = model_key(meta)
        emb = self.embedders.get(key) if key else None
        if emb is None:
            loaded = self.embedders.keys()
            if key in MODELS:
                raise self._not_loaded(key, f" (of collection '{info.name}')", embedding_model=key)
            served = ", ".join(f"{e.model_id} (dim {e.dim})" for e in self.embedders.values())
            raise Conflict(f"collection '{info.name}' was built with embedding model '{meta.get('model_id')}' (dim "
                           f"{dim}), which this service does not know (it serves {served}); re-create the "
                           "collection or run the matching model",
                           details={"collection_model_id": meta.get("model_id"), "collection_dim": dim,
                                    "loaded": loaded})
        if meta.get("model_id") != emb.model_id or dim != emb.dim:
            raise Conflict(
                f"collection '{info.name}' was built with embedding model '{meta.get('model_id')}' (dim {dim}) "
                f"but this service runs '{emb.model_id}' (dim {emb.dim}); re-create the collection "
                "or run the matching model",
                details={"collection_model_id": meta.get("model_id"), "collection_dim": dim,
                         "service_model_id": emb.model_id, "service_dim": emb.dim})
        return emb

    async def get(self, name: str, *, check_model: bool = True) -> CollectionInfo:
        """The collection (NotFound if missing; Conflict if built with another embedding model, Unavailable
        if one of its models is not loaded)."""
        info = await self.store.get_collection(name)
        if check_model:
            self.dense(info)
        return info

    async def write_meta(self, name: str, meta: dict[str, Any], **changes: Any) -> None:
        """Replace the metadata with ``meta`` + ``changes`` and a new version."""
        await self.store.update_meta(name, {**meta, **changes, "version": new_version()})

    # -- collections --------------------------------------------------------------------------------
    def distribution(self, shard_number: int | None = None, replication_factor: int | None = None,
                     write_consistency_factor: int | None = None) -> Distribution:
        """A new collection's layout: the request's values, else the settings' on a Qdrant server, else one
        shard without replicas. The default write consistency never exceeds the replication asked for. A
        value the store cannot honour is refused by the store (400 naming the field), never dropped."""
        s = self.settings
        default = (Distribution(s.qdrant_shard_number, s.qdrant_replication_factor, s.qdrant_write_consistency_factor)
                   if self.store.distributed else Distribution())
        replicas = default.replication_factor if replication_factor is None else replication_factor
        writes = min(default.write_consistency_factor, replicas) if write_consistency_factor is None \
            else write_consistency_factor
        if writes > replicas:
            raise InvalidRequest(f"write_consistency_factor ({writes}) must not exceed replication_factor "
                                 f"({replicas}{'' if replication_factor else ', the default'}): a write cannot "
                                 "wait for more copies than a shard has", details={"param": "write_consistency_factor"})
        return Distribution(shard_number=default.shard_number if shard_number is None else shard_number,
                            replication_factor=replicas, write_consistency_factor=writes)

    async def create(self, name: str, *, chunk_words: int | None = None, chunk_overlap: int | None = None,
                     bm25_k1: float | None = None, bm25_b: float | None = None, shard_number: int | None = None,
                     replication_factor: int | None = None,
                     write_consistency_factor: int | None = None,
                     embedding_model: str | None = None,
                     extra_embedding_models: list[str] | None = None) -> dict[str, Any]:
        if not valid_collection_name(name):
            raise InvalidRequest(f"collection name {name!r} is invalid: use {COLLECTION_NAME_RULE}")
        s = self.settings
        cw = chunk_words or s.chunk_words
        co = s.chunk_overlap if chunk_overlap is None else chunk_overlap
        if co >= cw:
            raise InvalidRequest(f"chunk_overlap ({co}) must be smaller than chunk_words ({cw})")
        key = embedding_model or self.embedders.default
        emb = self._loaded(key, "embedding_model")
        extra = list(extra_embedding_models or ())
        if key in extra or len(set(extra)) != len(extra):
            raise InvalidRequest(f"extra_embedding_models {extra} must name models other than the collection's "
                                 f"embedding_model ('{key}'), each once", details={"param": "extra_embedding_models"})
        extras = [(k, self._loaded(k, "extra_embedding_models")) for k in extra]
        meta = {
            "embedding_model": key, "embedding": emb.spec.describe(),
            "model_id": emb.model_id, "dim": emb.dim,
            "extra_embedding_models": [{"embedding_model": k, "model_id": e.model_id, "dim": e.dim,
                                        "vector": vector_name(k), "embedding": e.spec.describe()}
                                       for k, e in extras] or None,
            "chunk_words": cw, "chunk_overlap": co, "embed_doc_tokens": s.embed_doc_tokens,
            "bm25": {"k1": bm25_k1 or s.bm25_k1, "b": s.bm25_b if bm25_b is None else bm25_b,
                     "chunks": 0, "total_len": 0},
            "version": new_version(), "created_at": time.time(),
        }
        layout = self.distribution(shard_number, replication_factor, write_consistency_factor)
        info = await self.store.create_collection(name, emb.dim, meta, layout,
                                                  extra_vectors={vector_name(k): e.dim for k, e in extras})
        return await self.describe(info.name)

    def _loaded(self, key: str, param: str) -> Embedder:
        emb = self.embedders.get(key)
        if emb is None:     # (an unknown name is refused by the request model: 422 listing them)
            raise self._not_loaded(key, "", param=param)
        return emb

    def _not_loaded(self, key: str, whose: str, **details: Any) -> Unavailable:
        loaded = self.embedders.keys()
        return Unavailable(f"embedding model '{key}'{whose} is not loaded by this service (loaded: {loaded}); add it "
                           "to SEARCH_EMBEDDING_MODELS", details={**details, "loaded": loaded})

    def _model_state(self, key: str | None, model_id: str | None, dim: int | None) -> dict[str, bool]:
        """Whether this process loads a recorded model, and whether the loaded one is the recorded build."""
        emb = self.embedders.get(key) if key else None
        return {"model_loaded": emb is not None,
                "model_matches": emb is not None and model_id == emb.model_id and dim == emb.dim}

    async def describe(self, name: str) -> dict[str, Any]:
        info = await self.store.get_collection(name)
        documents = await self.store.count(name, CHUNK0)
        meta = info.meta
        bm25 = meta.get("bm25", {})
        chunks = bm25.get("chunks", 0)
        key = model_key(meta)
        spec = MODELS.get(key) if key else None
        return {
            "name": info.name, "documents": documents, "chunks": info.points_count,
            "model_id": meta.get("model_id"), "dim": info.dim, "embedding_model": key,
            "embedding": meta.get("embedding") or (spec.describe() if spec else None),
            **self._model_state(key, meta.get("model_id"), info.dim),
            "extra_embedding_models": [self._describe_extra(e, info) for e in meta.get("extra_embedding_models") or ()],
            "chunk_words": meta.get("chunk_words"), "chunk_overlap": meta.get("chunk_overlap"),
            "bm25": {"k1": bm25.get("k1"), "b": bm25.get("b"),
                     "avgdl": (bm25.get("total_len", 0) / chunks) if chunks else 0.0},
            "version": meta.get("version"), "created_at": meta.get("created_at"),
            **info.distribution.fields(),
            "index": await self.store.index_status(name),
        }

    def _describe_extra(self, extra: dict[str, Any], info: CollectionInfo) -> dict[str, Any]:
        return {**{k: extra.get(k) for k in ("embedding_model", "model_id", "dim", "vector")},
                "retriever": retriever_name(extra["embedding_model"]),
                **self._model_state(extra["embedding_model"], extra.get("model_id"), info.vectors.get(extra["vector"]))}

    async def list(self) -> list[dict[str, Any]]:
        infos = await self.store.list_collections()
        return [{"name": i.name, "chunks": i.points_count, "model_id": i.meta.get("model_id"), "dim": i.dim,
                 "embedding_model": model_key(i.meta),
                 "extra_embedding_models": [e["embedding_model"] for e in i.meta.get("extra_embedding_models") or ()]}
                for i in sorted(infos, key=lambda i: i.name)]

    async def delete(self, name: str) -> None:
        async with self.lock(name):
            await self.store.delete_collection(name)
        self._locks.pop(name, None)
        self.doc_ids.forget(name)

    async def optimize(self, name: str) -> dict[str, Any]:
        """Build indexes / merge segments now (after a bulk load of a large collection). The dense index
        may change approximate results slightly, so the cache version is bumped too."""
        async with self.lock(name):
            info = await self.store.get_collection(name)
            t0 = time.perf_counter()
            changed = await self.store.optimize(name)
            if changed:
                await self.write_meta(name, info.meta)
        return {"changed": bool(changed), "took_ms": (time.perf_counter() - t0) * 1000}
