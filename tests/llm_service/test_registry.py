"""Model registry in-process: name validation, load/unload, default switch, leases defer the close."""
from __future__ import annotations

import asyncio

import pytest

from llm_service.core.metrics import Metrics
from llm_service.core.settings import Settings
from llm_service.engine.batching import AdmissionGate
from llm_service.engine.base import GenerationRequest, SamplingParams
from llm_service.registry import ModelRegistry
from stack_common.errors import Conflict, NotFound, ServiceError, Unavailable


@pytest.fixture
async def registry(two_models_dir):
    settings = Settings(models_dir=two_models_dir, device="cpu", default_model="tiny-a")
    metrics = Metrics()
    reg = ModelRegistry(settings, metrics, AdmissionGate(8, metrics=metrics))
    yield reg
    await reg.close()


@pytest.mark.parametrize("name", ["../tiny-a", "tiny-a/../tiny-b", "/etc", ".cache", "", "a" * 200, "nope",
                                  "tiny-a/onnx-fp32", "tiny a"])
async def test_names_are_validated(registry, name):
    with pytest.raises(NotFound):
        registry.model_dir(name)
    with pytest.raises(NotFound):
        await registry.load(name)


async def test_discovery_and_default(registry):
    assert registry.available() == ["tiny-a", "tiny-b"]
    assert registry.initial_default() == "tiny-a"
    with pytest.raises(Unavailable, match="no default model"):
        await registry.acquire()
    model = await registry.set_default("tiny-a")
    # auto on CPU: the quality gate's choice on this CPU kind (recorded in the tiny model's manifest)
    assert model.precision_source == "gate" and model.default_precision == model.gate["chosen"]
    lease = await registry.acquire()
    assert lease.model.name == "tiny-a" and lease.engine.runner.provider == "cpu"
    lease.release()
    lease.release()                                 # idempotent
    assert model.refs == 0


async def test_errors(registry):
    await registry.set_default("tiny-a")
    with pytest.raises(NotFound, match="not loaded"):
        await registry.acquire("tiny-b")
    with pytest.raises(ServiceError, match="no 'int2' variant"):
        await registry.acquire("tiny-a", "int2")
    assert registry.loaded["tiny-a"].refs == 0
    with pytest.raises(Conflict, match="default"):
        await registry.unload("tiny-a")


async def test_unload_waits_for_in_flight_requests(registry):
    await registry.set_default("tiny-a")
    model_b = await registry.load("tiny-b", "fp32")
    lease = await registry.acquire("tiny-b")
    assert lease.precision == "fp32"
    tok = model_b.tokenizer
    events = lease.engine.generate(GenerationRequest(tok.encode("hello"), SamplingParams(max_new_tokens=40,
                                                                                          temperature=0)))
    first = await anext(events)
    assert first.finish_reason is None                                  # in flight when the unload comes
    answer = await registry.unload("tiny-b")
    assert answer == {"model": "tiny-b", "status": "draining", "in_flight": 1}
    assert "tiny-b" not in registry.loaded and model_b.engines      # gone for new requests, still running
    with pytest.raises(NotFound):
        await registry.acquire("tiny-b")
    rest = [ev async for ev in events]
    assert rest[-1].finish_reason == "length" and 1 + len(rest) == 40  # finished on the model it started on
    lease.release()
    for _ in range(100):
        if not model_b.engines:
            break
        await asyncio.sleep(0.05)
    assert not model_b.engines                                          # closed after the last lease
    again = await registry.load("tiny-b")
    assert again is not model_b and again.engines
