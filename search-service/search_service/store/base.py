"""The vector-store contract: one interface, two real implementations (embedded engine, server).

Both implementations must give the same results for the same operations (congruence tests in
``tests/search_service/test_store_congruence.py``). Nothing above this layer imports Qdrant.

Data model
----------
* A *collection* holds *points*. Each point has a named dense vector ``"dense"`` (cosine) and a
  named sparse vector ``"bm25"`` (dot product, ``Modifier.Idf`` so the engine computes IDF). A collection
  may declare more named dense vectors at creation (``extra_vectors``: name -> dimension, cosine, e.g.
  a second embedding model's); then every point carries each of them (``Point.extra``) and
  ``search_dense(using=name)`` searches one.
* Point ids are UUID strings (Qdrant accepts ints or UUIDs only); the service derives them from
  ``(doc_id, chunk)``. The payload always carries ``doc_id`` and ``chunk`` plus the user's fields.
* Collection metadata (embedding model id, dimension, BM25 statistics, anything the service needs)
  is stored with the collection and survives restarts.
* Filters are :class:`Filter` objects (a small subset of Qdrant's filter language) that each
  implementation translates to its own Qdrant models (:mod:`.filters`).
* A collection's :class:`Distribution` (shards, replicas, write consistency) is fixed at creation. Only a
  Qdrant server has more than one shard or replica (``VectorStore.distributed``); the other stores take
  1/1/1 and refuse anything else with a 400 instead of ignoring it.

Validation lives here, once: every public method of :class:`VectorStore` checks its arguments, so bad
input gets the same clear error (:class:`ServiceError`, a 400) from either implementation instead of
whatever the engine happens to raise, and then calls the implementation's ``_``-prefixed method.
"""
from __future__ import annotations

import abc
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stack_common.errors import Conflict, NotFound, ServiceError, Unavailable  # re-exported for implementations

__all__ = [
    "SparseVector", "Point", "Hit", "CollectionInfo", "Distribution", "FieldCondition", "Filter", "VectorStore",
    "Conflict", "NotFound", "Unavailable", "DENSE", "SPARSE", "COLLECTION_NAME_RULE", "valid_collection_name",
    "Payload", "valid_vector_name",
]

DENSE = "dense"   # name of the dense vector in every collection
SPARSE = "bm25"   # name of the sparse (BM25) vector in every collection
UPSERT_BATCH = 512   # points per engine call / request (keeps server requests well under 32 MB)

# Collection names double as directory names in the embedded store: keep them plain. The one rule,
# used by the store, the service and the request schema.
MAX_COLLECTION_NAME = 63
_NAME = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_-]{{0,{MAX_COLLECTION_NAME - 1}}}$")
COLLECTION_NAME_RULE = (f"1-{MAX_COLLECTION_NAME} letters, digits, '_' or '-', starting with a letter or digit")

Payload = bool | list[str]   # True = the whole payload, False = none, a list of keys = only those

# Bounds of a collection's distribution (sanity limits: Qdrant advises a few shards per peer).
MAX_SHARDS = 64
MAX_REPLICAS = 10


def valid_collection_name(name: Any) -> bool:
    return isinstance(name, str) and _NAME.match(name) is not None


_VECTOR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def valid_vector_name(name: Any) -> bool:
    """An extra dense vector's name: plain characters, not one of the two every collection has."""
    return isinstance(name, str) and _VECTOR_NAME.match(name) is not None and name not in (DENSE, SPARSE)


@dataclass(frozen=True)
class SparseVector:
    indices: list[int]      # uint32 term ids (hashed tokens)
    values: list[float]


@dataclass
class Point:
    id: str                 # UUID string
    dense: list[float]
    sparse: SparseVector
    payload: dict[str, Any]
    extra: dict[str, list[float]] = field(default_factory=dict)   # the collection's extra dense vectors, by name


@dataclass(slots=True)
class Hit:
    id: str                 # point id (UUID string)
    score: float            # the engine's raw score (cosine for dense, BM25 for sparse)
    payload: dict[str, Any]


