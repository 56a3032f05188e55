"""App factory: ``uvicorn --factory search_service.main:create_app``.

The lifespan builds every long-lived object ONCE (store, embedder, BM25 analyzer, cache, use cases),
keeps them on ``app.state`` and closes them on shutdown. Nothing is created at import time.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from stack_common.auth import install_auth
from stack_common.http_errors import COMMON_ERRORS, error_responses, install_error_handlers
from stack_common.heap import freeze_startup_objects
from stack_common.limits import BodySizeLimitMiddleware
from stack_common.logs import configure_logging
from stack_common.metrics import metrics_router

from .api import api_router
from .api.routes import ui
from .cache import SearchCache
from .core.metrics import Metrics, MetricsMiddleware
from .core.settings import Settings
from .llm_client import LLMClient, LLMRejected
from .rag import RagService

log = logging.getLogger("search_service")


def _build_analyzer(s: Settings):
    from .text import Analyzer

    analyzer = Analyzer()
    if s.preload_korean:
        analyzer.tokens("검색 준비")     # load Kiwi now (~450 MB RSS, ~2 s) rather than on the first Korean text
    return analyzer


def _build_embedders(s: Settings):
    from .embeddings import Embedder, Embedders

    kwargs = dict(models_dir=s.models_dir, intra_op_threads=s.embed_threads, max_batch=s.embed_max_batch,
                  batch_wait_ms=s.embed_batch_wait_ms, workers=s.embed_workers, query_cache=s.embed_query_cache)
    loaded: dict = {}
    try:
        for key in s.embedding_model_keys:
            loaded[key] = Embedder.load(key, **kwargs)
    except BaseException:
        for emb in loaded.values():
            emb.close()
        raise
    return Embedders(loaded, s.embedding_model)


def index_policy(s: Settings) -> dict:
    """The embedded engine's IndexPolicy fields from the settings."""
    return {"enabled": s.auto_index, "threshold": s.index_threshold, "quiet_s": s.index_quiet_s,
            "threads": s.index_threads, "m": s.hnsw_m, "ef_construct": s.hnsw_ef_construct, "ef": s.hnsw_ef}


@asynccontextmanager
async def lifespan(app: FastAPI):
    s: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    from .collections import CollectionCatalog
    from .ingest import Ingestor
    from .search import KeywordRetriever, SearchService, VectorRetriever
    from .store import make_store
    from .text import BM25Encoder

    t0 = time.perf_counter()
    store = embedders = cache = None
    try:
        store = make_store(qdrant_url=s.qdrant_url, data_dir=s.data_dir, timeout_s=s.qdrant_timeout_s,
                           api_key=s.qdrant_api_key, index=index_policy(s))
        embedders, analyzer = await asyncio.gather(asyncio.to_thread(_build_embedders, s),
                                                  asyncio.to_thread(_build_analyzer, s))
        cache = SearchCache(s.redis_url, metrics, ttl_s=s.cache_ttl_s, timeout_s=s.redis_timeout_s,
                            retry_s=s.redis_retry_s, prefix=s.cache_prefix, enabled=s.cache_enabled)
        await cache.ping()
        catalog = CollectionCatalog(store, embedders, analyzer, BM25Encoder, s)
        retrievers = [VectorRetriever(store, metrics), KeywordRetriever(catalog, metrics)]
        app.state.store, app.state.embedders, app.state.cache = store, embedders, cache
        app.state.catalog = catalog
        app.state.ingestor = Ingestor(catalog, s, metrics)
        app.state.searcher = SearchService(catalog, cache, s, metrics, retrievers)
        llm = LLMClient(s.llm_url, timeout_s=s.llm_timeout_s, connect_timeout_s=s.llm_connect_timeout_s,
                        api_key=s.llm_api_key.get_secret_value() if s.llm_api_key else None)
        app.state.llm = llm
        # Grounding (citations, the extractive fallback) compares sentences with MiniLM, or with a model that
        # covers the request's scripts (Korean: e5), each at its own calibrated threshold (RagService.grounder)
        app.state.rag = RagService(app.state.searcher, llm, embedders)
        log.info("search service ready", extra={
            "startup_s": round(time.perf_counter() - t0, 2), "embedding_models": embedders.keys(),
            "store": "embedded" if not s.qdrant_url else s.qdrant_url.split("@")[-1],
            "redis": cache.state()})
    except BaseException:
        log.exception("search service failed to start")
        await _close(store, embedders, cache)
        raise
    freeze_startup_objects()
    try:
        yield
    finally:
        app.state.searcher = app.state.ingestor = app.state.rag = app.state.catalog = None
        if getattr(app.state, "llm", None) is not None:
            await app.state.llm.aclose()
        await _close(store, embedders, cache)
        log.info("search service stopped")


