"""Structured output, tool calls, logprobs and n through the official ``openai`` client (llm-service with the
tiny random model over real HTTP). A random model writes nonsense, which is the point here: whatever it
would write, the grammar makes the output parse and validate — checked with a JSON Schema validator over
many generations, not one."""
from __future__ import annotations

import json
import math
import re

import httpx
import jsonschema
import openai
import pytest

from tests.llm_service.conftest import TINY_NAME

SCHEMAS = {
    "flat": {"type": "object", "additionalProperties": False, "required": ["fruit", "count", "ripe"],
             "properties": {"fruit": {"type": "string", "enum": ["apple", "pear", "lemon"]},
                            "count": {"type": "integer", "minimum": 0, "maximum": 99},
                            "ripe": {"type": "boolean"}}},
    "nested": {"type": "object", "additionalProperties": False, "required": ["person", "tags"],
               "properties": {"person": {"type": "object", "additionalProperties": False, "required": ["name", "age"],
                                         "properties": {"name": {"type": "string", "maxLength": 12},
                                                        "age": {"type": "integer", "minimum": 0, "maximum": 120}}},
                              "tags": {"type": "array", "minItems": 1, "maxItems": 3,
                                       "items": {"type": "string", "enum": ["a", "b", "c"]}}}},
    "array_of_objects": {"type": "object", "additionalProperties": False, "required": ["items"],
                         "properties": {"items": {"type": "array", "minItems": 1, "maxItems": 2, "items": {
                             "type": "object", "additionalProperties": False, "required": ["id", "score"],
                             "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 9},
                                            "score": {"type": "number", "minimum": 0, "maximum": 1}}}}}},
}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
                   "properties": {"city": {"type": "string", "maxLength": 20},
                                  "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two integers",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["a", "b"],
                   "properties": {"a": {"type": "integer", "minimum": -99, "maximum": 99},
                                  "b": {"type": "integer", "minimum": -99, "maximum": 99}}}}}
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, ADD)}
ASK = [{"role": "user", "content": "Give me the data."}]


@pytest.fixture(scope="module")
def oai(llm_server):
    with openai.OpenAI(base_url=llm_server.url + "/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield c


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_json_schema_output_always_validates(oai, name):
    """6 requests x n=3 per schema, sampled at temperature 1 with different seeds: 18 generations per
    schema, 54 over the three, every one parses and validates."""
    schema = SCHEMAS[name]
    seen = set()
    for seed in range(6):
        r = oai.chat.completions.create(
            model=TINY_NAME, messages=ASK, max_tokens=200, temperature=1.0, seed=seed, n=3,
            response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}})
        assert len(r.choices) == 3
        for choice in r.choices:
            assert choice.finish_reason == "stop", choice
            value = json.loads(choice.message.content)
            jsonschema.validate(value, schema)
            seen.add(choice.message.content)
    assert len(seen) >= 6        # sampling still samples: not one forced output


def test_json_object_mode_gives_an_object(oai):
    for seed in range(4):
        r = oai.chat.completions.create(model=TINY_NAME, messages=ASK, max_tokens=300, temperature=0.7, seed=seed,
                                        response_format={"type": "json_object"})
        if r.choices[0].finish_reason == "length":      # an open object can go on; never invalid when it ends
            continue
        assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_structured_output_streams_the_same_json(oai):
    kwargs = dict(model=TINY_NAME, messages=ASK, max_tokens=200, temperature=0,
                  response_format={"type": "json_schema",
                                   "json_schema": {"name": "flat", "schema": SCHEMAS["flat"], "strict": True}})
    whole = oai.chat.completions.create(**kwargs).choices[0].message.content
    parts = [c.choices[0].delta.content or "" for c in oai.chat.completions.create(**kwargs, stream=True) if c.choices]
    assert "".join(parts) == whole
    jsonschema.validate(json.loads(whole), SCHEMAS["flat"])


