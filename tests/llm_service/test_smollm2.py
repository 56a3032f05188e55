"""End to end on the real SmolLM2-135M-Instruct as `make run` serves it (LLM_PRECISION=auto): the service
serves the variant the quality gate chose on this CPU kind, says so in /readyz and /v1/models, and the
official openai client gets streamed chat answers that are right on most of a set of questions (not on
one: a 135M model's answer to a single prompt can flip between precisions)."""
from __future__ import annotations

import openai
import pytest

from tests.llm_service.conftest import start_llm
from tests.llm_service.test_export import ROBUST

pytestmark = pytest.mark.slow


def test_smollm2_streamed_chat_answers(smollm2_model_dir, tmp_path_factory):
    import httpx

    from llm_service.export.manifest import load_manifest

    name = smollm2_model_dir.name
    gate = load_manifest(smollm2_model_dir).gate
    proc = start_llm(tmp_path_factory, smollm2_model_dir.parent, "smollm2", default_model=name)
    try:
        ready = httpx.get(proc.url + "/readyz", timeout=10).json()
        assert ready["precision"] == gate["chosen"] and ready["precision_source"] == "gate"
        assert ready["gate"]["state"] == "measured" and ready["gate"]["cpu_kind"] == gate["cpu"]["kind"]
        assert ready["gate"]["variants"][gate["chosen"]]["passed"]
        client = openai.OpenAI(base_url=proc.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        card = client.models.list().data[0]
        assert card.id == name and card.precision == gate["chosen"]   # extra fields of the model object

        right = stopped = 0
        for question, answer in ROBUST:
            stream = client.chat.completions.create(
                model=name, temperature=0, max_tokens=40, stream=True, stream_options={"include_usage": True},
                messages=[{"role": "user", "content": question}])
            chunks = list(stream)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            right += answer.lower() in text.lower()
            finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
            usage = chunks[-1].usage
            assert usage.prompt_tokens > 20 and 0 < usage.completion_tokens <= 40
            if finish == "stop":                            # ended on <|im_end|>
                stopped += 1
                assert usage.completion_tokens < 40
        assert right >= 7, f"{right}/{len(ROBUST)} right with {gate['chosen']}"
        assert stopped >= 6, f"{stopped}/{len(ROBUST)} stopped with {gate['chosen']}"
    finally:
        proc.stop()
