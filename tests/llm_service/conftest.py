"""Fixtures for the llm-service tests.

``tiny_model_dir``: the tiny random llama built ONCE per session by the real pipeline
(scripts/optimize_model.py's code) into a temporary models dir; returns that models dir
(the model is ``<dir>/tiny-llama/`` with its manifest.json). SmolLM2's converted tokenizer is cached in
the repo's ``models/.cache`` so only the first session on a clone pays the ~15 s GGUF read.

``smollm2_model_dir``: the real SmolLM2-135M-Instruct, built into the repo's ``models/`` (the same
cache ``make run`` uses; ~50 s the first time, a sha256 check after that); returns the model dir.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
REPO_MODELS = REPO / "models"
TINY_NAME = "tiny-llama"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A models dir holding one complete tiny model: ``<dir>/tiny-llama/manifest.json`` (fp32 + int8)."""
    from llm_service.export.pipeline import run_pipeline

    models = tmp_path_factory.mktemp("models")
    run_pipeline("tiny", name=TINY_NAME, models_dir=models, precisions=("fp32", "int8"),
                 cache_dir=REPO_MODELS / ".cache", bench_tokens=16, bench_runs=1)
    return models


@pytest.fixture(scope="session")
def smollm2_model_dir() -> Path:
    """models/smollm2-135m-instruct of the repo, built (or reused) by the real pipeline."""
    from llm_service.export.pipeline import run_pipeline

    res = run_pipeline("smollm2", models_dir=REPO_MODELS, precisions=("fp32", "int8"))
    return res.model_dir
