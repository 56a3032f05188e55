"""End to end on the real SmolLM2-135M-Instruct (int8 on CPU): the official openai client gets a streamed
chat answer from the service, as `make run` serves it."""
from __future__ import annotations

import openai
import pytest

from tests.llm_service.conftest import start_llm

pytestmark = pytest.mark.slow


def test_smollm2_streamed_chat_answer(smollm2_model_dir, tmp_path_factory):
    name = smollm2_model_dir.name
    proc = start_llm(tmp_path_factory, smollm2_model_dir.parent, "smollm2", default_model=name)
    try:
        client = openai.OpenAI(base_url=proc.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        stream = client.chat.completions.create(
            model=name, temperature=0, max_tokens=40, stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "What is the capital of France?"}])
        chunks = list(stream)
        answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert "Paris" in answer, answer
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"   # ended on <|im_end|>
        usage = chunks[-1].usage
        assert usage.completion_tokens < 40 and usage.prompt_tokens > 20
    finally:
        proc.stop()