async def _close(store, embedders, cache) -> None:
    if cache is not None:
        await cache.close()
    if embedders is not None:
        await asyncio.to_thread(embedders.close)
    if store is not None:
        await store.close()


# llm-service's 4xx about what this request asked for (model, max_tokens, prompt size) means the same
# here; anything else it refused is a bad gateway.
SEARCH_ERROR_STATUS = {
    LLMRejected: lambda exc: exc.upstream_status if exc.upstream_status in (400, 404, 409, 413, 422) else 502,
}

_ADMIN_PATH = re.compile(r"^/collections/[^/]+(/optimize)?/?$")


def is_admin(method: str, path: str) -> bool:
    """Admin operations (need SEARCH_ADMIN_KEY when set): DELETE /collections/{name},
    POST /collections/{name}/optimize."""
    m = _ADMIN_PATH.match(path)
    if not m:
        return False
    return (method == "DELETE" and not m.group(1)) or (method == "POST" and bool(m.group(1)))


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_json)
    metrics = Metrics()
    app = FastAPI(title="search-service", version="0.1.0", lifespan=lifespan,
                  description="Hybrid (dense + BM25) search over the Qdrant engine, with a Redis cache.",
                  responses=error_responses(*COMMON_ERRORS, 400, 404, 409))
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.searcher = app.state.ingestor = app.state.rag = app.state.catalog = None
    install_error_handlers(app, SEARCH_ERROR_STATUS)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)   # outermost: also counts 413s
    ui_public = {"public_paths": ui.PUBLIC_PATHS, "public_prefixes": ui.PUBLIC_PREFIXES} if settings.ui_enabled else {}
    install_auth(app, settings, service="search-service", env_prefix="SEARCH_", is_admin=is_admin, **ui_public)
    app.include_router(api_router())
    if settings.ui_enabled:
        app.include_router(ui.router)
    app.include_router(metrics_router(metrics.registry))

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict:
        """The process is alive (no dependency checked)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz(request: Request) -> JSONResponse:
        """Store and embedding models ready → 200. Redis is reported but never fails readiness (cache bypassed)."""
        state = request.app.state
        store = getattr(state, "store", None)
        embedders = getattr(state, "embedders", None)
        cache = getattr(state, "cache", None)
        checks: dict[str, str] = {}
        try:
            checks["store"] = "ok" if store is not None and await store.ready() else "not ready"
        except Exception as exc:  # noqa: BLE001 - report, never raise from a probe
            checks["store"] = f"down: {type(exc).__name__}: {exc}"
        checks["embedder"] = (f"ok ({', '.join(embedders.keys())})" if embedders is not None and state.searcher
                              else "not loaded")
        if cache is None:
            checks["redis"] = "not configured"
        elif not cache.enabled:
            checks["redis"] = "disabled"
        else:
            checks["redis"] = "ok" if await cache.ping() else "down (cache bypassed)"
        llm = getattr(state, "llm", None)
        if llm is not None:   # reported, never fails readiness: search works without it
            checks["llm"] = "ok" if await llm.ready() else f"down at {llm.base_url} (/rag answers 503)"
        ready = checks["store"] == "ok" and checks["embedder"].startswith("ok")
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                            status_code=200 if ready else 503)

    return app
