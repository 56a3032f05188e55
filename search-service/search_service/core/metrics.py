"""Prometheus metrics of one app instance (own registry, so several apps can share a process)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0, 10.0)
_STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("search_requests_total", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.request_duration = Histogram("search_request_duration_seconds", "HTTP request latency",
                                          ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self.cache_hits = Counter("search_cache_hits_total", "Search responses served from Redis", registry=r)
        self.cache_misses = Counter("search_cache_misses_total", "Searches not found in Redis", registry=r)
        self.cache_errors = Counter("search_cache_errors_total",
                                    "Redis calls that failed or timed out (cache bypassed)", registry=r)
        self.stage_duration = Histogram("search_stage_duration_seconds",
                                        "Latency of one search stage (embed, keyword, vector, fuse, rerank, highlight)",
                                        ["stage"], buckets=_STAGE_BUCKETS, registry=r)
        self.documents_ingested = Counter("search_documents_ingested_total", "Documents upserted", registry=r)
        self.documents_deleted = Counter("search_documents_deleted_total", "Documents deleted", registry=r)
        self.chunks_ingested = Counter("search_chunks_ingested_total", "Chunks (points) upserted", registry=r)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stage_duration.labels(name).observe(time.perf_counter() - t0)


class MetricsMiddleware:
    """Pure ASGI middleware: counts requests by route template and status, and times them."""

    def __init__(self, app: ASGIApp, metrics: Metrics, skip: tuple[str, ...] = ("/metrics",)) -> None:
        self.app = app
        self.metrics = metrics
        self.skip = skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.skip:
            await self.app(scope, receive, send)
            return
        status = 500
        t0 = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            # the route template (bounded label values); requests no route took (404, 413) share one label
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.request_duration.labels(endpoint).observe(time.perf_counter() - t0)
