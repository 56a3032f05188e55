"""Serving layer edge cases: request timeout cancels the generation; no default model -> 503 (the app
in-process, through an ASGI transport)."""
from __future__ import annotations

import asyncio

import pytest

from llm_service.core.metrics import Metrics
from llm_service.core.settings import Settings
from llm_service.engine.batching import AdmissionGate
from llm_service.registry import ModelRegistry
from llm_service.serving import GenerationService, GenerationTimeout
from tests.llm_service.conftest import TINY_NAME, app_settings, serve_in_process


async def test_timeout_cancels_generation(tiny_model_dir):
    settings = Settings(models_dir=tiny_model_dir, device="cpu", request_timeout_s=0.05, max_new_tokens_limit=2000)
    metrics = Metrics()
    registry = ModelRegistry(settings, metrics, AdmissionGate(8, metrics=metrics))
    serving = GenerationService(settings, registry)
    try:
        await registry.set_default(TINY_NAME)
        prepared = await serving.prepare(model=None, precision=None, max_new_tokens=2000, sampling={}, prompt="go")
        with pytest.raises(GenerationTimeout, match="LLM_REQUEST_TIMEOUT_S"):
            await serving.collect(prepared)
        engine = prepared.lease.engine
        for _ in range(100):
            if engine.running == 0:
                break
            await asyncio.sleep(0.02)
        assert engine.running == 0 and registry.loaded[TINY_NAME].refs == 0
        assert metrics.request_failure.labels("timeout")._value.get() == 1
    finally:
        await registry.close()


def test_no_default_model_is_not_ready(tmp_path):
    with serve_in_process(app_settings(tmp_path)) as c:       # an empty models dir
        assert c.get("/healthz").status_code == 200            # up (what a process's start waits for) ...
        r = c.get("/readyz")                                   # ... but not ready
        assert r.status_code == 503 and "no default model" in r.json()["reason"]
        r = c.post("/generate", json={"prompt": "hi"})
        assert r.status_code == 503 and "POST /admin/default" in r.json()["error"]["message"]
        assert c.get("/v1/models").json()["data"] == []
