"""Vector store: the :class:`VectorStore` contract and its two implementations.

``make_store`` picks one from the ``qdrant_url`` setting:

* ``None`` (default): :class:`EdgeStore`, the Qdrant engine in-process, data under ``data_dir``.
* ``":memory:"``: :class:`ServerStore` on qdrant-client's in-memory local mode (tests, throwaway runs).
* ``"local:<dir>"``: :class:`ServerStore` on qdrant-client's local mode persisted in ``<dir>``.
* ``http(s)://...``: :class:`ServerStore` against a Qdrant server (Compose, Helm).
"""
from __future__ import annotations

import pathlib

from .base import (DENSE, SPARSE, CollectionInfo, Conflict, FieldCondition, Filter, Hit, NotFound, Point,
                   SparseVector, Unavailable, VectorStore)

__all__ = [
    "make_store", "SparseVector", "Point", "Hit", "CollectionInfo", "FieldCondition", "Filter", "VectorStore",
    "Conflict", "NotFound", "Unavailable", "DENSE", "SPARSE",
]


def make_store(*, qdrant_url: str | None, data_dir: pathlib.Path, timeout_s: float = 5.0,
               api_key: str | None = None, index: dict | None = None) -> VectorStore:
    """Build the store the settings ask for (imports the chosen engine only). ``index``: the embedded
    engine's :class:`.edge_indexing.IndexPolicy` fields."""
    if qdrant_url is None or qdrant_url == "":
        from .edge import EdgeStore
        from .edge_indexing import IndexPolicy
        return EdgeStore(pathlib.Path(data_dir), index=IndexPolicy(**(index or {})))
    from .server import ServerStore
    if qdrant_url == ":memory:":
        return ServerStore(location=":memory:")
    if qdrant_url.startswith("local:"):
        path = pathlib.Path(qdrant_url[len("local:"):] or pathlib.Path(data_dir) / "qdrant-local")
        path.mkdir(parents=True, exist_ok=True)
        return ServerStore(path=str(path))
    if qdrant_url.startswith(("http://", "https://")):
        return ServerStore(url=qdrant_url, timeout_s=timeout_s, api_key=api_key)
    raise ValueError(f"qdrant_url {qdrant_url!r}: expected none (embedded engine), ':memory:', "
                     "'local:<dir>' or an http(s) URL")
