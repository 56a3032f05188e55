"""Retrieval-augmented answers: hybrid retrieval → a prompt that packs the top passages within the
model's context budget, each tagged with its document id → llm-service (OpenAI chat over HTTP) → the
answer with its sources and token usage.

If llm-service is down, overloaded or too slow, the caller gets a 503 whose ``details.sources`` still
carries what was retrieved, so a client can show the passages without the generated answer.
"""
from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from stack_common import sse

from .llm_client import LLMClient, LLMRejected, LLMUnavailable
from .search import SearchQuery, SearchService

SYSTEM_PROMPT = (
    "You answer the user's question using only the numbered sources below. "
    "Cite the sources you use by their id in square brackets, e.g. [doc-1]. "
    "If the sources do not contain the answer, say that you do not know."
)
CHARS_PER_TOKEN = 4     # estimate for English text with BPE tokenizers; digits/symbols/Korean take more
MIN_CONTEXT_TOKENS = 64


def shrink_budget(passage_tokens: int, prompt_estimate: int, exc: LLMRejected) -> int | None:
    """A smaller passage budget after llm-service said the prompt did not fit, or None if it was not that
    (or nothing can fit). Both counts are this module's estimates (characters / 4) of the passages and
    of the whole prompt.

    The estimate undercounts digit-, symbol- and Korean-heavy text; the model's own count says by how
    much (ratio = real / estimated), so the passages are cut by the overflow in real tokens, plus 10%.
    """
    d = exc.details if isinstance(exc.details, dict) else {}
    try:   # llm-service's 400 for a prompt that does not fit carries the model's own counts
        prompt, new, ctx = int(d["prompt_tokens"]), int(d["max_new_tokens"]), int(d["context_length"])
    except (KeyError, TypeError, ValueError):
        return None
    if passage_tokens <= 0 or prompt_estimate <= 0:
        return None
    overflow = prompt + new - ctx
    if overflow <= 0:
        return None
    ratio = prompt / prompt_estimate
    smaller = int((passage_tokens - overflow / ratio) * 0.9)
    return smaller if smaller >= MIN_CONTEXT_TOKENS else None


def estimate_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


@dataclass(frozen=True)
class RagParams:
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float | None = None
    model: str | None = None
    context_tokens: int = 1024      # budget for the packed passages


def pack_passages(results: list[dict[str, Any]], budget_tokens: int, min_chars: int = 200) -> list[dict[str, Any]]:
    """Take results in rank order while they fit ``budget_tokens`` (estimated); the last one that does
    not fit whole is cut at a word boundary if at least ``min_chars`` of it fit."""
    budget = budget_tokens * CHARS_PER_TOKEN
    packed = []
    for r in results:
        header = f"[{r['id']}] {r.get('title') or ''}".strip()
        text = " ".join((r.get("text") or "").split())
        cost = len(header) + len(text) + 2
        if cost <= budget:
            packed.append({**r, "text": text})
            budget -= cost
            continue
        room = budget - len(header) - 2
        if room >= min_chars:
            cut = text[:room].rsplit(" ", 1)[0]
            packed.append({**r, "text": cut + " …"})
        break
    return packed


def build_messages(question: str, passages: list[dict[str, Any]]) -> list[dict[str, str]]:
    blocks = [f"[{p['id']}] {p.get('title') or ''}\n{p['text']}".strip() for p in passages]
    sources = "\n\n".join(blocks) if blocks else "(no sources found)"
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Sources:\n{sources}\n\nQuestion: {question}"},
    ]


def _source(r: dict[str, Any]) -> dict[str, Any]:
    return {"id": r["id"], "title": r.get("title"), "score": r["score"]}


class RagService:
    def __init__(self, searcher: SearchService, llm: LLMClient) -> None:
        self.searcher = searcher
        self.llm = llm

    async def _retrieve(self, q: SearchQuery, p: RagParams) -> tuple[list[dict[str, Any]], float]:
        t0 = time.perf_counter()
        found = await self.searcher.search(q)
        return found["results"], (time.perf_counter() - t0) * 1000

    async def _ask(self, question: str, results: list[dict[str, Any]], p: RagParams, call):
        """Pack, call llm-service; if the prompt did not fit its context, re-pack smaller (twice at most).
        Returns (call's result, sources used)."""
        budget = p.context_tokens
        for attempt in range(3):
            passages = pack_passages(results, budget)
            sources = [_source(r) for r in passages]
            messages = build_messages(question, passages)
            try:
                return await call(messages, **self._llm_params(p)), sources
            except LLMRejected as exc:
                used = sum(estimate_tokens(f"[{x['id']}] {x.get('title') or ''}") + estimate_tokens(x["text"])
                           for x in passages)
                whole = sum(estimate_tokens(m["content"]) for m in messages)
                smaller = shrink_budget(used, whole, exc) if attempt < 2 else None
                if smaller is None:
                    exc.details = {"sources": sources}
                    raise
                budget = smaller
            except LLMUnavailable as exc:
                exc.details = {"sources": sources}
                raise
        raise AssertionError("unreachable")

    def _llm_params(self, p: RagParams) -> dict[str, Any]:
        return {"model": p.model, "max_tokens": p.max_tokens, "temperature": p.temperature, "top_p": p.top_p}

    async def answer(self, q: SearchQuery, p: RagParams) -> dict[str, Any]:
        t0 = time.perf_counter()
        results, retrieval_ms = await self._retrieve(q, p)
        out, sources = await self._ask(q.query, results, p, self.llm.chat)
        choice = out["choices"][0]
        return {
            "answer": choice["message"]["content"],
            "finish_reason": choice.get("finish_reason"),
            "model": out.get("model"),
            "sources": sources,
            "usage": out.get("usage"),
            "retrieval_ms": round(retrieval_ms, 3),
            "took_ms": round((time.perf_counter() - t0) * 1000, 3),
        }

    async def stream(self, q: SearchQuery, p: RagParams) -> AsyncIterator[bytes]:
        """Open the answer stream. Retrieval and the connection to llm-service happen before this
        returns, so a down llm-service is a 503 (with sources), not a broken 200 stream.

        Events: ``event: sources`` first, then ``data: {"delta": ...}`` chunks, then
        ``event: done`` with usage and finish_reason, then ``data: [DONE]``. A failure mid-stream
        ends with ``event: error``.
        """
        results, retrieval_ms = await self._retrieve(q, p)

        async def open_stream(messages, **params):
            chunks = self.llm.chat_stream(messages, **params)
            try:
                return chunks, await anext(chunks)
            except StopAsyncIteration:
                return chunks, None

        (chunks, first), sources = await self._ask(q.query, results, p, open_stream)

        async def events() -> AsyncIterator[bytes]:
            yield sse.encode({"sources": sources, "retrieval_ms": round(retrieval_ms, 3)}, "sources")
            usage, finish = None, None
            try:
                pending = [first] if first is not None else []
                while True:
                    chunk = pending.pop() if pending else await anext(chunks)
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        delta = (choice.get("delta") or {}).get("content")
                        if delta:
                            yield sse.encode({"delta": delta})
                        finish = choice.get("finish_reason") or finish
            except StopAsyncIteration:
                yield sse.encode({"finish_reason": finish, "usage": usage}, "done")
                yield sse.DONE
            except LLMUnavailable as exc:
                yield sse.encode({"error": {"type": exc.error_type, "message": exc.message}}, "error")
            finally:
                await chunks.aclose()

        return events()
