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

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from stack_common.errors import ServiceError

from .engine.grammar import GrammarSpec

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
    """Sampling knobs shared by every endpoint (vLLM-style extensions top_k, repetition_penalty). A field
    that is not declared is refused (never silently dropped): 422 on /generate; on the OpenAI endpoints a
    400 like OpenAI's own "Unrecognized request argument supplied" (:func:`check_openai_fields`)."""
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

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
    json_schema: dict[str, Any] | None = Field(None, description="The output is JSON valid against this schema "
                                                                 "(constrained decoding)")
    regex: str | None = Field(None, min_length=1, max_length=10_000,
                              description="The output matches this regular expression (whole)")
    grammar: str | None = Field(None, min_length=1, max_length=100_000,
                                description="The output matches this Lark grammar (llguidance's dialect)")

    @model_validator(mode="after")
    def _one_constraint(self) -> "GenerateRequest":
        given = [n for n in ("json_schema", "regex", "grammar") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of json_schema, regex and grammar (got {', '.join(given)})")
        return self

    def grammar_spec(self) -> tuple[GrammarSpec | None, str]:
        if self.json_schema is not None:
            return GrammarSpec.json_schema(self.json_schema), "json_schema"
        if self.regex is not None:
            return GrammarSpec("regex", self.regex), "regex"
        if self.grammar is not None:
            return GrammarSpec("lark", self.grammar), "grammar"
        return None, "grammar"


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
# OpenAI request fields that change nothing here: accepted and documented as no-ops (README "llm-service").
NOOP_FIELDS = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls", "prompt_cache_key",
                         "safety_identifier"})
# OpenAI request fields this server does not implement: a 400 naming the field, never a silent drop. An
# empty or null value asks for nothing and passes (clients send e.g. "tools": [] or "logit_bias": {}).
UNSUPPORTED_FIELDS = frozenset({"functions", "function_call", "logit_bias", "audio", "modalities", "prediction",
                                "web_search_options", "reasoning_effort", "verbosity", "best_of"})
# Message fields of earlier turns a client may send back that this server does not read (the legacy
# function-calling API; tools are supported).
MESSAGE_UNSUPPORTED = frozenset({"function_call"})
MESSAGE_NOOP = frozenset({"refusal", "annotations", "audio"})
MAX_N = 16


class OpenAIFields(SamplingFields):
    model_config = ConfigDict(extra="allow", protected_namespaces=())   # checked by check_openai_fields

    model: str | None = None
    max_tokens: int | None = Field(16, description="Like OpenAI, 16 when not given")
    n: int = Field(1, ge=1, le=MAX_N, description="Choices per request, generated as rows of the same batch (a "
                                                  "seed gives choice i the seed + i)")
    stream_options: dict[str, Any] | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0, description="OpenAI's: lowers the logit of every "
                                                                      "token already generated by this much")
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0, description="OpenAI's: lowers a token's logit by "
                                                                       "this much per time it was generated")

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


def _empty(value: Any) -> bool:
    return value is None or value is False or value == [] or value == {} or value == ""


def check_openai_fields(body: OpenAIFields) -> None:
    """Refuse what this server would otherwise ignore: 400 naming the field (``details.param``), as OpenAI's
    API answers an unknown one. No-op fields pass (:data:`NOOP_FIELDS`)."""
    for name, value in (body.model_extra or {}).items():
        if name in NOOP_FIELDS:
            continue
        if name in UNSUPPORTED_FIELDS:
            if _empty(value):
                continue
            raise ServiceError(f"{name} is not supported by this server", details={"param": name})
        raise ServiceError(f"Unrecognized request argument supplied: {name}", details={"param": name})
    for i, m in enumerate(getattr(body, "messages", None) or []):
        for name, value in (m.model_extra or {}).items():
            if name in MESSAGE_NOOP or (name in MESSAGE_UNSUPPORTED and _empty(value)):
                continue
            what = "is not supported by this server" if name in MESSAGE_UNSUPPORTED else "is not a message field"
            raise ServiceError(f"messages[{i}].{name} {what}", details={"param": f"messages[{i}].{name}"})


class CompletionRequest(OpenAIFields):
    prompt: str | list[str] = Field(..., description="A string (or a list holding one string)")
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = Field(None, ge=0, le=5, description="Log-probabilities of the chosen tokens and the "
                                                               "this many most likely at each position")

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


