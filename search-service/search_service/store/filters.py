"""Filters, in one place: the Qdrant-like JSON a request carries → validated :class:`Filter` objects
(:func:`parse_filter`), the checks a :class:`Filter` built in code must pass (:func:`check_filter`, run by
every :class:`VectorStore` method that takes one) and their translation to each engine's models
(:func:`to_edge`, :func:`to_client`).

    {"must": [{"key": "year", "match": {"value": 2020}},
              {"key": "tags", "match": {"any": ["a", "b"]}},
              {"should": [{"key": "lang", "match": {"except": ["ko"]}}]}],      # nested filter
     "must_not": [{"key": "year", "range": {"gte": 2000, "lt": 2010}}]}

Keys name the document's ``metadata`` fields (``year`` means ``metadata.year``; dots reach nested
objects); ``doc_id``/``id`` and ``title`` name the document's own fields. ``must`` = all,
``should`` = at least one, ``must_not`` = none. Nesting is limited in depth and in total conditions.
A malformed request filter raises :class:`FilterError` naming where (``filter.must[0].match``); a
malformed :class:`Filter` object raises ``ServiceError`` (400).
"""
from __future__ import annotations

import numbers
import re
from typing import Any, Protocol

import numpy as np
import qdrant_edge as qe
from qdrant_client import models as qm
from stack_common.errors import ServiceError

from .base import FieldCondition, Filter

__all__ = ["FilterError", "parse_filter", "payload_key", "check_filter", "to_edge", "to_client", "doc_ids_filter"]

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z_][A-Za-z0-9_\-]*)*$")
_CLAUSES = ("must", "should", "must_not")
_RANGE_OPS = ("gt", "gte", "lt", "lte")
_RANGE_KEYS = frozenset(_RANGE_OPS)
MAX_LIST = 1000

# -- request JSON -> Filter ---------------------------------------------------------------------------

class FilterError(ValueError):
    """A malformed filter; the message says where (``filter.must[0].match``) and what is wrong."""


def payload_key(key: str) -> str:
    if key in ("doc_id", "id"):
        return "doc_id"
    if key == "title" or key.startswith("metadata."):
        return key
    return "metadata." + key


def parse_filter(obj: Any, *, max_depth: int = 4, max_conditions: int = 64) -> Filter | None:
    if obj is None:
        return None
    counter = [0]
    flt = _parse_filter(obj, "filter", 1, max_depth, max_conditions, counter)
    if not (flt.must or flt.should or flt.must_not):
        return None
    return flt


def _parse_filter(obj: Any, path: str, depth: int, max_depth: int, max_conditions: int, counter: list[int]) -> Filter:
    if not isinstance(obj, dict):
        raise FilterError(f"{path}: expected an object with must/should/must_not, got {type(obj).__name__}")
    if depth > max_depth:
        raise FilterError(f"{path}: filter nested deeper than {max_depth} levels")
    unknown = set(obj) - set(_CLAUSES)
    if unknown:
        raise FilterError(f"{path}: unknown field(s) {sorted(unknown)}; a filter has must, should, must_not")
    parts: dict[str, tuple] = {}
    for clause in _CLAUSES:
        items = obj.get(clause)
        if items is None:
            parts[clause] = ()
            continue
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            raise FilterError(f"{path}.{clause}: expected a list of conditions, got {type(items).__name__}")
        out = []
        for i, item in enumerate(items):
            ipath = f"{path}.{clause}[{i}]"
            if isinstance(item, dict) and "key" not in item and any(c in item for c in _CLAUSES):
                out.append(_parse_filter(item, ipath, depth + 1, max_depth, max_conditions, counter))
            else:
                counter[0] += 1
                if counter[0] > max_conditions:
                    raise FilterError(f"{path}: more than {max_conditions} conditions")
                out.append(_parse_condition(item, ipath))
        parts[clause] = tuple(out)
    return Filter(must=parts["must"], should=parts["should"], must_not=parts["must_not"])


def _scalar(value: Any, path: str) -> str | int | bool:
    if isinstance(value, bool) or isinstance(value, int) or isinstance(value, str):
        return value
    raise FilterError(f"{path}: expected a string, integer or boolean, got {type(value).__name__}")


