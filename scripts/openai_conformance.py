#!/usr/bin/env python
"""OpenAI conformance of the stack, measured through the official ``openai`` client (issue 15).

Runs the pinned ``openai`` package through every OpenAI-compatible feature of a running stack and checks what
a user receives, not only the status code: each non-streamed response and each streamed chunk validates
against the client's own pydantic types (``openai.types``), structured output parses and validates against
its JSON Schema (``jsonschema``), tool call arguments validate against the declared function's parameters,
logprobs are consistent (<= 0, top alternatives sorted, the chosen token's logprob equal to its entry or
below the last alternative), embeddings decode to the same floats in both encodings.

Prints a table ``feature | result | detail`` (pass / fail / skip), then one line of JSON
``{"passed": n, "failed": n, "skipped": n, "rows": [...]}``; exits 1 when a row failed.

  python scripts/openai_conformance.py                                  # make run's stack (:8002, :8001)
  python scripts/openai_conformance.py --only json_schema --generations 50
  python scripts/openai_conformance.py --llm-url http://host:8002 --search-url '' --api-key KEY

The search-service rows (embeddings) are skipped when --search-url does not answer (or is empty); the
LangChain / LlamaIndex rows are skipped when those packages are not importable.
"""
from __future__ import annotations

import argparse
import base64
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Literal

import httpx
import jsonschema
import numpy as np
import openai
import pydantic
from openai import OpenAI
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

# --- what the rows send ---------------------------------------------------------------------------------------
USER = [{"role": "user", "content": "Tell me about the weather in Paris."}]
JSON_HINT = "Answer in JSON."      # OpenAI refuses json_object unless a message mentions JSON

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.", "strict": True,
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "unit"], "properties": {
        "city": {"type": "string", "maxLength": 24, "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two integers.",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["a", "b"], "properties": {
        "a": {"type": "integer", "minimum": -1000, "maximum": 1000},
        "b": {"type": "integer", "minimum": -1000, "maximum": 1000}}}}}
TOOLS = [WEATHER, ADD]
TOOL_SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def _obj(props: dict, **extra) -> dict:
    """A strict-mode object schema: every property required, nothing else allowed (OpenAI's strict rules)."""
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False, **extra}


# Bounded schemas (string maxLength, integer ranges, maxItems): every generation must end, even a random model's.
SCHEMAS: dict[str, dict] = {
    "flat": _obj({"name": {"type": "string", "maxLength": 20},
                  "kind": {"type": "string", "enum": ["fruit", "vegetable", "grain"]},
                  "count": {"type": "integer", "minimum": 0, "maximum": 1000}}),
    "nested": _obj({"person": _obj({"first": {"type": "string", "maxLength": 12},
                                    "age": {"type": "integer", "minimum": 0, "maximum": 120}}),
                    "address": _obj({"city": {"type": "string", "maxLength": 16},
                                     "geo": _obj({"lat": {"type": "integer", "minimum": -90, "maximum": 90},
                                                  "lon": {"type": "integer", "minimum": -180, "maximum": 180}})})}),
    "array": _obj({"tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "minItems": 1,
                            "maxItems": 3},
                   "scores": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9},
                              "minItems": 2, "maxItems": 4}}),
    "boolean": _obj({"ok": {"type": "boolean"}, "answer": {"type": "string", "enum": ["yes", "no", "maybe"]},
                     "flags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3}}),
}
THROUGHPUT_SCHEMA = _obj({"words": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 8}})
THROUGHPUT_PROMPTS = [
    "List some words about the sea.", "Name a few fruits.", "Which animals live in the forest?",
    "Give me some colours.", "Words that rhyme with cat?", "Name some tools in a kitchen.",
    "Which planets do you know?", "List musical instruments.",
]


class Fruit(pydantic.BaseModel):
    """The pydantic model of the .parse and LangChain structured-output rows."""
    name: str = pydantic.Field(max_length=20)
    color: Literal["red", "yellow", "green"]
    count: int = pydantic.Field(ge=0, le=100)


CHAT_FINISH = {"stop", "length", "tool_calls", "content_filter", "function_call"}
COMPLETION_FINISH = {"stop", "length", "content_filter"}
LOGPROB_TOL = 2e-3


class Skip(Exception):
    """The row does not apply here (a service or package that is not available)."""


class Fail(Exception):
    """The row failed; the message says what the user received instead."""


def check(cond: Any, msg: str) -> None:
    if not cond:
        raise Fail(msg)


def short(value: Any, limit: int = 80) -> str:
    s = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return s if len(s) <= limit else s[:limit - 3] + "..."


def _validate(model: type[pydantic.BaseModel], data: Any, what: str) -> None:
    """``data`` against the openai client's type (pydantic validation, unlike the client's lenient parsing)."""
    try:
        model.model_validate(data)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise Fail(f"{what} does not match openai.types.{model.__name__}: {loc}: {err['msg']} "
                   f"(got {short(err.get('input'), 60)})") from None


def _schema_errors(instance: Any, schema: dict) -> str | None:
    err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(instance))
    if err is None:
        return None
    return f"{'/'.join(str(p) for p in err.absolute_path) or '(root)'}: {err.message}"


def _json_valid(content: str | None, schema: dict) -> str | None:
    """None when ``content`` parses and validates against ``schema``, else why not."""
    if content is None:
        return "content is null"
    try:
        value = json.loads(content)
    except ValueError as exc:
        return f"not JSON ({exc}): {short(content, 60)}"
    err = _schema_errors(value, schema)
    return None if err is None else f"invalid: {err}: {short(content, 60)}"


def _tool_calls_valid(tool_calls: list | None, allowed: dict[str, dict]) -> list[tuple[str, dict]]:
    """Every call well-formed: an id, type function, a declared name, arguments that validate. Returns them."""
    check(tool_calls, f"no tool_calls (got {short(tool_calls)})")
    out = []
    for i, tc in enumerate(tool_calls):
        check(isinstance(tc.id, str) and tc.id, f"tool_calls[{i}].id is empty")
        check(tc.type == "function", f"tool_calls[{i}].type is {tc.type!r}")
        name = tc.function.name
        check(name in allowed, f"tool_calls[{i}].function.name {name!r} is not one of {sorted(allowed)}")
        try:
            args = json.loads(tc.function.arguments)
        except (TypeError, ValueError) as exc:
            raise Fail(f"tool_calls[{i}].function.arguments is not JSON ({exc}): "
                       f"{short(tc.function.arguments, 60)}") from None
        err = _schema_errors(args, allowed[name])
        check(err is None, f"tool_calls[{i}] ({name}) arguments invalid: {err}: {short(tc.function.arguments, 60)}")
        out.append((name, args))
    return out


