"""POST /generate: raw prompt in, text out (or SSE with ``stream: true``)."""
from __future__ import annotations

from fastapi import APIRouter, Request

from ..openai_protocol import SSE_RESPONSE, GenerateRequest, GenerateResponse, stop_tuple, usage_dict
from .deps import wait_disconnect, ServingDep
from .sse import sse_response

router = APIRouter(tags=["generate"])


def sampling_of(body, logprobs: int | None = None) -> dict:
    """The engine's sampling parameters of a request; ``logprobs``: None = off, k = chosen + k most likely."""
    return {"temperature": body.temperature, "top_p": body.top_p, "top_k": body.top_k,
            "repetition_penalty": body.repetition_penalty, "seed": body.seed, "stop": stop_tuple(body.stop),
            "presence_penalty": getattr(body, "presence_penalty", 0.0),
            "frequency_penalty": getattr(body, "frequency_penalty", 0.0), "logprobs": logprobs}


@router.post("/generate", response_model=GenerateResponse,
             responses=SSE_RESPONSE)
async def generate(body: GenerateRequest, request: Request, serving: ServingDep):
    grammar, param = body.grammar_spec()
    prepared = await serving.prepare(model=body.model, precision=body.precision, max_new_tokens=body.max_new_tokens,
                                     sampling=sampling_of(body), prompt=body.prompt, grammar=grammar,
                                     grammar_param=param)
    if body.stream:
        async def chunks():
            async for ev in serving.events(prepared):
                chunk = {"text": ev.text, "model": prepared.model, "precision": prepared.precision,
                         "finish_reason": ev.finish_reason}
                if ev.finish_reason is not None:
                    chunk["usage"] = usage_dict(ev.prompt_tokens, ev.completion_tokens)
                yield chunk
        return sse_response(chunks(), prepared.close)
    r = await serving.collect(prepared, lambda: wait_disconnect(request))
    return GenerateResponse(text=r.text, model=prepared.model, precision=prepared.precision,
                            finish_reason=r.finish_reason, usage=usage_dict(r.prompt_tokens, r.completion_tokens))
