"""Redis cache-aside for search responses.

Key = ``{prefix}:{collection}:{version}:{sha256(normalised request)}``. The collection's *version*
lives in the store's collection metadata (durable, written with the data) and every write replaces
it, so a response cached before a write can never be served after it — even when Redis was down
during the write and comes back later with old keys (they are simply never asked for again and
expire by TTL). The search appends the store's ``data_version`` (the embedded engine's background
optimizer pass swaps in new files: vacuumed deletes change BM25 scores), so that too starts afresh.

Redis down or slow never fails or slows a search: every call is bounded by ``timeout_s``; a failure
is counted (``search_cache_errors_total``), logged ONCE per outage, and the cache is bypassed for
``retry_s`` before Redis is tried again. When a call succeeds again an "available again" line is logged.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from .core.metrics import Metrics

log = logging.getLogger("search_service.cache")


def request_key(prefix: str, collection: str, version: str, request: dict[str, Any]) -> str:
    """A stable key for a normalised request (dict of plain JSON values)."""
    blob = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:32]
    return f"{prefix}:{collection}:{version}:{digest}"


class SearchCache:
    def __init__(self, url: str, metrics: Metrics, *, ttl_s: int = 300, timeout_s: float = 0.1,
                 retry_s: float = 1.0, prefix: str = "search", enabled: bool = True) -> None:
        self.url = url
        self.metrics = metrics
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.prefix = prefix
        self.enabled = enabled
        self._client = None
        if enabled:
            # a blocking pool: a burst of concurrent searches waits (at most timeout_s) for a connection
            # instead of failing with "too many connections" and being taken for an outage
            # retry once on a connection error: after Redis restarts, idle pooled connections still point at
            # the dead server and fail on first use; without the retry each of them looked like a new outage
            pool = aioredis.BlockingConnectionPool.from_url(
                url, max_connections=128, timeout=timeout_s, socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s, retry_on_timeout=False, health_check_interval=0,
                retry=Retry(NoBackoff(), 1), retry_on_error=[RedisConnectionError])
            self._client = aioredis.Redis(connection_pool=pool)
        self._down_since: float | None = None   # start of the current outage (None: Redis ok)
        self._retry_at = 0.0                    # monotonic time before which Redis is not tried

    # -- state ------------------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        return self.enabled and self._down_since is None

    def state(self) -> str:
        if not self.enabled:
            return "disabled"
        return "ok" if self._down_since is None else "down (cache bypassed)"

    def _bypassed(self) -> bool:
        return not self.enabled or (self._down_since is not None and time.monotonic() < self._retry_at)

    def _failed(self, op: str, exc: BaseException) -> None:
        self.metrics.cache_errors.inc()
        now = time.monotonic()
        self._retry_at = now + self.retry_s
        if self._down_since is None:
            self._down_since = now
            log.warning("redis unavailable, search cache bypassed until it answers again",
                        extra={"op": op, "error": f"{type(exc).__name__}: {exc}", "redis": self._safe_url()})

    def _succeeded(self) -> None:
        if self._down_since is not None:
            log.warning("redis available again, search cache resumed",
                        extra={"outage_s": round(time.monotonic() - self._down_since, 3)})
            self._down_since = None

    def _safe_url(self) -> str:
        return self.url.split("@")[-1]

    async def _call(self, op: str, coro_fn) -> Any:
        try:
            # asyncio.timeout, not wait_for: wait_for wraps the call in a new Task (a measurable cost on a
            # cache hit, whose whole work is this round trip); the bound and the exception are the same
            async with asyncio.timeout(self.timeout_s * 2):
                result = await coro_fn()
        except (aioredis.RedisError, OSError, asyncio.TimeoutError) as exc:
            self._failed(op, exc)
            raise _Bypass() from exc
        self._succeeded()
        return result

    # -- API --------------------------------------------------------------------------------------
    def key(self, collection: str, version: str, request: dict[str, Any]) -> str:
        return request_key(self.prefix, collection, version, request)

    async def get_raw(self, key: str) -> bytes | None:
        """The cached JSON object (bytes), or None on a miss or when Redis is unavailable."""
        if self._bypassed():
            self.metrics.cache_misses.inc()
            return None
        try:
            raw = await self._call("get", lambda: self._client.get(key))
        except _Bypass:
            self.metrics.cache_misses.inc()
            return None
        if not raw or raw[:1] != b"{" or raw[-1:] != b"}":
            self.metrics.cache_misses.inc()
            return None
        self.metrics.cache_hits.inc()
        return raw

    async def set_raw(self, key: str, raw: bytes) -> None:
        if self._bypassed():
            return
        try:
            await self._call("set", lambda: self._client.set(key, raw, ex=self.ttl_s))
        except _Bypass:
            pass

    async def ping(self) -> bool:
        """Try Redis now (readiness probe); updates the outage state."""
        if not self.enabled:
            return False
        try:
            await self._call("ping", lambda: self._client.ping())
            return True
        except _Bypass:
            return False

    async def close(self) -> None:
        if self._client is not None:
            try:
                await self._client.aclose()
                await self._client.connection_pool.disconnect()   # a pool we passed in is ours to close
            except Exception:  # noqa: BLE001 - closing a dead connection must not fail shutdown
                pass


class _Bypass(Exception):
    """Internal: Redis failed; the caller carries on without the cache."""
