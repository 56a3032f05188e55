#!/usr/bin/env python
"""What a user asking llm-service for JSON or a tool call gets back: constrained decoding vs the same model
prompted for the same shape without a constraint (the baseline), same questions, one run.

    python scripts/eval_structured.py --url http://127.0.0.1:8002 [--model smollm2-135m-instruct]

Rows (greedy, temperature 0):

* extraction — "Extract the city and the country from this sentence as JSON" over 12 sentences
  (stack_dev.structured_cases.EXTRACTION). Constrained: ``response_format`` json_schema (strict). Baseline: the
  shape asked for in the prompt. Per mode: the share whose content parses as JSON and validates against the
  schema (``valid``), and the share with the right city / country (read from the first JSON object in the text
  for the baseline, so it is credited even when it wraps the JSON in prose).
* tool calls — 8 questions that need ``get_weather(city)`` or ``add(a, b)``. Constrained: ``tools`` with
  ``tool_choice="required"``. Baseline: the functions and the call format described in the prompt. Per mode:
  a well-formed call (valid), the right function, the right arguments.
* auto — the same 8 questions with ``tool_choice="auto"``: how often the model chose to call a tool (no bar:
  the model decides).

Latency is the p50 of the requests of a row. The last line is all figures as one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import jsonschema
import openai

from stack_dev import structured_cases as cases
from stack_dev.machine import cpu_name
from stack_dev.stats import percentile


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t0) * 1000


def extraction(client: openai.OpenAI, model: str, constrained: bool, max_tokens: int) -> dict:
    valid = city = country = 0
    ms = []
    for sentence, want_city, want_country in cases.EXTRACTION:
        kwargs = dict(model=model, temperature=0, max_tokens=max_tokens,
                      messages=[{"role": "user", "content": cases.extraction_prompt(sentence, constrained)}])
        if constrained:
            kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "place", "schema": cases.PLACE_SCHEMA, "strict": True}}
        r, t = _timed(lambda: client.chat.completions.create(**kwargs))
        ms.append(t)
        text = r.choices[0].message.content or ""
        try:
            jsonschema.validate(json.loads(text), cases.PLACE_SCHEMA)
            valid += 1
        except (ValueError, jsonschema.ValidationError):
            pass
        c, k = cases.place_right(cases.first_json_object(text), want_city, want_country)
        city += c
        country += k
    n = len(cases.EXTRACTION)
    return {"n": n, "valid": valid / n, "city_right": city / n, "country_right": country / n,
            "p50_ms": percentile(ms, 50)}


def tool_calls(client: openai.OpenAI, model: str, mode: str, max_tokens: int) -> dict:
    valid = name_ok = args_ok = called = 0
    ms = []
    for question, want_name, want_args in cases.TOOL_CALLS:
        if mode == "baseline":
            kwargs = dict(messages=[{"role": "user", "content": cases.tool_prompt_baseline(question)}])
        else:
            kwargs = dict(messages=[{"role": "user", "content": question}], tools=cases.TOOLS,
                          tool_choice="required" if mode == "constrained" else "auto")
        r, t = _timed(lambda: client.chat.completions.create(model=model, temperature=0, max_tokens=max_tokens,
                                                             **kwargs))
        ms.append(t)
        msg = r.choices[0].message
        name = args = None
        if msg.tool_calls:
            called += 1
            name = msg.tool_calls[0].function.name
            try:
                args = json.loads(msg.tool_calls[0].function.arguments)
            except ValueError:
                args = None
        elif mode == "baseline":
            obj = cases.first_json_object(msg.content or "")
            if isinstance(obj, dict):
                name, args = obj.get("name"), obj.get("arguments")
        schema = next((t["function"]["parameters"] for t in cases.TOOLS if t["function"]["name"] == name), None)
        if schema is not None and isinstance(args, dict):
            try:
                jsonschema.validate(args, schema)
                valid += 1
            except jsonschema.ValidationError:
                pass
        name_ok += name == want_name
        args_ok += name == want_name and cases.args_right(args, want_args)
    n = len(cases.TOOL_CALLS)
    out = {"n": n, "valid": valid / n, "name_right": name_ok / n, "args_right": args_ok / n,
           "p50_ms": percentile(ms, 50)}
    if mode == "auto":
        out["called"] = called / n
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8002")
    ap.add_argument("--model", default=None, help="default: the first of GET /v1/models")
    ap.add_argument("--api-key", default="unused")
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args(argv)
    client = openai.OpenAI(base_url=args.url.rstrip("/") + "/v1", api_key=args.api_key, max_retries=0, timeout=300)
    model = args.model or client.models.list().data[0].id
    res = {
        "extraction_baseline": extraction(client, model, False, args.max_tokens),
        "extraction_constrained": extraction(client, model, True, args.max_tokens),
        "tools_baseline": tool_calls(client, model, "baseline", args.max_tokens),
        "tools_constrained": tool_calls(client, model, "constrained", args.max_tokens),
        "tools_auto": tool_calls(client, model, "auto", args.max_tokens),
    }
    print(f"command: python scripts/eval_structured.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"model: {model}   cpu: {cpu_name()}")
    print(f"{'row':24} {'n':>3} {'valid':>6} {'right (city/country or name/args)':>34} {'p50 ms':>8}")
    for key, r in res.items():
        right = (f"{r['city_right']:.2f} / {r['country_right']:.2f}" if "city_right" in r
                 else f"{r['name_right']:.2f} / {r['args_right']:.2f}")
        extra = f"   called a tool: {r['called']:.2f}" if "called" in r else ""
        print(f"{key:24} {r['n']:>3} {r['valid']:>6.2f} {right:>34} {r['p50_ms']:>8.0f}{extra}")
    print(json.dumps({"model": model, "cpu": cpu_name(), **res}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
