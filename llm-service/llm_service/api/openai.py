"""OpenAI-compatible endpoints: POST /v1/completions, POST /v1/chat/completions, GET /v1/models.

``n`` choices run as rows of one batch; ``logprobs`` come from the engine's events; structured output and
tool calls are planned by :mod:`..structured` and enforced by the grammar the engine applies per row."""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from fastapi import APIRouter, Request

from stack_common.errors import ServiceError

from ..engine.base import GenerationEvent, TokenLogprob
from ..openai_protocol import (SSE_RESPONSE, ChatCompletion, ChatCompletionRequest, Completion, CompletionRequest,
                               ModelList, chat_body, chat_choice, chat_chunk, check_openai_fields, chunk_choice,
                               completion_body, completion_choice, model_card, new_id, usage_dict)
from ..serving import GenerationService, Prepared, Result
from ..structured import ChatStream, OutputPlan, plan_chat, read_output, template_messages
from .deps import wait_disconnect, RegistryDep, ServingDep
from .generate import sampling_of
from .sse import sse_response

router = APIRouter(prefix="/v1", tags=["openai"])


# exclude_unset: a gate without a record has no scores, and they stay absent (not null) as before.
@router.get("/models", response_model=ModelList, response_model_exclude_unset=True)
async def list_models(registry: RegistryDep) -> dict:
    return {"object": "list", "data": [model_card(n, m.created, m.quality())
                                              for n, m in sorted(registry.loaded.items())]}