def _parse_condition(item: Any, path: str) -> FieldCondition:
    if not isinstance(item, dict):
        raise FilterError(f"{path}: expected a condition object {{key, match|range}} or a nested filter")
    key = item.get("key")
    if not isinstance(key, str) or not _KEY.match(key) or len(key) > 128:
        raise FilterError(f"{path}.key: expected a field name like 'year' or 'metadata.source', got {key!r}")
    unknown = set(item) - {"key", "match", "range"}
    if unknown:
        raise FilterError(f"{path}: unknown field(s) {sorted(unknown)}; a condition has key and match or range")
    has_match, has_range = "match" in item, "range" in item
    if has_match == has_range:
        raise FilterError(f"{path}: a condition needs exactly one of 'match' or 'range'")
    key = payload_key(key)
    if has_match:
        m = item["match"]
        mpath = f"{path}.match"
        if not isinstance(m, dict) or len(m) != 1 or next(iter(m)) not in ("value", "any", "except"):
            raise FilterError(f"{mpath}: expected exactly one of {{'value': x}}, {{'any': [..]}}, {{'except': [..]}}")
        kind, val = next(iter(m.items()))
        if kind == "value":
            return FieldCondition(key=key, match=_scalar(val, f"{mpath}.value"))
        if not isinstance(val, list) or not val:
            raise FilterError(f"{mpath}.{kind}: expected a non-empty list")
        if len(val) > MAX_LIST:
            raise FilterError(f"{mpath}.{kind}: more than {MAX_LIST} values")
        values = []
        for j, v in enumerate(val):
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                raise FilterError(f"{mpath}.{kind}[{j}]: expected a string or integer, got {type(v).__name__}")
            values.append(v)
        if kind == "any":
            return FieldCondition(key=key, any=tuple(values))
        return FieldCondition(key=key, except_=tuple(values))
    r = item["range"]
    rpath = f"{path}.range"
    if not isinstance(r, dict) or not r:
        raise FilterError(f"{rpath}: expected an object with gt, gte, lt and/or lte")
    bad = set(r) - set(_RANGE_OPS)
    if bad:
        raise FilterError(f"{rpath}: unknown bound(s) {sorted(bad)}; use gt, gte, lt, lte")
    bounds: dict[str, float] = {}
    for op, v in r.items():
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise FilterError(f"{rpath}.{op}: expected a number, got {type(v).__name__}")
        bounds[op] = float(v)
    if not bounds:
        raise FilterError(f"{rpath}: expected at least one of gt, gte, lt, lte")
    return FieldCondition(key=key, range=bounds)


# -- Filter objects: checks and translation -------------------------------------------------------


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


def _check_values(key: str, what: str, values: Any) -> None:
    if not isinstance(values, (list, tuple)) or not values:
        raise ServiceError(f"filter on {key!r}: {what} needs a non-empty list of values")
    if all(isinstance(v, str) for v in values):
        return
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return
    raise ServiceError(f"filter on {key!r}: {what} values must be all strings or all integers")


def _check_condition(c: FieldCondition) -> None:
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
    elif c.any is not None:
        _check_values(key, "any", c.any)
    elif c.except_ is not None:
        _check_values(key, "except", c.except_)
    else:
        bounds = c.range
        if not isinstance(bounds, dict) or not bounds or not set(bounds) <= _RANGE_KEYS:
            raise ServiceError(f"filter on {key!r}: range takes some of gt, gte, lt, lte")
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in bounds.values()):
            raise ServiceError(f"filter on {key!r}: range bounds must be numbers")


def check_filter(f: Filter, depth: int = 0) -> None:
    """Raise ServiceError (400) unless ``f`` is a well-formed Filter (what :func:`parse_filter` builds)."""
    if depth > 8:
        raise ServiceError("filter is nested too deeply (more than 8 levels)")
    for clause in _CLAUSES:
        seq = getattr(f, clause)
        if not isinstance(seq, (list, tuple)):
            raise ServiceError(f"filter {clause} must be a list of conditions")
        for item in seq:
            if isinstance(item, Filter):
                check_filter(item, depth + 1)
            elif isinstance(item, FieldCondition):
                _check_condition(item)
            else:
                raise ServiceError(f"filter {clause} holds {type(item).__name__}; expected a condition or filter")


def _condition(c: FieldCondition, b: _Builder) -> Any:
    if c.match is not None:
        return b.match(c.key, c.match)
    if c.any is not None:
        return b.any(c.key, list(c.any))
    if c.except_ is not None:
        return b.except_(c.key, list(c.except_))
    return b.range(c.key, {k: float(v) for k, v in c.range.items()})


def _translate(f: Filter, b: _Builder) -> Any:
    """A checked Filter (see :func:`check_filter`) in a builder's models."""
    parts = [[_translate(i, b) if isinstance(i, Filter) else _condition(i, b) for i in getattr(f, clause)]
             for clause in _CLAUSES]
    return b.filter(*parts)


def to_edge(f: Filter | None) -> qe.Filter | None:
    return None if f is None else _translate(f, _Edge())


def to_client(f: Filter | None) -> qm.Filter | None:
    return None if f is None else _translate(f, _Client())


def doc_ids_filter(doc_ids: list[str]) -> Filter:
    """Points whose payload ``doc_id`` is one of ``doc_ids``."""
    return Filter(must=(FieldCondition(key="doc_id", any=tuple(str(d) for d in doc_ids)),))
