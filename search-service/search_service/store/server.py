"""Server store: ``qdrant_client.AsyncQdrantClient`` against a Qdrant server (Compose/Helm), or the
client's local mode (``":memory:"`` or a directory) which runs the same client API in-process.

Same data model as the embedded store: named dense vector ``"dense"`` (cosine) and sparse ``"bm25"``
with ``Modifier.IDF``. Collection metadata lives in Qdrant's own *collection metadata* (server >= 1.16;
qdrant-client 1.20 local mode supports it too): ``create_collection(metadata=...)`` and
``update_collection(metadata=...)``, which merges — so :meth:`update_meta` sends ``None`` for keys to
drop, giving replace semantics. Collections without our vector layout are not listed.

Errors: connection failures and timeouts become ``Unavailable`` ("Qdrant at URL is unreachable: ..."),
a 5xx or 401/403 ``Unavailable``, 404 ``NotFound``, 409 ``Conflict``, another 4xx a 400 with Qdrant's
message. ``timeout_s`` bounds each HTTP call (qdrant-client rounds it up to whole seconds).
The HTTP client reconnects on the next call, so the store recovers by itself when the server is back.

Distribution: against a server, every collection is created with an explicit ``shard_number``,
``replication_factor`` and ``write_consistency_factor`` (:func:`create_request`; the service's defaults
come from its settings), and :meth:`get_collection` reports what the server's ``config.params`` say.
Local mode is one process: it takes 1/1/1 only (qdrant-client's local mode would swallow the keywords).
"""
from __future__ import annotations

import logging
from typing import Any

import httpx
from qdrant_client import AsyncQdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from stack_common.errors import ServiceError

from .base import (DENSE, SINGLE, SPARSE, CollectionInfo, Conflict, Distribution, Filter, Hit, NotFound, Payload,
                   Point, SparseVector, Unavailable, VectorStore, batches)
from .filters import doc_ids_filter, to_client

log = logging.getLogger("search_service.store.server")


