"""POST /search/hybrid, /search/vector, /search/keyword."""
from __future__ import annotations

from fastapi import APIRouter, Response
from stack_common.errors import InvalidRequest

from ...core.settings import Settings
from ...search import Mode, SearchQuery
from ...store.filters import FilterError, parse_filter
from ..deps import SearcherDep, SettingsDep
from ..schemas import SearchRequest, SearchResponse

router = APIRouter(prefix="/search", tags=["search"])


def _invalid(message: str) -> InvalidRequest:
    return InvalidRequest(f"invalid request: {message}")


def _json(body: bytes) -> Response:
    return Response(content=body, media_type="application/json")


def to_query(req: SearchRequest, mode: Mode, s: Settings) -> SearchQuery:
    if len(req.query) > s.max_query_chars:
        raise _invalid(f"query: {len(req.query)} characters exceeds the limit of {s.max_query_chars}")
    if req.offset > s.max_offset:
        raise _invalid(f"offset: {req.offset} exceeds the limit of {s.max_offset}")
    try:
        flt = parse_filter(req.filter, max_depth=s.filter_max_depth, max_conditions=s.filter_max_conditions)
    except FilterError as exc:
        raise _invalid(str(exc)) from None
    return SearchQuery(
        query=req.query, collection=req.collection, mode=mode, limit=req.limit, offset=req.offset,
        score_threshold=req.score_threshold, fusion=req.fusion or s.fusion,
        alpha=req.alpha,                # None: SearchService applies the default (setting, else the model's)
        weights=tuple(sorted(req.weights.items())) if req.weights else None,
        rrf_k=req.rrf_k or s.rrf_k, filter=flt, explain=req.explain,
        highlight=req.highlight, snippet_chars=s.highlight_snippet_chars)


@router.post("/hybrid", response_model=SearchResponse, response_model_exclude_none=True)
async def hybrid(req: SearchRequest, searcher: SearcherDep, settings: SettingsDep) -> Response:
    """Dense + BM25, fused; scores normalised to [0, 1]."""
    return _json(await searcher.search_json(to_query(req, "hybrid", settings)))


@router.post("/vector", response_model=SearchResponse, response_model_exclude_none=True)
async def vector(req: SearchRequest, searcher: SearcherDep, settings: SettingsDep) -> Response:
    """Dense (embedding) search alone; score = cosine similarity clamped to [0, 1]."""
    return _json(await searcher.search_json(to_query(req, "vector", settings)))


@router.post("/keyword", response_model=SearchResponse, response_model_exclude_none=True)
async def keyword(req: SearchRequest, searcher: SearcherDep, settings: SettingsDep) -> Response:
    """BM25 alone; score = BM25 relative to the best hit (best = 1)."""
    return _json(await searcher.search_json(to_query(req, "keyword", settings)))