def _check_usage(usage: Any, what: str = "usage") -> None:
    check(usage is not None, f"{what} missing")
    check(usage.prompt_tokens > 0 and usage.completion_tokens >= 0, f"{what} {usage}")
    check(usage.total_tokens == usage.prompt_tokens + usage.completion_tokens,
          f"{what}.total_tokens {usage.total_tokens} != prompt + completion")


def _check_chat(resp: ChatCompletion, n: int = 1) -> ChatCompletion:
    check(resp.object == "chat.completion", f"object is {resp.object!r}")
    check(len(resp.choices) == n, f"{len(resp.choices)} choices, expected {n}")
    check(sorted(c.index for c in resp.choices) == list(range(n)), f"indexes {[c.index for c in resp.choices]}")
    for c in resp.choices:
        check(c.message.role == "assistant", f"role {c.message.role!r}")
        check(c.finish_reason in CHAT_FINISH, f"finish_reason {c.finish_reason!r}")
    _check_usage(resp.usage)
    return resp


def _check_completion(resp: Completion, n: int = 1) -> Completion:
    check(resp.object == "text_completion", f"object is {resp.object!r}")
    check(len(resp.choices) == n, f"{len(resp.choices)} choices, expected {n}")
    check(sorted(c.index for c in resp.choices) == list(range(n)), f"indexes {[c.index for c in resp.choices]}")
    for c in resp.choices:
        check(isinstance(c.text, str), "text is not a string")
        check(c.finish_reason in COMPLETION_FINISH, f"finish_reason {c.finish_reason!r}")
    _check_usage(resp.usage)
    return resp


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= LOGPROB_TOL * max(1.0, abs(a), abs(b))


def _check_token_logprob(e: Any, k: int, greedy: bool, where: str) -> None:
    """One entry of ``choices[i].logprobs.content`` (openai.types.chat.ChatCompletionTokenLogprob)."""
    check(isinstance(e.token, str), f"{where}.token is not a string")
    check(e.logprob <= 0 and (math.isfinite(e.logprob)), f"{where}.logprob {e.logprob} is not <= 0")
    check(e.bytes is None or all(isinstance(b, int) and 0 <= b <= 255 for b in e.bytes), f"{where}.bytes {e.bytes}")
    tops = e.top_logprobs or []
    check(len(tops) == k, f"{where}: {len(tops)} top_logprobs, asked for {k}")
    lps = [t.logprob for t in tops]
    check(all(lp <= 0 for lp in lps), f"{where}.top_logprobs not <= 0: {lps}")
    check(all(a >= b for a, b in zip(lps, lps[1:])), f"{where}.top_logprobs not sorted descending: {lps}")
    check(sum(math.exp(lp) for lp in lps) <= 1 + 1e-3, f"{where}.top_logprobs sum of probabilities > 1: {lps}")
    if not lps:
        return
    if greedy:
        check(_close(e.logprob, lps[0]), f"{where}: greedy token {e.token!r} logprob {e.logprob:.4f} != the top "
                                         f"alternative's {lps[0]:.4f} ({tops[0].token!r})")
    else:       # the chosen token is in the top k (same logprob there) or below all of them
        listed = any(t.token == e.token and t.bytes == e.bytes and _close(t.logprob, e.logprob) for t in tops)
        check(listed or e.logprob <= lps[-1] + LOGPROB_TOL,
              f"{where}: token {e.token!r} logprob {e.logprob:.4f} is above the last alternative {lps[-1]:.4f} "
              f"but not among the alternatives")


def _count_ok(entries: int, completion_tokens: int, finish: str | None) -> bool:
    """One logprobs entry per generated token; an end-of-sequence token that ended the text ("stop") may be
    counted in usage without an entry (it is not part of the text)."""
    return entries == completion_tokens or (finish == "stop" and entries == completion_tokens - 1)


def _bytes_text(entries: list) -> str:
    return b"".join(bytes(e.bytes or []) for e in entries).decode("utf-8", "replace")


