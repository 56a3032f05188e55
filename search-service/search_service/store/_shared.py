"""Helpers shared by both store implementations: validation and result shaping.

Both implementations validate the same way *before* calling the engine, so bad input gets the same
clear 4xx from either one instead of whatever the engine happens to raise.
"""
from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from typing import Any

from stack_common.errors import ServiceError

from .base import Hit, Point, SparseVector

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
UPSERT_BATCH = 512   # points per engine call / request (keeps server requests well under 32 MB)


def check_name(name: str) -> str:
    """Collection names double as directory names in the embedded store: keep them plain."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ServiceError(f"invalid collection name {name!r}: use 1-64 letters, digits, '_' or '-', "
                           "starting with a letter or digit")
    return name


def check_dim(dim: int) -> int:
    if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= 65536:
        raise ServiceError(f"invalid vector dimension {dim!r}: must be an integer in 1..65536")
    return dim


def point_id(value: str) -> str:
    """The canonical UUID string form (what the engines return), or a 400."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ServiceError(f"invalid point id {value!r}: point ids must be UUID strings") from None


def check_limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ServiceError(f"invalid limit {limit!r}: must be a positive integer")
    return limit


def check_vector(vector: list[float], dim: int, what: str = "query vector") -> list[float]:
    if len(vector) != dim:
        raise ServiceError(f"{what} has {len(vector)} dimensions; the collection expects {dim}")
    return vector


def check_sparse(vector: SparseVector, what: str = "sparse vector") -> SparseVector:
    if len(vector.indices) != len(vector.values):
        raise ServiceError(f"{what} has {len(vector.indices)} indices but {len(vector.values)} values")
    if len(set(vector.indices)) != len(vector.indices):
        raise ServiceError(f"{what} has duplicate indices")
    if any(not 0 <= i < 2**32 for i in vector.indices):
        raise ServiceError(f"{what} indices must be in 0..2^32-1")
    return vector


def check_points(points: list[Point], dim: int) -> None:
    for p in points:
        point_id(p.id)
        check_vector(p.dense, dim, f"point {p.id}: dense vector")
        check_sparse(p.sparse, f"point {p.id}: sparse vector")


def json_meta(name: str, meta: dict[str, Any]) -> dict[str, Any]:
    """A private, JSON-clean copy of collection metadata. Top-level ``None`` values are dropped (Qdrant's
    metadata update treats ``None`` as "remove this key", so neither store keeps them)."""
    if not isinstance(meta, dict):
        raise ServiceError(f"collection {name!r}: metadata must be a JSON object")
    try:
        clean = json.loads(json.dumps(meta))
    except (TypeError, ValueError) as exc:
        raise ServiceError(f"collection {name!r}: metadata is not JSON-serialisable: {exc}") from None
    return {k: v for k, v in clean.items() if v is not None}


def payload_selector(with_payload: bool | list[str]) -> bool | list[str]:
    if isinstance(with_payload, bool):
        return with_payload
    keys = list(with_payload)
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise ServiceError("with_payload takes true, false or a non-empty list of payload keys")
    return keys


def batches(items: list, size: int = UPSERT_BATCH) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def hit(id_: Any, score: float, payload: dict[str, Any] | None) -> Hit:
    return Hit(id=str(id_), score=float(score), payload=dict(payload or {}))


def in_order(records: Iterable[Hit], ids: list[str]) -> list[Hit]:
    """Records in the order of ``ids`` (canonical forms), missing ids skipped, duplicates kept."""
    by_id = {h.id: h for h in records}
    return [by_id[i] for i in ids if i in by_id]