def test_generate_json_schema_regex_and_grammar(llm_server):
    with httpx.Client(base_url=llm_server.url, timeout=120) as c:
        for seed in range(5):
            r = c.post("/generate", json={"prompt": "Phone:", "max_new_tokens": 20, "temperature": 1.0, "seed": seed,
                                          "regex": r"[0-9]{3}-[0-9]{4}"})
            assert r.status_code == 200, r.text
            assert re.fullmatch(r"[0-9]{3}-[0-9]{4}", r.json()["text"]) and r.json()["finish_reason"] == "stop"
            r = c.post("/generate", json={"prompt": "Answer:", "max_new_tokens": 30, "temperature": 1.0, "seed": seed,
                                          "grammar": 'start: ("yes" | "no") " because " /[a-z]{1,8}/'})
            assert r.status_code == 200, r.text
            assert re.fullmatch(r"(yes|no) because [a-z]{1,8}", r.json()["text"]), r.json()
            r = c.post("/generate", json={"prompt": "{", "max_new_tokens": 200, "temperature": 1.0, "seed": seed,
                                          "json_schema": SCHEMAS["nested"]})
            jsonschema.validate(json.loads(r.json()["text"]), SCHEMAS["nested"])


def test_bad_grammars_are_400s_naming_the_field(llm_server, oai):
    with httpx.Client(base_url=llm_server.url, timeout=60) as c:
        r = c.post("/generate", json={"prompt": "x", "regex": "(abc"})
        assert r.status_code == 400 and r.json()["error"]["details"]["param"] == "regex", r.text
        assert "unclosed group" in r.json()["error"]["message"]
        r = c.post("/generate", json={"prompt": "x", "grammar": "start: undefined_rule"})
        assert r.status_code == 400 and r.json()["error"]["details"]["param"] == "grammar", r.text
        r = c.post("/generate", json={"prompt": "x", "regex": "a", "json_schema": {"type": "object"}})
        assert r.status_code == 422 and "at most one" in r.text
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model=TINY_NAME, messages=ASK, max_tokens=5, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "bogus"}}})
    assert err.value.body["details"]["param"] == "response_format.json_schema.schema"
    assert "bogus" in err.value.body["message"]
    with pytest.raises(openai.UnprocessableEntityError):
        oai.chat.completions.create(model=TINY_NAME, messages=ASK, max_tokens=5,
                                    response_format={"type": "json_schema"})


# --- tools ---------------------------------------------------------------------------------------------------
def _check_call(call) -> dict:
    assert call.type == "function" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, PARAMS[call.function.name])
    return args


def test_tool_choice_required_named_and_none(oai):
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    names = set()
    for seed in range(8):
        r = oai.chat.completions.create(model=TINY_NAME, messages=ask, tools=[WEATHER, ADD], tool_choice="required",
                                        max_tokens=120, temperature=1.0, seed=seed)
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None, choice
        assert len(choice.message.tool_calls) == 1
        _check_call(choice.message.tool_calls[0])
        names.add(choice.message.tool_calls[0].function.name)
    assert names <= {"get_weather", "add"}
    for seed in range(4):
        r = oai.chat.completions.create(model=TINY_NAME, messages=ask, tools=[WEATHER, ADD], max_tokens=120,
                                        tool_choice={"type": "function", "function": {"name": "add"}},
                                        temperature=1.0, seed=seed)
        call = r.choices[0].message.tool_calls[0]
        assert call.function.name == "add" and r.choices[0].finish_reason == "tool_calls"
        _check_call(call)
    r = oai.chat.completions.create(model=TINY_NAME, messages=ask, tools=[WEATHER], tool_choice="none", max_tokens=8)
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="not in tools"):
        oai.chat.completions.create(model=TINY_NAME, messages=ask, tools=[WEATHER], max_tokens=8,
                                    tool_choice={"type": "function", "function": {"name": "nope"}})


def test_tool_choice_auto_is_text_or_a_valid_call(oai):
    ask = [{"role": "user", "content": "Add 2 and 3."}]
    for seed in range(8):
        r = oai.chat.completions.create(model=TINY_NAME, messages=ask, tools=[WEATHER, ADD], max_tokens=80,
                                        temperature=1.0, seed=seed)
        msg, finish = r.choices[0].message, r.choices[0].finish_reason
        if msg.tool_calls:
            assert finish == "tool_calls" and msg.content is None
            _check_call(msg.tool_calls[0])
        else:
            assert msg.content and not msg.content.startswith("<")