class Conformance:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.key = args.api_key or os.environ.get("OPENAI_API_KEY") or "none"
        self.llm_url = args.llm_url.rstrip("/")
        self.search_url = (args.search_url or "").rstrip("/")
        self.client = OpenAI(base_url=f"{self.llm_url}/v1", api_key=self.key, timeout=args.timeout, max_retries=0)
        self.http = httpx.Client(timeout=args.timeout, headers={"Authorization": f"Bearer {self.key}"})
        self.model: str | None = args.model
        self.rows: list[dict] = []
        self._search: tuple[OpenAI, str, int | None] | None = None
        self._search_error: str | None = None

    # --- plumbing ------------------------------------------------------------------------------------------
    def chat(self, **kw) -> ChatCompletion:
        """A non-streamed chat completion; the raw body validated against openai.types.chat.ChatCompletion."""
        raw = self.client.chat.completions.with_raw_response.create(model=self.model, **kw)
        _validate(ChatCompletion, raw.http_response.json(), "the response")
        return raw.parse()

    def completion(self, **kw) -> Completion:
        raw = self.client.completions.with_raw_response.create(model=self.model, **kw)
        _validate(Completion, raw.http_response.json(), "the response")
        return raw.parse()

    def chat_stream(self, **kw) -> list[ChatCompletionChunk]:
        chunks = list(self.client.chat.completions.create(model=self.model, stream=True, **kw))
        for i, c in enumerate(chunks):
            _validate(ChatCompletionChunk, c.to_dict(), f"chunk {i}")
            check(c.object == "chat.completion.chunk", f"chunk {i}: object is {c.object!r}")
        check(chunks, "the stream carried no chunk")
        return chunks

    def run(self, name: str, fn: Callable[[], str], force: bool = False) -> None:
        if not force and self.args.only and not any(s.lower() in name.lower() for s in self.args.only.split(",")):
            return
        t0 = time.monotonic()
        try:
            result, detail = "pass", fn()
        except Skip as exc:
            result, detail = "skip", str(exc)
        except Fail as exc:
            result, detail = "fail", str(exc)
        except openai.APIStatusError as exc:
            result, detail = "fail", f"HTTP {exc.status_code}: {_error_message(exc)}"
        except openai.APIConnectionError as exc:
            result, detail = "fail", f"{type(exc).__name__}: {exc} ({exc.__cause__ or ''})"
        except Exception as exc:  # noqa: BLE001 - a row reports whatever went wrong, the others still run
            result, detail = "fail", f"{type(exc).__name__}: {exc}"
        row = {"feature": name, "result": result, "detail": " ".join(str(detail).split())[:400],
               "seconds": round(time.monotonic() - t0, 2)}
        self.rows.append(row)
        print(f"  {result:4}  {name}  ({row['seconds']} s)", file=sys.stderr, flush=True)

    def _gen_params(self, i: int) -> dict:
        n = max(self.args.generations - 1, 1)
        return {"temperature": round(0.7 + 0.3 * i / n, 3), "seed": 1000 + i}

    # --- 0. the model -----------------------------------------------------------------------------------------
    def models(self) -> str:
        ids = [m.id for m in self.client.models.list().data]
        check(ids, "GET /v1/models lists no model")
        if self.model is None:
            self.model = ids[0]
        check(self.model in ids, f"--model {self.model!r} is not listed: {ids}")
        return f"model {self.model}; listed: {', '.join(ids)}"

    # --- 1. basics --------------------------------------------------------------------------------------------
    def chat_basic(self) -> str:
        r = _check_chat(self.chat(messages=USER, max_tokens=8, temperature=0))
        check(isinstance(r.choices[0].message.content, str), "content is not a string")
        return f"{r.usage.completion_tokens} tokens, finish {r.choices[0].finish_reason}: " \
               f"{short(r.choices[0].message.content, 50)}"

    def completions_basic(self) -> str:
        r = _check_completion(self.completion(prompt="Once upon a time", max_tokens=8, temperature=0))
        c = r.choices[0]
        return f"{r.usage.completion_tokens} tokens, finish {c.finish_reason}: {short(c.text, 50)}"

    def chat_stream_usage(self) -> str:
        chunks = self.chat_stream(messages=USER, max_tokens=12, temperature=0, stream_options={"include_usage": True})
        last = chunks[-1]
        check(last.choices == [] and last.usage is not None,
              f"last chunk: choices {short(last.to_dict().get('choices'))}, usage {last.usage}")
        _check_usage(last.usage, "last chunk usage")
        check(all(c.usage is None for c in chunks[:-1]), "usage on a chunk before the last")
        finishes = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
        check(len(finishes) == 1 and finishes[0] in CHAT_FINISH, f"finish_reasons {finishes}")
        text = "".join(ch.delta.content or "" for c in chunks for ch in c.choices)
        plain = self.chat(messages=USER, max_tokens=12, temperature=0)
        note = "" if text == plain.choices[0].message.content else "; NOTE: differs from the non-streamed greedy text"
        return f"{len(chunks)} chunks, usage {last.usage.completion_tokens}+{last.usage.prompt_tokens} tokens{note}"

    def completions_stream_usage(self) -> str:
        chunks = list(self.client.completions.create(model=self.model, prompt="Once upon a time", max_tokens=8,
                                                     temperature=0, stream=True,
                                                     stream_options={"include_usage": True}))
        for i, c in enumerate(chunks):
            data = c.to_dict()     # the client types a chunk as a Completion, whose finish_reason is never null:
            for ch in data.get("choices") or []:       # a streamed chunk's is null until the last one (as OpenAI's)
                ch["finish_reason"] = ch.get("finish_reason") or "stop"
            _validate(Completion, data, f"chunk {i}")
        check(chunks and chunks[-1].choices == [] and chunks[-1].usage is not None,
              "the last chunk is not choices [] with usage")
        _check_usage(chunks[-1].usage, "last chunk usage")
        return f"{len(chunks)} chunks, {chunks[-1].usage.completion_tokens} tokens"

    def seed(self) -> str:
        kw = dict(messages=USER, max_tokens=16, temperature=1.0)
        a = self.chat(seed=42, **kw).choices[0].message.content
        b = self.chat(seed=42, **kw).choices[0].message.content
        c = self.chat(seed=43, **kw).choices[0].message.content
        check(a == b, f"seed 42 twice gave different texts: {short(a, 40)} / {short(b, 40)}")
        return f"same text twice with seed 42; seed 43 {'differs' if c != a else 'gives the same text'}"

    def stop(self) -> str:
        kw = dict(messages=USER, max_tokens=32, temperature=0)
        full = self.chat(**kw).choices[0].message.content or ""
        picks = [full[p:p + 2] for p in (len(full) * 3 // 4, len(full) // 2) if full[p:p + 2].strip()]
        stops = list(dict.fromkeys(picks + ["<<END>>", "###", "\n\n\n", "STOP!"]))[:4]
        r = self.chat(stop=stops, **kw)
        text, finish = r.choices[0].message.content or "", r.choices[0].finish_reason
        hit = [s for s in stops if s in text]
        check(not hit, f"the text contains stop string(s) {hit}: {short(text, 60)}")
        cut = min((full.find(s) for s in stops if s in full), default=-1)
        if cut >= 0:
            check(text == full[:cut], f"expected the greedy text cut at character {cut} of {len(full)} "
                                      f"({short(full[:cut], 40)}), got {len(text)} characters ({short(text, 40)})")
            check(finish == "stop", f"finish_reason {finish!r} after a stop string")
        return f"4 stops {short(stops, 60)}: cut at {cut if cut >= 0 else '(none occurred)'}, finish {finish}"

    def max_completion_tokens(self) -> str:
        r = self.chat(messages=USER, max_completion_tokens=5, temperature=1.0, seed=1)
        used, finish = r.usage.completion_tokens, r.choices[0].finish_reason
        check(used <= 5, f"completion_tokens {used} > max_completion_tokens 5")
        check(finish == "stop" or used == 5, f"finish {finish} with {used} tokens")
        return f"{used} tokens, finish {finish}"

    # --- 2. penalties -----------------------------------------------------------------------------------------
    def _penalty(self, field: str) -> str:
        msgs = [{"role": "user", "content": "Repeat: the cat the cat the cat the cat the cat the cat the cat"}]
        # 64 tokens: long enough for greedy text to repeat itself (penalties act on the tokens generated so far)
        base = _check_chat(self.chat(messages=msgs, max_tokens=64, temperature=0)).choices[0].message.content
        out = _check_chat(self.chat(messages=msgs, max_tokens=64, temperature=0, **{field: 1.5}))
        text = out.choices[0].message.content
        check(isinstance(text, str), "content is not a string")
        changed = "changed" if text != base else "unchanged"
        return f"{field}=1.5 accepted; greedy output {changed} vs 0 ({short(text, 40)})"

    # --- 3. structured output ---------------------------------------------------------------------------------
    def json_object(self) -> str:
        n = min(self.args.generations, 10)
        ok = length = 0
        for i in range(n):
            r = self.chat(messages=[{"role": "system", "content": JSON_HINT}, *USER], max_tokens=256,
                          response_format={"type": "json_object"}, **self._gen_params(i))
            content, finish = r.choices[0].message.content, r.choices[0].finish_reason
            if finish == "length":          # OpenAI's documented case: the JSON may be cut; it must start one
                check((content or "").lstrip().startswith("{"), f"generation {i}: cut, and not an object: "
                                                                 f"{short(content, 60)}")
                length += 1
                continue
            check(finish == "stop", f"generation {i}: finish_reason {finish!r}")
            try:
                value = json.loads(content or "")
            except ValueError as exc:
                raise Fail(f"generation {i}: not JSON ({exc}): {short(content, 60)}") from None
            check(isinstance(value, dict), f"generation {i}: JSON but not an object: {short(content, 60)}")
            ok += 1
        check(ok > 0, f"all {n} generations hit max_tokens")
        return f"{ok}/{n} parsed as JSON objects" + (f"; {length} cut at max_tokens 256" if length else "")

    def json_schema(self, key: str) -> str:
        schema = SCHEMAS[key]
        n = self.args.generations
        tokens = []
        for i in range(n):
            params = self._gen_params(i)
            r = self.chat(messages=[{"role": "system", "content": JSON_HINT}, *USER], max_tokens=256,
                          response_format={"type": "json_schema",
                                           "json_schema": {"name": f"conformance_{key}", "schema": schema,
                                                           "strict": True}}, **params)
            choice = r.choices[0]
            check(choice.finish_reason == "stop", f"generation {i} ({params}): finish_reason "
                                                  f"{choice.finish_reason!r}: {short(choice.message.content, 60)}")
            err = _json_valid(choice.message.content, schema)
            check(err is None, f"generation {i} ({params}): {err}")
            tokens.append(r.usage.completion_tokens)
        return f"{n}/{n} valid (temperature 0.7-1.0, {n} seeds), {min(tokens)}-{max(tokens)} tokens"

    def parse_pydantic(self) -> str:
        parse = getattr(self.client.chat.completions, "parse", None)
        where = "client.chat.completions.parse"
        if parse is None:
            beta = getattr(getattr(self.client, "beta", None), "chat", None)
            parse = getattr(getattr(beta, "completions", None), "parse", None)
            where = "client.beta.chat.completions.parse"
        if parse is None:
            raise Skip(f"openai {openai.__version__} has no chat.completions.parse")
        n = min(self.args.generations, 10)
        for i in range(n):
            r = parse(model=self.model, messages=[{"role": "system", "content": JSON_HINT}, *USER], max_tokens=256,
                      response_format=Fruit, **self._gen_params(i))
            msg = r.choices[0].message
            check(isinstance(msg.parsed, Fruit), f"generation {i}: parsed is {short(repr(msg.parsed))}, content "
                                                 f"{short(msg.content, 60)}")
            check(msg.refusal is None, f"refusal {msg.refusal!r}")
        return f"{where}(response_format=Fruit): {n}/{n} parsed into the pydantic model"

    # --- 4. tools ---------------------------------------------------------------------------------------------
    def tools_required(self) -> str:
        r = _check_chat(self.chat(messages=USER, tools=TOOLS, tool_choice="required", max_tokens=128,
                                  temperature=0.8, seed=3))
        c = r.choices[0]
        calls = _tool_calls_valid(c.message.tool_calls, TOOL_SCHEMAS)
        check(c.finish_reason == "tool_calls", f"finish_reason {c.finish_reason!r}")
        check(c.message.content is None, f"content {short(c.message.content)} (expected null)")
        return f"{len(calls)} call(s): " + "; ".join(f"{n}({short(a, 50)})" for n, a in calls)

    def tools_named(self) -> str:
        r = _check_chat(self.chat(messages=USER, tools=TOOLS, max_tokens=128, temperature=0.8, seed=4,
                                  tool_choice={"type": "function", "function": {"name": "add"}}))
        c = r.choices[0]
        calls = _tool_calls_valid(c.message.tool_calls, {"add": TOOL_SCHEMAS["add"]})
        # OpenAI's own API answers "stop" for a forced named function, "tool_calls" otherwise: accept both
        check(c.finish_reason in ("tool_calls", "stop"), f"finish_reason {c.finish_reason!r}")
        check(not c.message.content, f"content {short(c.message.content)} beside the tool call")
        return f"add({short(calls[0][1], 50)}), finish {c.finish_reason}"

    def tools_none(self) -> str:
        r = _check_chat(self.chat(messages=USER, tools=TOOLS, tool_choice="none", max_tokens=16, temperature=0))
        c = r.choices[0]
        check(not c.message.tool_calls, f"tool_calls {short(str(c.message.tool_calls))} with tool_choice none")
        check(isinstance(c.message.content, str), "content is not a string")
        check(c.finish_reason in ("stop", "length"), f"finish_reason {c.finish_reason!r}")
        return f"plain content, finish {c.finish_reason}: {short(c.message.content, 40)}"

    def tools_auto(self) -> str:
        r = _check_chat(self.chat(messages=USER, tools=TOOLS, tool_choice="auto", max_tokens=128, temperature=0.8,
                                  seed=5))
        c = r.choices[0]
        if c.message.tool_calls:
            calls = _tool_calls_valid(c.message.tool_calls, TOOL_SCHEMAS)
            check(c.finish_reason == "tool_calls", f"finish_reason {c.finish_reason!r} with tool_calls")
            return f"chose a tool call: {calls[0][0]}({short(calls[0][1], 40)})"
        check(isinstance(c.message.content, str), "neither tool_calls nor content")
        check(c.finish_reason in ("stop", "length"), f"finish_reason {c.finish_reason!r} without tool_calls")
        return f"chose plain content, finish {c.finish_reason}: {short(c.message.content, 40)}"

    def tools_stream(self) -> str:
        chunks = self.chat_stream(messages=USER, tools=TOOLS, tool_choice="required", max_tokens=128, temperature=0.8,
                                  seed=6)
        calls: dict[int, dict] = {}
        finishes, content = [], ""
        for c in chunks:
            for ch in c.choices:
                content += ch.delta.content or ""
                if ch.finish_reason:
                    finishes.append(ch.finish_reason)
                for d in ch.delta.tool_calls or []:
                    acc = calls.setdefault(d.index, {"id": None, "type": None, "name": "", "arguments": ""})
                    acc["id"] = acc["id"] or d.id
                    acc["type"] = acc["type"] or d.type
                    if d.function is not None:
                        acc["name"] += d.function.name or ""
                        acc["arguments"] += d.function.arguments or ""
        check(calls, "no delta.tool_calls in the stream")
        check(sorted(calls) == list(range(len(calls))), f"tool call indexes {sorted(calls)}")
        check(finishes == ["tool_calls"], f"finish_reasons {finishes}")
        check(not content, f"content deltas beside the tool call: {short(content)}")
        for i, acc in sorted(calls.items()):
            check(acc["id"], f"tool call {i}: no id in its deltas")
            check(acc["type"] in (None, "function"), f"tool call {i}: type {acc['type']!r}")
            check(acc["name"] in TOOL_SCHEMAS, f"tool call {i}: name {acc['name']!r}")
            err = _json_valid(acc["arguments"], TOOL_SCHEMAS[acc["name"]])
            check(err is None, f"tool call {i} ({acc['name']}) arguments {err}")
        names = ", ".join(f"{a['name']}({short(a['arguments'], 40)})" for a in calls.values())
        return f"{len(chunks)} chunks assembled into {len(calls)} call(s): {names}"

    def tools_cut(self) -> str:
        """A forced call cut by max_tokens stays a tool call (finish "length", partial arguments), as OpenAI answers:
        never the half-written call as content."""
        r = _check_chat(self.chat(messages=USER, tools=TOOLS, tool_choice="required", max_tokens=6, temperature=0.8,
                                  seed=7))
        c = r.choices[0]
        check(c.finish_reason == "length", f"finish_reason {c.finish_reason!r} after 6 tokens")
        check(not c.message.content, f"the cut call came back as content: {short(c.message.content, 80)}")
        check(c.message.tool_calls, "no tool_calls")
        tc = c.message.tool_calls[0]
        check(tc.id and tc.function.name in TOOL_SCHEMAS, f"tool call {short(str(tc), 80)}")
        check(isinstance(tc.function.arguments, str) and '"arguments"' not in tc.function.arguments,
              f"arguments {short(tc.function.arguments, 60)}")
        return f"finish length, {tc.function.name} with partial arguments {short(tc.function.arguments, 40)}"

    def tools_follow_up(self) -> str:
        call_id = "call_conformance_1"
        args = json.dumps({"city": "Paris", "unit": "celsius"})
        msgs = [*USER,
                {"role": "assistant", "content": None, "tool_calls": [{
                    "id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": args}}]},
                {"role": "tool", "tool_call_id": call_id, "content": json.dumps({"temperature": 21, "sky": "clear"})}]
        r = _check_chat(self.chat(messages=msgs, tools=TOOLS, max_tokens=16, temperature=0))
        c = r.choices[0]
        if c.message.tool_calls:
            _tool_calls_valid(c.message.tool_calls, TOOL_SCHEMAS)
        else:
            check(isinstance(c.message.content, str), "neither content nor tool_calls")
        return f"200 after the tool result; {'another tool call' if c.message.tool_calls else 'content'}, " \
               f"finish {c.finish_reason}, prompt {r.usage.prompt_tokens} tokens"

    # --- 5. logprobs ------------------------------------------------------------------------------------------
    def chat_logprobs(self) -> str:
        notes = []
        for greedy, extra in ((True, {"temperature": 0}), (False, {"temperature": 1.0, "seed": 11})):
            r = _check_chat(self.chat(messages=USER, max_tokens=8, logprobs=True, top_logprobs=3, **extra))
            c = r.choices[0]
            check(c.logprobs is not None and c.logprobs.content is not None, "choices[0].logprobs.content missing")
            entries = c.logprobs.content
            check(_count_ok(len(entries), r.usage.completion_tokens, c.finish_reason),
                  f"{len(entries)} logprob entries for {r.usage.completion_tokens} completion tokens")
            for j, e in enumerate(entries):
                _check_token_logprob(e, 3, greedy, f"{'greedy' if greedy else 'sampled'} token {j}")
            joined = _bytes_text(entries)
            text = c.message.content or ""
            check(joined.strip() == text.strip(), f"the tokens' bytes spell {short(joined, 40)}, the content is "
                                                  f"{short(text, 40)}")
            if joined != text:
                notes.append("bytes and content differ in surrounding whitespace")
        return f"{r.usage.completion_tokens} tokens x top 3, greedy and sampled consistent" + \
               (f"; NOTE: {notes[0]}" if notes else "")

    def completions_logprobs(self) -> str:
        prompt = "Once upon a time"
        for greedy, extra in ((True, {"temperature": 0}), (False, {"temperature": 1.0, "seed": 12})):
            r = _check_completion(self.completion(prompt=prompt, max_tokens=8, logprobs=2, **extra))
            lp = r.choices[0].logprobs
            check(lp is not None, "choices[0].logprobs is null")
            n = len(lp.tokens or [])
            check(_count_ok(n, r.usage.completion_tokens, r.choices[0].finish_reason),
                  f"{n} logprobs.tokens for {r.usage.completion_tokens} completion tokens")
            for name in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
                v = getattr(lp, name)
                check(isinstance(v, list) and len(v) == n, f"logprobs.{name}: {short(v, 60)} for {n} tokens")
            for j, (tok, chosen, top) in enumerate(zip(lp.tokens, lp.token_logprobs, lp.top_logprobs)):
                check(chosen <= 0, f"token_logprobs[{j}] {chosen} > 0")
                check(isinstance(top, dict) and 2 <= len(top) <= 3, f"top_logprobs[{j}] {short(top)} (logprobs=2: 2, "
                                                                     f"or 3 with the chosen token)")
                vals = sorted(top.values(), reverse=True)
                check(all(v <= 0 for v in vals), f"top_logprobs[{j}] not <= 0: {top}")
                if greedy:
                    check(_close(chosen, vals[0]),
                          f"greedy token {j} {tok!r} logprob {chosen:.4f} != top {vals[0]:.4f}")
                elif tok in top:
                    check(_close(top[tok], chosen), f"token {j} {tok!r}: {chosen:.4f} vs its top entry {top[tok]:.4f}")
                else:
                    check(chosen <= vals[-1] + LOGPROB_TOL, f"token {j} {tok!r} logprob {chosen:.4f} above the top "
                                                            f"alternatives {vals} but not listed")
            offs = lp.text_offset
            check(all(a <= b for a, b in zip(offs, offs[1:])), f"text_offset not non-decreasing: {offs}")
            joined = "".join(lp.tokens)
            partial = any("\ufffd" in t or t.startswith("bytes:") for t in lp.tokens)   # a split UTF-8 character
            check(joined == r.choices[0].text or partial,
                  f"tokens join to {short(joined, 40)}, text is {short(r.choices[0].text, 40)}")
        start = "the prompt's length" if offs and offs[0] == len(prompt) else f"{offs[0] if offs else None}"
        return f"{n} tokens: tokens/token_logprobs/top_logprobs/text_offset; text_offset starts at {start}"

    def chat_stream_logprobs(self) -> str:
        chunks = self.chat_stream(messages=USER, max_tokens=8, temperature=0, logprobs=True, top_logprobs=2,
                                  stream_options={"include_usage": True})
        entries, text, bare, finish = [], "", 0, None
        for c in chunks:
            for ch in c.choices:
                text += ch.delta.content or ""
                finish = finish or ch.finish_reason
                if ch.logprobs is not None and ch.logprobs.content:
                    entries.extend(ch.logprobs.content)
                elif ch.delta.content:
                    bare += 1           # text held back and released later may come without its (earlier) entries
        usage = chunks[-1].usage
        check(usage is not None, "no usage chunk (stream_options.include_usage)")
        check(entries, "no chunk carries logprobs.content")
        check(_count_ok(len(entries), usage.completion_tokens, finish),
              f"{len(entries)} entries for {usage.completion_tokens} tokens")
        for j, e in enumerate(entries):
            _check_token_logprob(e, 2, True, f"token {j}")
        check(_bytes_text(entries).strip() == text.strip(), "the streamed tokens' bytes do not spell the content")
        return f"{len(entries)} entries over {len(chunks)} chunks" + \
            (f"; NOTE: {bare} content chunk(s) without logprobs" if bare else "")

    # --- 6. n -------------------------------------------------------------------------------------------------
    def chat_n(self) -> str:
        r = _check_chat(self.chat(messages=USER, n=3, max_tokens=8, temperature=1.0, seed=21), n=3)
        texts = [c.message.content for c in sorted(r.choices, key=lambda c: c.index)]
        check(all(isinstance(t, str) for t in texts), "a choice without content")
        return f"3 choices, {len(set(texts))} distinct, {r.usage.completion_tokens} completion tokens in all"

    def completions_n(self) -> str:
        r = _check_completion(self.completion(prompt="Once upon a time", n=3, max_tokens=8, temperature=1.0, seed=22),
                              n=3)
        texts = [c.text for c in r.choices]
        return f"3 choices, {len(set(texts))} distinct, {r.usage.completion_tokens} completion tokens in all"

    def chat_stream_n(self) -> str:
        chunks = self.chat_stream(messages=USER, n=2, max_tokens=8, temperature=1.0, seed=23,
                                  stream_options={"include_usage": True})
        text: dict[int, str] = {}
        finishes: dict[int, list] = {}
        for c in chunks:
            for ch in c.choices:
                text[ch.index] = text.get(ch.index, "") + (ch.delta.content or "")
                if ch.finish_reason:
                    finishes.setdefault(ch.index, []).append(ch.finish_reason)
        check(sorted(text) == [0, 1], f"chunks for indexes {sorted(text)}")
        for i in (0, 1):
            got = finishes.get(i, [])
            check(len(got) == 1 and got[0] in CHAT_FINISH, f"index {i}: finish_reasons {got}")
        usage = chunks[-1].usage
        check(usage is not None and chunks[-1].choices == [], "no final usage chunk")
        return f"{len(chunks)} chunks for indexes 0 and 1, each finished; {usage.completion_tokens} tokens in all"

    # --- 7. nothing silently ignored --------------------------------------------------------------------------
    def unknown_field(self) -> str:
        want = "Unrecognized request argument supplied: surely_not_a_field"
        seen = []
        for what, call in (("chat", lambda: self.client.chat.completions.create(
                                model=self.model, messages=USER, max_tokens=4, extra_body={"surely_not_a_field": 3})),
                           ("completions", lambda: self.client.completions.create(
                               model=self.model, prompt="hi", max_tokens=4, extra_body={"surely_not_a_field": 3}))):
            try:
                call()
            except openai.BadRequestError as exc:
                check(want in exc.message, f"{what}: 400 but the message is {short(exc.message, 100)}")
                seen.append(f"{what}: 400 (error.param {exc.param!r})")
                continue
            except openai.APIStatusError as exc:
                raise Fail(f"{what}: HTTP {exc.status_code} (expected 400): {short(exc.message, 100)}") from None
            raise Fail(f"{what}: 200: the unknown field was silently accepted")
        return "; ".join(seen)

    def noop_fields(self) -> str:
        r = _check_chat(self.chat(messages=USER, max_tokens=4, temperature=0, user="conformance", store=False,
                                  metadata={"suite": "conformance"}, service_tier="auto"))
        _check_completion(self.completion(prompt="hi", max_tokens=4, temperature=0, user="conformance"))
        return f"user, metadata, store, service_tier accepted (200); finish {r.choices[0].finish_reason}"

    # --- 8. embeddings (search-service), tokenize (llm-service) -----------------------------------------------
    def search_client(self) -> tuple[OpenAI, str, int | None]:
        if self._search is not None:
            return self._search
        if self._search_error is not None:
            raise Skip(self._search_error)
        if not self.search_url:
            self._search_error = "no --search-url"
            raise Skip(self._search_error)
        try:
            r = self.http.get(f"{self.search_url}/v1/models", timeout=min(self.args.timeout, 10))
        except httpx.HTTPError as exc:
            self._search_error = f"search-service does not answer at {self.search_url} ({type(exc).__name__})"
            raise Skip(self._search_error) from None
        check(r.status_code == 200, f"GET {self.search_url}/v1/models: HTTP {r.status_code} {short(r.text, 100)}")
        data = r.json().get("data") or []
        check(data and data[0].get("id"), f"GET /v1/models on search-service lists no model: {short(r.text, 100)}")
        client = OpenAI(base_url=f"{self.search_url}/v1", api_key=self.key, timeout=self.args.timeout, max_retries=0)
        self._search = (client, data[0]["id"], data[0].get("dimensions"))
        return self._search

    def embeddings(self) -> str:
        client, model, dim = self.search_client()
        raw = client.embeddings.with_raw_response.create(model=model, input=["a", "b"], encoding_format="float")
        body = raw.http_response.json()
        _validate(CreateEmbeddingResponse, body, "the response")
        r = raw.parse()
        check(len(r.data) == 2 and [d.index for d in r.data] == [0, 1], f"{len(r.data)} vectors for 2 inputs")
        dim = dim or len(r.data[0].embedding)
        for d in r.data:
            check(len(d.embedding) == dim, f"vector {d.index}: {len(d.embedding)} dimensions, the model has {dim}")
            check(all(math.isfinite(x) for x in d.embedding), f"vector {d.index}: not finite")
        check(r.data[0].embedding != r.data[1].embedding, "'a' and 'b' have the same vector")
        check(r.usage.prompt_tokens > 0 and r.usage.total_tokens >= r.usage.prompt_tokens, f"usage {r.usage}")
        # the client's default: it asks for base64 and decodes it itself
        default = client.embeddings.create(model=model, input=["a", "b"])
        check(all(_allclose(x.embedding, y.embedding) for x, y in zip(default.data, r.data)),
              "the client's default (base64, decoded by the client) differs from encoding_format float")
        one = client.embeddings.create(model=model, input="a single string")
        check(len(one.data) == 1 and len(one.data[0].embedding) == dim, "a string input did not give one vector")
        norm = math.sqrt(sum(x * x for x in r.data[0].embedding))
        return f"{model}: 2 x {dim} floats (norm {norm:.3f}), usage {r.usage.prompt_tokens} tokens; string input ok"

    def embeddings_base64(self) -> str:
        client, model, _ = self.search_client()
        floats = client.embeddings.create(model=model, input=["a", "b"], encoding_format="float")
        b64 = client.embeddings.create(model=model, input=["a", "b"], encoding_format="base64")
        for f, b in zip(floats.data, b64.data):
            check(isinstance(b.embedding, str), f"encoding_format base64 gave a {type(b.embedding).__name__}")
            raw = base64.b64decode(b.embedding)
            check(len(raw) == 4 * len(f.embedding), f"{len(raw)} bytes for {len(f.embedding)} float32s")
            vec = np.frombuffer(raw, dtype="<f4").tolist()
            check(_allclose(vec, f.embedding), "base64 decodes to other floats than encoding_format float")
        return "2 vectors, little-endian float32, equal to the float encoding"

    def tokenize(self) -> str:
        text = "Hello world, 안녕하세요 — ok?"
        r = self.http.post(f"{self.llm_url}/tokenize", json={"model": self.model, "prompt": text,
                                                             "add_special_tokens": False})
        check(r.status_code == 200, f"POST /tokenize: HTTP {r.status_code} {short(r.text, 100)}")
        body = r.json()
        check(isinstance(body.get("tokens"), list) and body.get("count") == len(body["tokens"]) > 0,
              f"/tokenize: {short(body, 100)}")
        check(isinstance(body.get("max_model_len"), int) and body["max_model_len"] > 0, "/tokenize: max_model_len")
        d = self.http.post(f"{self.llm_url}/detokenize", json={"model": self.model, "tokens": body["tokens"]})
        check(d.status_code == 200, f"POST /detokenize: HTTP {d.status_code} {short(d.text, 100)}")
        check(d.json().get("prompt") == text, f"round trip gave {short(d.json().get('prompt'))}")
        m = self.http.post(f"{self.llm_url}/tokenize", json={"model": self.model, "messages": USER})
        check(m.status_code == 200, f"POST /tokenize (messages): HTTP {m.status_code} {short(m.text, 100)}")
        chat = self.chat(messages=USER, max_tokens=1, temperature=0)
        check(m.json()["count"] == chat.usage.prompt_tokens,
              f"/tokenize counts {m.json()['count']} tokens for the messages, the chat prompt_tokens "
              f"{chat.usage.prompt_tokens}")
        return f"{body['count']} tokens round-trip; messages: {m.json()['count']} tokens = chat prompt_tokens; " \
               f"max_model_len {body['max_model_len']}"

    # --- 9. the cost of constrained decoding ------------------------------------------------------------------
    def throughput(self) -> str:
        """Same prompts with and without a json_schema, sequential, streamed: end-to-end completion tok/s (prefill
        included) and decode tok/s (tokens after the first over the time after the first), the fairer figure for
        the mask's cost per token when the constrained answers are shorter."""
        fmt = {"type": "json_schema", "json_schema": {"name": "words", "schema": THROUGHPUT_SCHEMA, "strict": True}}
        figures = {}
        for label, extra in (("plain", {}), ("json_schema", {"response_format": fmt})):
            tokens = decode_tokens = 0
            seconds = decode_s = 0.0
            for p in THROUGHPUT_PROMPTS:
                t0 = time.perf_counter()
                first = last = None
                usage = None
                for c in self.client.chat.completions.create(
                        model=self.model, messages=[{"role": "user", "content": p}], max_tokens=64, temperature=0,
                        stream=True, stream_options={"include_usage": True}, **extra):
                    if any(ch.delta.content for ch in c.choices):
                        last = time.perf_counter()
                        first = first or last
                    usage = c.usage or usage
                seconds += time.perf_counter() - t0
                check(usage is not None, f"{label}: no usage chunk")
                tokens += usage.completion_tokens
                if first is not None and last > first and usage.completion_tokens > 1:
                    decode_tokens += usage.completion_tokens - 1
                    decode_s += last - first
            check(tokens > 0, f"{label}: no token generated")
            figures[label] = (tokens, seconds, tokens / seconds, decode_tokens / decode_s if decode_s else float("nan"))
        p, c = figures["plain"], figures["json_schema"]
        return (f"plain {p[0]} tok / {p[1]:.2f} s = {p[2]:.1f} tok/s (decode {p[3]:.1f}); json_schema {c[0]} tok / "
                f"{c[1]:.2f} s = {c[2]:.1f} tok/s (decode {c[3]:.1f}); ratio {c[2] / p[2]:.2f} end to end, "
                f"{c[3] / p[3]:.2f} decode (8 prompts, sequential, streamed, max_tokens 64, temperature 0)")

    # --- 10. real clients -------------------------------------------------------------------------------------
    def _langchain(self, **kw):
        try:
            from langchain_openai import ChatOpenAI
        except ImportError as exc:
            raise Skip(f"langchain-openai is not installed ({exc})") from None
        return ChatOpenAI(base_url=f"{self.llm_url}/v1", api_key=self.key, model=self.model, timeout=self.args.timeout,
                          max_retries=0, **kw)

    def langchain_invoke(self) -> str:
        msg = self._langchain(max_tokens=16, temperature=0).invoke("Tell me about the weather in Paris.")
        check(isinstance(msg.content, str), f"content {short(repr(msg.content))}")
        usage = getattr(msg, "usage_metadata", None) or {}
        return f"AIMessage, {usage.get('output_tokens', '?')} output tokens: {short(msg.content, 40)}"

    def langchain_tools(self) -> str:
        llm = self._langchain(max_tokens=128, temperature=0.8, seed=31)
        # parallel_tool_calls: bind_tools sends it only when given (with_structured_output's function_calling
        # method always sends it, False); an OpenAI field that changes nothing here, so it must be accepted
        msg = llm.bind_tools(TOOLS, tool_choice="required", parallel_tool_calls=True).invoke(
            "Tell me about the weather in Paris.")
        check(not getattr(msg, "invalid_tool_calls", None), f"invalid_tool_calls {short(msg.invalid_tool_calls)}")
        check(msg.tool_calls, f"no tool_calls; content {short(msg.content)}")
        for tc in msg.tool_calls:
            check(tc["name"] in TOOL_SCHEMAS, f"tool {tc['name']!r}")
            err = _schema_errors(tc["args"], TOOL_SCHEMAS[tc["name"]])
            check(err is None, f"{tc['name']} args invalid: {err}")
        calls = "; ".join(f"{t['name']}({short(t['args'], 40)})" for t in msg.tool_calls)
        return f"bind_tools(tool_choice=required, parallel_tool_calls=True): {calls}"

    def langchain_structured(self, method: str) -> str:
        """json_schema: response_format through the client's .parse; function_calling: a named tool_choice with
        parallel_tool_calls false. strict=True: without it LangChain's function schema allows additional properties,
        which a random model may fill until max_tokens (valid JSON Schema, unbounded output)."""
        llm = self._langchain(max_tokens=256, temperature=0.8, seed=32)
        out = llm.with_structured_output(Fruit, method=method, strict=True, include_raw=True).invoke(
            "Describe a fruit. Answer in JSON.")
        raw = out["raw"]
        check(out["parsing_error"] is None, f"parsing error {short(str(out['parsing_error']), 100)}")
        check(isinstance(out["parsed"], Fruit),
              f"parsed {short(repr(out['parsed']))}; finish {raw.response_metadata.get('finish_reason')}, tool_calls "
              f"{short(raw.tool_calls)}, content {short(raw.content, 60)}")
        return f"with_structured_output(Fruit, method={method}, strict=True): {short(out['parsed'].model_dump(), 60)}"

    def _llamaindex(self):
        try:
            from llama_index.llms.openai_like import OpenAILike
        except ImportError as exc:
            why = f"llama-index-llms-openai-like is not installed ({exc})"
            if int(openai.__version__.split(".")[0]) >= 3:
                why += (f"; its llama-index-llms-openai 0.8.x requires openai<3, this environment has "
                        f"{openai.__version__}")
            raise Skip(why) from None
        return OpenAILike(api_base=f"{self.llm_url}/v1", api_key=self.key, model=self.model, is_chat_model=True,
                          max_tokens=16, timeout=self.args.timeout, max_retries=0)

    def llamaindex_chat(self) -> str:
        llm = self._llamaindex()
        from llama_index.core.llms import ChatMessage
        r = llm.chat([ChatMessage(role="user", content="Tell me about the weather in Paris.")])
        check(isinstance(r.message.content, str), f"content {short(repr(r.message.content))}")
        return f"chat: {short(r.message.content, 50)}"

    def llamaindex_complete(self) -> str:
        r = self._llamaindex().complete("Once upon a time")
        check(isinstance(r.text, str), f"text {short(repr(r.text))}")
        return f"complete: {short(r.text, 50)}"

    # --- all --------------------------------------------------------------------------------------------------
    def rows_to_run(self) -> list[tuple[str, Callable[[], str]]]:
        rows = [
            ("models list", self.models),
            ("chat basic", self.chat_basic),
            ("completions basic", self.completions_basic),
            ("chat stream include_usage", self.chat_stream_usage),
            ("completions stream include_usage", self.completions_stream_usage),
            ("seed reproducible", self.seed),
            ("stop (4 strings)", self.stop),
            ("max_completion_tokens", self.max_completion_tokens),
            ("presence_penalty", lambda: self._penalty("presence_penalty")),
            ("frequency_penalty", lambda: self._penalty("frequency_penalty")),
            ("response_format json_object", self.json_object),
        ]
        rows += [(f"response_format json_schema {k}", (lambda k=k: self.json_schema(k))) for k in SCHEMAS]
        rows += [
            ("chat.completions.parse (pydantic)", self.parse_pydantic),
            ("tools tool_choice=required", self.tools_required),
            ("tools tool_choice=named function", self.tools_named),
            ("tools tool_choice=none", self.tools_none),
            ("tools tool_choice=auto", self.tools_auto),
            ("tools streamed (required)", self.tools_stream),
            ("tools cut at max_tokens", self.tools_cut),
            ("tools follow-up turn (role tool)", self.tools_follow_up),
            ("chat logprobs top_logprobs=3", self.chat_logprobs),
            ("completions logprobs=2", self.completions_logprobs),
            ("chat stream logprobs", self.chat_stream_logprobs),
            ("chat n=3", self.chat_n),
            ("completions n=3", self.completions_n),
            ("chat stream n=2", self.chat_stream_n),
            ("unknown field -> 400", self.unknown_field),
            ("no-op fields (user, metadata, store, service_tier)", self.noop_fields),
            ("embeddings (search-service)", self.embeddings),
            ("embeddings base64 (search-service)", self.embeddings_base64),
            ("tokenize / detokenize", self.tokenize),
            ("constrained decoding throughput", self.throughput),
            ("langchain ChatOpenAI invoke", self.langchain_invoke),
            ("langchain bind_tools required", self.langchain_tools),
            ("langchain with_structured_output json_schema", lambda: self.langchain_structured("json_schema")),
            ("langchain with_structured_output function_calling",
             lambda: self.langchain_structured("function_calling")),
            ("llamaindex OpenAILike chat", self.llamaindex_chat),
            ("llamaindex OpenAILike complete", self.llamaindex_complete),
        ]
        return rows

    def run_all(self) -> dict:
        if self.model is None and self.args.only:
            self.run("models list", self.models, force=True)        # --only still needs the default model
        for name, fn in self.rows_to_run():
            if name == "models list" and any(r["feature"] == name for r in self.rows):
                continue
            self.run(name, fn)
        self.http.close()
        counts = {label: sum(r["result"] == result for r in self.rows)
                  for label, result in (("passed", "pass"), ("failed", "fail"), ("skipped", "skip"))}
        return {**counts, "model": self.model, "openai": openai.__version__, "rows": self.rows}


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return exc.message


def _allclose(a: list[float], b: list[float], tol: float = 1e-5) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol * max(1.0, abs(y)) for x, y in zip(a, b))


