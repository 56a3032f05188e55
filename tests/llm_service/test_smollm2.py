"""End to end on the real SmolLM2-135M-Instruct as `make run` serves it (LLM_PRECISION=auto): the service
serves the variant the quality gate chose on this CPU kind, says so in /readyz and /v1/models, and the
official openai client gets streamed chat answers that are right on most of a set of questions (not on
one: a 135M model's answer to a single prompt can flip between precisions)."""
from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.llm_service.conftest import start_llm
from tests.llm_service.test_export import ROBUST

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smol_server(smollm2_model_dir, tmp_path_factory):
    proc = start_llm(tmp_path_factory, smollm2_model_dir.parent, "smollm2", default_model=smollm2_model_dir.name)
    yield proc
    proc.stop()


def test_smollm2_streamed_chat_answers(smollm2_model_dir, smol_server):
    import httpx

    from llm_service.export.manifest import load_manifest

    name = smollm2_model_dir.name
    gate = load_manifest(smollm2_model_dir).gate
    ready = httpx.get(smol_server.url + "/readyz", timeout=10).json()
    assert ready["precision"] == gate["chosen"] and ready["precision_source"] == "gate"
    assert ready["gate"]["state"] == "measured" and ready["gate"]["cpu_kind"] == gate["cpu"]["kind"]
    assert ready["gate"]["variants"][gate["chosen"]]["passed"]
    client = openai.OpenAI(base_url=smol_server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
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


def test_smollm2_structured_output_and_tool_calls_are_right(smol_server):
    """scripts/eval_structured.py against the real model: constrained JSON and tool calls always validate
    and carry the right values on most of the cases (12 extractions, 8 tool questions), at least as often
    as the same model prompted for the shape without a constraint."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "scripts/eval_structured.py", "--url", smol_server.url],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    ext, base = res["extraction_constrained"], res["extraction_baseline"]
    assert ext["valid"] == 1.0, ext
    assert ext["city_right"] >= 0.75 and ext["country_right"] >= 0.75, ext
    assert ext["city_right"] + ext["country_right"] >= base["city_right"] + base["country_right"], res
    tools = res["tools_constrained"]
    assert tools["valid"] == 1.0 and tools["name_right"] >= 0.75 and tools["args_right"] >= 0.5, tools
    assert tools["args_right"] > res["tools_baseline"]["args_right"], res