def test_streamed_tool_calls_assemble_into_valid_calls(oai):
    ask = [{"role": "user", "content": "Weather in Seoul?"}]
    for choice_arg in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        for seed in range(3):
            stream = oai.chat.completions.create(model=TINY_NAME, messages=ask, tools=[WEATHER, ADD], stream=True,
                                                 tool_choice=choice_arg, max_tokens=120, temperature=1.0, seed=seed)
            calls: dict[int, dict] = {}
            finish = None
            pieces = 0
            for chunk in stream:
                for ch in chunk.choices:
                    for tc in ch.delta.tool_calls or []:
                        slot = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                        slot["id"] = tc.id or slot["id"]
                        if tc.function and tc.function.name:
                            slot["name"] = tc.function.name
                        if tc.function and tc.function.arguments:
                            slot["arguments"] += tc.function.arguments
                            pieces += 1
                    finish = ch.finish_reason or finish
            assert finish == "tool_calls" and list(calls) == [0], calls
            call = calls[0]
            assert call["id"] and call["name"] in PARAMS
            jsonschema.validate(json.loads(call["arguments"]), PARAMS[call["name"]])
            if isinstance(choice_arg, dict):
                assert call["name"] == "get_weather"
            assert pieces >= 3                          # the arguments came as they were generated


def test_a_call_cut_by_max_tokens_stays_a_call(oai):
    for tool_choice, max_tokens in (("required", 12), ({"type": "function", "function": {"name": "add"}}, 3)):
        r = oai.chat.completions.create(model=TINY_NAME, messages=ASK, tools=[WEATHER, ADD], tool_choice=tool_choice,
                                        max_tokens=max_tokens, temperature=1.0, seed=4)
        choice = r.choices[0]
        assert choice.finish_reason == "length" and choice.message.content is None, choice
        call = choice.message.tool_calls[0]
        assert call.function.name in PARAMS and '"arguments"' not in call.function.arguments


def test_reading_calls_and_partial_names():
    from llm_service.structured import ChatStream, plan_chat, read_output

    plan = plan_chat(None, [WEATHER, ADD], "required")
    text = '{"name":"add","arguments":{"a":1,"b":2}}'
    content, calls, finish = read_output(text, plan, "stop")
    assert content is None and finish == "tool_calls" and calls[0]["type"] == "function"
    assert calls[0]["function"] == {"name": "add", "arguments": '{"a":1,"b":2}'}
    _, calls, finish = read_output('{"name":"get_w', plan, "length")          # the name is told by its start
    assert finish == "length" and calls[0]["function"] == {"name": "get_weather", "arguments": ""}
    _, calls, _ = read_output('{"name":"add","arguments":{"a":1', plan, "length")
    assert calls[0]["function"]["arguments"] == '{"a":1'
    auto = plan_chat(None, [WEATHER, ADD], None)
    assert read_output("Hello <b>", auto, "stop") == ("Hello <b>", None, "stop")
    _, calls, finish = read_output('<tool_call>{"name":"add","arguments":{"a":1,"b":2}}</tool_call>', auto, "stop")
    assert finish == "tool_calls" and calls[0]["function"]["arguments"] == '{"a":1,"b":2}'
    # streaming: nothing before the name is known, then the arguments, the closing "}" only at the end
    stream = ChatStream(plan)
    pieces = ['{"name":"', 'add",', '"arguments":', '{"a":', '1,"b":2', '}}']
    deltas = [d for p in pieces for d in stream.feed(p)]
    tail, finish = stream.finish("stop")
    calls = [d["tool_calls"][0] for d in deltas + tail]
    assert calls[0]["function"] == {"name": "add", "arguments": ""} and calls[0]["id"].startswith("call_")
    assert "".join(c["function"]["arguments"] for c in calls) == '{"a":1,"b":2}' and finish == "tool_calls"
    assert len(calls) >= 4
    text_stream = ChatStream(auto)
    assert text_stream.feed("Hi") == [{"content": "Hi"}] and text_stream.finish("stop") == ([], "stop")