# --- logprobs ------------------------------------------------------------------------------------
def token_text(b: bytes) -> str:
    """A token's text; a token that is part of a UTF-8 character reads ``bytes:\\xNN`` (as OpenAI writes it)."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{x:02x}" for x in b)


def chat_logprobs(items: list[TokenLogprob], prepared: Prepared) -> dict[str, Any]:
    tb = prepared.lease.model.grammars.token_bytes

    def entry(tid: int, lp: float) -> dict[str, Any]:
        b = tb(tid)
        return {"token": token_text(b), "logprob": lp, "bytes": list(b)}
    return {"content": [{**entry(t.token_id, t.logprob), "top_logprobs": [entry(i, lp) for i, lp in t.top]}
                        for t in items]}


def completion_logprobs(items: list[TokenLogprob], prepared: Prepared, offset: int = 0) -> dict[str, Any]:
    """The legacy shape; ``text_offset`` counts characters of the completion from ``offset``."""
    tb = prepared.lease.model.grammars.token_bytes
    tokens, offsets = [], []
    for t in items:
        text = token_text(tb(t.token_id))
        offsets.append(offset)
        offset += len(text) if not text.startswith("bytes:") else 0
        tokens.append(text)
    return {"tokens": tokens, "token_logprobs": [t.logprob for t in items],
            "top_logprobs": [{token_text(tb(i)): lp for i, lp in t.top} for t in items],
            "text_offset": offsets}


# --- n choices -------------------------------------------------------------------------------------
async def collect_all(serving: GenerationService, prepared: list[Prepared], request: Request) -> list[Result]:
    """Every choice to its end (a client that hangs up cancels them all)."""
    try:
        return list(await asyncio.gather(*(serving.collect(p, lambda: wait_disconnect(request)) for p in prepared)))
    finally:
        for p in prepared:
            p.close()


async def merged_events(serving: GenerationService, prepared: list[Prepared]) -> \
        AsyncIterator[tuple[int, GenerationEvent]]:
    """(choice index, event) of every choice as they come; a failure of one ends the stream with its error."""
    if len(prepared) == 1:
        async for ev in serving.events(prepared[0]):
            yield 0, ev
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, p: Prepared) -> None:
        try:
            async for ev in serving.events(p):
                await queue.put((i, ev, None))
        except BaseException as exc:                 # noqa: BLE001 - handed to the consumer
            await queue.put((i, None, exc))
        finally:
            await queue.put((i, None, StopAsyncIteration()))

    tasks = [asyncio.ensure_future(pump(i, p)) for i, p in enumerate(prepared)]
    open_ = len(tasks)
    try:
        while open_:
            i, ev, exc = await queue.get()
            if isinstance(exc, StopAsyncIteration):
                open_ -= 1
            elif exc is not None:
                raise exc
            else:
                yield i, ev
    finally:
        for t in tasks:
            t.cancel()
        for p in prepared:
            p.close()


def _usage(finished: list[Result] | list[GenerationEvent]) -> dict[str, int]:
    """One request's usage over its choices: the prompt once, the completions summed (OpenAI's counting)."""
    return usage_dict(finished[0].prompt_tokens, sum(r.completion_tokens for r in finished))


def _close_all(prepared: list[Prepared]):
    return lambda: [p.close() for p in prepared]


# --- /v1/completions -----------------------------------------------------------------------------
@router.post("/completions", response_model=Completion, responses=SSE_RESPONSE)
async def completions(body: CompletionRequest, request: Request, serving: ServingDep):
    check_openai_fields(body)
    if body.echo or body.suffix:
        raise ServiceError("echo and suffix are not supported", details={"param": "echo" if body.echo else "suffix"})
    prepared = await serving.prepare_n(body.n, model=body.model, precision=body.precision,
                                       max_new_tokens=body.max_tokens, sampling=sampling_of(body, body.logprobs),
                                       prompt=body.prompt_text())
    rid, model = new_id("cmpl"), prepared[0].model
    want_lp = body.logprobs is not None
    if body.stream:
        include_usage = body.include_usage()

        async def chunks():
            offsets = [0] * len(prepared)
            done: dict[int, GenerationEvent] = {}
            async for i, ev in merged_events(serving, prepared):
                if ev.text or ev.finish_reason:
                    lp = None
                    if want_lp and ev.logprobs:
                        lp = completion_logprobs(ev.logprobs, prepared[i], offsets[i])
                    offsets[i] += len(ev.text)
                    yield completion_body(rid, model, [completion_choice(i, ev.text, ev.finish_reason, lp)], None)
                if ev.finish_reason:
                    done[i] = ev
            if include_usage and done:
                yield completion_body(rid, model, [], _usage(list(done.values())))
        return sse_response(chunks(), _close_all(prepared))
    results = await collect_all(serving, prepared, request)
    choices = [completion_choice(i, r.text, r.finish_reason,
                                 completion_logprobs(r.logprobs, prepared[i]) if want_lp else None)
               for i, r in enumerate(results)]
    return completion_body(rid, model, choices, _usage(results))


# --- /v1/chat/completions --------------------------------------------------------------------------
@router.post("/chat/completions", response_model=ChatCompletion, responses=SSE_RESPONSE)
async def chat_completions(body: ChatCompletionRequest, request: Request, serving: ServingDep):
    check_openai_fields(body)
    plan = plan_chat(body.response_format.as_dict() if body.response_format else None,
                     [t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None,
                     body.tool_choice.model_dump() if hasattr(body.tool_choice, "model_dump") else body.tool_choice)
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    registry = serving.registry
    template_tools = _template_has_tools(registry, body.model)
    messages, tools = template_messages([m.as_template_dict() for m in body.messages], plan, template_tools)
    prepared = await serving.prepare_n(body.n, model=body.model, precision=body.precision, max_new_tokens=max_tokens,
                                       sampling=sampling_of(body, body.logprobs_k()), messages=messages, tools=tools,
                                       grammar=plan.grammar, grammar_param=plan.grammar_param)
    rid, model = new_id("chatcmpl"), prepared[0].model
    want_lp = body.logprobs_k() is not None
    if body.stream:
        return sse_response(_chat_stream(serving, prepared, plan, rid, model, want_lp, body.include_usage()),
                            _close_all(prepared))
    results = await collect_all(serving, prepared, request)
    choices = []
    for i, r in enumerate(results):
        content, calls, finish = read_output(r.text, plan, r.finish_reason)
        choices.append(chat_choice(i, content, finish, calls, chat_logprobs(r.logprobs, prepared[i]) if want_lp
                                   else None))
    return chat_body(rid, model, choices, _usage(results))


def _template_has_tools(registry, name: str | None) -> bool:
    loaded = registry.loaded.get(name or registry.default or "")
    return bool(loaded and loaded.tokenizer.template_has_tools)


async def _chat_stream(serving: GenerationService, prepared: list[Prepared], plan: OutputPlan, rid: str, model: str,
                       want_lp: bool, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    """Each choice's deltas as generated (:class:`..structured.ChatStream`: content, or a tool call whose
    arguments stream once its name is known); logprobs ride on the chunk of their tokens."""
    n = len(prepared)
    for i in range(n):
        yield chat_chunk(rid, model, [chunk_choice(i, {"role": "assistant", "content": ""})])
    streams = [ChatStream(plan) for _ in range(n)]
    done: dict[int, GenerationEvent] = {}
    async for i, ev in merged_events(serving, prepared):
        lp = chat_logprobs(ev.logprobs, prepared[i]) if want_lp and ev.logprobs else None
        deltas = streams[i].feed(ev.text)
        if lp is not None and not deltas:
            deltas = [{}]
        for k, delta in enumerate(deltas):
            yield chat_chunk(rid, model, [chunk_choice(i, delta, None, lp if k == 0 else None)])
        if ev.finish_reason:
            done[i] = ev
            last, finish = streams[i].finish(ev.finish_reason)
            for delta in last:
                yield chat_chunk(rid, model, [chunk_choice(i, delta)])
            yield chat_chunk(rid, model, [chunk_choice(i, {}, finish)])
    if include_usage and done:
        yield chat_chunk(rid, model, [], _usage(list(done.values())))
