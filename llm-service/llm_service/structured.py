"""Structured output and tool calls for the chat endpoint: request → grammar + prompt, output → message.

* ``response_format`` ``json_object`` / ``json_schema`` → a JSON-schema grammar (the content is JSON that
  parses and validates; ``strict: false`` ignores keywords the compiler does not implement).
* ``tools`` + ``tool_choice``:

  - ``none`` (or no tools): plain text; the tools are not shown to the model.
  - a named function: the output is that function's arguments (its ``parameters`` schema).
  - ``required``: the output is ``{"name": <one of the functions>, "arguments": {...}}``, each function's
    arguments held to its own schema.
  - ``auto``: either text (that does not start with ``<``) or ``<tool_call>{"name", "arguments"}</tool_call>``
    — the model decides, the grammar keeps a call well-formed.

  The model sees the tools through its chat template when the template renders ``tools``; otherwise a
  system message lists them (name, description, parameters) and the call format. Earlier tool calls and
  tool results in the history are rendered as text the model can read (``<tool_call>…</tool_call>`` in
  the assistant turn, the result as a ``tool`` turn).
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from stack_common.errors import ServiceError

from .engine.grammar import GrammarSpec

TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
Mode = Literal["text", "json", "named", "required", "auto"]
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class OutputPlan:
    """How a chat request's output is constrained, prompted and read back."""
    mode: Mode = "text"
    grammar: GrammarSpec | None = None
    grammar_param: str = "response_format"
    tools: tuple[dict[str, Any], ...] = ()        # the functions the model may call (OpenAI's function objects)
    named: str | None = None                      # tool_choice naming one function

    @property
    def calls_tools(self) -> bool:
        return self.mode in ("named", "required", "auto")


def _parameters(fn: dict[str, Any]) -> dict[str, Any]:
    return fn.get("parameters") or EMPTY_PARAMETERS


def _call_schema(tools: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """``{"name": <const>, "arguments": <that function's parameters>}`` for any of the functions."""
    options = [{"type": "object", "properties": {"name": {"const": fn["name"]}, "arguments": _parameters(fn)},
                "required": ["name", "arguments"], "additionalProperties": False} for fn in tools]
    return options[0] if len(options) == 1 else {"anyOf": options}


def plan_chat(response_format: dict[str, Any] | None, tools: list[dict[str, Any]] | None,
              tool_choice: str | dict[str, Any] | None) -> OutputPlan:
    """The plan of a chat request (its fields already validated by the request model)."""
    fns = tuple(t["function"] for t in tools or ())
    choice = tool_choice if tool_choice is not None else ("auto" if fns else "none")
    if isinstance(choice, dict):
        name = choice["function"]["name"]
        fn = next((f for f in fns if f["name"] == name), None)
        if fn is None:
            raise ServiceError(f"tool_choice names function '{name}', which is not in tools",
                               details={"param": "tool_choice"})
        strict = bool(fn.get("strict", True))
        return OutputPlan("named", GrammarSpec.json_schema(_parameters(fn), strict), "tools", fns, name)
    if choice != "none" and not fns:
        raise ServiceError(f"tool_choice '{choice}' needs tools", details={"param": "tool_choice"})
    if fns and choice != "none":
        if response_format and response_format.get("type") != "text":
            raise ServiceError("response_format cannot be combined with tool calls: use tool_choice 'none'",
                               details={"param": "response_format"})
        strict = all(f.get("strict", True) for f in fns)
        if choice == "required":
            return OutputPlan("required", GrammarSpec.json_schema(_call_schema(fns), strict), "tools", fns)
        schema = json.dumps(_call_schema(fns), separators=(",", ":"))
        lark = (f'start: tool_call | text\n'
                f'tool_call: "{TOOL_OPEN}" %json {schema} "{TOOL_CLOSE}"\n'
                'text: /[^<][\\s\\S]*/\n')
        return OutputPlan("auto", GrammarSpec("lark", lark, strict), "tools", fns)
    if response_format and response_format.get("type") == "json_object":
        return OutputPlan("json", GrammarSpec.json_schema({"type": "object"}), "response_format")
    if response_format and response_format.get("type") == "json_schema":
        spec = response_format["json_schema"]
        return OutputPlan("json", GrammarSpec.json_schema(spec.get("schema") or {"type": "object"},
                                                          bool(spec.get("strict"))),
                          "response_format.json_schema.schema")
    return OutputPlan("text")


def tools_prompt(plan: OutputPlan) -> str:
    """The system text that shows a model without a tools-aware template the functions and the format."""
    listed = json.dumps([{"name": f["name"], "description": f.get("description", ""),
                          "parameters": _parameters(f)} for f in plan.tools], ensure_ascii=False)
    if plan.mode == "named":
        return f"You can call these functions: {listed}\nCall the function {plan.named}: reply with its " \
               "arguments as a JSON object and nothing else."
    how = f'reply with {TOOL_OPEN}{{"name": <function name>, "arguments": <arguments object>}}{TOOL_CLOSE}'
    if plan.mode == "required":
        return f"You can call these functions: {listed}\nCall one of them: reply with " \
               '{"name": <function name>, "arguments": <arguments object>} and nothing else.'
    return f"You can call these functions: {listed}\nTo call one, {how}; otherwise answer in plain text."


def template_messages(messages: list[dict[str, Any]], plan: OutputPlan, template_has_tools: bool) -> \
        tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(messages for the chat template, ``tools`` for a tools-aware template or None). ``messages`` are the
    request's, as dicts (role, content, tool_calls, tool_call_id)."""
    out = []
    for m in messages:
        content = m.get("content") or ""
        if m.get("tool_calls"):
            calls = "".join(TOOL_OPEN + json.dumps({"name": c["function"]["name"],
                                                    "arguments": _loads_or_text(c["function"]["arguments"])},
                                                   ensure_ascii=False) + TOOL_CLOSE for c in m["tool_calls"])
            content = content + calls
        out.append({"role": m["role"], "content": content})
    if not plan.calls_tools:
        return out, None
    if template_has_tools:
        return out, [{"type": "function", "function": f} for f in plan.tools]
    hint = tools_prompt(plan)
    if out and out[0]["role"] == "system":
        out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{hint}"}
    else:
        out.insert(0, {"role": "system", "content": hint})
    return out, None


def _loads_or_text(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except (TypeError, ValueError):
        return arguments


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def read_output(text: str, plan: OutputPlan, finish_reason: str) -> tuple[str | None, list[dict[str, Any]] | None, str]:
    """(content, tool_calls, finish_reason) of a finished generation. A tool call that did not finish
    (``length``) is returned as text, with its finish_reason."""
    if not plan.calls_tools or finish_reason != "stop":
        return text, None, finish_reason
    if plan.mode == "named":
        return None, [_call(plan.named, text)], "tool_calls"
    body = text
    if plan.mode == "auto":
        if not text.startswith(TOOL_OPEN):
            return text, None, finish_reason
        body = text[len(TOOL_OPEN):].removesuffix(TOOL_CLOSE)
    try:
        obj = json.loads(body)
        return None, [_call(obj["name"], json.dumps(obj["arguments"], ensure_ascii=False, separators=(",", ":")))], \
            "tool_calls"
    except (ValueError, KeyError, TypeError):       # cannot happen with the grammar; never a 500 if it does
        return text, None, finish_reason


def _call(name: str | None, arguments: str) -> dict[str, Any]:
    return {"id": new_call_id(), "type": "function", "function": {"name": name, "arguments": arguments}}
