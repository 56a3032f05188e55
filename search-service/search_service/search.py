"""The hybrid search use case: cache → retrieve (each retriever its top-N) → collapse chunks to
documents → fuse → optional rerank → score_threshold → offset/limit.

Retrievers and the rerank stage are pluggable parts:

* a :class:`Retriever` has a ``name`` and ``async retrieve(query) -> list[Hit]`` (chunk hits, best
  first). The built-ins are ``vector`` (the collection's embedding model) and ``keyword`` (BM25 sparse). A
  collection with ``extra_embedding_models`` adds one dense retriever per extra model, ``vector:<model>``
  (its own named vector in the store, :meth:`CollectionCatalog.dense`); another kind (e.g. SPLADE) is
  added to ``SearchService.retrievers``. All are fused by name without touching the fusion code (a weight
  with ``weights={"name": w}``; ``alpha`` weighs each dense retriever that runs against keyword's 1 - alpha).
* a :class:`Reranker` reorders the fused candidates (``async rerank(query, candidates)``).

Language gate: the query's script (:func:`text.query_script`, the writing system most of its letters
are in) is compared with the scripts each dense retriever's embedding model covers
(``EmbeddingModel.scripts``). A hybrid query in a script a model does not cover (Korean on MiniLM)
does not run that retriever at all (no embedding either): the other retrievers' lists are fused
without it. ``/search/vector`` still runs the model it was asked for; its ``explain`` says the script
is not covered.

Scores: hybrid responses carry the fused score normalised to [0, 1] by :func:`fusion.fuse` (what it
means per method is documented there) times the query's confidence (:func:`fusion.confidence`: the
weighted evidence of the best cosine and the best BM25, a retriever that found nothing counting
against; one factor per query, so the ranking is the fusion's), and ``score_threshold`` filters on
that, so junk queries (stopwords only, emoji, off-topic) score low. ``/search/vector`` returns the
cosine similarity clamped to [0, 1]; ``/search/keyword`` the BM25 score divided by the best hit's (the
best hit scores 1) — neither is scaled by a confidence. ``explain`` adds each retriever's rank (from 1)
and raw score to every result, and a top-level ``explain`` (:meth:`SearchService._compute`): the query
script, each retriever used or skipped and why, its best raw score, and (hybrid) its evidence, weight and
the confidence. ``highlight`` adds the spans of title and text that match the query's BM25 terms and a
snippet (:mod:`highlight`).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from stack_common.errors import InvalidRequest

from . import fusion
from .cache import SearchCache
from .collections import CollectionCatalog
from .core.metrics import Metrics
from .core.settings import Settings
from .embeddings import Embedder
from .highlight import DEFAULT_SNIPPET_CHARS, Highlighter
from .store.base import Filter, Hit, SparseVector, VectorStore
from .text import has_hangul, query_script

Mode = Literal["hybrid", "vector", "keyword"]
# What a response's scores mean and what its body holds: part of every cache key, so a change of either
# (2: calibrated hybrid scores, the language gate, the top-level explain) never serves bodies cached before.
RESPONSE_FORMAT = 2
# Candidates carry no payload (reading even the doc_id key of 100 hits is a large part of a query's cost):
# the catalog's DocIds maps their point ids to documents, and the returned page's payloads are fetched by id.
CANDIDATE_PAYLOAD = False


@dataclass(frozen=True)
class SearchQuery:
    """A validated search request (built by the API layer)."""
    query: str
    collection: str
    mode: Mode = "hybrid"
    limit: int = 10
    offset: int = 0
    score_threshold: float | None = None
    fusion: fusion.Method = fusion.DEFAULT_METHOD
    alpha: float | None = None
    weights: tuple[tuple[str, float], ...] | None = None
    rrf_k: int = 60
    filter: Filter | None = None
    explain: bool = False
    highlight: bool = False
    snippet_chars: int = DEFAULT_SNIPPET_CHARS     # of the highlight snippet

    def cache_fields(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["query"] = " ".join(self.query.split())
        if not self.highlight:
            del d["snippet_chars"]
        d["format"] = RESPONSE_FORMAT
        return d


class QueryContext:
    """What the retrievers share for one query: the text, filter, candidate count and lazily
    computed encodings (the query embedding is computed once even if two retrievers want it)."""

    def __init__(self, q: SearchQuery, candidates: int, meta: dict[str, Any],
                 dense: dict[str, tuple[Embedder, str]]) -> None:
        self.q = q
        self.dense = dense                # dense retriever name -> (its embedder, the store's vector name)
        self.text = q.query
        self.collection = q.collection
        self.filter = q.filter
        self.candidates = candidates
        self.meta = meta
        self._memo: dict[str, asyncio.Future] = {}

    async def memo(self, key: str, make) -> Any:
        fut = self._memo.get(key)
        if fut is None:
            fut = self._memo[key] = asyncio.ensure_future(make())
        return await fut


@runtime_checkable
class Retriever(Protocol):
    name: str

    async def retrieve(self, ctx: QueryContext) -> list[Hit]: ...


@runtime_checkable
class Reranker(Protocol):
    name: str

    async def rerank(self, ctx: QueryContext, candidates: list["Candidate"]) -> list["Candidate"]: ...


class VectorRetriever:
    """A dense retriever: ``vector`` (the collection's model) or ``vector:<model>`` (an extra model's vector);
    its embedder and vector name come from the query's context."""

    def __init__(self, store: VectorStore, metrics: Metrics, name: str = "vector") -> None:
        self.store, self.metrics, self.name = store, metrics, name

    async def _embed(self, embedder, text: str) -> list[float]:
        with self.metrics.stage("embed"):
            vec = await embedder.embed_query(text)
        # float32 array -> Python floats (the same values as float(x) each, ~20x cheaper)
        return vec.tolist() if hasattr(vec, "tolist") else [float(x) for x in vec]

    async def retrieve(self, ctx: QueryContext) -> list[Hit]:
        emb, using = ctx.dense[self.name]
        vec = await ctx.memo("dense:" + emb.model_id, lambda: self._embed(emb, ctx.text))
        with self.metrics.stage("vector"):
            return await self.store.search_dense(ctx.collection, vec, ctx.candidates, ctx.filter,
                                                 with_payload=CANDIDATE_PAYLOAD, using=using)


