"""Retrieval-augmented answers that can be checked: hybrid retrieval → the query-relevant sentences of the
top passages within a budget sized for a small model → llm-service (OpenAI chat over HTTP) → each answer
sentence matched to the source sentences that support it (citation spans) → a grounding check.

* Context: :func:`grounding.select_context` — sentences, not whole abstracts: a 135M model answers better
  from less, and prefill (the bulk of its latency) is linear in the prompt.
* Attribution is done here, server-side, whether or not the model wrote ``[id]`` markers; markers that name
  no returned source are removed.
* Grounding: an answer with no supported sentence is ``grounded: false`` and, unless the request opts out
  (``extractive_fallback: false``), replaced by an extractive answer — the source sentences closest to the
  question, cited — with ``answer_type: "extractive"``, the model's text in ``generated_answer`` and
  ``replaced_because`` (unsupported; or empty, stub, echo: a text that is no answer is replaced too).
* The grounding model (context selection, citations, the extractive answer) is chosen per request by the
  scripts of the question and the retrieved texts (:meth:`RagService.grounder`): MiniLM when it covers them
  all (English), else a loaded model that does (multilingual-e5-small for Korean), each with its own
  calibrated support threshold (``EmbeddingModel.support_threshold``). MiniLM cannot tell a Korean answer's
  source from random Korean text (``scripts/eval_rag.py --calibrate --judge-model``, README "RAG").
* Conversation: earlier turns (``messages``) go into the prompt, and a follow-up question is made
  standalone for retrieval by prefixing the previous question (:func:`standalone_query`).

If llm-service is down, overloaded or too slow, the caller gets a 503 whose ``details`` still carry the
sources and (with the fallback on) the extractive answer.
"""
from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from stack_common import sse

from . import grounding
from .embeddings import Embedder, Embedders
from .grounding import ContextPassage, estimate_tokens
from .llm_client import LLMClient, LLMRejected, LLMUnavailable
from .search import SearchQuery, SearchService
from .text import query_script

# The prompt's shape was chosen with scripts/eval_rag.py on SciFact and a few plain questions (README "RAG"): a
# 135M instruct model given "Sources: ... Question: ..." and rules in the system message mostly answered "The
# answer to this question is:" or repeated the question; context first, then the question and "Answer in one
# sentence." made it answer.
SYSTEM_PROMPT = "You are a helpful assistant. Use the context to answer."
ANSWER_INSTRUCTION = "Answer in one sentence."
MIN_CONTEXT_TOKENS = 32
HISTORY_TOKENS = 160        # earlier turns kept in the prompt (the latest first, estimated)
# A follow-up leans on the previous turn: short, or starting with/holding a word that points back.
_FOLLOW_UP = re.compile(r"^(and|but|so|what about|how about|why|also)\b|\b(it|its|they|them|their|this|that|these|"
                        r"those|he|she|his|her|there)\b|(그것|이것|저것|그거|이거|그럼|그러면|그건|이건|거기)", re.I)


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


@dataclass(frozen=True)
class RagParams:
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float | None = None
    model: str | None = None
    context_tokens: int = 256           # budget for the selected source sentences
    sentences_per_passage: int = 3
    extractive_fallback: bool = True
    history: tuple[tuple[str, str], ...] = field(default_factory=tuple)     # earlier (role, content) turns


def standalone_query(question: str, history: tuple[tuple[str, str], ...]) -> str:
    """The retrieval query: ``question`` itself, or, for a follow-up (short, or pointing back with "it",
    "that", "그것", ...), the previous user question followed by it."""
    previous = next((c for r, c in reversed(history) if r == "user" and c.strip()), None)
    if previous is None:
        return question
    if len(question.split()) <= 4 or _FOLLOW_UP.search(question):
        return f"{' '.join(previous.split())} {question}"
    return question


def build_messages(question: str, context: list[ContextPassage],
                   history: tuple[tuple[str, str], ...] = ()) -> list[dict[str, str]]:
    blocks = [(f"[{p.id}] {p.title}" if p.title else f"[{p.id}]") + f"\n{p.text}" for p in context]
    sources = "\n\n".join(blocks) if blocks else "(nothing found)"
    turns: list[dict[str, str]] = []
    budget = HISTORY_TOKENS
    for role, content in reversed(history):
        cost = estimate_tokens(content)
        if cost > budget:
            break
        budget -= cost
        turns.insert(0, {"role": role, "content": content})
    return [{"role": "system", "content": SYSTEM_PROMPT}, *turns,
            {"role": "user", "content": f"Context:\n{sources}\n\n{question}\n{ANSWER_INSTRUCTION}"}]


