"""Translate :class:`base.Filter` into each engine's filter models.

One validating walk (:func:`_walk`) over the filter tree, parameterised by a small builder per target
(qdrant_edge or qdrant_client models), so both implementations accept and reject exactly the same
filters. Keys are payload dot paths (``metadata.year``); nested Filters become nested Qdrant filters.
A malformed filter raises ``ServiceError`` (400) saying what is wrong.
"""
from __future__ import annotations

import numbers
from typing import Any, Protocol

import numpy as np
import qdrant_edge as qe
from qdrant_client import models as qm
from stack_common.errors import ServiceError

from .base import FieldCondition, Filter

__all__ = ["to_edge", "to_client", "doc_ids_filter"]

_RANGE_KEYS = frozenset({"gt", "gte", "lt", "lte"})


class _Builder(Protocol):
    def filter(self, must: list, should: list, must_not: list) -> Any: ...
    def match(self, key: str, value: str | int | bool) -> Any: ...
    def any(self, key: str, values: list) -> Any: ...
    def except_(self, key: str, values: list) -> Any: ...
    def range(self, key: str, bounds: dict[str, float]) -> Any: ...


class _Edge:
    def filter(self, must: list, should: list, must_not: list) -> qe.Filter:
        return qe.Filter(must=must or None, should=should or None, must_not=must_not or None)

    def match(self, key: str, value: str | int | bool) -> qe.FieldCondition:
        # qdrant-edge 0.9.0 reads a Python bool as the integer 1/0 (bool is an int subclass), which then
        # never matches a boolean payload; numpy.bool_ is not an int, so it arrives as a real bool.
        return qe.FieldCondition(key, match=qe.MatchValue(np.bool_(value) if isinstance(value, bool) else value))

    def any(self, key: str, values: list) -> qe.FieldCondition:
        return qe.FieldCondition(key, match=qe.MatchAny(values))

    def except_(self, key: str, values: list) -> qe.FieldCondition:
        return qe.FieldCondition(key, match=qe.MatchExcept(values))

    def range(self, key: str, bounds: dict[str, float]) -> qe.FieldCondition:
        return qe.FieldCondition(key, range=qe.RangeFloat(**bounds))


class _Client:
    def filter(self, must: list, should: list, must_not: list) -> qm.Filter:
        return qm.Filter(must=must or None, should=should or None, must_not=must_not or None)

    def match(self, key: str, value: str | int | bool) -> qm.FieldCondition:
        return qm.FieldCondition(key=key, match=qm.MatchValue(value=value))

    def any(self, key: str, values: list) -> qm.FieldCondition:
        return qm.FieldCondition(key=key, match=qm.MatchAny(any=values))

    def except_(self, key: str, values: list) -> qm.FieldCondition:
        return qm.FieldCondition(key=key, match=qm.MatchExcept(**{"except": values}))

    def range(self, key: str, bounds: dict[str, float]) -> qm.FieldCondition:
        return qm.FieldCondition(key=key, range=qm.Range(**bounds))


def _values(key: str, what: str, values: Any) -> list:
    if not isinstance(values, (list, tuple)) or not values:
        raise ServiceError(f"filter on {key!r}: {what} needs a non-empty list of values")
    values = list(values)
    if all(isinstance(v, str) for v in values):
        return values
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return values
    raise ServiceError(f"filter on {key!r}: {what} values must be all strings or all integers")


def _condition(c: FieldCondition, b: _Builder) -> Any:
    key = c.key
    if not isinstance(key, str) or not key or key.startswith(".") or key.endswith(".") or ".." in key:
        raise ServiceError(f"filter key {key!r} is not a payload path like 'metadata.year'")
    set_ = [n for n in ("match", "any", "except_", "range") if getattr(c, n) is not None]
    if len(set_) != 1:
        raise ServiceError(f"filter on {key!r}: set exactly one of match, any, except, range "
                           f"(got {', '.join(set_) or 'none'})")
    if c.match is not None:
        if not isinstance(c.match, (str, int, bool)):
            raise ServiceError(f"filter on {key!r}: match takes a string, integer or boolean")
        return b.match(key, c.match)
    if c.any is not None:
        return b.any(key, _values(key, "any", c.any))
    if c.except_ is not None:
        return b.except_(key, _values(key, "except", c.except_))
    bounds = c.range
    if not isinstance(bounds, dict) or not bounds or not set(bounds) <= _RANGE_KEYS:
        raise ServiceError(f"filter on {key!r}: range takes some of gt, gte, lt, lte")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in bounds.values()):
        raise ServiceError(f"filter on {key!r}: range bounds must be numbers")
    return b.range(key, {k: float(v) for k, v in bounds.items()})


def _walk(f: Filter, b: _Builder, depth: int = 0) -> Any:
    if depth > 8:
        raise ServiceError("filter is nested too deeply (more than 8 levels)")

    def items(clause: str) -> list:
        seq = getattr(f, clause)
        if not isinstance(seq, (list, tuple)):
            raise ServiceError(f"filter {clause} must be a list of conditions")
        out = []
        for item in seq:
            if isinstance(item, Filter):
                out.append(_walk(item, b, depth + 1))
            elif isinstance(item, FieldCondition):
                out.append(_condition(item, b))
            else:
                raise ServiceError(f"filter {clause} holds {type(item).__name__}; expected a condition or filter")
        return out

    return b.filter(items("must"), items("should"), items("must_not"))


def to_edge(f: Filter | None) -> qe.Filter | None:
    return None if f is None else _walk(f, _Edge())


def to_client(f: Filter | None) -> qm.Filter | None:
    return None if f is None else _walk(f, _Client())


def doc_ids_filter(doc_ids: list[str]) -> Filter:
    """Points whose payload ``doc_id`` is one of ``doc_ids``."""
    return Filter(must=(FieldCondition(key="doc_id", any=tuple(str(d) for d in doc_ids)),))
