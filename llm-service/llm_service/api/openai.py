"""OpenAI-compatible endpoints: POST /v1/completions, POST /v1/chat/completions, GET /v1/models."""
from __future__ import annotations

from fastapi import APIRouter, Request

from stack_common.errors import ServiceError

from ..openai_protocol import (SSE_RESPONSE, ChatCompletion, ChatCompletionRequest, Completion, CompletionRequest,
                               ModelList, OpenAIFields, chat_body, chat_chunk, check_openai_fields, completion_body,
                               model_card, new_id, usage_dict)
from .deps import wait_disconnect, RegistryDep, ServingDep
from .generate import sampling_of
from .sse import sse_response

router = APIRouter(prefix="/v1", tags=["openai"])


def _unsupported(body: OpenAIFields) -> None:
    check_openai_fields(body)


# exclude_unset: a gate without a record has no scores, and they stay absent (not null) as before.
@router.get("/models", response_model=ModelList, response_model_exclude_unset=True)
async def list_models(registry: RegistryDep) -> dict:
    return {"object": "list", "data": [model_card(n, m.created, m.quality())
                                              for n, m in sorted(registry.loaded.items())]}


@router.post("/completions", response_model=Completion,
             responses=SSE_RESPONSE)
async def completions(body: CompletionRequest, request: Request, serving: ServingDep):
    _unsupported(body)
    if body.echo or body.suffix:
        raise ServiceError("echo and suffix are not supported")
    prepared = await serving.prepare(model=body.model, precision=body.precision, max_new_tokens=body.max_tokens,
                                     sampling=sampling_of(body), prompt=body.prompt_text())
    rid = new_id("cmpl")
    if body.stream:
        include_usage = body.include_usage()

        async def chunks():
            async for ev in serving.events(prepared):
                if ev.text or ev.finish_reason:
                    yield completion_body(rid, prepared.model, ev.text, ev.finish_reason, None, chunk=True)
                if ev.finish_reason and include_usage:
                    body_ = completion_body(rid, prepared.model, "", None, None, chunk=True)
                    body_["choices"] = []
                    body_["usage"] = usage_dict(ev.prompt_tokens, ev.completion_tokens)
                    yield body_
        return sse_response(chunks(), prepared.close)
    r = await serving.collect(prepared, lambda: wait_disconnect(request))
    return completion_body(rid, prepared.model, r.text, r.finish_reason,
                           usage_dict(r.prompt_tokens, r.completion_tokens))


@router.post("/chat/completions", response_model=ChatCompletion,
             responses=SSE_RESPONSE)
async def chat_completions(body: ChatCompletionRequest, request: Request, serving: ServingDep):
    _unsupported(body)
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    prepared = await serving.prepare(model=body.model, precision=body.precision, max_new_tokens=max_tokens,
                                     sampling=sampling_of(body),
                                     messages=[m.as_template_dict() for m in body.messages])
    rid = new_id("chatcmpl")
    if body.stream:
        include_usage = body.include_usage()

        async def chunks():
            yield chat_chunk(rid, prepared.model, {"role": "assistant", "content": ""}, None)
            async for ev in serving.events(prepared):
                if ev.text:
                    yield chat_chunk(rid, prepared.model, {"content": ev.text}, None)
                if ev.finish_reason:
                    yield chat_chunk(rid, prepared.model, {}, ev.finish_reason)
                    if include_usage:
                        yield chat_chunk(rid, prepared.model, None, None,
                                         usage_dict(ev.prompt_tokens, ev.completion_tokens))
        return sse_response(chunks(), prepared.close)
    r = await serving.collect(prepared, lambda: wait_disconnect(request))
    return chat_body(rid, prepared.model, r.text, r.finish_reason, usage_dict(r.prompt_tokens, r.completion_tokens))