def _source(p: ContextPassage) -> dict[str, Any]:
    return {"id": p.id, "title": p.title, "score": p.score, "sentences": p.sentences}


@dataclass
class Prepared:
    """A request's grounding model and what it embedded: the query, and each result's sentences."""
    embedder: Embedder
    qvec: np.ndarray
    sentences: list[list[str]]
    vectors: list[np.ndarray]

    def grounding(self) -> dict[str, Any]:
        """What the response says of it (``grounding``)."""
        return {"model": self.embedder.spec.key, "threshold": self.embedder.spec.support_threshold}


class RagService:
    def __init__(self, searcher: SearchService, llm: LLMClient, embedders: Embedders) -> None:
        self.searcher = searcher
        self.llm = llm
        self.embedders = embedders

    def grounder(self, query: str, results: list[dict[str, Any]]) -> Embedder:
        """The model that grounds this answer: the first loaded of MiniLM (its thresholds are the project's
        reference) and then the others whose scripts cover the question's and every result's script; MiniLM
        (or the default model) when none covers them all."""
        scripts = {s for s in (query_script(query), *(query_script(r.get("text") or "") for r in results)) if s}
        minilm = self.embedders.get("minilm")
        ordered = ([minilm] if minilm else []) + [e for e in self.embedders.values() if e is not minilm]
        return next((e for e in ordered if scripts <= e.spec.scripts),
                    minilm or self.embedders.get(self.embedders.default))

    # -- retrieval and context ----------------------------------------------------------------------
    async def _retrieve(self, q: SearchQuery, p: RagParams) -> tuple[str, list[dict[str, Any]], float]:
        t0 = time.perf_counter()
        query = standalone_query(q.query, p.history)
        found = await self.searcher.search(q if query == q.query else dataclasses.replace(q, query=query))
        return query, found["results"], (time.perf_counter() - t0) * 1000

    @staticmethod
    def _embed(embedder: Embedder, texts: list[str]) -> np.ndarray:
        # symmetric comparisons (question or answer sentence vs source sentence): the query prefix on both sides
        if not texts:
            return np.zeros((0, embedder.dim), dtype=np.float32)
        return embedder.encode(texts, kind="query")

    async def _prepare(self, query: str, results: list[dict[str, Any]]) -> Prepared:
        """The grounding model, the sentences of every result and their embeddings, and the query's (one
        embedding call)."""
        embedder = self.grounder(query, results)
        sentences = [[s.text for s in grounding.split_sentences(r.get("text") or "")] for r in results]
        flat = [s for ss in sentences for s in ss]
        vecs = await asyncio.to_thread(self._embed, embedder, [query, *flat])
        qvec, rest, per = vecs[0], vecs[1:], []
        for ss in sentences:
            per.append(rest[:len(ss)])
            rest = rest[len(ss):]
        return Prepared(embedder, qvec, sentences, per)

    # -- answer -------------------------------------------------------------------------------------
    async def _ask(self, question: str, results: list[dict[str, Any]], prepared: Prepared, p: RagParams, call):
        """Select the context, call llm-service; if the prompt did not fit its context, select within a
        smaller budget (twice at most). Returns (call's result, context)."""
        qvec, sentences, vectors = prepared.qvec, prepared.sentences, prepared.vectors
        budget = p.context_tokens
        for attempt in range(3):
            context = grounding.select_context(qvec, results, sentences, vectors, budget, p.sentences_per_passage)
            messages = build_messages(question, context, p.history)
            try:
                return await call(messages, **self._llm_params(p)), context
            except LLMRejected as exc:
                used = sum(estimate_tokens(f"[{c.id}] {c.title or ''}") + estimate_tokens(c.text) for c in context)
                whole = sum(estimate_tokens(m["content"]) for m in messages)
                smaller = shrink_budget(used, whole, exc) if attempt < 2 else None
                if smaller is None:
                    exc.details = self._failure_details(prepared, context, p)
                    raise
                budget = smaller
            except LLMUnavailable as exc:
                exc.details = self._failure_details(prepared, context, p)
                raise
        raise AssertionError("unreachable")

    def _failure_details(self, prepared: Prepared, context: list[ContextPassage], p: RagParams) -> dict[str, Any]:
        details: dict[str, Any] = {"sources": [_source(c) for c in context], "grounding": prepared.grounding()}
        if p.extractive_fallback and context:
            text, citations = grounding.extractive_answer(prepared.qvec, context)
            details["extractive"] = {"answer": text, "citations": [c.as_dict() for c in citations]}
        return details

    def _llm_params(self, p: RagParams) -> dict[str, Any]:
        return {"model": p.model, "max_tokens": p.max_tokens, "temperature": p.temperature, "top_p": p.top_p}

    async def _check(self, generated: str, question: str, prepared: Prepared, context: list[ContextPassage],
                     p: RagParams) -> dict[str, Any]:
        """Attribution and the grounding check of a generated answer: the response fields they decide. An
        answer is replaced (with the fallback on) when no sentence of it is supported, or when it is no
        answer at all (empty, a stub, the question repeated: ``replaced_because`` says which)."""
        answer, _ = grounding.strip_unknown_markers(generated, {c.id for c in context})
        sents = grounding.split_sentences(answer)
        emb = prepared.embedder
        vecs = await asyncio.to_thread(self._embed, emb, [s.text for s in sents])
        citations = grounding.attribute(answer, vecs, sents, context, threshold=emb.spec.support_threshold)
        out: dict[str, Any] = {"answer": answer, "citations": [c.as_dict() for c in citations],
                               "grounded": bool(citations), "answer_type": "generated",
                               "grounding": prepared.grounding()}
        why = grounding.not_an_answer(answer, question) or (None if citations else "unsupported")
        if why and p.extractive_fallback and context:
            text, cites = grounding.extractive_answer(prepared.qvec, context)
            out.update(answer=text, citations=[c.as_dict() for c in cites], answer_type="extractive",
                       generated_answer=answer, replaced_because=why)
        return out

    async def answer(self, q: SearchQuery, p: RagParams) -> dict[str, Any]:
        t0 = time.perf_counter()
        query, results, retrieval_ms = await self._retrieve(q, p)
        prepared = await self._prepare(query, results)
        out, context = await self._ask(q.query, results, prepared, p, self.llm.chat)
        choice = out["choices"][0]
        checked = await self._check(choice["message"]["content"] or "", q.query, prepared, context, p)
        return {
            **checked,
            "finish_reason": choice.get("finish_reason"),
            "model": out.get("model"),
            "sources": [_source(c) for c in context],
            "query": query,
            "usage": out.get("usage"),
            "retrieval_ms": round(retrieval_ms, 3),
            "took_ms": round((time.perf_counter() - t0) * 1000, 3),
        }

    async def stream(self, q: SearchQuery, p: RagParams) -> AsyncIterator[bytes]:
        """Open the answer stream. Retrieval and the connection to llm-service happen before this
        returns, so a down llm-service is a 503 (with sources), not a broken 200 stream.

        Events: ``event: sources`` first, then ``data: {"delta": ...}`` chunks, then ``event: done`` with
        usage, finish_reason, citations, grounded and answer_type (and, for an extractive replacement, the
        ``answer`` that replaces the streamed text), then ``data: [DONE]``. A failure mid-stream ends with
        ``event: error``.
        """
        query, results, retrieval_ms = await self._retrieve(q, p)
        prepared = await self._prepare(query, results)

        async def open_stream(messages, **params):
            chunks = self.llm.chat_stream(messages, **params)
            try:
                return chunks, await anext(chunks)
            except StopAsyncIteration:
                return chunks, None

        (chunks, first), context = await self._ask(q.query, results, prepared, p, open_stream)

        async def events() -> AsyncIterator[bytes]:
            yield sse.encode({"sources": [_source(c) for c in context], "query": query,
                              "retrieval_ms": round(retrieval_ms, 3)}, "sources")
            usage, finish, text = None, None, []
            try:
                pending = [first] if first is not None else []
                while True:
                    chunk = pending.pop() if pending else await anext(chunks)
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        delta = (choice.get("delta") or {}).get("content")
                        if delta:
                            text.append(delta)
                            yield sse.encode({"delta": delta})
                        finish = choice.get("finish_reason") or finish
            except StopAsyncIteration:
                # "answer": the text the citation spans point into (the deltas without markers that name no
                # returned source, or the extractive answer that replaces them)
                checked = await self._check("".join(text), q.query, prepared, context, p)
                yield sse.encode({"finish_reason": finish, "usage": usage, **checked}, "done")
                yield sse.DONE
            except LLMUnavailable as exc:
                yield sse.encode({"error": {"type": exc.error_type, "message": exc.message}}, "error")
            finally:
                await chunks.aclose()

        return events()
