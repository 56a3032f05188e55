"""The vector-store contract: one interface, two real implementations (embedded engine, server).

Both implementations must give the same results for the same operations (congruence tests in
``tests/search_service/test_store_congruence.py``). Nothing above this layer imports Qdrant.

Data model
----------
* A *collection* holds *points*. Each point has a named dense vector ``"dense"`` (cosine) and a
  named sparse vector ``"bm25"`` (dot product, ``Modifier.Idf`` so the engine computes IDF).
* Point ids are UUID strings (Qdrant accepts ints or UUIDs only); the service derives them from
  ``(doc_id, chunk)``. The payload always carries ``doc_id`` and ``chunk`` plus the user's fields.
* Collection metadata (embedding model id, dimension, BM25 statistics, anything the service needs)
  is stored with the collection and survives restarts.
* Filters are :class:`Filter` objects (a small, validated subset of Qdrant's filter language) that
  each implementation translates to its own Qdrant models.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from stack_common.errors import Conflict, NotFound, Unavailable  # re-exported for implementations

__all__ = [
    "SparseVector", "Point", "Hit", "CollectionInfo", "FieldCondition", "Filter", "VectorStore",
    "Conflict", "NotFound", "Unavailable", "DENSE", "SPARSE",
]

DENSE = "dense"   # name of the dense vector in every collection
SPARSE = "bm25"   # name of the sparse (BM25) vector in every collection


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


@dataclass(slots=True)
class Hit:
    id: str                 # point id (UUID string)
    score: float            # the engine's raw score (cosine for dense, BM25 for sparse)
    payload: dict[str, Any]


@dataclass
class CollectionInfo:
    name: str
    dim: int
    points_count: int
    meta: dict[str, Any] = field(default_factory=dict)   # model_id, bm25 stats, created_at, ...


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


class VectorStore(abc.ABC):
    """Async interface used by the service. Raise NotFound/Conflict/Unavailable (stack_common.errors)."""

    @abc.abstractmethod
    async def create_collection(self, name: str, dim: int, meta: dict[str, Any]) -> CollectionInfo:
        """Create; Conflict if it exists."""

    @abc.abstractmethod
    async def delete_collection(self, name: str) -> None:
        """Delete with all its data; NotFound if missing."""

    @abc.abstractmethod
    async def list_collections(self) -> list[CollectionInfo]: ...

    @abc.abstractmethod
    async def get_collection(self, name: str) -> CollectionInfo:
        """NotFound if missing."""

    @abc.abstractmethod
    async def update_meta(self, name: str, meta: dict[str, Any]) -> None:
        """Replace the collection's metadata (durably)."""

    @abc.abstractmethod
    async def upsert(self, name: str, points: list[Point]) -> None:
        """Insert or replace points. Durable when it returns (survives a SIGKILL)."""

    @abc.abstractmethod
    async def delete_by_doc_ids(self, name: str, doc_ids: list[str]) -> None:
        """Delete every point (chunk) whose payload ``doc_id`` is in ``doc_ids``."""

    @abc.abstractmethod
    async def count(self, name: str, filter: Filter | None = None) -> int: ...

    # ``with_payload`` (added after the first draft; default keeps the old behaviour): True = the whole
    # payload, False = none (``Hit.payload == {}``), a list of keys = only those (e.g. ["doc_id", "chunk"]).
    # Copying whole payloads dominates the engine's time at limit 100 (see scripts/bench_store.py): fetch
    # candidates with a few keys, then ``retrieve`` the page you return.

    @abc.abstractmethod
    async def search_dense(self, name: str, vector: list[float], limit: int,
                           filter: Filter | None = None, *, with_payload: bool | list[str] = True) -> list[Hit]:
        """Top ``limit`` points by cosine similarity, best first."""

    @abc.abstractmethod
    async def search_sparse(self, name: str, vector: SparseVector, limit: int,
                            filter: Filter | None = None, *, with_payload: bool | list[str] = True) -> list[Hit]:
        """Top ``limit`` points by BM25 (sparse dot product with engine IDF), best first."""

    async def search_both(self, name: str, dense: list[float], sparse: SparseVector, limit: int,
                          filter: Filter | None = None, *,
                          with_payload: bool | list[str] = True) -> tuple[list[Hit], list[Hit]]:
        """Dense and sparse top-``limit`` in one go (implementations may batch them)."""
        return (await self.search_dense(name, dense, limit, filter, with_payload=with_payload),
                await self.search_sparse(name, sparse, limit, filter, with_payload=with_payload))

    async def optimize(self, name: str) -> bool:
        """Build indexes / merge segments now, e.g. after a bulk load (added; default: nothing to do).

        The embedded engine optimizes only when asked; a Qdrant server does it in the background.
        Returns True when something changed.
        """
        return False

    @abc.abstractmethod
    async def retrieve(self, name: str, ids: list[str], *, with_payload: bool | list[str] = True) -> list[Hit]:
        """Points by id (score 0), in the order given, missing ids skipped; ``with_payload`` as in the
        searches (True, False or a list of keys)."""

    @abc.abstractmethod
    async def ready(self) -> bool:
        """True when the engine/server answers."""

    @abc.abstractmethod
    async def close(self) -> None: ...
