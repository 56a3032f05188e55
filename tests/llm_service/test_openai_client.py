"""The official ``openai`` Python client, unchanged, against the llm-service (tiny model, real HTTP)."""
from __future__ import annotations

import openai
import pytest

from tests.llm_service.conftest import TINY_NAME


@pytest.fixture(scope="module")
def oai(llm_server):
    with openai.OpenAI(base_url=llm_server.url + "/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


def test_models_list(oai):
    assert TINY_NAME in [m.id for m in oai.models.list()]


def test_completion_non_stream(oai, tiny_tokenizer):
    r = oai.completions.create(model=TINY_NAME, prompt="The sky is", max_tokens=7, temperature=0)
    assert r.object == "text_completion" and r.model == TINY_NAME
    assert r.choices[0].finish_reason == "length" and r.choices[0].text
    n = len(tiny_tokenizer.encode("The sky is").ids)
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (n, 7, n + 7)


def test_completion_stream_matches_non_stream(oai):
    kwargs = dict(model=TINY_NAME, prompt="The sky is", max_tokens=12, temperature=0)
    whole = oai.completions.create(**kwargs).choices[0].text
    chunks = list(oai.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert len(texts) >= 6 and "".join(texts) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12


def test_chat_non_stream(oai):
    r = oai.chat.completions.create(model=TINY_NAME, max_tokens=6, temperature=0, seed=3, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}])
    assert r.object == "chat.completion"
    msg = r.choices[0].message
    assert msg.role == "assistant" and isinstance(msg.content, str) and msg.content
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 6
    assert r.usage.prompt_tokens > 10      # the chat template wrapped the two messages


def test_chat_stream(oai):
    kwargs = dict(model=TINY_NAME, max_tokens=10, temperature=0,
                  messages=[{"role": "user", "content": [{"type": "text", "text": "Count to three"}]}])
    whole = oai.chat.completions.create(**kwargs).choices[0].message.content
    stream = oai.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(deltas) == whole and sum(1 for d in deltas if d) >= 5
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 10


def test_sampling_extensions_via_extra_body(oai):
    kwargs = dict(model=TINY_NAME, prompt="abc", max_tokens=8, temperature=0.9, seed=11,
                  extra_body={"top_k": 20, "repetition_penalty": 1.3})
    assert oai.completions.create(**kwargs).choices[0].text == oai.completions.create(**kwargs).choices[0].text


def test_client_errors(oai):
    with pytest.raises(openai.NotFoundError):
        oai.completions.create(model="missing-model", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="context length"):
        oai.completions.create(model=TINY_NAME, prompt="word " * 5000, max_tokens=2)
    with pytest.raises(openai.UnprocessableEntityError):
        oai.chat.completions.create(model=TINY_NAME, messages=[{"role": "robot", "content": "x"}])


# --- no request field is silently ignored ------------------------------------------------------------------
def test_unknown_and_unsupported_fields_are_refused_by_name(oai):
    chat = dict(model=TINY_NAME, messages=[{"role": "user", "content": "Name a fruit."}], max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: surely_not_a_field"):
        oai.chat.completions.create(**chat, extra_body={"surely_not_a_field": 3})
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: frobnicate"):
        oai.completions.create(model=TINY_NAME, prompt="x", max_tokens=2, extra_body={"frobnicate": True})
    refused = [
        ("logit_bias", dict(logit_bias={"12": 5})),
        ("functions", dict(extra_body={"functions": [{"name": "f", "parameters": {"type": "object"}}]})),
        ("function_call", dict(extra_body={"function_call": "auto"})),
    ]
    for param, kwargs in refused:
        with pytest.raises(openai.BadRequestError) as err:
            oai.chat.completions.create(**chat, **kwargs)
        assert err.value.body["details"]["param"] == param and "not supported" in err.value.body["message"], kwargs
    legacy_turn = {"role": "assistant", "content": "", "function_call": {"name": "f", "arguments": "{}"}}
    with pytest.raises(openai.BadRequestError, match=r"messages\[1\].function_call is not supported"):
        oai.chat.completions.create(model=TINY_NAME, max_tokens=2, messages=[chat["messages"][0], legacy_turn])
    with pytest.raises(openai.UnprocessableEntityError, match="top_logprobs needs logprobs"):
        oai.chat.completions.create(**chat, top_logprobs=2)


def test_documented_no_op_fields_and_a_returned_message_are_accepted(oai):
    first = oai.chat.completions.create(model=TINY_NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
                                        user="u-1", metadata={"team": "search"}, store=False,
                                        service_tier="auto", tools=[], logprobs=False)
    # the client's own message object of the answer, sent back as history (refusal, annotations, ... as null)
    again = oai.chat.completions.create(model=TINY_NAME, max_tokens=3, messages=[
        {"role": "user", "content": "Hi"}, first.choices[0].message.model_dump(), {"role": "user", "content": "And?"}])
    assert again.choices[0].message.role == "assistant"


def test_max_completion_tokens_and_the_penalties_act(oai):
    r = oai.chat.completions.create(model=TINY_NAME, messages=[{"role": "user", "content": "Count."}],
                                    max_completion_tokens=5, temperature=0)
    assert r.usage.completion_tokens <= 5
    plain = oai.completions.create(model=TINY_NAME, prompt="a b a b", max_tokens=24, temperature=0)
    penalized = oai.completions.create(model=TINY_NAME, prompt="a b a b", max_tokens=24, temperature=0,
                                       frequency_penalty=2.0, presence_penalty=2.0)
    assert penalized.choices[0].text != plain.choices[0].text
    assert oai.completions.create(model=TINY_NAME, prompt="a b a b", max_tokens=24, temperature=0,
                                  frequency_penalty=2.0, presence_penalty=2.0).choices[0].text == \
        penalized.choices[0].text                                     # deterministic, like everything greedy