@dataclass(frozen=True)
class Distribution:
    """How a Qdrant server lays a collection out over its peers; fixed when the collection is created.

    ``shard_number``: the parts its points are split into (by a hash of the point id), each searched in
    parallel and merged by score. ``replication_factor``: copies of each shard, on different peers.
    ``write_consistency_factor``: copies of a shard that must apply a write before it is acknowledged
    (at most ``replication_factor``). 1/1/1 is the only layout of a single process (the embedded engine,
    qdrant-client's local mode)."""
    shard_number: int = 1
    replication_factor: int = 1
    write_consistency_factor: int = 1

    def fields(self) -> dict[str, int]:
        return {"shard_number": self.shard_number, "replication_factor": self.replication_factor,
                "write_consistency_factor": self.write_consistency_factor}


SINGLE = Distribution()


@dataclass
class CollectionInfo:
    name: str
    dim: int
    points_count: int
    meta: dict[str, Any] = field(default_factory=dict)   # model_id, bm25 stats, created_at, ...
    distribution: Distribution = SINGLE                   # as the engine reports it (1/1/1 in one process)
    vectors: dict[str, int] = field(default_factory=dict)  # extra named dense vectors -> dimension
    # Changes when the engine replaced the collection's files without a write through this interface (the
    # embedded engine's background optimizer pass: vacuumed deletes change BM25's IDF, a new index the
    # approximate results). "" where the engine never does (the server optimizes in place).
    data_version: str = ""


@dataclass(frozen=True)
class FieldCondition:
    """One condition on a payload key (dot path, e.g. ``metadata.year``).

    Exactly one of ``match`` (equality with a str/int/bool), ``any`` (value in list),
    ``except_`` (value not in list) or ``range`` (dict with gt/gte/lt/lte numbers) is set.
    """
    key: str
    match: str | int | bool | None = None
    any: tuple | None = None
    except_: tuple | None = None
    range: dict[str, float] | None = None


@dataclass(frozen=True)
class Filter:
    """Boolean combination like Qdrant's: all of ``must``, at least one of ``should``, none of ``must_not``.

    Items are FieldCondition or nested Filter.
    """
    must: tuple = ()
    should: tuple = ()
    must_not: tuple = ()


# -- argument checks (each raises ServiceError saying what is wrong) --------------------------------

def _name(name: str) -> str:
    if not valid_collection_name(name):
        raise ServiceError(f"invalid collection name {name!r}: use {COLLECTION_NAME_RULE}")
    return name


def _dim(dim: int) -> int:
    if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= 65536:
        raise ServiceError(f"invalid vector dimension {dim!r}: must be an integer in 1..65536")
    return dim


