"""Fixtures shared by every test package."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import redis

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
REPO_MODELS = REPO / "models"
TINY_NAME = "tiny-llama"
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A real Redis (make test starts one if none answers). Tests use DB 15 and unique key prefixes."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    client.ping()
    client.close()
    return REDIS_URL


@pytest.fixture
def unique_name() -> str:
    """A collection/key-prefix name no other test (or concurrent run) uses."""
    return "t" + uuid.uuid4().hex[:12]


# --- models (built once per session by the real pipeline, shared by every test package) --------
@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny random llama built ONCE per session by the real pipeline (scripts/optimize_model.py's
    code) into a temporary models dir. SmolLM2's converted tokenizer is cached in the repo's
    ``models/.cache`` so only the first session on a clone pays the ~15 s GGUF read.

    A models dir holding one complete tiny model: ``<dir>/tiny-llama/manifest.json`` (variants fp32,
    int8, w8, int4; a quality-gate record measured on this CPU kind; default_variant cpu = the gate's
    choice, cuda=fp32). The tiny model is random, so which variants pass its gate depends on the CPU:
    tests that need a given precision name it."""
    from llm_service.export.pipeline import run_pipeline

    models = tmp_path_factory.mktemp("models")
    run_pipeline("tiny", name=TINY_NAME, models_dir=models, precisions=("fp32", "int8", "w8", "int4"),
                 cache_dir=REPO_MODELS / ".cache", bench_tokens=16, bench_runs=1)
    return models


@pytest.fixture(scope="session")
def smollm2_model_dir() -> Path:
    """models/smollm2-135m-instruct of the repo, built (or reused) by the real pipeline: the same cache
    ``make run`` uses (~1 min the first time, a sha256 check after that)."""
    from llm_service.export.pipeline import run_pipeline

    res = run_pipeline("smollm2", models_dir=REPO_MODELS)   # same defaults as make run: a cache hit
    return res.model_dir


