"""search-service's small client for the llm-service contract (OpenAI-compatible chat over HTTP).

One pooled ``httpx.AsyncClient`` per app; bounded timeouts; one retry on connect errors (the
transport's ``retries``, which only retries failed connects, never a request that reached the
server). Every failure to get an answer becomes :class:`LLMUnavailable` (503) with a message that
says what happened, so callers never hang past the configured timeout.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from stack_common import sse
from stack_common.errors import ServiceError, Unavailable

log = logging.getLogger("search_service.llm_client")


class LLMUnavailable(Unavailable):
    """llm-service is down, too slow, overloaded or failing."""


class LLMRejected(ServiceError):
    """llm-service refused the request as invalid (its 4xx): ``upstream_status`` is its status, passed on to
    the client where it means the same here (the API maps it, see main.py)."""

    error_type = "llm_rejected"

    def __init__(self, message: str, *, upstream_status: int = 400, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.upstream_status = upstream_status


class LLMClient:
    def __init__(self, base_url: str, *, timeout_s: float = 60.0, connect_timeout_s: float = 2.0,
                 api_key: str | None = None, max_connections: int = 64) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s = timeout_s
        self._client = httpx.AsyncClient(
            base_url=self.base_url, headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=16),
            transport=httpx.AsyncHTTPTransport(retries=1))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def ready(self) -> bool:
        try:
            r = await self._client.get("/readyz", timeout=2.0)
            return r.status_code == 200
        except httpx.HTTPError:
            return False

    def _fail(self, exc: Exception) -> LLMUnavailable:
        if isinstance(exc, httpx.TimeoutException):
            return LLMUnavailable(f"llm-service at {self.base_url} did not answer within {self.timeout_s:g}s")
        return LLMUnavailable(f"llm-service at {self.base_url} is unreachable ({type(exc).__name__})")

    @staticmethod
    def _error_from(r: httpx.Response) -> ServiceError:
        details = None
        try:
            error = r.json()["error"]
            message, details = error["message"], error.get("details")
        except Exception:  # noqa: BLE001 - any non-JSON body
            message = r.text[:300]
        if r.status_code in (429, 503) or r.status_code >= 500:
            try:
                retry_after = float(r.headers["retry-after"]) if "retry-after" in r.headers else None
            except ValueError:
                retry_after = None
            return LLMUnavailable(f"llm-service answered {r.status_code}: {message}", retry_after_s=retry_after)
        # Its 4xx is about what this request asked for (model, max_tokens, prompt size)
        return LLMRejected(f"llm-service rejected the request ({r.status_code}): {message}",
                           upstream_status=r.status_code, details=details if isinstance(details, dict) else None)

    async def chat(self, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
        """One non-streamed chat completion; returns the OpenAI-shaped response body."""
        body = {"messages": messages, "stream": False, **{k: v for k, v in params.items() if v is not None}}
        try:
            r = await self._client.post("/v1/chat/completions", json=body)
        except httpx.HTTPError as e:
            raise self._fail(e) from e
        if r.status_code != 200:
            raise self._error_from(r)
        return r.json()

    async def chat_stream(self, messages: list[dict[str, str]], **params: Any) -> AsyncIterator[dict[str, Any]]:
        """Streamed chat completion: yields the OpenAI chunk objects as they arrive."""
        body = {"messages": messages, "stream": True, "stream_options": {"include_usage": True},
                **{k: v for k, v in params.items() if v is not None}}
        try:
            async with self._client.stream("POST", "/v1/chat/completions", json=body) as r:
                if r.status_code != 200:
                    await r.aread()
                    raise self._error_from(r)
                async for _, chunk in sse.read_events(r.aiter_lines()):
                    if "error" in chunk:
                        raise LLMUnavailable(f"llm-service failed mid-stream: {chunk['error'].get('message', chunk['error'])}")
                    yield chunk
        except httpx.HTTPError as e:
            raise self._fail(e) from e
        except sse.IncompleteStream:
            raise LLMUnavailable("llm-service closed the stream before [DONE]") from None