class KeywordRetriever:
    name = "keyword"

    def __init__(self, catalog: CollectionCatalog, metrics: Metrics) -> None:
        self.store, self.catalog, self.metrics = catalog.store, catalog, metrics

    async def retrieve(self, ctx: QueryContext) -> list[Hit]:
        with self.metrics.stage("keyword"):
            enc = self.catalog.encoder(ctx.meta)
            sparse: SparseVector = enc.encode_query(ctx.text)
            if not sparse.indices:   # only stopwords/punctuation: nothing can match
                return []
            return await self.store.search_sparse(ctx.collection, sparse, ctx.candidates, ctx.filter,
                                                  with_payload=CANDIDATE_PAYLOAD)


@dataclass(slots=True)
class Candidate:
    doc_id: str
    score: float
    point_id: str                     # the document's best chunk (by its best-ranked retriever)
    sources: dict[str, tuple[int, float]] = field(default_factory=dict)
    payload: dict[str, Any] | None = None


def _envelope(raw: bytes, cached: bool, t0: float) -> bytes:
    """``{"cached": .., "took_ms": .., <the fields of raw>}`` without parsing ``raw`` (a JSON object)."""
    took = (time.perf_counter() - t0) * 1000
    return b'{"cached":%s,"took_ms":%.3f,%s' % (b"true" if cached else b"false", took, raw[1:])


