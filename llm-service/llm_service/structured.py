"""Structured output and tool calls for the chat endpoint: request → grammar + prompt, output → message.

* ``response_format`` ``json_object`` / ``json_schema`` → a JSON-schema grammar (the content is JSON that
  parses and validates; ``strict: false`` ignores keywords the compiler does not implement).
* ``tools`` + ``tool_choice``:

  - ``none`` (or no tools): plain text; the tools are not shown to the model.
  - a named function: the output is that function's arguments (its ``parameters`` schema).
  - ``required``: the output is ``{"name":"<one of the functions>","arguments":{...}}`` — in that order, so
    the name is known before the arguments start and they stream as they are generated — each function's
    arguments held to its own schema.
  - ``auto``: either text (that does not start with ``<``) or ``<tool_call>{"name":…,"arguments":…}</tool_call>``
    — the model decides, the grammar keeps a call well-formed.

  A call cut by ``max_tokens`` stays a tool call (its arguments partial, finish_reason ``length``), as
  OpenAI answers; its name is the declared function its written part names.

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

from .engine.grammar import JSON_OPTIONS, GrammarSpec

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


def call_prefix(name: str) -> str:
    """What a call's output starts with; its arguments object and a closing ``}`` follow."""
    return '{"name":' + json.dumps(name, ensure_ascii=False) + ',"arguments":'


def _call_rules(tools: tuple[dict[str, Any], ...], strict: bool) -> str:
    """Lark rules: ``call`` is one function's prefix, its arguments (llguidance's ``%json`` with the same
    compact-JSON options as response_format) and ``}``."""
    rules = []
    for i, fn in enumerate(tools):
        schema = dict(_parameters(fn))
        schema["x-guidance"] = {**JSON_OPTIONS, "lenient": not strict}
        rules.append(f"call{i}: {json.dumps(call_prefix(fn['name']), ensure_ascii=False)} "
                     f"%json {json.dumps(schema, ensure_ascii=False)} \"}}\"")
    return "call: " + " | ".join(f"call{i}" for i in range(len(tools))) + "\n" + "\n".join(rules) + "\n"


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
            return OutputPlan("required", GrammarSpec("lark", "start: call\n" + _call_rules(fns, strict), strict),
                              "tools", fns)
        lark = (f'start: tool_call | text\n'
                f'tool_call: "{TOOL_OPEN}" call "{TOOL_CLOSE}"\n'
                'text: /[^<][\\s\\S]*/\n' + _call_rules(fns, strict))
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


def _split_call(body: str, plan: OutputPlan) -> tuple[str | None, str, bool]:
    """(function name, arguments text so far, whether the name is complete) of a call's output (the text
    after ``<tool_call>`` in auto mode). A name still being written is the declared function it is the start
    of, when only one is."""
    if plan.mode == "named":
        return plan.named, body, True
    names = [f["name"] for f in plan.tools]
    for name in names:
        prefix = call_prefix(name)
        if body.startswith(prefix):
            return name, body[len(prefix):], True
    fits = [n for n in names if call_prefix(n).startswith(body)]
    return (fits[0] if len(fits) == 1 else None), "", False


def _call_body(text: str, plan: OutputPlan) -> str | None:
    """The call part of the output, or None when the output is text (auto mode)."""
    if plan.mode == "auto":
        if not text.startswith("<"):
            return None
        return text[len(TOOL_OPEN):] if text.startswith(TOOL_OPEN) else ""
    return text


def _suffix(plan: OutputPlan) -> str:
    """What follows a call's arguments in the output."""
    return {"named": "", "required": "}", "auto": "}" + TOOL_CLOSE}.get(plan.mode, "")


def read_output(text: str, plan: OutputPlan, finish_reason: str) -> tuple[str | None, list[dict[str, Any]] | None, str]:
    """(content, tool_calls, finish_reason) of a finished generation. A complete call finishes with
    ``tool_calls``; a call cut by max_tokens stays a call with partial arguments (``length``)."""
    body = _call_body(text, plan) if plan.calls_tools else None
    if body is None:
        return text, None, finish_reason
    name, arguments, _ = _split_call(body, plan)
    if name is None:                  # cut before the name could be told: nothing to call
        return text, None, finish_reason
    if finish_reason == "stop":
        arguments = arguments.removesuffix(_suffix(plan))
    return None, [_call(name, arguments)], "tool_calls" if finish_reason == "stop" else finish_reason


class ChatStream:
    """One choice's streamed deltas: content as generated, or a tool call — a first delta with its id and
    name once the name is known, then its arguments as they are generated (the closing characters that
    follow them held back until the row ends)."""

    def __init__(self, plan: OutputPlan) -> None:
        self.plan = plan
        self.text = ""
        self.call_id = new_call_id()
        self.named = False           # the call's first delta (id, name) was sent
        self.sent = 0                # characters of the arguments sent

    def feed(self, piece: str) -> list[dict[str, Any]]:
        """Deltas for the next piece of generated text."""
        self.text += piece
        body = _call_body(self.text, self.plan) if self.plan.calls_tools else None
        if body is None:
            return [{"content": piece}] if piece else []
        name, arguments, complete = _split_call(body, self.plan)
        if not complete:
            return []
        ready = arguments[:len(arguments) - len(_suffix(self.plan))] if _suffix(self.plan) else arguments
        return self._call_deltas(name, ready)

    def finish(self, finish_reason: str) -> tuple[list[dict[str, Any]], str]:
        """The last deltas and the choice's finish_reason."""
        content, calls, finish = read_output(self.text, self.plan, finish_reason)
        if not calls:
            return [], finish
        return self._call_deltas(calls[0]["function"]["name"], calls[0]["function"]["arguments"]), finish

    def _call_deltas(self, name: str, arguments: str) -> list[dict[str, Any]]:
        out = []
        if not self.named:
            self.named = True
            out.append({"tool_calls": [{"index": 0, "id": self.call_id, "type": "function",
                                        "function": {"name": name, "arguments": ""}}]})
        if len(arguments) > self.sent:
            out.append({"tool_calls": [{"index": 0, "function": {"arguments": arguments[self.sent:]}}]})
            self.sent = len(arguments)
        return out


def _call(name: str | None, arguments: str) -> dict[str, Any]:
    return {"id": new_call_id(), "type": "function", "function": {"name": name, "arguments": arguments}}
