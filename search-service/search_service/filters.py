"""The search filter language: Qdrant-like JSON → :class:`store.base.Filter`, validated with clear messages.

    {"must": [{"key": "year", "match": {"value": 2020}},
              {"key": "tags", "match": {"any": ["a", "b"]}},
              {"should": [{"key": "lang", "match": {"except": ["ko"]}}]}],      # nested filter
     "must_not": [{"key": "year", "range": {"gte": 2000, "lt": 2010}}]}

Keys name the document's ``metadata`` fields (``year`` means ``metadata.year``; dots reach nested
objects); ``doc_id``/``id`` and ``title`` name the document's own fields. ``must`` = all,
``should`` = at least one, ``must_not`` = none. Nesting is limited in depth and in total conditions.
"""
from __future__ import annotations

import re
from typing import Any

from .store.base import FieldCondition, Filter

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z_][A-Za-z0-9_\-]*)*$")
_CLAUSES = ("must", "should", "must_not")
_RANGE_OPS = ("gt", "gte", "lt", "lte")
MAX_LIST = 1000


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