def _highlight(analyzer, q: SearchQuery, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    hl = Highlighter(analyzer, q.query, q.snippet_chars)       # the query analyzed once per search
    return [hl.highlight(r["title"], r["text"]) for r in results]


def collapse(hits: list[Hit], doc_of: dict[str, str] | None = None) -> list[tuple[str, float, str]]:
    """Chunk hits (best first) → one entry per document: (doc_id, best chunk's score, its point id).
    The document of a hit comes from ``doc_of`` (point id → doc id), else its payload, else its id."""
    seen: set[str] = set()
    out = []
    doc_of = doc_of or {}
    for h in hits:
        doc_id = doc_of.get(h.id) or h.payload.get("doc_id", h.id)
        if doc_id in seen:
            continue
        seen.add(doc_id)
        out.append((doc_id, h.score, h.id))
    return out


class SearchService:
    def __init__(self, catalog: CollectionCatalog, cache: SearchCache | None, settings: Settings,
                 metrics: Metrics, retrievers: list[Retriever], reranker: Reranker | None = None) -> None:
        self.catalog = catalog
        self.store = catalog.store
        self.doc_ids = catalog.doc_ids
        self.cache = cache
        self.settings = settings
        self.metrics = metrics
        self.retrievers = {r.name: r for r in retrievers}
        self.reranker = reranker
        self._extra: dict[str, VectorRetriever] = {}     # the extra models' dense retrievers, by name

    def _retrievers(self, dense: dict[str, tuple[Embedder, str]]) -> dict[str, Retriever]:
        """The retrievers of a collection: the service's, then one per extra embedding model."""
        out = dict(self.retrievers)
        for name in dense:
            if name not in out:
                r = self._extra.get(name)
                if r is None:
                    r = self._extra[name] = VectorRetriever(self.store, self.metrics, name)
                out[name] = r
        return out

    async def search(self, q: SearchQuery) -> dict[str, Any]:
        """The response as a dict (for in-process callers such as RAG)."""
        return json.loads(await self.search_json(q))

    async def search_json(self, q: SearchQuery) -> bytes:
        """The response as JSON bytes: ``{"cached", "took_ms", "results", "total"}``.

        The cache holds the serialized ``{"results", "total"}`` body, so a hit is spliced into the
        response without parsing or re-validating it (the hit path's cost is the Redis round trip)."""
        t0 = time.perf_counter()
        info = await self.catalog.get(q.collection, check_model=False)     # 404 before anything else
        dense = self.catalog.dense(info)                     # then 503 / 409 for its models, before the cache
        if q.alpha is None and q.weights is None:     # the default: SEARCH_ALPHA, else the collection's model's
            alpha = self.settings.alpha
            q = dataclasses.replace(q, alpha=dense["vector"][0].spec.fusion_alpha if alpha is None else alpha)
        key = None
        if self.cache is not None and self.cache.enabled:
            version = f'{info.meta.get("version", "")}+{info.data_version}'
            key = self.cache.key(q.collection, version, q.cache_fields())
            raw = await self.cache.get_raw(key)
            if raw is not None:
                return _envelope(raw, True, t0)
        body = await self._compute(q, info, dense)
        raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        if key is not None:
            await self.cache.set_raw(key, raw)
        return _envelope(raw, False, t0)

    def _weights(self, q: SearchQuery, names: list[str] | None = None) -> dict[str, float]:
        """Every retriever's fusion weight; a bad alpha/weights combination is refused (InvalidRequest)
        before anything runs, whether or not the language gate then skips a retriever."""
        try:
            return fusion.resolve_weights(list(self.retrievers) if names is None else names,
                                          dict(q.weights) if q.weights else None, q.alpha)
        except ValueError as exc:   # unknown retriever in weights, alpha with weights, all weights 0
            raise InvalidRequest(f"invalid request: {exc}") from None

    async def _compute(self, q: SearchQuery, info, dense: dict[str, tuple[Embedder, str]]) -> dict[str, Any]:
        """The response body of one query on a collection whose dense retrievers are ``dense``
        (:meth:`CollectionCatalog.dense`)."""
        retrievers = self._retrievers(dense)
        names = list(retrievers) if q.mode == "hybrid" else [q.mode]
        weights = self._weights(q, list(retrievers)) if q.mode == "hybrid" else None
        candidates = max(self.settings.candidates, q.offset + q.limit)
        ctx = QueryContext(q, candidates, info.meta, dense)
        # the language gate: a dense retriever is skipped (hybrid) or flagged (vector) for a script its model lacks
        script = query_script(q.query)
        specs = {n: emb.spec for n, (emb, _) in dense.items()}   # EmbeddingModel: scripts, calibration
        uncovered: dict[str, str] = {}
        for n in [n for n in names if n in specs]:
            if script is not None and script not in specs[n].scripts:
                uncovered[n] = (f"query script {script} is not covered by {specs[n].model_id} "
                                f"(covers {', '.join(sorted(specs[n].scripts))})")
                if q.mode == "hybrid":
                    names.remove(n)
        lists = await asyncio.gather(*(retrievers[n].retrieve(ctx) for n in names))
        doc_of = await self.doc_ids.lookup(q.collection, lists)
        per_doc = {n: collapse(hits, doc_of) for n, hits in zip(names, lists)}
        chunks = (info.meta.get("bm25") or {}).get("chunks")     # N of the engine's idf: the keyword scale
        ranked, calibration = self._score(q, per_doc, specs, weights, chunks)
        if self.reranker is not None and q.mode == "hybrid" and ranked:
            with self.metrics.stage("rerank"):
                ranked = await self.reranker.rerank(ctx, ranked)
        if q.score_threshold is not None:
            ranked = [c for c in ranked if c.score >= q.score_threshold]
        page = ranked[q.offset:q.offset + q.limit]
        need = [c.point_id for c in page if c.payload is None]
        if need:
            payloads = {h.id: h.payload for h in await self.store.retrieve(q.collection, need)}
            for c in page:
                if c.payload is None:
                    c.payload = payloads.get(c.point_id, {})
        results = []
        for c in page:
            p = c.payload or {}
            item: dict[str, Any] = {"id": c.doc_id, "score": float(c.score), "title": p.get("title"),
                                    "text": p.get("text", ""), "metadata": p.get("metadata") or {}}
            if q.explain:
                item["explain"] = {name: {"rank": rank, "score": float(raw)}
                                   for name, (rank, raw) in c.sources.items()}
            results.append(item)
        if q.highlight and results:
            with self.metrics.stage("highlight"):
                analyzer = self.catalog.encoder(info.meta).analyzer      # the collection's BM25 analyzer
                if any(has_hangul(r["title"]) or has_hangul(r["text"]) for r in results):
                    # Korean goes through Kiwi (milliseconds, one analysis at a time): off the event loop
                    marks = await asyncio.to_thread(_highlight, analyzer, q, results)
                else:   # English: ~0.2 ms a result; a thread hop would cost more (~1 ms measured)
                    marks = _highlight(analyzer, q, results)
            for item, mark in zip(results, marks):
                item["highlight"] = mark
        body: dict[str, Any] = {"results": results, "total": len(ranked)}
        if q.explain:
            body["explain"] = self._explain(q, info, script, specs, uncovered, per_doc, calibration,
                                            list(retrievers))
        return body

    def _explain(self, q: SearchQuery, info, script: str | None, specs: dict[str, Any], uncovered: dict[str, str],
                 per_doc: dict[str, list[tuple[str, float, str]]], calibration: dict[str, Any] | None,
                 all_names: list[str]) -> dict:
        """The top-level ``explain``: the query's script, what each retriever did (skipped and why, or its
        candidate count and best raw score, and in hybrid its evidence and weight), and the confidence."""
        out: dict[str, Any] = {"query_script": script, "embedding_model": specs["vector"].model_id}
        retrievers: dict[str, dict[str, Any]] = {}
        for name in (all_names if q.mode == "hybrid" else [q.mode]):
            if name not in per_doc:
                retrievers[name] = {"used": False, "reason": uncovered.get(name) or "not run"}
                continue
            entries = per_doc[name]
            r: dict[str, Any] = {"used": True, "hits": len(entries),
                                 "best": float(entries[0][1]) if entries else None}
            if calibration is not None:
                r["evidence"] = calibration["evidence"].get(name)
                r["weight"] = calibration["weights"].get(name)
                if name == "keyword":
                    r["scale"] = calibration["bm25_scale"]
            if name in specs and name != "vector":
                r["embedding_model"] = specs[name].model_id
            if name in uncovered:
                r["warning"] = uncovered[name] + ": its ranking carries little meaning"
            if name == "keyword" and not entries:
                terms = self.catalog.encoder(info.meta).encode_query(q.query).indices
                r["reason"] = ("no document holds the query's terms" if terms else
                               "the query has no index terms (only stopwords, punctuation or symbols)")
            retrievers[name] = r
        out["retrievers"] = retrievers
        if calibration is not None:
            out["confidence"] = calibration["confidence"]
        return out


    @staticmethod
    def _evidence(per_doc: dict[str, list[tuple[str, float, str]]], specs: dict[str, Any],
                  bm25_scale: float) -> dict[str, float | None]:
        """Each asked retriever's evidence (fusion.vector_evidence with its model's calibration /
        keyword_evidence; None: no calibration)."""
        ev: dict[str, float | None] = {}
        for name, entries in per_doc.items():
            best = entries[0][1] if entries else None
            spec = specs.get(name)
            if spec is not None:
                ev[name] = fusion.vector_evidence(best, spec.cosine_unrelated, spec.cosine_related)
            elif name == "keyword":
                ev[name] = fusion.keyword_evidence(best, bm25_scale)
            else:
                ev[name] = None
        return ev

    def _score(self, q: SearchQuery, per_doc: dict[str, list[tuple[str, float, str]]],
               specs: dict[str, Any] | None = None, weights: dict[str, float] | None = None,
               chunks: int | None = None) -> tuple[list[Candidate], dict[str, Any] | None]:
        """The ranked candidates and (hybrid) the calibration applied: ``{"confidence", "evidence",
        "weights", "bm25_scale"}``. ``specs``: each dense retriever's EmbeddingModel (its calibration);
        ``weights``: every retriever's resolved fusion weight (``_weights``); ``chunks``: the collection's BM25 vectors (its chunks), which set the keyword
        evidence's scale."""
        if q.mode == "vector":
            return [Candidate(d, min(1.0, max(0.0, s)), pid, {"vector": (i + 1, s)})
                    for i, (d, s, pid) in enumerate(per_doc["vector"])], None
        if q.mode == "keyword":
            entries = per_doc["keyword"]
            top = entries[0][1] if entries and entries[0][1] > 0 else 1.0
            return [Candidate(d, min(1.0, max(0.0, s / top)), pid, {"keyword": (i + 1, s)})
                    for i, (d, s, pid) in enumerate(entries)], None
        if weights is None:
            weights = self._weights(q)
        points = {n: {d: pid for d, _, pid in entries} for n, entries in per_doc.items()}
        # the resolved weights of the retrievers that ran (alpha with only "vector" and "keyword" is exactly
        # fuse(alpha=...)); all 0 (a lone list weighted 0 by the request): unweighted — a lone list's fused
        # ranking and scores do not depend on it
        fw: dict[str, float] | None = {n: weights[n] for n in per_doc}
        fw = fw if sum(fw.values()) > 0 else None
        with self.metrics.stage("fuse"):
            try:
                fused = fusion.fuse({n: [(d, s) for d, s, _ in entries] for n, entries in per_doc.items()},
                                    method=q.fusion, weights=fw, rrf_k=q.rrf_k)
            except ValueError as exc:   # unknown retriever in weights, alpha with weights, all weights 0
                raise InvalidRequest(f"invalid request: {exc}") from None
            scale = fusion.bm25_evidence_scale(chunks)
            evidence = self._evidence(per_doc, specs or {}, scale)
            used = {n: weights[n] for n in per_doc}
            conf = fusion.confidence(evidence, used if sum(used.values()) > 0 else None)
        out = []
        for f in fused:
            src = f.sources            # fresh per fused hit (fuse builds it), so the candidate can own it
            # the retriever that ranks it best
            best = next(iter(src)) if len(src) == 1 else min(src, key=lambda n: (src[n][0], n))
            out.append(Candidate(f.id, float(f.score) * conf, points[best][f.id], src))
        return out, {"confidence": conf, "evidence": evidence, "weights": used, "bm25_scale": scale}
