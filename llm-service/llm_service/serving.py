"""The generation use case, shared by /generate and the OpenAI endpoints (routes only wire).

``prepare`` resolves the model (a lease), tokenizes (chat template for messages) and checks the limits;
``collect`` runs a request to the end (cancelled when the client disconnects); ``events`` streams it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

from stack_common.errors import ClientClosed, ContextTooLong, Failed, ServiceError, TimedOut

from .core.settings import Settings
from .engine.base import GenerationEvent, GenerationRequest, SamplingParams, TokenLogprob
from .engine.grammar import GrammarError, GrammarSpec
from .engine.tokenizer import ChatTemplateError
from .registry import Lease, ModelRegistry

log = logging.getLogger("llm_service.serving")


class GenerationTimeout(TimedOut):
    """The request ran past LLM_REQUEST_TIMEOUT_S."""


class GenerationFailed(Failed):
    error_type = "generation_error"


@dataclass
class Prepared:
    """A validated, queued request: holds its model lease and its engine handle until ``close``."""
    lease: Lease
    request: GenerationRequest
    handle: Any = None
    finished: bool = False
    closed: bool = False

    @property
    def model(self) -> str:
        return self.lease.model.name

    @property
    def precision(self) -> str:
        return self.lease.precision

    def close(self) -> None:
        """Idempotent: stop the generation if it still runs (client gone) and release the model."""
        if self.closed:
            return
        self.closed = True
        if self.handle is not None:
            self.handle.cancelled = True
            if not self.finished:
                self.lease.registry.metrics.request_failure.labels("cancelled").inc()
        self.lease.release()


@dataclass
class Result:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[TokenLogprob] | None = None


class GenerationService:
    def __init__(self, settings: Settings, registry: ModelRegistry) -> None:
        self.settings = settings
        self.registry = registry

    async def prepare(self, **kwargs) -> Prepared:
        """One generation: :meth:`prepare_n` with n = 1."""
        return (await self.prepare_n(1, **kwargs))[0]

    async def prepare_n(self, n: int, *, model: str | None, precision: str | None, max_new_tokens: int | None,
                        sampling: dict, prompt: str | None = None, messages: list[dict] | None = None,
                        tools: list[dict] | None = None, grammar: GrammarSpec | None = None,
                        grammar_param: str = "grammar") -> list[Prepared]:
        """``n`` generations of one prompt (OpenAI's ``n``), submitted together so they run as rows of the
        same batch; with a ``seed``, generation i gets seed + i. ``grammar``: the output must match it
        (constrained decoding); a schema, regex or grammar that does not compile is a 400 naming
        ``grammar_param``. Each returned :class:`Prepared` holds its own lease."""
        s = self.settings
        count = s.default_max_new_tokens if max_new_tokens is None else max_new_tokens
        if not 1 <= count <= s.max_new_tokens_limit:
            raise ServiceError(f"max_new_tokens must be between 1 and {s.max_new_tokens_limit}, got {count}")
        if prompt is not None and len(prompt) > s.max_prompt_chars:
            raise ServiceError(f"prompt has {len(prompt)} characters; the limit is {s.max_prompt_chars}")
        lease = await self.registry.acquire(model, precision)
        out: list[Prepared] = []
        leases = [lease]
        try:
            ids = await self._encode(lease, prompt, messages, tools)
            ctx = lease.model.context_length
            if len(ids) + count > ctx:
                raise ContextTooLong(f"prompt has {len(ids)} tokens and max_new_tokens is {count}: "
                                     f"{len(ids) + count} exceeds the context length of {lease.model.name} "
                                     f"({ctx} tokens)",
                                     details={"prompt_tokens": len(ids), "max_new_tokens": count,
                                              "context_length": ctx})
            requests = []
            for i in range(n):
                row = dict(sampling)
                if i and row.get("seed") is not None:
                    row["seed"] = (row["seed"] + i) % 2**63
                constraint = None
                if grammar is not None:
                    try:
                        constraint = await asyncio.to_thread(lease.model.grammars.constraint, grammar)
                    except GrammarError as exc:
                        raise ServiceError(f"{grammar_param}: {exc}", details={"param": grammar_param}) from None
                requests.append(GenerationRequest(ids, SamplingParams(max_new_tokens=count, **row),
                                                  lease.model.eos_token_ids, constraint))
            leases += [lease.share() for _ in range(n - 1)]
            for held, request in zip(leases, requests):       # back to back: one batch
                prepared = Prepared(held, request)
                prepared.handle = held.engine.submit(request)    # 429 here, before any response starts
                out.append(prepared)
            return out
        except BaseException:
            for held in leases[len(out):]:
                held.release()
            for prepared in out:
                prepared.close()
            raise

    async def _encode(self, lease: Lease, prompt: str | None, messages: list[dict] | None,
                      tools: list[dict] | None) -> list[int]:
        tok = lease.model.tokenizer
        if messages is not None:
            try:
                text = tok.apply_chat_template(messages, add_generation_prompt=True, tools=tools)
            except ChatTemplateError as exc:
                raise ServiceError(f"malformed messages: {exc}") from exc
            if len(text) > self.settings.max_prompt_chars:
                raise ServiceError(f"messages have {len(text)} characters; the limit is "
                                   f"{self.settings.max_prompt_chars}")
            ids = await asyncio.to_thread(tok.encode, text, False)
        else:
            ids = await asyncio.to_thread(tok.encode, prompt or "", True)
        if not ids:
            raise ServiceError("prompt is empty after tokenization")
        return ids

    async def events(self, prepared: Prepared) -> AsyncIterator[GenerationEvent]:
        """Events to the end; releases the lease. Raises GenerationTimeout past request_timeout_s."""
        deadline = time.monotonic() + self.settings.request_timeout_s
        agen = prepared.lease.engine.events(prepared.handle)
        try:
            while True:
                left = deadline - time.monotonic()
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancellation that lands
                    # while the inner await completes (a token every few ms makes that likely), so a
                    # client that hung up kept its generation running to max_new_tokens.
                    async with asyncio.timeout(max(left, 0.001)):
                        event = await anext(agen)
                except StopAsyncIteration:
                    prepared.finished = True
                    return
                except TimeoutError:
                    prepared.finished = True
                    self.registry.metrics.request_failure.labels("timeout").inc()
                    raise GenerationTimeout(f"generation took longer than {self.settings.request_timeout_s}s "
                                            "(LLM_REQUEST_TIMEOUT_S) and was cancelled") from None
                if event.error:
                    prepared.finished = True
                    raise GenerationFailed(event.error)
                if event.finish_reason is not None:
                    prepared.finished = True
                yield event
                if prepared.finished:
                    return
        finally:
            await agen.aclose()
            prepared.close()

    async def collect(self, prepared: Prepared, disconnected: Callable[[], Awaitable[object]] | None = None) -> Result:
        """Run to the end; when ``disconnected`` returns first (the client went away), cancel the
        generation (its batch row is dropped at the next step)."""
        async def run() -> Result:
            parts: list[str] = []
            logprobs: list[TokenLogprob] | None = [] if prepared.request.params.logprobs is not None else None
            last = None
            async for ev in self.events(prepared):
                parts.append(ev.text)
                if logprobs is not None and ev.logprobs:
                    logprobs.extend(ev.logprobs)
                last = ev
            assert last is not None
            return Result("".join(parts), last.finish_reason or "stop", last.prompt_tokens, last.completion_tokens,
                          logprobs)

        task = asyncio.ensure_future(run())
        watch = asyncio.ensure_future(disconnected()) if disconnected is not None else None
        try:
            await asyncio.wait({task, watch} if watch else {task}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            if prepared.handle is not None:
                prepared.handle.cancelled = True    # the worker drops the row even before run() unwinds
            log.info("client disconnected; generation cancelled", extra={"model": prepared.model})
            raise ClientClosed("client disconnected")
        finally:
            for t in (task, watch):
                if t is not None and not t.done():
                    t.cancel()
                    try:
                        await t
                    except BaseException:
                        pass
