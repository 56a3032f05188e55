"""Streaming responses: each chunk an SSE ``data:`` event (:mod:`stack_common.sse`), then ``data: [DONE]``."""
from __future__ import annotations

from typing import Any, AsyncIterator, Callable

from fastapi.responses import StreamingResponse

from stack_common import sse
from stack_common.errors import ServiceError, error_body


async def _with_errors(chunks: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield sse.encode(chunk)
    except ServiceError as exc:   # headers are gone: the error becomes the last event
        yield sse.encode(error_body(exc.error_type, exc.message))
    yield sse.DONE


class EventStreamResponse(StreamingResponse):
    """A streaming response that always runs ``on_close`` (even when the client left before the
    first chunk, when the chunk generator never starts and so never cleans up)."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None] | None = None) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.on_close is not None:
                self.on_close()


def sse_response(chunks: AsyncIterator[Any], on_close: Callable[[], None] | None = None) -> EventStreamResponse:
    return EventStreamResponse(_with_errors(chunks), on_close)
