"""POST /v1/embeddings and GET /v1/models: the stack's own embedding models behind OpenAI's embeddings API, so
LangChain's / LlamaIndex's OpenAI embedding clients can embed with them. Texts are embedded as documents are at
ingestion (the model's passage prefix, mean pooling, L2-normalised, truncated to the model's token limit)."""
from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
from fastapi import APIRouter
from stack_common.errors import InvalidRequest, NotFound, ServiceError, TooLarge

from ..deps import EmbeddersDep, SettingsDep
from ..schemas import EmbeddingModelList, EmbeddingsRequest, EmbeddingsResponse

router = APIRouter(prefix="/v1", tags=["embeddings"])
MAX_INPUTS = 256
CREATED = 1_700_000_000


def _names(embedder) -> set[str]:
    """The ids a model answers to: its full id, the model's own name (with or without the org), its key."""
    base = embedder.model_id.split(":")[0]
    return {embedder.model_id, base, base.split("/")[-1], embedder.spec.key}


@router.get("/models", response_model=EmbeddingModelList)
async def models(embedders: EmbeddersDep) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": e.model_id, "object": "model", "created": CREATED,
                                        "owned_by": "search-service", "dimensions": e.dim}
                                       for e in embedders.values()]}


@router.post("/embeddings", response_model=EmbeddingsResponse)
async def embeddings(body: EmbeddingsRequest, embedders: EmbeddersDep, settings: SettingsDep) -> dict[str, Any]:
    for name in body.model_extra or {}:
        raise ServiceError(f"Unrecognized request argument supplied: {name}", details={"param": name})
    embedder = next((e for e in embedders.values() if body.model in _names(e)), None)
    if embedder is None:
        raise NotFound(f"model {body.model!r} is not served here; embedding models: "
                       f"{[e.model_id for e in embedders.values()]}", details={"param": "model"})
    if body.dimensions is not None and body.dimensions != embedder.dim:
        raise ServiceError(f"dimensions: {embedder.model_id} has {embedder.dim} dimensions and cannot shorten "
                           "them", details={"param": "dimensions"})
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or len(texts) > MAX_INPUTS:
        raise InvalidRequest(f"input: give 1 to {MAX_INPUTS} texts, got {len(texts)}")
    for i, t in enumerate(texts):
        if not t.strip():
            raise InvalidRequest(f"input[{i}]: empty text")
        if len(t) > settings.max_text_chars:
            raise TooLarge(f"input[{i}]: {len(t)} characters exceeds the limit of {settings.max_text_chars}")

    def run() -> tuple[np.ndarray, int]:
        return embedder.encode(texts), sum(embedder.token_count(t) for t in texts)

    vecs, tokens = await asyncio.to_thread(run)
    data = []
    for i, v in enumerate(vecs):
        v = np.asarray(v, dtype="<f4")
        emb = base64.b64encode(v.tobytes()).decode() if body.encoding_format == "base64" else v.tolist()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return {"object": "list", "data": data, "model": embedder.model_id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