def canonical_id(value: str) -> str:
    """The canonical UUID string form of a point id (what the engines return), or a 400."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ServiceError(f"invalid point id {value!r}: point ids must be UUID strings") from None


def _limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ServiceError(f"invalid limit {limit!r}: must be a positive integer")
    return limit


def _extra_vectors(extra: dict[str, int] | None) -> dict[str, int]:
    out = {}
    for name, dim in (extra or {}).items():
        if not valid_vector_name(name):
            raise ServiceError(f"invalid vector name {name!r}: 1-64 letters, digits, '_', '.' or '-', "
                               f"not '{DENSE}' or '{SPARSE}'")
        out[name] = _dim(dim)
    return out


def _vector(vector: list[float], dim: int, what: str = "query vector") -> list[float]:
    if len(vector) != dim:
        raise ServiceError(f"{what} has {len(vector)} dimensions; the collection expects {dim}")
    return vector


def _sparse(vector: SparseVector, what: str = "sparse vector") -> SparseVector:
    if len(vector.indices) != len(vector.values):
        raise ServiceError(f"{what} has {len(vector.indices)} indices but {len(vector.values)} values")
    if len(set(vector.indices)) != len(vector.indices):
        raise ServiceError(f"{what} has duplicate indices")
    if any(not 0 <= i < 2**32 for i in vector.indices):
        raise ServiceError(f"{what} indices must be in 0..2^32-1")
    return vector


def _meta(name: str, meta: dict[str, Any]) -> dict[str, Any]:
    """A private, JSON-clean copy of collection metadata. Top-level ``None`` values are dropped (Qdrant's
    metadata update treats ``None`` as "remove this key", so neither store keeps them)."""
    if not isinstance(meta, dict):
        raise ServiceError(f"collection {name!r}: metadata must be a JSON object")
    try:
        clean = json.loads(json.dumps(meta))
    except (TypeError, ValueError) as exc:
        raise ServiceError(f"collection {name!r}: metadata is not JSON-serialisable: {exc}") from None
    return {k: v for k, v in clean.items() if v is not None}


def check_distribution(d: Distribution) -> Distribution:
    """Each factor an integer in its range, and no more write acknowledgements than copies."""
    limits = {"shard_number": MAX_SHARDS, "replication_factor": MAX_REPLICAS,
              "write_consistency_factor": MAX_REPLICAS}
    for name, value in d.fields().items():
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limits[name]:
            raise ServiceError(f"invalid {name} {value!r}: must be an integer in 1..{limits[name]}",
                               details={"param": name})
    if d.write_consistency_factor > d.replication_factor:
        raise ServiceError(f"write_consistency_factor ({d.write_consistency_factor}) must not exceed "
                           f"replication_factor ({d.replication_factor}): a write cannot wait for more copies "
                           "than the shard has", details={"param": "write_consistency_factor"})
    return d


def _payload(with_payload: Payload) -> Payload:
    if isinstance(with_payload, bool):
        return with_payload
    keys = list(with_payload)
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise ServiceError("with_payload takes true, false or a non-empty list of payload keys")
    return keys


def _filter(flt: Filter | None) -> Filter | None:
    if flt is not None:
        check_filter(flt)
    return flt


# -- helpers for implementations -------------------------------------------------------------------

def batches(items: list, size: int = UPSERT_BATCH) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def in_order(records: Iterable[Hit], ids: list[str]) -> list[Hit]:
    """Records in the order of ``ids`` (canonical forms), missing ids skipped, duplicates kept."""
    by_id = {h.id: h for h in records}
    return [by_id[i] for i in ids if i in by_id]


class VectorStore(abc.ABC):
    """Async interface used by the service. Raises NotFound/Conflict/Unavailable (stack_common.errors)
    and ServiceError for malformed arguments.

    Public methods validate and delegate; an implementation overrides the ``_``-prefixed methods and
    :meth:`_dimension`, and may assume valid arguments (canonical point ids, a checked filter)."""

    #: True when collections can have several shards and replicas (a Qdrant server); such a store
    #: implements :meth:`_create_distributed`.
    distributed: bool = False
    #: What the store runs on, for messages ("the embedded engine", "Qdrant local mode (...)").
    engine: str = "the embedded engine"

    # -- collections ------------------------------------------------------------------------------
    async def create_collection(self, name: str, dim: int, meta: dict[str, Any],
                                distribution: Distribution | None = None, *,
                                extra_vectors: dict[str, int] | None = None) -> CollectionInfo:
        """Create; Conflict if it exists. ``distribution`` (default 1/1/1): anything but one shard
        without replicas needs a distributed store, elsewhere it is a 400 naming the field.
        ``extra_vectors``: more named dense vectors (cosine) beside ``"dense"``, name -> dimension."""
        name, dim, meta = _name(name), _dim(dim), _meta(name, meta)
        extra = _extra_vectors(extra_vectors)
        dist = check_distribution(distribution or SINGLE)
        if self.distributed:
            return await self._create_distributed(name, dim, meta, dist, extra)
        for field_name, value in dist.fields().items():
            if value != 1:
                raise ServiceError(f"{field_name}={value} needs a Qdrant server: {self.engine} keeps a collection "
                                   "in one shard with no replicas (only 1 is accepted here)",
                                   details={"param": field_name})
        return await self._create_collection(name, dim, meta, extra)

    async def delete_collection(self, name: str) -> None:
        """Delete with all its data; NotFound if missing."""
        await self._delete_collection(_name(name))

    async def list_collections(self) -> list[CollectionInfo]:
        return await self._list_collections()

    async def get_collection(self, name: str) -> CollectionInfo:
        """NotFound if missing."""
        return await self._get_collection(_name(name))

    async def update_meta(self, name: str, meta: dict[str, Any]) -> None:
        """Replace the collection's metadata (durably)."""
        await self._update_meta(_name(name), _meta(name, meta))

    async def optimize(self, name: str) -> bool:
        """Build indexes / merge segments now and wait (both engines also do it by themselves in the
        background past their indexing threshold). True when something changed."""
        return await self._optimize(_name(name))

    async def index_status(self, name: str) -> dict[str, Any]:
        """The vector index of a collection: ``state`` (none | waiting | building | indexed | failed: … on
        the embedded engine; the server's status otherwise), points, indexed vectors, segments, settings."""
        return await self._index_status(_name(name))

    async def _index_status(self, name: str) -> dict[str, Any]:
        return {"state": "unknown"}

    # -- points -----------------------------------------------------------------------------------
    async def upsert(self, name: str, points: list[Point]) -> None:
        """Insert or replace points. Durable when it returns (survives a SIGKILL). Every point is checked
        before anything is written: each carries every extra dense vector of the collection, no other."""
        dim = await self._dimension(_name(name))
        extra = await self._extra_dims(name)
        for p in points:
            canonical_id(p.id)
            _vector(p.dense, dim, f"point {p.id}: dense vector")
            _sparse(p.sparse, f"point {p.id}: sparse vector")
            if p.extra.keys() != extra.keys():
                raise ServiceError(f"point {p.id} has extra vectors {sorted(p.extra)}; the collection has "
                                   f"{sorted(extra)}")
            for vname, vec in p.extra.items():
                _vector(vec, extra[vname], f"point {p.id}: vector {vname!r}")
        if points:
            await self._upsert(name, points)

    async def delete_by_doc_ids(self, name: str, doc_ids: list[str]) -> None:
        """Delete every point (chunk) whose payload ``doc_id`` is in ``doc_ids``."""
        await self._dimension(_name(name))           # NotFound when missing, even with nothing to delete
        if doc_ids:
            await self._delete_by_doc_ids(name, [str(d) for d in doc_ids])

    async def count(self, name: str, filter: Filter | None = None) -> int:
        return await self._count(_name(name), _filter(filter))

    async def retrieve(self, name: str, ids: list[str], *, with_payload: Payload = True) -> list[Hit]:
        """Points by id (score 0), in the order given, missing ids skipped; ``with_payload`` as in the
        searches."""
        _name(name)
        selector = _payload(with_payload)
        ids = [canonical_id(i) for i in ids]
        if not ids:
            await self._dimension(name)
            return []
        return in_order(await self._retrieve(name, list(dict.fromkeys(ids)), selector), ids)

    # -- search -----------------------------------------------------------------------------------
    # ``with_payload``: True = the whole payload, False = none (``Hit.payload == {}``), a list of keys =
    # only those. Copying whole payloads dominates the engine's time at large limits (see
    # scripts/bench_store.py): fetch candidates with few keys, then ``retrieve`` the page you return.

    async def search_dense(self, name: str, vector: list[float], limit: int,
                           filter: Filter | None = None, *, with_payload: Payload = True,
                           using: str = DENSE) -> list[Hit]:
        """Top ``limit`` points by cosine similarity, best first, on the dense vector ``using``."""
        _name(name), _limit(limit), _filter(filter)
        dim = await self._dimension(name)
        if using != DENSE:
            extra = await self._extra_dims(name)
            if using not in extra:
                raise ServiceError(f"the collection has no dense vector {using!r} (it has "
                                   f"{', '.join([DENSE, *sorted(extra)])})")
            dim = extra[using]
        _vector(vector, dim)
        return await self._search_dense(name, vector, limit, filter, _payload(with_payload), using)

    async def search_sparse(self, name: str, vector: SparseVector, limit: int,
                            filter: Filter | None = None, *, with_payload: Payload = True) -> list[Hit]:
        """Top ``limit`` points by BM25 (sparse dot product with engine IDF), best first."""
        _name(name), _limit(limit), _sparse(vector), _filter(filter)
        await self._dimension(name)
        return await self._search_sparse(name, vector, limit, filter, _payload(with_payload))

    async def search_both(self, name: str, dense: list[float], sparse: SparseVector, limit: int,
                          filter: Filter | None = None, *,
                          with_payload: Payload = True) -> tuple[list[Hit], list[Hit]]:
        """Dense and sparse top-``limit`` in one go (implementations may batch them)."""
        _name(name), _limit(limit), _sparse(sparse), _filter(filter)
        _vector(dense, await self._dimension(name))
        return await self._search_both(name, dense, sparse, limit, filter, _payload(with_payload))

    # -- implementation -----------------------------------------------------------------------------
    @abc.abstractmethod
    async def _dimension(self, name: str) -> int:
        """The collection's vector dimension; NotFound if it does not exist (called on every point or
        search operation: keep it cheap)."""

    @abc.abstractmethod
    async def _extra_dims(self, name: str) -> dict[str, int]:
        """The collection's extra dense vectors (name -> dimension; {} for most); as cheap as
        :meth:`_dimension`."""

    @abc.abstractmethod
    async def _create_collection(self, name: str, dim: int, meta: dict[str, Any],
                                 extra: dict[str, int]) -> CollectionInfo: ...

    async def _create_distributed(self, name: str, dim: int, meta: dict[str, Any],
                                  distribution: Distribution, extra: dict[str, int]) -> CollectionInfo:
        """Create with a checked distribution; called instead of :meth:`_create_collection` when
        ``distributed`` is true."""
        raise NotImplementedError(f"{type(self).__name__} is not a distributed store")

    @abc.abstractmethod
    async def _delete_collection(self, name: str) -> None: ...

    @abc.abstractmethod
    async def _list_collections(self) -> list[CollectionInfo]: ...

    @abc.abstractmethod
    async def _get_collection(self, name: str) -> CollectionInfo: ...

    @abc.abstractmethod
    async def _update_meta(self, name: str, meta: dict[str, Any]) -> None: ...

    async def _optimize(self, name: str) -> bool:
        await self._dimension(name)
        return False

    @abc.abstractmethod
    async def _upsert(self, name: str, points: list[Point]) -> None: ...

    @abc.abstractmethod
    async def _delete_by_doc_ids(self, name: str, doc_ids: list[str]) -> None: ...

    @abc.abstractmethod
    async def _count(self, name: str, filter: Filter | None) -> int: ...

    @abc.abstractmethod
    async def _retrieve(self, name: str, ids: list[str], with_payload: Payload) -> list[Hit]:
        """Records for distinct canonical ids, any order (the caller orders them)."""

    @abc.abstractmethod
    async def _search_dense(self, name: str, vector: list[float], limit: int, filter: Filter | None,
                            with_payload: Payload, using: str = DENSE) -> list[Hit]: ...

    @abc.abstractmethod
    async def _search_sparse(self, name: str, vector: SparseVector, limit: int, filter: Filter | None,
                             with_payload: Payload) -> list[Hit]: ...

    async def _search_both(self, name: str, dense: list[float], sparse: SparseVector, limit: int,
                           filter: Filter | None, with_payload: Payload) -> tuple[list[Hit], list[Hit]]:
        return (await self._search_dense(name, dense, limit, filter, with_payload),
                await self._search_sparse(name, sparse, limit, filter, with_payload))

    @abc.abstractmethod
    async def ready(self) -> bool:
        """True when the engine/server answers."""

    @abc.abstractmethod
    async def close(self) -> None: ...


# at the end: filters.py builds on the data model above (Filter, FieldCondition)
from .filters import check_filter  # noqa: E402