def create_request(dim: int, meta: dict[str, Any], distribution: Distribution | None,
                   extra: dict[str, int] | None = None) -> qm.CreateCollection:
    """The body of Qdrant's create-collection request for a search collection (``PUT /collections/{name}``).
    ``distribution`` None leaves the layout out (local mode, which has one); ``extra``: more named dense
    vectors (name -> dimension), cosine like ``"dense"``."""
    return qm.CreateCollection(
        vectors={name: qm.VectorParams(size=d, distance=qm.Distance.COSINE)
                 for name, d in {DENSE: dim, **(extra or {})}.items()},
        sparse_vectors={SPARSE: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
        metadata=meta, **(distribution.fields() if distribution is not None else {}))


def create_kwargs(request: qm.CreateCollection) -> dict[str, Any]:
    """``request`` as the keyword arguments of ``AsyncQdrantClient.create_collection``."""
    return {"vectors_config": request.vectors, "sparse_vectors_config": request.sparse_vectors,
            "shard_number": request.shard_number, "replication_factor": request.replication_factor,
            "write_consistency_factor": request.write_consistency_factor, "metadata": request.metadata}


def distribution_of(params: qm.CollectionParams) -> Distribution:
    """The layout a collection's ``config.params`` report (local mode leaves them unset: one shard)."""
    return Distribution(shard_number=params.shard_number or 1, replication_factor=params.replication_factor or 1,
                        write_consistency_factor=params.write_consistency_factor or 1)


class ServerStore(VectorStore):
    """``url``: a Qdrant server (http/https). ``location=":memory:"`` or ``path=DIR``: qdrant-client local mode."""

    def __init__(self, *, url: str | None = None, location: str | None = None, path: str | None = None,
                 timeout_s: float = 5.0, api_key: str | None = None) -> None:
        if sum(x is not None for x in (url, location, path)) != 1:
            raise ValueError("give exactly one of url, location, path")
        self.distributed = url is not None        # local mode is one process: one shard, no replicas
        if url is not None:
            self._where = f"Qdrant at {url}"
            self._client = AsyncQdrantClient(url=url, api_key=api_key, timeout=timeout_s,  # type: ignore[arg-type]
                                             check_compatibility=False)
        else:
            self._where = f"Qdrant local mode ({location or path})"
            self._client = AsyncQdrantClient(location=location, path=path)
        self.engine = self._where
        self._dims: dict[str, int] = {}      # collection -> dim, to validate vectors without a round trip
        self._extra: dict[str, dict[str, int]] = {}   # collection -> its extra dense vectors (name -> dim)

    # -- error mapping ------------------------------------------------------------------------------

    def _error(self, exc: Exception, name: str | None) -> Exception:
        what = f"collection {name!r}" if name else "the request"
        if isinstance(exc, UnexpectedResponse):
            detail = exc.content.decode(errors="replace")[:300]
            if exc.status_code == 404:
                return NotFound(f"{what} does not exist")
            if exc.status_code == 409 or "already exists" in detail:
                return Conflict(f"{what} already exists")
            if exc.status_code in (401, 403):
                return Unavailable(f"{self._where} refused our credentials ({exc.status_code}): check the API key")
            if exc.status_code is None or exc.status_code >= 500:
                return Unavailable(f"{self._where} failed ({exc.status_code}): {detail}")
            return ServiceError(f"{self._where} rejected {what}: {detail}")
        if isinstance(exc, ResponseHandlingException):
            return Unavailable(f"{self._where} is unreachable: {exc.source!r}")
        if isinstance(exc, (httpx.TransportError, OSError, TimeoutError)):
            return Unavailable(f"{self._where} is unreachable: {exc!r}")
        if isinstance(exc, ValueError):          # local mode raises ValueError with a message
            if "not found" in str(exc):
                return NotFound(f"{what} does not exist")
            if "already exists" in str(exc):
                return Conflict(f"{what} already exists")
            return ServiceError(f"{self._where} rejected {what}: {exc}")
        return exc

    async def _call(self, name: str | None, coro: Any) -> Any:
        try:
            return await coro
        except ServiceError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to our errors or re-raised as is
            mapped = self._error(exc, name)
            if mapped is exc:
                raise
            if isinstance(mapped, NotFound) and name:
                self._dims.pop(name, None)
                self._extra.pop(name, None)
            raise mapped from exc

    # -- collections --------------------------------------------------------------------------------

    def _to_info(self, name: str, info: qm.CollectionInfo) -> CollectionInfo | None:
        vectors = info.config.params.vectors
        sparse = info.config.params.sparse_vectors or {}
        if not isinstance(vectors, dict) or DENSE not in vectors or SPARSE not in sparse:
            return None
        extra = {n: v.size for n, v in vectors.items() if n != DENSE}
        self._dims[name], self._extra[name] = vectors[DENSE].size, extra
        return CollectionInfo(name=name, dim=vectors[DENSE].size, points_count=info.points_count or 0,
                              meta=dict(info.config.metadata or {}),
                              distribution=distribution_of(info.config.params), vectors=dict(extra))

    async def _info(self, name: str) -> CollectionInfo:
        info = self._to_info(name, await self._call(name, self._client.get_collection(name)))
        if info is None:
            raise NotFound(f"collection {name!r} is not a search collection (no '{DENSE}'/'{SPARSE}' vectors)")
        return info

    async def _dimension(self, name: str) -> int:
        if name not in self._dims:
            await self._info(name)
        return self._dims[name]

    async def _extra_dims(self, name: str) -> dict[str, int]:
        if name not in self._extra:
            await self._info(name)
        return self._extra[name]

    async def _create_collection(self, name: str, dim: int, meta: dict[str, Any],
                                 extra: dict[str, int]) -> CollectionInfo:
        return await self._create(name, create_request(dim, meta, None, extra))

    async def _create_distributed(self, name: str, dim: int, meta: dict[str, Any],
                                  distribution: Distribution = SINGLE,
                                  extra: dict[str, int] | None = None) -> CollectionInfo:
        return await self._create(name, create_request(dim, meta, distribution, extra))

    async def _create(self, name: str, request: qm.CreateCollection) -> CollectionInfo:
        if await self._call(name, self._client.collection_exists(name)):
            raise Conflict(f"collection {name!r} already exists")
        await self._call(name, self._client.create_collection(name, **create_kwargs(request)))
        return await self._info(name)

    async def _delete_collection(self, name: str) -> None:
        await self._info(name)          # NotFound when missing (delete itself is idempotent)
        await self._call(name, self._client.delete_collection(name))
        self._dims.pop(name, None)
        self._extra.pop(name, None)

    async def _list_collections(self) -> list[CollectionInfo]:
        names = [c.name for c in (await self._call(None, self._client.get_collections())).collections]
        out = []
        for name in sorted(names):
            try:
                info = self._to_info(name, await self._call(name, self._client.get_collection(name)))
            except NotFound:                              # dropped meanwhile
                continue
            if info is not None:
                out.append(info)
        return out

    async def _get_collection(self, name: str) -> CollectionInfo:
        return await self._info(name)

    async def _index_status(self, name: str) -> dict[str, Any]:
        """The server indexes by its own optimizer config: its status (green: ready, yellow: optimizing,
        grey: optimizations pending), points, indexed vectors and segments as it reports them."""
        info = await self._call(name, self._client.get_collection(name))
        status = getattr(info.status, "value", info.status)
        return {"state": {"green": "indexed", "yellow": "building", "grey": "waiting"}.get(str(status), str(status)),
                "server_status": str(status), "points": info.points_count or 0,
                "indexed_vectors": info.indexed_vectors_count or 0, "segments": info.segments_count or 0,
                "auto": True}

    async def _update_meta(self, name: str, meta: dict[str, Any]) -> None:
        old = (await self._info(name)).meta
        patch = {**{k: None for k in old if k not in meta}, **meta}   # Qdrant merges: None drops a key
        await self._call(name, self._client.update_collection(name, metadata=patch))

    # -- points -------------------------------------------------------------------------------------

    async def _upsert(self, name: str, points: list[Point]) -> None:
        """Sent in requests of ``UPSERT_BATCH`` points, each acknowledged (``wait=True``) before the next."""
        for batch in batches(points):
            structs = [qm.PointStruct(id=p.id, payload=p.payload, vector={
                DENSE: p.dense, **p.extra, SPARSE: qm.SparseVector(indices=p.sparse.indices, values=p.sparse.values)})
                for p in batch]
            await self._call(name, self._client.upsert(name, points=structs, wait=True))

    async def _delete_by_doc_ids(self, name: str, doc_ids: list[str]) -> None:
        selector = qm.FilterSelector(filter=to_client(doc_ids_filter(doc_ids)))
        await self._call(name, self._client.delete(name, points_selector=selector, wait=True))

    async def _count(self, name: str, filter: Filter | None) -> int:
        flt = to_client(filter)
        result = await self._call(name, self._client.count(name, count_filter=flt, exact=True))
        return result.count

    # -- search -------------------------------------------------------------------------------------

    @staticmethod
    def _dense(vector: list[float], limit: int, flt: qm.Filter | None, with_payload: Payload,
               using: str = DENSE) -> qm.QueryRequest:
        return qm.QueryRequest(query=vector, using=using, limit=limit, filter=flt, with_payload=with_payload)

    @staticmethod
    def _sparse(vector: SparseVector, limit: int, flt: qm.Filter | None, with_payload: Payload) -> qm.QueryRequest:
        return qm.QueryRequest(query=qm.SparseVector(indices=vector.indices, values=vector.values), using=SPARSE,
                               limit=limit, filter=flt, with_payload=with_payload)

    @staticmethod
    def _hit(id_: Any, score: float, payload: dict[str, Any] | None) -> Hit:
        return Hit(id=str(id_), score=float(score), payload=dict(payload or {}))

    async def _query(self, name: str, request: qm.QueryRequest) -> list[Hit]:
        response = await self._call(name, self._client.query_points(
            name, query=request.query, using=request.using, limit=request.limit, query_filter=request.filter,
            with_payload=request.with_payload, with_vectors=False))
        return [self._hit(p.id, p.score, p.payload) for p in response.points]

    async def _search_dense(self, name: str, vector: list[float], limit: int, filter: Filter | None,
                            with_payload: Payload, using: str = DENSE) -> list[Hit]:
        return await self._query(name, self._dense(vector, limit, to_client(filter), with_payload, using))

    async def _search_sparse(self, name: str, vector: SparseVector, limit: int, filter: Filter | None,
                             with_payload: Payload) -> list[Hit]:
        return await self._query(name, self._sparse(vector, limit, to_client(filter), with_payload))

    async def _search_both(self, name: str, dense: list[float], sparse: SparseVector, limit: int,
                           filter: Filter | None, with_payload: Payload) -> tuple[list[Hit], list[Hit]]:
        """One ``query_batch_points`` request for both searches (one round trip)."""
        flt = to_client(filter)
        requests = [self._dense(dense, limit, flt, with_payload), self._sparse(sparse, limit, flt, with_payload)]
        d, s = await self._call(name, self._client.query_batch_points(name, requests=requests))
        return ([self._hit(p.id, p.score, p.payload) for p in d.points],
                [self._hit(p.id, p.score, p.payload) for p in s.points])

    async def _retrieve(self, name: str, ids: list[str], with_payload: Payload) -> list[Hit]:
        records = await self._call(name, self._client.retrieve(name, ids=ids, with_payload=with_payload,
                                                               with_vectors=False))
        return [self._hit(r.id, 0.0, r.payload) for r in records]

    # -- lifecycle ----------------------------------------------------------------------------------

    async def ready(self) -> bool:
        try:
            await self._call(None, self._client.get_collections())
            return True
        except Unavailable as exc:
            log.warning("vector store not ready: %s", exc.message)
            return False

    async def close(self) -> None:
        await self._client.close()