def print_table(rows: list[dict]) -> None:
    w = max([len("feature")] + [len(r["feature"]) for r in rows])
    print(f"{'feature':<{w}} | result | detail")
    print(f"{'-' * w}-|--------|{'-' * 40}")
    for r in rows:
        print(f"{r['feature']:<{w}} | {r['result']:<6} | {r['detail']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llm-url", default="http://127.0.0.1:8002", help="llm-service base URL")
    ap.add_argument("--search-url", default="http://127.0.0.1:8001",
                    help="search-service base URL (its rows are skipped when it does not answer; '' skips them)")
    ap.add_argument("--model", default=None, help="Default: the first model of GET /v1/models")
    ap.add_argument("--api-key", default=None,
                    help="Bearer key for both services (default: $OPENAI_API_KEY, else none)")
    ap.add_argument("--timeout", type=float, default=120.0, help="Seconds per request")
    ap.add_argument("--only", default=None, help="Run the rows whose feature name contains one of these "
                                                 "comma-separated substrings (case-insensitive)")
    ap.add_argument("--generations", type=int, default=25,
                    help="Generations per structured-output schema (temperature 0.7-1.0, a seed each)")
    args = ap.parse_args(argv)
    if args.generations < 1:
        ap.error("--generations must be >= 1")
    summary = Conformance(args).run_all()
    print_table(summary["rows"])
    print(json.dumps(summary, ensure_ascii=False))
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
