"""POST /tokenize and /detokenize (vLLM's shapes): count a prompt's tokens against the model's context before
sending it, or see what ids mean. A chat request's ``messages`` are tokenized through the model's chat
template, exactly as /v1/chat/completions would prefill them."""
from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, model_validator
from stack_common.errors import InvalidRequest, ServiceError

from ..engine.tokenizer import ChatTemplateError
from ..openai_protocol import ChatMessage
from ..structured import OutputPlan, template_messages
from .deps import RegistryDep, SettingsDep

router = APIRouter(tags=["tokenize"])


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, max_length=128, description="Default: the default model")
    prompt: str | None = Field(None, description="Raw text (special tokens added as /generate adds them)")
    messages: list[ChatMessage] | None = Field(None, min_length=1, max_length=256,
                                               description="Chat turns, rendered by the model's chat template")
    add_special_tokens: bool = Field(True, description="For `prompt` only")
    add_generation_prompt: bool = Field(True, description="For `messages` only: end with the assistant's turn")

    @model_validator(mode="after")
    def _one_input(self) -> "TokenizeRequest":
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt and messages")
        return self


class TokenizeResponse(BaseModel):
    model: str
    tokens: list[int]
    count: int
    max_model_len: int = Field(description="The model's context length: prompt plus generated tokens")


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, max_length=128)
    tokens: list[int] = Field(..., max_length=131072)


class DetokenizeResponse(BaseModel):
    model: str
    prompt: str


def _check_size(text: str, limit: int) -> None:
    if len(text) > limit:
        raise ServiceError(f"the text has {len(text)} characters; the limit is {limit}")


@router.post("/tokenize", response_model=TokenizeResponse)
async def tokenize(body: TokenizeRequest, registry: RegistryDep, settings: SettingsDep) -> dict[str, Any]:
    async with await registry.acquire(body.model) as lease:
        tok = lease.model.tokenizer
        if body.messages is not None:
            try:
                # as the chat endpoint renders them (earlier tool calls and results as text)
                messages, _ = template_messages([m.as_template_dict() for m in body.messages], OutputPlan(), False)
                text = tok.apply_chat_template(messages, add_generation_prompt=body.add_generation_prompt)
            except ChatTemplateError as exc:
                raise ServiceError(f"malformed messages: {exc}") from exc
            _check_size(text, settings.max_prompt_chars)
            ids = await asyncio.to_thread(tok.encode, text, False)
        else:
            _check_size(body.prompt, settings.max_prompt_chars)
            ids = await asyncio.to_thread(tok.encode, body.prompt, body.add_special_tokens)
        return {"model": lease.model.name, "tokens": ids, "count": len(ids),
                "max_model_len": lease.model.context_length}


@router.post("/detokenize", response_model=DetokenizeResponse)
async def detokenize(body: DetokenizeRequest, registry: RegistryDep) -> dict[str, Any]:
    async with await registry.acquire(body.model) as lease:
        vocab = int(lease.model.manifest.vocab_size)
        bad = [t for t in body.tokens if not 0 <= t < vocab]
        if bad:
            raise InvalidRequest(f"tokens: {bad[:5]} outside the vocabulary (0..{vocab - 1})")
        return {"model": lease.model.name, "prompt": await asyncio.to_thread(lease.model.tokenizer.decode, body.tokens)}
