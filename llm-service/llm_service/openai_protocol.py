"""Request/response models: the OpenAI-compatible ones (completions, chat completions, models), the
plain ``/generate`` API, and the status bodies of ``/readyz`` and ``/admin``. Field ranges are checked here
(422 with the field); limits that depend on the settings or the model (max_new_tokens limit, context
length) are checked by the serving layer (400).

The routes build plain dicts (the builders at the end) and declare the response models below, so the
OpenAPI spec documents what they return and the schemathesis run checks it. Streams are
``text/event-stream`` (:data:`SSE_RESPONSE`): each event's data is one JSON chunk, then ``[DONE]``."""
from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

StopT = str | list[str] | None


def _check_stop(v: StopT) -> StopT:
    items = [v] if isinstance(v, str) else (v or [])
    if len(items) > 16:
        raise ValueError("at most 16 stop strings")
    if any(len(s) == 0 or len(s) > 256 for s in items):
        raise ValueError("stop strings must have 1 to 256 characters")
    return v


def stop_tuple(v: StopT) -> tuple[str, ...]:
    return (v,) if isinstance(v, str) else tuple(v or ())


class SamplingFields(BaseModel):
    """Sampling knobs shared by every endpoint (vLLM-style extensions top_k, repetition_penalty)."""
    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, description="0 = off")
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0, description="1 = off")
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: StopT = None
    stream: bool = False
    precision: str | None = Field(None, max_length=16, description="Model variant (int8, fp32, ...); "
                                                                   "default: the model's loaded default")

    @field_validator("stop")
    @classmethod
    def _v_stop(cls, v: StopT) -> StopT:
        return _check_stop(v)


# --- /generate ---------------------------------------------------------------------------------
class GenerateRequest(SamplingFields):
    prompt: str = Field(..., min_length=1, description="Raw prompt (no chat template applied)")
    max_new_tokens: int | None = Field(None, description="Default: LLM_DEFAULT_MAX_NEW_TOKENS")
    model: str | None = None
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy (the default here)")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class GenerateResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    text: str
    model: str
    precision: str
    finish_reason: str
    usage: Usage


# --- OpenAI: completions -----------------------------------------------------------------------
class OpenAIFields(SamplingFields):
    model: str | None = None
    max_tokens: int | None = Field(16, description="Like OpenAI, 16 when not given")
    n: int = Field(1, ge=1, le=1, description="Only n=1 is supported")
    stream_options: dict[str, Any] | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logprobs: Any = None
    user: str | None = None

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class CompletionRequest(OpenAIFields):
    prompt: str | list[str] = Field(..., description="A string (or a list holding one string)")
    echo: bool = False
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("exactly one prompt per request (batching happens server-side)")
        text = v if isinstance(v, str) else v[0]
        if not text:
            raise ValueError("prompt must not be empty")
        return v

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def as_template_dict(self) -> dict[str, Any]:
        content = self.content
        if isinstance(content, list):
            content = "".join(p.text for p in content)
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": content or ""}


class ChatCompletionRequest(OpenAIFields):
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=256)
    max_completion_tokens: int | None = None

    @field_validator("messages")
    @classmethod
    def _has_content(cls, v: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.as_template_dict()["content"] for m in v):
            raise ValueError("messages hold no text")
        return v


# --- response models -----------------------------------------------------------------------------
class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: None


class Completion(BaseModel):
    """``POST /v1/completions`` without ``stream``."""
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: None


class ChatCompletion(BaseModel):
    """``POST /v1/chat/completions`` without ``stream``."""
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class GatePolicy(BaseModel):
    task_tolerance: float
    agreement_floor: float
    max_new_tokens: int


class GateVariant(BaseModel):
    passed: bool
    task_score: float
    agreement_top1: float
    kl_nats: float
    tokens_per_s: float | None
    reason: str


class GateStatus(BaseModel):
    """The quality gate on this CPU kind; the scores only once it has a record (``state`` measured)."""
    state: Literal["measured", "measuring", "failed", "disabled", "none"]
    cpu_kind: str | None = None
    chosen: str | None = None
    measured_at: str | None = None
    policy: GatePolicy | None = None
    variants: dict[str, GateVariant] | None = None


class ServedQuality(BaseModel):
    """The precision a model serves by default, why (request, setting, gate, device, ungated), the gate's scores."""
    precision: str
    precision_source: str
    gate: GateStatus


class ModelCard(ServedQuality):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    """``GET /v1/models``: the loaded models."""
    object: Literal["list"]
    data: list[ModelCard]


class VariantRuntime(BaseModel):
    provider: str
    running: int
    waiting: int


class ModelStatus(ServedQuality):
    """A loaded model (``/admin``)."""
    name: str
    default_precision: str
    precisions: dict[str, VariantRuntime]
    available_precisions: list[str]
    context_length: int
    in_flight: int
    has_chat_template: bool


class AdminModels(BaseModel):
    default: str | None
    on_disk: list[str]
    loaded: list[ModelStatus]


class ModelLoaded(ModelStatus):
    status: Literal["loaded"]


class ModelUnloaded(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    model: str
    status: Literal["unloaded", "draining"] = Field(description="draining: requests still in flight finish first")
    in_flight: int


class DefaultSet(ModelStatus):
    status: Literal["ok"]
    default: str


class Alive(BaseModel):
    status: Literal["ok"]


class Ready(ServedQuality):
    """The default model is loaded (its served precision and gate beside it)."""
    status: Literal["ready"]
    default_model: str
    loaded: list[str]


class NotReady(BaseModel):
    status: Literal["not_ready"]
    reason: str
    models_on_disk: list[str]


# A streamed response (``stream: true``): one SSE event per chunk, each ``data:`` a JSON object (the
# endpoint's chunk; an error that happens once the stream has started is the last one, as
# ``{"error": {...}}``), then ``data: [DONE]``. Documented beside the JSON response of the same 200.
SSE_RESPONSE: dict[Any, dict[str, Any]] = {200: {
    "description": "A JSON body, or with `stream: true` server-sent events (text/event-stream): one `data:` "
                   "line per chunk (a JSON object), then `data: [DONE]`.",
    "content": {"text/event-stream": {"schema": {
        "type": "object", "required": ["data"],
        "properties": {"event": {"const": "message"},
                       "data": {"type": "string", "pattern": r"^(\{.*\}|\[DONE\])$"}}}}}}}


# --- response builders (plain dicts: exactly OpenAI's shapes) ---------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage_dict(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_body(rid: str, model: str, text: str, finish: str | None, usage: dict | None,
                    chunk: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
                            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]}
    if usage is not None or not chunk:
        body["usage"] = usage
    return body


def chat_body(rid: str, model: str, text: str, finish: str, usage: dict) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish, "logprobs": None}],
            "usage": usage}


def chat_chunk(rid: str, model: str, delta: dict[str, Any] | None, finish: str | None,
               usage: dict | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()),
                            "model": model,
                            "choices": [] if delta is None else
                            [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
    if usage is not None:
        body["usage"] = usage
    return body


def model_card(name: str, created: int, quality: dict[str, Any] | None = None) -> dict[str, Any]:
    """OpenAI's model object; ``quality`` adds the served precision, why, and the gate's scores."""
    return {"id": name, "object": "model", "created": created, "owned_by": "llm-service", **(quality or {})}