class FunctionCallIn(BaseModel):
    name: str = Field(..., min_length=1, max_length=64)
    arguments: str = Field(..., max_length=100_000, description="The arguments as JSON text")


class ToolCallIn(BaseModel):
    """A tool call of an earlier assistant turn, sent back with the conversation."""
    id: str = Field(..., max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")     # checked by check_openai_fields
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = Field(None, max_length=64, description="assistant turns: calls made")
    tool_call_id: str | None = Field(None, max_length=256, description="tool turns: the call answered")

    def as_template_dict(self) -> dict[str, Any]:
        content = self.content
        if isinstance(content, list):
            content = "".join(p.text for p in content)
        role = "system" if self.role == "developer" else self.role
        out: dict[str, Any] = {"role": role, "content": content or ""}
        if self.tool_calls:
            out["tool_calls"] = [c.model_dump() for c in self.tool_calls]
        return out


FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., pattern=FUNCTION_NAME)
    description: str | None = Field(None, max_length=10_000)
    parameters: dict[str, Any] | None = Field(None, description="A JSON schema of the arguments object")
    strict: bool | None = None


class ToolDef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    name: str = Field(..., pattern=FUNCTION_NAME)


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., pattern=FUNCTION_NAME)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> "ResponseFormat":
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type 'json_schema' (and only then)")
        return self

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class ChatCompletionRequest(OpenAIFields):
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=256)
    max_completion_tokens: int | None = None
    logprobs: bool | None = Field(None, description="Log-probabilities of the chosen tokens")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="And of this many most likely tokens "
                                                                    "(needs logprobs: true)")
    response_format: ResponseFormat | None = Field(None, description="json_object or json_schema: the content "
                                                                     "is JSON (valid against the schema)")
    tools: list[ToolDef] | None = Field(None, max_length=128, description="Functions the model may call")
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None

    @field_validator("messages")
    @classmethod
    def _has_content(cls, v: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.as_template_dict()["content"] or m.tool_calls for m in v):
            raise ValueError("messages hold no text")
        return v

    @model_validator(mode="after")
    def _logprobs(self) -> "ChatCompletionRequest":
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def logprobs_k(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


# --- response models -----------------------------------------------------------------------------
class CompletionLogprobs(BaseModel):
    """The legacy completions shape."""
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobs | None


class Completion(BaseModel):
    """``POST /v1/completions`` without ``stream``."""
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class FunctionCall(BaseModel):
    name: str
    arguments: str


class ToolCall(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCall] | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprobOut(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobOut]


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: ChoiceLogprobs | None


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


def _body(rid: str, obj: str, model: str, choices: list[dict[str, Any]], usage: dict | None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": rid, "object": obj, "created": int(time.time()), "model": model,
                            "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return body


def completion_choice(index: int, text: str, finish: str | None, logprobs: dict | None = None) -> dict[str, Any]:
    return {"index": index, "text": text, "finish_reason": finish, "logprobs": logprobs}


def completion_body(rid: str, model: str, choices: list[dict[str, Any]], usage: dict | None) -> dict[str, Any]:
    """A completion, or (``usage`` None) one chunk of a streamed one."""
    return _body(rid, "text_completion", model, choices, usage)


def chat_choice(index: int, content: str | None, finish: str, tool_calls: list[dict] | None = None,
                logprobs: dict | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"index": index, "message": message, "finish_reason": finish, "logprobs": logprobs}


def chat_body(rid: str, model: str, choices: list[dict[str, Any]], usage: dict) -> dict[str, Any]:
    return _body(rid, "chat.completion", model, choices, usage)


def chunk_choice(index: int, delta: dict[str, Any], finish: str | None = None,
                 logprobs: dict | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}


def chat_chunk(rid: str, model: str, choices: list[dict[str, Any]], usage: dict | None = None) -> dict[str, Any]:
    """One chunk of a streamed chat completion (``choices`` empty: the usage chunk)."""
    return _body(rid, "chat.completion.chunk", model, choices, usage)


def model_card(name: str, created: int, quality: dict[str, Any] | None = None) -> dict[str, Any]:
    """OpenAI's model object; ``quality`` adds the served precision, why, and the gate's scores."""
    return {"id": name, "object": "model", "created": created, "owned_by": "llm-service", **(quality or {})}
