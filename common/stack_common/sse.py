"""Server-sent events: the one encoder both services stream with, and the parser a client reads them with.

Wire format (llm-service's ``/generate`` and OpenAI-compatible streams, search-service's ``/rag`` stream)::

    event: <name>\\n                  (optional; a client calls an unnamed event "message")
    data: <JSON, compact, UTF-8>\\n
    \\n
    ...
    data: [DONE]\\n\\n                 (the end: OpenAI's sentinel)
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

DONE = b"data: [DONE]\n\n"
MESSAGE = "message"


def encode(data: Any, event: str | None = None) -> bytes:
    """One event: an optional ``event:`` line and a ``data:`` line of compact JSON."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


class IncompleteStream(Exception):
    """The event stream ended before its ``[DONE]``."""


async def read_events(lines: AsyncIterable[str]) -> AsyncIterator[tuple[str, Any]]:
    """``(event name, decoded data)`` for each ``data:`` line of an event stream (e.g. httpx's
    ``response.aiter_lines()``), until ``[DONE]``; raises :class:`IncompleteStream` when the lines end
    before it. Other lines (comments, ``id:``, ``retry:``) are skipped."""
    name = MESSAGE
    async for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip() or MESSAGE
        elif line.startswith("data:"):
            data = line[5:].strip()
            if data == "[DONE]":
                return
            yield name, json.loads(data)
            name = MESSAGE
        elif not line:
            name = MESSAGE             # a blank line ends an event
    raise IncompleteStream("the event stream ended before [DONE]")
