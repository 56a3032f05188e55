"""Server-sent events: ``data: {json}\\n\\n`` chunks and a final ``data: [DONE]``."""
from __future__ import annotations

import json
from typing import Any, AsyncIterator

from fastapi.responses import StreamingResponse

from stack_common.errors import ServiceError, error_body


def sse_data(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def _with_errors(chunks: AsyncIterator[Any]) -> AsyncIterator[str]:
    try:
        async for chunk in chunks:
            yield sse_data(chunk)
    except ServiceError as exc:   # headers are gone: the error becomes the last event
        yield sse_data(error_body(exc.error_type, exc.message))
    yield "data: [DONE]\n\n"


def sse_response(chunks: AsyncIterator[Any]) -> StreamingResponse:
    return StreamingResponse(_with_errors(chunks), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