def test_a_tool_result_turn_is_accepted_and_rendered(oai, llm_server):
    first = oai.chat.completions.create(model=TINY_NAME, messages=[{"role": "user", "content": "Weather in Oslo?"}],
                                        tools=[WEATHER], tool_choice="required", max_tokens=120, seed=1)
    call = first.choices[0].message.tool_calls[0]
    history = [{"role": "user", "content": "Weather in Oslo?"}, first.choices[0].message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 4}'}]
    r = oai.chat.completions.create(model=TINY_NAME, messages=history, tools=[WEATHER], max_tokens=6,
                                    tool_choice="none")
    assert r.choices[0].message.content
    with httpx.Client(base_url=llm_server.url, timeout=60) as c:     # the model saw the call and the result
        ids = c.post("/tokenize", json={"messages": history}).json()["tokens"]
        prompt = c.post("/detokenize", json={"tokens": ids}).json()["prompt"]
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": ' in prompt and '{"temp": 4}' in prompt


# --- logprobs --------------------------------------------------------------------------------------------------
def test_chat_logprobs_are_the_models_distribution(oai):
    r = oai.chat.completions.create(model=TINY_NAME, messages=ASK, max_tokens=12, temperature=0, logprobs=True,
                                    top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 12
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3 and bytes(t.bytes).decode() == t.token
        lps = [a.logprob for a in t.top_logprobs]
        assert lps == sorted(lps, reverse=True) and sum(math.exp(x) for x in lps) <= 1 + 1e-4
        assert t.top_logprobs[0].token == t.token and abs(t.top_logprobs[0].logprob - t.logprob) < 1e-5   # greedy
    streamed = [lp for c in oai.chat.completions.create(model=TINY_NAME, messages=ASK, max_tokens=12, temperature=0,
                                                         logprobs=True, stream=True)
                if c.choices and c.choices[0].logprobs for lp in c.choices[0].logprobs.content]
    assert [t.token for t in streamed] == [t.token for t in content]
    assert all(abs(a.logprob - b.logprob) < 1e-4 for a, b in zip(streamed, content))


def test_completion_logprobs_legacy_shape(oai):
    r = oai.completions.create(model=TINY_NAME, prompt="The sky is", max_tokens=8, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 8
    assert "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(8)]
    for tok, val, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert val <= 0 and len(top) == 2 and max(top.values()) == pytest.approx(val, abs=1e-5)


def test_constrained_logprobs_stay_the_models(oai):
    """Under a grammar the chosen token may not be the model's favourite: its logprob is still the model's."""
    r = oai.chat.completions.create(model=TINY_NAME, messages=ASK, max_tokens=100, temperature=0, logprobs=True,
                                    top_logprobs=1, response_format={"type": "json_schema", "json_schema": {
                                        "name": "flat", "schema": SCHEMAS["flat"]}})
    content = r.choices[0].logprobs.content
    assert any(t.logprob < t.top_logprobs[0].logprob - 1e-6 for t in content)    # the mask moved some choices


# --- n --------------------------------------------------------------------------------------------------------
def test_n_choices_are_rows_of_one_request(oai):
    # fp32: a row's tokens do not depend on its batch mates (int8's per-batch activation scale would)
    kw = dict(model=TINY_NAME, messages=ASK, max_tokens=10, temperature=1.0, seed=5, extra_body={"precision": "fp32"})
    r = oai.chat.completions.create(**kw, n=3)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) > 1            # seed + i per choice
    assert r.usage.completion_tokens == 30
    again = oai.chat.completions.create(**kw, n=3)
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]
    for i in range(3):        # choice i is what a single request with seed + i gives
        single = oai.chat.completions.create(**{**kw, "seed": 5 + i})
        assert single.choices[0].message.content == r.choices[i].message.content
    c = oai.completions.create(model=TINY_NAME, prompt="Once", max_tokens=5, temperature=1.0, seed=2, n=2)
    assert [x.index for x in c.choices] == [0, 1] and c.usage.completion_tokens == 10


def test_streamed_n_ends_every_choice(oai):
    texts, finish = {0: "", 1: ""}, {}
    usage = None
    for chunk in oai.chat.completions.create(model=TINY_NAME, messages=ASK, max_tokens=8, temperature=1.0, seed=9,
                                             n=2, stream=True, stream_options={"include_usage": True}):
        for ch in chunk.choices:
            texts[ch.index] += ch.delta.content or ""
            if ch.finish_reason:
                finish[ch.index] = ch.finish_reason
        usage = chunk.usage or usage
    assert finish == {0: "length", 1: "length"} and all(texts.values())
    assert usage.completion_tokens == 16
