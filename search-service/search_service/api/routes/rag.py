"""POST /rag: hybrid retrieval → prompt with the top passages → llm-service → answer with sources."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from stack_common.http_errors import error_responses

from ...rag import RagParams
from ..deps import RagDep, SettingsDep
from ..schemas import RagRequest, RagResponse
from .search import to_query

router = APIRouter(tags=["rag"])


@router.post("/rag", response_model=RagResponse, response_model_exclude_none=True,
             responses=error_responses(502, 503, s502="llm-service refused the request for a reason that is not "
                                                          "the client's (its status is in the message)",
                                       s503="llm-service down or too slow; `error.details.sources` still "
                                            "lists the retrieved passages, and `error.details.extractive` "
                                            "the extractive answer (unless extractive_fallback is false)"))
async def rag(req: RagRequest, rag: RagDep, settings: SettingsDep):
    """Answer a question from the collection, with citation spans into the answer and a grounding check.
    With `stream: true` the answer comes as server-sent events: `event: sources` first, then
    `data: {"delta": ...}` chunks, `event: done` (answer, citations, grounded, answer_type, usage,
    finish_reason), `data: [DONE]`; a failure mid-stream ends with `event: error`."""
    q = to_query(req, "hybrid", settings)
    params = RagParams(max_tokens=req.max_tokens or settings.rag_max_tokens, temperature=req.temperature,
                       top_p=req.top_p, model=req.model or settings.llm_model,
                       context_tokens=req.context_tokens or settings.rag_context_tokens,
                       sentences_per_passage=req.sentences_per_passage or settings.rag_sentences_per_passage,
                       extractive_fallback=req.extractive_fallback,
                       history=tuple((m.role, m.content) for m in req.messages or ()))
    if req.stream:
        events = await rag.stream(q, params)
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
    return await rag.answer(q, params)
